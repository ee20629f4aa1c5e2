// The CSV of `echofed report` (coordinator/cli/report_csv.h): every row,
// pooled values equal to those of the concatenated cases, and the
// meta-analysis rows.

#include "coordinator/cli/report_csv.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "coordinator/cli/report.h"
#include "gtest/gtest.h"
#include "tests/coordinator/cli/report_test_fixture.h"

namespace echofed {
namespace {

using ::echofed::testing::Case;
using ::echofed::testing::Concatenate;
using ::echofed::testing::Concatenated;
using ::echofed::testing::CsvRow;
using ::echofed::testing::CsvTable;
using ::echofed::testing::ExpectValue;
using ::echofed::testing::kClasses;
using ::echofed::testing::Parse;
using ::echofed::testing::ParseCsv;
using ::echofed::testing::ReportTest;

TEST_F(ReportTest, CsvHasEveryRowAndPooledValuesOfTheConcatenatedCases) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const CsvTable table = ParseCsv(report->csv, "run-test-1", 2);

  const std::vector<std::string> classes = {"NB", "GNB", "GN"};
  const std::vector<std::string> sets = {
      "site-1", "site-2",          "site-3",         "site-5",
      "site-4", "pooled_internal", "pooled_external"};
  const std::vector<std::string> overall = {
      "patients",          "images",        "accuracy",
      "balanced_accuracy", "macro_f1",      "cohen_kappa",
      "macro_auc",         "hand_till_auc", "brier"};
  const std::vector<std::string> per_class = {"sensitivity",
                                              "specificity",
                                              "precision",
                                              "npv",
                                              "f1",
                                              "auc",
                                              "brier",
                                              "calibration_intercept",
                                              "calibration_slope"};
  for (const std::string& set : sets) {
    for (const std::string& metric : overall) {
      EXPECT_EQ(table.count({set, "SUBTYPE", metric, ""}), 1u)
          << set << " " << metric;
    }
    for (const std::string& metric : per_class) {
      for (const std::string& name : classes) {
        EXPECT_EQ(table.count({set, "SUBTYPE", metric, name}), 1u)
            << set << " " << metric << " " << name;
      }
    }
    EXPECT_EQ(table.count({set, "HIGH_RISK", "auc", "positive"}), 1u) << set;
    EXPECT_EQ(table.count({set, "PROGNOSIS", "c_index", ""}), 1u) << set;
  }
  EXPECT_EQ(table.at({"site-1", "SUBTYPE", "accuracy", ""}).set_type, "site");
  EXPECT_EQ(table.at({"site-4", "SUBTYPE", "accuracy", ""}).split, "external");
  EXPECT_EQ(table.at({"pooled_internal", "SUBTYPE", "accuracy", ""}).set_type,
            "pooled");

  // The suppressed site: every value NA, with the reason.
  const CsvRow& suppressed = table.at({"site-5", "SUBTYPE", "accuracy", ""});
  EXPECT_EQ(suppressed.estimate, "NA");
  EXPECT_EQ(suppressed.n, "NA");
  EXPECT_EQ(suppressed.note, "suppressed (< min cell count 5)");
  EXPECT_EQ(table.at({"site-5", "PROGNOSIS", "c_index", ""}).note,
            "suppressed (< min cell count 5)");
  EXPECT_NE(table.at({"pooled_internal", "SUBTYPE", "patients", ""})
                .note.find("suppressed, not pooled: site-5"),
            std::string::npos);
  // The class absent at site-3.
  const CsvRow& absent = table.at({"site-3", "SUBTYPE", "sensitivity", "GN"});
  EXPECT_EQ(absent.estimate, "NA");
  EXPECT_EQ(absent.note, "no cases of the class");

  for (EvalSplit split : {INTERNAL_VALIDATION, EXTERNAL_VALIDATION}) {
    const std::string set =
        split == INTERNAL_VALIDATION ? "pooled_internal" : "pooled_external";
    const Concatenated all = Concatenate(sites_, split);
    const MetricsSummary expected = Summarize(all.subtype);
    ExpectValue(table, set, "SUBTYPE", "images", "",
                static_cast<double>(all.cases.size()));
    ExpectValue(table, set, "SUBTYPE", "accuracy", "", expected.accuracy,
                expected.accuracy_ci);
    ExpectValue(table, set, "SUBTYPE", "balanced_accuracy", "",
                expected.balanced_accuracy);
    ExpectValue(table, set, "SUBTYPE", "macro_f1", "", expected.macro.f1);
    ExpectValue(table, set, "SUBTYPE", "cohen_kappa", "", expected.cohen_kappa);
    ExpectValue(table, set, "SUBTYPE", "macro_auc", "", expected.macro_auc,
                expected.macro_auc_ci);
    ExpectValue(table, set, "SUBTYPE", "hand_till_auc", "",
                expected.hand_till_auc);
    ExpectValue(table, set, "SUBTYPE", "brier", "", expected.brier);
    for (int c = 0; c < kClasses; ++c) {
      const ClassMetrics& m = expected.classes[c];
      ExpectValue(table, set, "SUBTYPE", "sensitivity", classes[c],
                  m.sensitivity, m.sensitivity_ci);
      ExpectValue(table, set, "SUBTYPE", "specificity", classes[c],
                  m.specificity, m.specificity_ci);
      ExpectValue(table, set, "SUBTYPE", "precision", classes[c], m.precision,
                  m.precision_ci);
      ExpectValue(table, set, "SUBTYPE", "npv", classes[c], m.npv, m.npv_ci);
      ExpectValue(table, set, "SUBTYPE", "f1", classes[c], m.f1);
      ExpectValue(table, set, "SUBTYPE", "auc", classes[c], m.auc, m.auc_ci);
      ExpectValue(table, set, "SUBTYPE", "brier", classes[c], m.brier);
      ExpectValue(table, set, "SUBTYPE", "calibration_intercept", classes[c],
                  m.calibration_intercept);
      ExpectValue(table, set, "SUBTYPE", "calibration_slope", classes[c],
                  m.calibration_slope);
      EXPECT_EQ(table.at({set, "SUBTYPE", "sensitivity", classes[c]}).n,
                absl::StrCat(m.support));
    }
    const ClassMetrics positive = Summarize(all.high_risk).classes[1];
    ExpectValue(table, set, "HIGH_RISK", "auc", "positive", positive.auc,
                positive.auc_ci);
    const ConcordanceIndex c_index = CIndex(all.prognosis);
    ExpectValue(table, set, "PROGNOSIS", "c_index", "", c_index.c_index,
                c_index.ci);

    // And against the raw cases, without the library: accuracy exactly.
    int correct = 0;
    for (const Case& c : all.cases) {
      const int predicted = static_cast<int>(
          std::max_element(c.probabilities.begin(), c.probabilities.end()) -
          c.probabilities.begin());
      correct += predicted == c.truth;
    }
    EXPECT_DOUBLE_EQ(Parse(table.at({set, "SUBTYPE", "accuracy", ""}).estimate),
                     static_cast<double>(correct) / all.cases.size());
    EXPECT_EQ(table.at({set, "SUBTYPE", "accuracy", ""}).n,
              absl::StrCat(all.cases.size()));
  }

  // Meta-analysis rows: internal sites (3 + a suppressed one) and all sites;
  // one external site gives no meta_external.
  std::vector<SiteAggregate> internal;
  const RoundRecord& round = status_.rounds(2);
  for (const SiteEvaluation& evaluation : round.evaluations()) {
    if (evaluation.aggregate().split() == INTERNAL_VALIDATION) {
      internal.push_back({evaluation.site(), &evaluation.aggregate()});
    }
  }
  for (int c = 0; c < kClasses; ++c) {
    absl::StatusOr<PooledSiteMetric> auc = MetaAnalyzeAuc(internal, c);
    ASSERT_TRUE(auc.ok()) << auc.status();
    ExpectValue(table, "meta_internal", "SUBTYPE", "auc_dl", classes[c],
                auc->estimate, auc->ci);
    ExpectValue(table, "meta_internal", "SUBTYPE", "auc_tau2", classes[c],
                auc->analysis.tau2);
    ExpectValue(table, "meta_internal", "SUBTYPE", "auc_i2_percent", classes[c],
                auc->analysis.i2);
    for (const char* metric : {"sensitivity_dl", "specificity_dl",
                               "sensitivity_i2_percent", "specificity_tau2"}) {
      EXPECT_EQ(table.count({"meta_internal", "SUBTYPE", metric, classes[c]}),
                1u)
          << metric;
      EXPECT_EQ(table.count({"meta_all", "SUBTYPE", metric, classes[c]}), 1u)
          << metric;
    }
    EXPECT_EQ(table.count({"meta_external", "SUBTYPE", "auc_dl", classes[c]}),
              0u);
  }
  EXPECT_NE(table.at({"meta_internal", "SUBTYPE", "auc_dl", "NB"})
                .note.find("site-5: suppressed"),
            std::string::npos);
  EXPECT_EQ(table.at({"meta_all", "SUBTYPE", "auc_dl", "NB"}).split, "all");
  EXPECT_EQ(table.count({"meta_internal", "HIGH_RISK", "auc_dl", "positive"}),
            1u);
}

}  // namespace
}  // namespace echofed
