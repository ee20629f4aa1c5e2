#ifndef ECHOFED_TESTS_COORDINATOR_CLI_REPORT_TEST_FIXTURE_H_
#define ECHOFED_TESTS_COORDINATOR_CLI_REPORT_TEST_FIXTURE_H_

// The run that the tests of `echofed report` (cli_report_test) render: four
// sites of synthetic predictions and a suppressed fifth, two evaluated
// rounds, and the counts the sites declared at join; with what the tests
// check the three documents against (the aggregates of the concatenated
// cases, the CSV read back into a table, a JSON object's fields).

#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "common/intervals.h"
#include "google/protobuf/struct.pb.h"
#include "gtest/gtest.h"
#include "proto/admin.pb.h"
#include "proto/metrics.pb.h"

namespace echofed::testing {

inline constexpr int kClasses = 3;

// One patient (one image) as a site holds it; never leaves the test.
struct Case {
  int truth = 0;
  std::vector<double> probabilities;
  int high_risk = 0;
  double high_risk_probability = 0;
  double efs_months = 0;
  bool event = false;
  double risk_score = 0;
};

// Synthetic predictions: softmax of noise plus a site-specific signal on the
// true class, so sites differ (heterogeneity) and scores rarely tie.
std::vector<Case> MakeCases(int count, double signal, unsigned seed,
                            bool without_last_class = false);

struct SiteData {
  std::string name;
  EvalSplit split;
  std::vector<Case> cases;
};

// What a site would send for these cases (its aggregates).
SiteEvaluation Evaluate(const SiteData& site);

// What site-agent/agent.cc sends for a set below the minimum cell count.
SiteEvaluation Suppressed(const std::string& name, EvalSplit split);

// The aggregates of the concatenated cases, built directly (not by adding
// the sites' reports): what the pooled rows must equal.
struct Concatenated {
  EvalAggregate subtype;
  EvalAggregate high_risk;
  SurvivalAggregate prognosis;
  std::vector<Case> cases;
};

Concatenated Concatenate(const std::vector<SiteData>& sites, EvalSplit split);

struct CsvRow {
  std::string set, set_type, split, head, metric, class_name;
  std::string estimate, lower, upper, n, note, unit;
};

// (set, head, metric, class) -> row.
using CsvTable =
    std::map<std::tuple<std::string, std::string, std::string, std::string>,
             CsvRow>;

// The CSV's rows by key, each checked for its run and round.
CsvTable ParseCsv(const std::string& csv, const std::string& run_id, int round);

// A CSV value: "NA" is NaN.
double Parse(const std::string& text);

// Equal as written: the CSV keeps the shortest text that reads back as the
// same double, so a recomputation matches to rounding (Brier sums are added
// in another order when pooled).
void ExpectValue(const CsvTable& table, const std::string& set,
                 const std::string& head, const std::string& metric,
                 const std::string& class_name, double expected,
                 const Interval& ci = Interval());

// The field `key` of a JSON object (a failure, and a null value, if absent).
const google::protobuf::Value& Get(const google::protobuf::Struct& object,
                                   const std::string& key);

// The run above as a RunStatus (status_), and the sites' cases (sites_).
class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override;

  std::vector<SiteData> sites_;
  RunStatus status_;
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_COORDINATOR_CLI_REPORT_TEST_FIXTURE_H_
