#include "coordinator/cli/report.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "common/metrics.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "site-agent/data/csv.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::google::protobuf::ListValue;
using ::google::protobuf::Struct;
using ::google::protobuf::Value;

constexpr int kClasses = 3;

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
                            bool without_last_class = false) {
  std::mt19937 random(seed);
  std::normal_distribution<double> noise(0, 1);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::vector<Case> cases;
  for (int i = 0; i < count; ++i) {
    Case c;
    c.truth = i % (without_last_class ? kClasses - 1 : kClasses);
    std::vector<double> logits(kClasses);
    double total = 0;
    for (int k = 0; k < kClasses; ++k) {
      logits[k] = noise(random) + (k == c.truth ? signal : 0);
      total += std::exp(logits[k]);
    }
    for (int k = 0; k < kClasses; ++k) {
      c.probabilities.push_back(std::exp(logits[k]) / total);
    }
    c.high_risk = uniform(random) < 0.4 ? 1 : 0;
    c.high_risk_probability =
        1 / (1 + std::exp(-(noise(random) + (c.high_risk ? 1.2 : -0.6))));
    c.risk_score = noise(random) + (c.high_risk ? 0.8 : 0);
    c.efs_months = 1 + 60 * uniform(random) * std::exp(-0.5 * c.risk_score);
    c.event = uniform(random) < 0.5;
    cases.push_back(c);
  }
  return cases;
}

struct SiteData {
  std::string name;
  EvalSplit split;
  std::vector<Case> cases;
};

// What a site would send for these cases (its aggregates).
SiteEvaluation Evaluate(const SiteData& site) {
  SiteEvaluation evaluation;
  evaluation.set_site(site.name);
  EvalAggregate* aggregate = evaluation.mutable_aggregate();
  InitAggregate(kClasses, aggregate);
  aggregate->set_split(site.split);
  HeadAggregate* high_risk = evaluation.add_heads();
  high_risk->set_head(Plan::HIGH_RISK);
  InitAggregate(2, high_risk->mutable_binary());
  high_risk->mutable_binary()->set_split(site.split);
  HeadAggregate* prognosis = evaluation.add_heads();
  prognosis->set_head(Plan::PROGNOSIS);
  InitSurvivalAggregate(prognosis->mutable_survival());
  prognosis->mutable_survival()->set_split(site.split);
  for (const Case& c : site.cases) {
    EXPECT_TRUE(AddCase(aggregate, c.truth, c.probabilities).ok());
    EXPECT_TRUE(AddCase(high_risk->mutable_binary(), c.high_risk,
                        {1 - c.high_risk_probability, c.high_risk_probability})
                    .ok());
    EXPECT_TRUE(AddSurvivalCase(prognosis->mutable_survival(), c.efs_months,
                                c.event, c.risk_score)
                    .ok());
  }
  aggregate->set_num_patients(aggregate->num_images());
  high_risk->mutable_binary()->set_num_patients(
      high_risk->binary().num_images());
  return evaluation;
}

// What site-agent/agent.cc sends for a set below the minimum cell count.
SiteEvaluation Suppressed(const std::string& name, EvalSplit split) {
  SiteEvaluation evaluation;
  evaluation.set_site(name);
  EvalAggregate* aggregate = evaluation.mutable_aggregate();
  aggregate->set_split(split);
  aggregate->set_class_count(kClasses);
  aggregate->mutable_confusion()->Resize(kClasses * kClasses, 0);
  aggregate->set_suppressed(true);
  HeadAggregate* high_risk = evaluation.add_heads();
  high_risk->set_head(Plan::HIGH_RISK);
  high_risk->mutable_binary()->set_class_count(2);
  high_risk->mutable_binary()->mutable_confusion()->Resize(4, 0);
  high_risk->mutable_binary()->set_split(split);
  high_risk->mutable_binary()->set_suppressed(true);
  HeadAggregate* prognosis = evaluation.add_heads();
  prognosis->set_head(Plan::PROGNOSIS);
  InitSurvivalAggregate(prognosis->mutable_survival());
  prognosis->mutable_survival()->set_split(split);
  prognosis->mutable_survival()->set_suppressed(true);
  return evaluation;
}

// The aggregates of the concatenated cases, built directly (not by adding
// the sites' reports): what the pooled rows must equal.
struct Concatenated {
  EvalAggregate subtype;
  EvalAggregate high_risk;
  SurvivalAggregate prognosis;
  std::vector<Case> cases;
};

Concatenated Concatenate(const std::vector<SiteData>& sites, EvalSplit split) {
  Concatenated all;
  InitAggregate(kClasses, &all.subtype);
  InitAggregate(2, &all.high_risk);
  InitSurvivalAggregate(&all.prognosis);
  for (const SiteData& site : sites) {
    if (site.split != split) continue;
    for (const Case& c : site.cases) {
      EXPECT_TRUE(AddCase(&all.subtype, c.truth, c.probabilities).ok());
      EXPECT_TRUE(
          AddCase(&all.high_risk, c.high_risk,
                  {1 - c.high_risk_probability, c.high_risk_probability})
              .ok());
      EXPECT_TRUE(
          AddSurvivalCase(&all.prognosis, c.efs_months, c.event, c.risk_score)
              .ok());
      all.cases.push_back(c);
    }
  }
  all.subtype.set_num_patients(all.subtype.num_images());
  return all;
}

struct CsvRow {
  std::string set, set_type, split, head, metric, class_name;
  std::string estimate, lower, upper, n, note, unit;
};

// (set, head, metric, class) -> row.
using CsvTable =
    std::map<std::tuple<std::string, std::string, std::string, std::string>,
             CsvRow>;

CsvTable ParseCsv(const std::string& csv, const std::string& run_id,
                  int round) {
  CsvTable table;
  std::vector<std::string> lines = absl::StrSplit(csv, '\n');
  EXPECT_EQ(lines.front(), kReportCsvHeader);
  const size_t columns = SplitCsvLine(lines.front()).size();
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    std::vector<std::string> f = SplitCsvLine(lines[i]);
    EXPECT_EQ(f.size(), columns) << lines[i];
    if (f.size() != columns) continue;
    EXPECT_EQ(f[0], run_id);
    EXPECT_EQ(f[1], absl::StrCat(round));
    CsvRow row{f[2], f[3], f[4],  f[5],  f[6],  f[7],
               f[8], f[9], f[10], f[11], f[12], f[13]};
    auto key = std::make_tuple(row.set, row.head, row.metric, row.class_name);
    EXPECT_EQ(table.count(key), 0u) << "duplicate row " << lines[i];
    table[key] = row;
  }
  return table;
}

double Parse(const std::string& text) {
  return text == "NA" ? kNaN : std::stod(text);
}

// Equal as written: the CSV keeps the shortest text that reads back as the
// same double, so a recomputation matches to rounding (Brier sums are added
// in another order when pooled).
void ExpectValue(const CsvTable& table, const std::string& set,
                 const std::string& head, const std::string& metric,
                 const std::string& class_name, double expected,
                 const Interval& ci = Interval()) {
  auto it = table.find({set, head, metric, class_name});
  ASSERT_NE(it, table.end())
      << set << " " << head << " " << metric << " " << class_name;
  const CsvRow& row = it->second;
  auto near = [&](const std::string& text, double value, const char* what) {
    if (std::isnan(value)) {
      EXPECT_EQ(text, "NA")
          << set << " " << metric << " " << class_name << " " << what;
    } else {
      EXPECT_NEAR(Parse(text), value, 1e-12 * std::max(1.0, std::abs(value)))
          << set << " " << metric << " " << class_name << " " << what;
    }
  };
  near(row.estimate, expected, "estimate");
  near(row.lower, ci.lower, "lower");
  near(row.upper, ci.upper, "upper");
}

const Value& Get(const Struct& object, const std::string& key) {
  static const Value* missing = new Value();
  auto it = object.fields().find(key);
  EXPECT_NE(it, object.fields().end()) << "no key " << key;
  return it == object.fields().end() ? *missing : it->second;
}

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sites_ = {
        {"site-1", INTERNAL_VALIDATION, MakeCases(40, 1.8, 11)},
        {"site-2", INTERNAL_VALIDATION, MakeCases(35, 1.0, 12)},
        // A class absent at one site: its per-class rows are undefined there.
        {"site-3", INTERNAL_VALIDATION, MakeCases(30, 2.5, 13, true)},
        {"site-4", EXTERNAL_VALIDATION, MakeCases(60, 1.4, 14)},
    };
    Plan plan = testing::MakePlan({"site-1", "site-2", "site-3", "site-5"},
                                  {"site-4"}, 2);
    plan.set_name("report test");
    plan.set_min_cell_count(5);
    plan.set_train_fraction(0.7);
    plan.add_heads(Plan::SUBTYPE);
    plan.add_heads(Plan::HIGH_RISK);
    plan.add_heads(Plan::PROGNOSIS);
    status_.set_run_id("run-test-1");
    *status_.mutable_plan() = plan;
    status_.set_state(RunStatus::DONE);
    status_.set_round(2);
    RoundRecord* init = status_.add_rounds();
    init->set_round(0);
    // An earlier evaluated round, on fewer cases.
    RoundRecord* first = status_.add_rounds();
    first->set_round(1);
    for (const SiteData& site : sites_) {
      SiteData fewer = site;
      fewer.cases.resize(10);
      *first->add_evaluations() = Evaluate(fewer);
    }
    RoundRecord* second = status_.add_rounds();
    second->set_round(2);
    second->set_model_digest(std::string(32, '\x5e'));
    for (const SiteData& site : sites_) {
      second->add_contributors(site.name);
      *second->add_evaluations() = Evaluate(site);
    }
    // site-5 has too few patients: it releases nothing.
    *second->add_evaluations() = Suppressed("site-5", INTERNAL_VALIDATION);
    // What the sites declared at join: site-3 joined without counts, site-5
    // never joined.
    auto add_site = [&](const std::string& name, bool joined, int64_t patients,
                        int64_t nb_images, int64_t gn_images) {
      SiteStatus* site = status_.add_sites();
      site->set_site(name);
      site->set_joined(joined);
      if (patients == 0) return;
      DataSummary* data = site->mutable_declared_data();
      data->set_patients(patients);
      data->set_images(nb_images + gn_images);
      (*data->mutable_images_per_label())["NB"] = nb_images;
      (*data->mutable_images_per_label())["GN"] = gn_images;
    };
    add_site("site-1", true, 131, 210, 97);
    add_site("site-2", true, 117, 188, 61);
    add_site("site-3", true, 0, 0, 0);
    add_site("site-4", true, 203, 344, 152);
    add_site("site-5", false, 0, 0, 0);
  }

  std::vector<SiteData> sites_;
  RunStatus status_;
};

TEST_F(ReportTest, WritesTheThreeFiles) {
  testing::TempDir dir;
  absl::StatusOr<ReportPaths> paths =
      WriteReport(status_, ReportOptions(), dir.Join("out"));
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(paths->round, 2);  // the last evaluated round by default
  for (const std::string& path : {paths->json, paths->csv, paths->html}) {
    absl::StatusOr<std::string> content = ReadFileToString(path);
    ASSERT_TRUE(content.ok()) << content.status();
    EXPECT_GT(content->size(), 1000u) << path;
  }
}

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

TEST_F(ReportTest, JsonParsesAndHoldsTheSections) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  Struct root;
  // A real JSON parser (protobuf's, into google.protobuf.Struct); its status
  // type differs between protobuf releases, hence auto.
  const auto parsed =
      google::protobuf::util::JsonStringToMessage(report->json, &root);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString() << "\n"
                           << report->json.substr(0, 2000);
  for (const char* key : {"schema", "run", "round", "sets", "meta_analyses",
                          "suppressed", "patient_flow", "tripod_ai"}) {
    EXPECT_TRUE(root.fields().count(key) == 1) << key;
  }
  EXPECT_EQ(Get(Get(root, "run").struct_value(), "run_id").string_value(),
            "run-test-1");
  EXPECT_EQ(Get(Get(root, "round").struct_value(), "round").number_value(), 2);
  const ListValue& sets = Get(root, "sets").list_value();
  ASSERT_EQ(sets.values_size(), 7);  // 5 sites, 2 pools
  const MetricsSummary expected =
      Summarize(Concatenate(sites_, INTERNAL_VALIDATION).subtype);
  bool saw_pool = false;
  for (const Value& value : sets.values()) {
    const Struct& set = value.struct_value();
    const std::string name = Get(set, "set").string_value();
    const bool is_site = Get(set, "set_type").string_value() == "site";
    if (name == "site-5") {
      EXPECT_TRUE(Get(set, "suppressed").bool_value());
      EXPECT_EQ(Get(set, "subtype").kind_case(), Value::kNullValue);
      continue;
    }
    const Struct& subtype = Get(set, "subtype").struct_value();
    for (const Value& c : Get(subtype, "classes").list_value().values()) {
      // Sites get no thresholds and no decision curves (see report.h).
      EXPECT_EQ(c.struct_value().fields().count("roc_fpr_tpr_threshold") == 1,
                !is_site)
          << name;
      EXPECT_EQ(c.struct_value().fields().count(
                    "decision_curve_threshold_net_benefit_treat_all") == 1,
                !is_site)
          << name;
    }
    if (name == "pooled_internal") {
      saw_pool = true;
      EXPECT_DOUBLE_EQ(Get(Get(subtype, "accuracy").struct_value(), "estimate")
                           .number_value(),
                       expected.accuracy);
      EXPECT_EQ(
          Get(set, "suppressed_sites").list_value().values(0).string_value(),
          "site-5");
    }
  }
  EXPECT_TRUE(saw_pool);
  const ListValue& suppressed = Get(root, "suppressed").list_value();
  ASSERT_EQ(suppressed.values_size(), 3);  // subtype and two heads of site-5
  EXPECT_EQ(Get(suppressed.values(0).struct_value(), "status").string_value(),
            "suppressed (< min cell count 5)");
  const Struct& flow = Get(root, "patient_flow").struct_value();
  // No site of this fixture sent its flow (as agents before it did not).
  EXPECT_FALSE(Get(flow, "available_from_federation").bool_value());
  const ListValue& declared = Get(flow, "declared_at_join").list_value();
  ASSERT_EQ(declared.values_size(), 5);  // every plan site, in plan order
  std::map<std::string, const Struct*> by_site;
  for (const Value& value : declared.values()) {
    by_site[Get(value.struct_value(), "site").string_value()] =
        &value.struct_value();
  }
  const Struct& site1 = *by_site.at("site-1");
  EXPECT_TRUE(Get(site1, "declared").bool_value());
  EXPECT_EQ(Get(site1, "role").string_value(), "training");
  EXPECT_EQ(Get(site1, "patients").number_value(), 131);
  EXPECT_EQ(Get(site1, "images").number_value(), 307);
  const Struct& labels = Get(site1, "images_per_label").struct_value();
  EXPECT_EQ(Get(labels, "NB").number_value(), 210);
  EXPECT_EQ(Get(labels, "GN").number_value(), 97);
  EXPECT_EQ(Get(*by_site.at("site-4"), "role").string_value(),
            "external_validation");
  EXPECT_EQ(Get(*by_site.at("site-4"), "patients").number_value(), 203);
  for (const char* name : {"site-3", "site-5"}) {
    const Struct& site = *by_site.at(name);
    EXPECT_FALSE(Get(site, "declared").bool_value()) << name;
    EXPECT_EQ(site.fields().count("patients"), 0u) << name;
    EXPECT_EQ(Get(site, "status").string_value().rfind("not available", 0), 0u)
        << name;
  }
  EXPECT_GT(Get(root, "tripod_ai").list_value().values_size(), 20);
}

// A differential privacy run: each site's epsilon as of the reported round
// (not a later one), the plan's settings and the whole run's epsilon, in
// the JSON, the CSV and the HTML.
TEST_F(ReportTest, DifferentialPrivacyInEveryFile) {
  DifferentialPrivacy* dp =
      status_.mutable_plan()->mutable_differential_privacy();
  dp->set_clip_norm(0.5);
  dp->set_noise_multiplier(2);
  dp->set_delta(1e-5);
  for (int round = 1; round <= 2; ++round) {
    for (const char* site : {"site-1", "site-2"}) {
      SitePrivacy* privacy = status_.mutable_rounds(round)->add_privacy();
      privacy->set_site(site);
      privacy->set_epsilon(SiteLevelEpsilon(2, round, 1e-5)->epsilon);
      privacy->set_delta(1e-5);
    }
  }
  const double projected = SiteLevelEpsilon(2, 2, 1e-5)->epsilon;
  const double after_one = SiteLevelEpsilon(2, 1, 1e-5)->epsilon;
  for (int round : {1, 2}) {
    ReportOptions options;
    options.round = round;
    absl::StatusOr<ReportDocuments> report = RenderReport(status_, options);
    ASSERT_TRUE(report.ok()) << report.status();
    const double spent = round == 1 ? after_one : projected;

    Struct root;
    ASSERT_TRUE(
        google::protobuf::util::JsonStringToMessage(report->json, &root).ok());
    const Struct& privacy =
        Get(Get(root, "run").struct_value(), "differential_privacy")
            .struct_value();
    EXPECT_EQ(Get(privacy, "clip_norm").number_value(), 0.5);
    EXPECT_EQ(Get(privacy, "noise_multiplier").number_value(), 2);
    EXPECT_EQ(Get(privacy, "delta").number_value(), 1e-5);
    EXPECT_DOUBLE_EQ(Get(privacy, "projected_run_epsilon").number_value(),
                     projected);
    const auto& sites = Get(privacy, "sites").list_value().values();
    ASSERT_EQ(sites.size(), 2);
    EXPECT_EQ(Get(sites[1].struct_value(), "site").string_value(), "site-2");
    EXPECT_DOUBLE_EQ(Get(sites[1].struct_value(), "epsilon").number_value(),
                     spent);
    EXPECT_EQ(Get(sites[1].struct_value(), "as_of_round").number_value(),
              round);

    const CsvTable table = ParseCsv(report->csv, "run-test-1", round);
    ExpectValue(table, "site-1", "", "privacy_epsilon", "", spent);
    ExpectValue(table, "plan", "", "privacy_epsilon_projected", "", projected);
    const CsvRow& row = table.at({"site-2", "", "privacy_epsilon", ""});
    EXPECT_EQ(row.set_type, "site");
    EXPECT_EQ(row.note, absl::StrCat("delta 1e-05; as of round ", round,
                                     "; clip_norm 0.5; noise_multiplier 2"));

    EXPECT_NE(report->html.find(absl::StrFormat(
                  "site-2: &epsilon; = %.4g at &delta; = 1e-05 (as of round "
                  "%d)",
                  spent, round)),
              std::string::npos);
    EXPECT_NE(report->html.find(absl::StrFormat(
                  "clip norm 0.5, noise multiplier 2; whole run (2 rounds): "
                  "&epsilon; = %.3g at &delta; = 1e-05",
                  projected)),
              std::string::npos)
        << report->html.substr(report->html.find("differential"), 400);
  }
  // Without differential privacy: nothing of it.
  status_.mutable_plan()->clear_differential_privacy();
  absl::StatusOr<ReportDocuments> plain =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->csv.find("privacy"), std::string::npos);
  EXPECT_EQ(plain->json.find("differential_privacy"), std::string::npos);
}

TEST_F(ReportTest, HtmlIsSelfContainedWithPlotsAndSuppressedSites) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const std::string& html = report->html;
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (size_t at = html.find(needle); at != std::string::npos;
         at = html.find(needle, at + 1)) {
      ++n;
    }
    return n;
  };
  // ROC: 2 pools + 4 sites; calibration: 2 pools; forest: 3 classes + the
  // binary head.
  EXPECT_EQ(count("<svg "), 12);
  EXPECT_EQ(count("<svg "), count("</svg>"));
  EXPECT_EQ(count("aria-label=\"ROC curves, "), 6);
  EXPECT_EQ(count("aria-label=\"Calibration, "), 2);
  EXPECT_EQ(count("aria-label=\"Forest plot of AUC, "), 4);
  EXPECT_GE(count("suppressed (&lt; min cell count 5)"), 3);
  EXPECT_NE(html.find("<table class=\"confusion\">"), std::string::npos);
  EXPECT_NE(html.find("id=\"tripod\""), std::string::npos);
  EXPECT_NE(html.find("not available from the federation"), std::string::npos);
  EXPECT_NE(html.find("site-local"), std::string::npos);
  // The counts the sites declared at join, labelled as such; the missing
  // ones said plainly.
  EXPECT_NE(html.find("Declared by each site at join"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>site-1</td><td>training</td><td>131</td>"
                      "<td>307</td><td>GN: 97, NB: 210</td></tr>"),
            std::string::npos);
  EXPECT_NE(html.find("<tr><td>site-4</td><td>external validation</td>"
                      "<td>203</td><td>496</td><td>GN: 152, NB: 344</td></tr>"),
            std::string::npos);
  EXPECT_NE(html.find("the site declared no counts when it joined"),
            std::string::npos);
  EXPECT_NE(html.find("the site has not joined since the coordinator started"),
            std::string::npos);
  EXPECT_NE(html.find("I²"), std::string::npos);
  // Self-contained: no script, no fetched asset; the only URL is the SVG
  // namespace.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(count("http"), count("http://www.w3.org/2000/svg"));
}

TEST_F(ReportTest, NoPerCaseDataInAnyOutput) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  for (const std::string* document :
       {&report->json, &report->csv, &report->html}) {
    EXPECT_EQ(document->find("score_histogram"), std::string::npos);
    EXPECT_EQ(document->find("time_bin"), std::string::npos);
    for (const SiteData& site : sites_) {
      for (const Case& c : site.cases) {
        // A score or follow-up time to 8 decimals: a metric would match one
        // by chance with probability about 1e-8 per number written.
        for (double value :
             {c.probabilities[0], c.probabilities[1], c.probabilities[2],
              c.high_risk_probability, c.efs_months, c.risk_score}) {
          const std::string text = absl::StrFormat("%.8f", value);
          ASSERT_EQ(document->find(text), std::string::npos)
              << text << " of a case of " << site.name;
        }
      }
    }
  }
}

TEST_F(ReportTest, RoundsAndErrors) {
  ReportOptions options;
  options.round = 1;
  absl::StatusOr<ReportDocuments> first = RenderReport(status_, options);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->round, 1);
  const CsvTable table = ParseCsv(first->csv, "run-test-1", 1);
  EXPECT_EQ(table.at({"pooled_internal", "SUBTYPE", "images", ""}).estimate,
            "30");

  options.round = 0;  // initialisation: nothing evaluated
  EXPECT_EQ(RenderReport(status_, options).status().code(),
            absl::StatusCode::kNotFound);
  options.round = 7;
  EXPECT_EQ(RenderReport(status_, options).status().code(),
            absl::StatusCode::kNotFound);

  RunStatus wrong_classes = status_;
  wrong_classes.mutable_plan()->add_class_names("extra");
  EXPECT_EQ(RenderReport(wrong_classes, ReportOptions()).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Same status, same bytes (no clock unless asked).
  EXPECT_EQ(RenderReport(status_, ReportOptions())->html,
            RenderReport(status_, ReportOptions())->html);
  ReportOptions dated;
  dated.generated_unix_ms = 1790000000000;
  EXPECT_NE(RenderReport(status_, dated)->html.find("generated 2026-"),
            std::string::npos);
}

// The audit log head the coordinator kept with the reported round, in
// every file, so that whoever holds a report can find a log cut at the end
// (`echofed audit verify --expect-records N --expect-head HASH`).
TEST_F(ReportTest, AuditLogHeadOfTheRoundInEveryFile) {
  const std::string hash =
      "3f2a9c0e11d4b5a6978867564534231201f0e0d0c0b0a0908070605040302010";
  AuditLogHead* head = status_.mutable_rounds(2)->mutable_audit_head();
  head->set_records(1234567);
  head->set_hash(hash);
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();

  Struct root;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(report->json, &root).ok());
  const Struct& audit =
      Get(Get(root, "round").struct_value(), "audit_log").struct_value();
  EXPECT_EQ(Get(audit, "records").number_value(), 1234567);
  EXPECT_EQ(Get(audit, "head_sha256").string_value(), hash);

  const CsvTable table = ParseCsv(report->csv, "run-test-1", 2);
  const CsvRow& row = table.at({"audit_log", "", "audit_log_records", ""});
  EXPECT_EQ(row.set_type, "round");
  EXPECT_EQ(Parse(row.estimate), 1234567);
  EXPECT_EQ(row.note,
            absl::StrCat("head ", hash,
                         " (record 1234567, the log's last when round 2 was "
                         "committed)"));

  EXPECT_NE(report->html.find(absl::StrCat(
                "<tr><th>audit log at commit</th><td>1234567 records, head "
                "<code>",
                hash, "</code>")),
            std::string::npos);
  EXPECT_NE(report->html.find(absl::StrCat(
                "echofed audit verify audit.log --expect-records 1234567 "
                "--expect-head ",
                hash)),
            std::string::npos);

  // Another round of the same run: its own head (here none).
  ReportOptions first;
  first.round = 1;
  report = RenderReport(status_, first);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->json.find(hash), std::string::npos);
  EXPECT_EQ(report->csv.find(hash), std::string::npos);
  EXPECT_EQ(report->html.find(hash), std::string::npos);
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(report->json, &root).ok());
  EXPECT_EQ(Get(Get(root, "round").struct_value(), "audit_log").kind_case(),
            Value::kNullValue);
  const CsvTable first_table = ParseCsv(report->csv, "run-test-1", 1);
  const CsvRow& missing =
      first_table.at({"audit_log", "", "audit_log_records", ""});
  EXPECT_EQ(missing.estimate, "NA");
  EXPECT_EQ(missing.note, "not recorded by the coordinator");
  EXPECT_NE(report->html.find("<tr><th>audit log at commit</th><td>not "
                              "recorded"),
            std::string::npos);
}

// The patients of a site: its cases of each class two by two (the last
// alone when a class has an odd count), each patient one case scored with
// the mean of its images' probabilities, as site-agent/training/trainer.cc
// does.
std::vector<Case> Patients(const std::vector<Case>& images) {
  std::vector<Case> patients;
  std::map<int, std::vector<const Case*>> by_class;
  for (const Case& c : images) by_class[c.truth].push_back(&c);
  for (const auto& [truth, cases] : by_class) {
    for (size_t i = 0; i < cases.size(); i += 2) {
      const size_t end = std::min(cases.size(), i + 2);
      Case patient;
      patient.truth = truth;
      patient.probabilities.assign(kClasses, 0.0);
      for (size_t j = i; j < end; ++j) {
        for (int k = 0; k < kClasses; ++k) {
          patient.probabilities[k] +=
              cases[j]->probabilities[k] / static_cast<double>(end - i);
        }
      }
      patients.push_back(patient);
    }
  }
  return patients;
}

EvalAggregate PatientAggregate(const std::vector<Case>& patients,
                               EvalSplit split) {
  EvalAggregate aggregate;
  InitAggregate(kClasses, &aggregate);
  aggregate.set_split(split);
  for (const Case& c : patients) {
    EXPECT_TRUE(AddCase(&aggregate, c.truth, c.probabilities).ok());
  }
  aggregate.set_num_patients(aggregate.num_images());
  return aggregate;
}

// Agents before patient-level reporting: the report says "not reported"
// wherever patient-level metrics would be, never zeros.
TEST_F(ReportTest, PatientLevelNotReportedWhenNoSiteSentIt) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const CsvTable table = ParseCsv(report->csv, "run-test-1", 2);
  for (const char* set : {"site-1", "site-4", "pooled_internal"}) {
    const CsvRow& row =
        table.at({set, "SUBTYPE", "patient_level_macro_auc", ""});
    EXPECT_EQ(row.estimate, "NA") << set;
    EXPECT_EQ(row.n, "NA") << set;
    EXPECT_EQ(row.note.rfind("not reported", 0), 0u) << set << row.note;
    EXPECT_EQ(row.unit, "patient");
    EXPECT_EQ(table.at({set, "SUBTYPE", "patient_level_patients", ""}).estimate,
              "NA");
    EXPECT_EQ(table.at({set, "SUBTYPE", "macro_auc", ""}).unit, "image");
  }
  EXPECT_EQ(table.at({"site-5", "SUBTYPE", "patient_level_accuracy", ""}).note,
            "suppressed (< min cell count 5)");

  Struct root;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(report->json, &root).ok());
  const Struct& unit =
      Get(Get(root, "run").struct_value(), "unit_of_analysis").struct_value();
  EXPECT_EQ(Get(unit, "subtype").string_value(), "image");
  EXPECT_EQ(Get(unit, "subtype_patient_level").string_value(), "patient");
  EXPECT_FALSE(Get(unit, "patient_level_reported").bool_value());
  for (const Value& value : Get(root, "sets").list_value().values()) {
    const Struct& set = value.struct_value();
    const Struct& patient_level =
        Get(set, "subtype_patient_level").struct_value();
    EXPECT_FALSE(Get(patient_level, "reported").bool_value());
    EXPECT_EQ(Get(patient_level, "summary").kind_case(), Value::kNullValue);
    EXPECT_EQ(Get(set, "subtype_unit_of_analysis").string_value(), "image");
  }

  EXPECT_NE(report->html.find("Patient-level metrics: not reported."),
            std::string::npos);
  EXPECT_EQ(report->html.find("<table class=\"patient-level\">"),
            std::string::npos);
}

// Sites 1, 2 and 4 sent patient-level aggregates, site-3 (an older agent)
// did not, site-5 suppressed both.
class PatientLevelReportTest : public ReportTest {
 protected:
  void SetUp() override {
    ReportTest::SetUp();
    RoundRecord* round = status_.mutable_rounds(2);
    for (SiteEvaluation& evaluation : *round->mutable_evaluations()) {
      const std::string& name = evaluation.site();
      if (name == "site-3") continue;
      if (name == "site-5") {
        *evaluation.mutable_patient_aggregate() = evaluation.aggregate();
        continue;
      }
      for (const SiteData& site : sites_) {
        if (site.name != name) continue;
        const std::vector<Case> patients = Patients(site.cases);
        *evaluation.mutable_patient_aggregate() =
            PatientAggregate(patients, site.split);
        evaluation.mutable_aggregate()->set_num_patients(
            static_cast<int64_t>(patients.size()));
        patients_[name] = patients;
      }
    }
  }

  // The patient-level aggregate of the split's reporting sites' patients
  // concatenated, built directly: what the pooled rows must equal.
  EvalAggregate ConcatenatedPatients(EvalSplit split) {
    std::vector<Case> all;
    for (const SiteData& site : sites_) {
      auto it = patients_.find(site.name);
      if (site.split != split || it == patients_.end()) continue;
      all.insert(all.end(), it->second.begin(), it->second.end());
    }
    return PatientAggregate(all, split);
  }

  std::map<std::string, std::vector<Case>> patients_;
};

TEST_F(PatientLevelReportTest, PooledPatientLevelMetricsInEveryFile) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const std::vector<std::string> classes = {"NB", "GNB", "GN"};

  // CSV: the pooled rows are the metrics of the concatenated patients; the
  // image-level rows are as before.
  const CsvTable table = ParseCsv(report->csv, "run-test-1", 2);
  for (EvalSplit split : {INTERNAL_VALIDATION, EXTERNAL_VALIDATION}) {
    const std::string set =
        split == INTERNAL_VALIDATION ? "pooled_internal" : "pooled_external";
    const EvalAggregate all = ConcatenatedPatients(split);
    const MetricsSummary expected = Summarize(all);
    ASSERT_GT(all.num_patients(), 0);
    ExpectValue(table, set, "SUBTYPE", "patient_level_patients", "",
                static_cast<double>(all.num_patients()));
    ExpectValue(table, set, "SUBTYPE", "patient_level_accuracy", "",
                expected.accuracy, expected.accuracy_ci);
    ExpectValue(table, set, "SUBTYPE", "patient_level_macro_f1", "",
                expected.macro.f1);
    ExpectValue(table, set, "SUBTYPE", "patient_level_macro_auc", "",
                expected.macro_auc, expected.macro_auc_ci);
    ExpectValue(table, set, "SUBTYPE", "patient_level_hand_till_auc", "",
                expected.hand_till_auc);
    for (int c = 0; c < kClasses; ++c) {
      const ClassMetrics& m = expected.classes[c];
      ExpectValue(table, set, "SUBTYPE", "patient_level_sensitivity",
                  classes[c], m.sensitivity, m.sensitivity_ci);
      ExpectValue(table, set, "SUBTYPE", "patient_level_specificity",
                  classes[c], m.specificity, m.specificity_ci);
      ExpectValue(table, set, "SUBTYPE", "patient_level_auc", classes[c], m.auc,
                  m.auc_ci);
      EXPECT_EQ(
          table.at({set, "SUBTYPE", "patient_level_sensitivity", classes[c]}).n,
          absl::StrCat(m.support));
    }
    const CsvRow& auc =
        table.at({set, "SUBTYPE", "patient_level_macro_auc", ""});
    EXPECT_EQ(auc.n, absl::StrCat(all.num_patients()));
    EXPECT_EQ(auc.unit, "patient");
    EXPECT_EQ(table.at({set, "SUBTYPE", "macro_auc", ""}).unit, "image");
    // Patient-level and image-level differ: they are not the same numbers
    // under two names.
    EXPECT_NE(auc.estimate,
              table.at({set, "SUBTYPE", "macro_auc", ""}).estimate);
    const MetricsSummary images = Summarize(Concatenate(sites_, split).subtype);
    ExpectValue(table, set, "SUBTYPE", "macro_auc", "", images.macro_auc,
                images.macro_auc_ci);
  }
  // A site's own, and the site whose agent sent none.
  const MetricsSummary site_1 =
      Summarize(PatientAggregate(patients_.at("site-1"), INTERNAL_VALIDATION));
  ExpectValue(table, "site-1", "SUBTYPE", "patient_level_macro_auc", "",
              site_1.macro_auc, site_1.macro_auc_ci);
  const CsvRow& site_3 =
      table.at({"site-3", "SUBTYPE", "patient_level_macro_auc", ""});
  EXPECT_EQ(site_3.estimate, "NA");
  EXPECT_EQ(site_3.note.rfind("not reported", 0), 0u) << site_3.note;
  EXPECT_NE(table.at({"site-3", "SUBTYPE", "macro_auc", ""}).estimate, "NA");
  EXPECT_EQ(table.at({"site-5", "SUBTYPE", "patient_level_macro_auc", ""}).note,
            "suppressed (< min cell count 5)");
  const std::string& coverage =
      table.at({"pooled_internal", "SUBTYPE", "patient_level_patients", ""})
          .note;
  EXPECT_NE(coverage.find("mean probability over a patient's images"),
            std::string::npos)
      << coverage;
  EXPECT_NE(coverage.find("sites: site-1 site-2; not reported, not pooled: "
                          "site-3; suppressed, not pooled: site-5"),
            std::string::npos)
      << coverage;

  // JSON.
  Struct root;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(report->json, &root).ok());
  EXPECT_TRUE(Get(Get(Get(root, "run").struct_value(), "unit_of_analysis")
                      .struct_value(),
                  "patient_level_reported")
                  .bool_value());
  const MetricsSummary internal =
      Summarize(ConcatenatedPatients(INTERNAL_VALIDATION));
  std::map<std::string, const Struct*> by_set;
  for (const Value& value : Get(root, "sets").list_value().values()) {
    by_set[Get(value.struct_value(), "set").string_value()] =
        &value.struct_value();
  }
  const Struct& pool =
      Get(*by_set.at("pooled_internal"), "subtype_patient_level")
          .struct_value();
  EXPECT_TRUE(Get(pool, "reported").bool_value());
  EXPECT_EQ(Get(pool, "unit_of_analysis").string_value(), "patient");
  EXPECT_EQ(Get(pool, "scoring").string_value(),
            "mean probability over a patient's images");
  const ListValue& contributors = Get(pool, "contributors").list_value();
  ASSERT_EQ(contributors.values_size(), 2);
  EXPECT_EQ(contributors.values(1).string_value(), "site-2");
  EXPECT_EQ(Get(pool, "not_reported_by").list_value().values(0).string_value(),
            "site-3");
  const Struct& summary = Get(pool, "summary").struct_value();
  EXPECT_DOUBLE_EQ(
      Get(Get(summary, "macro_auc").struct_value(), "estimate").number_value(),
      internal.macro_auc);
  EXPECT_DOUBLE_EQ(
      Get(Get(summary, "accuracy").struct_value(), "estimate").number_value(),
      internal.accuracy);
  EXPECT_EQ(Get(summary, "patients").number_value(),
            ConcatenatedPatients(INTERNAL_VALIDATION).num_patients());
  EXPECT_EQ(summary.fields().count("images"), 0u);
  const Struct& site_3_json =
      Get(*by_set.at("site-3"), "subtype_patient_level").struct_value();
  EXPECT_FALSE(Get(site_3_json, "reported").bool_value());
  EXPECT_EQ(Get(site_3_json, "status").string_value().rfind("not reported", 0),
            0u);
  EXPECT_EQ(Get(site_3_json, "summary").kind_case(), Value::kNullValue);
  // The image-level summary is unchanged beside it.
  EXPECT_DOUBLE_EQ(
      Get(Get(Get(*by_set.at("pooled_internal"), "subtype").struct_value(),
              "macro_auc")
              .struct_value(),
          "estimate")
          .number_value(),
      Summarize(Concatenate(sites_, INTERNAL_VALIDATION).subtype).macro_auc);

  // HTML: both units labelled, the pooled patient-level values shown, the
  // site without them said to be not reported.
  const std::string& html = report->html;
  EXPECT_NE(html.find("<h3 id=\"performance-image\">image-level</h3>"),
            std::string::npos);
  EXPECT_NE(html.find("<h3 id=\"performance-patient\">patient-level (mean "
                      "probability over a patient&#39;s images)</h3>"),
            std::string::npos);
  const size_t table_at = html.find("<table class=\"patient-level\">");
  ASSERT_NE(table_at, std::string::npos);
  const std::string patient_table =
      html.substr(table_at, html.find("</table>", table_at) - table_at);
  EXPECT_NE(patient_table.find(absl::StrFormat(
                "%.3f (%.3f–%.3f)", internal.macro_auc,
                internal.macro_auc_ci.lower, internal.macro_auc_ci.upper)),
            std::string::npos)
      << patient_table;
  EXPECT_NE(patient_table.find("not reported: the site sent no patient-level "
                               "aggregate"),
            std::string::npos);
  EXPECT_NE(html.find("<p class=\"na\">Pooled internal validation: "
                      "patient-level pool of sites: site-1 site-2; not "
                      "reported by: site-3.</p>",
                      table_at),
            std::string::npos);
  EXPECT_NE(html.find("<caption>Pooled internal validation, patient-level "
                      "(mean probability over a patient&#39;s images)"
                      "</caption>"),
            std::string::npos);
  EXPECT_EQ(html.find("Patient-level metrics: not reported."),
            std::string::npos);
  // Still no per-case data: a patient's mean scores are not written either.
  for (const auto& [site, patients] : patients_) {
    for (const Case& c : patients) {
      for (double value : c.probabilities) {
        const std::string text = absl::StrFormat("%.8f", value);
        for (const std::string* document :
             {&report->json, &report->csv, &report->html}) {
          ASSERT_EQ(document->find(text), std::string::npos) << site;
        }
      }
    }
  }
}

// A stored patient-level aggregate that does not add up is refused like an
// image-level one.
TEST_F(PatientLevelReportTest, MalformedPatientLevelAggregateIsRefused) {
  RunStatus bad = status_;
  for (SiteEvaluation& evaluation :
       *bad.mutable_rounds(2)->mutable_evaluations()) {
    if (evaluation.site() == "site-2") {
      evaluation.mutable_patient_aggregate()->set_num_images(1);
    }
  }
  absl::StatusOr<ReportDocuments> report = RenderReport(bad, ReportOptions());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(
      report.status().message().find("site site-2, patient-level aggregate"),
      std::string::npos)
      << report.status();
}

// A released flow step (as site-agent/data/cohort.cc's ReleasePatientFlow
// writes them).
void AddStep(PatientFlow* flow, const std::string& name, int64_t patients,
             bool suppressed = false) {
  FlowCount* step = flow->add_steps();
  step->set_step(name);
  if (suppressed) {
    step->set_suppressed(true);
  } else {
    step->set_patients(patients);
  }
}

// The fixture with disclosure control at work: site-2 withheld its GN
// patients (class 2), every site sent its patient flow, and site-1 declared
// GNB as withheld at join.
class DisclosureReportTest : public ReportTest {
 protected:
  void SetUp() override {
    ReportTest::SetUp();
    SiteData& site_2 = sites_[1];
    site_2.cases.erase(
        std::remove_if(site_2.cases.begin(), site_2.cases.end(),
                       [](const Case& c) { return c.truth == 2; }),
        site_2.cases.end());
    RoundRecord* round = status_.mutable_rounds(2);
    for (SiteEvaluation& evaluation : *round->mutable_evaluations()) {
      if (evaluation.site() == "site-2") {
        evaluation = Evaluate(site_2);
        evaluation.mutable_aggregate()->add_withheld_classes(2);
      }
      PatientFlow* flow = evaluation.mutable_flow();
      flow->set_min_cell_count(5);
      AddStep(flow, "screened", 60);
      AddStep(flow, "excluded: older than 18 years", 0, true);
      AddStep(flow, "excluded: severe missing data", 0, true);
      AddStep(flow, "included", 51);
      AddStep(flow, "analysed", evaluation.aggregate().num_patients());
      flow->mutable_refused_manifest_lines()->set_step(
          "manifest lines refused (images)");
      flow->add_notes("no clinical table: labels taken from manifest.csv");
    }
    SiteStatus* site_1 = status_.mutable_sites(0);
    ASSERT_EQ(site_1->site(), "site-1");
    site_1->mutable_declared_data()->set_min_cell_count(5);
    site_1->mutable_declared_data()->add_withheld_labels("GNB");
  }
};

TEST_F(DisclosureReportTest, WithheldClassesFlowAndDeclaredCountsInEveryFile) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();

  // CSV: the class's rows say why they are empty; the pool adds what was
  // released, so it is the pool of the patients left after withholding,
  // and says whose classes it lacks.
  const CsvTable table = ParseCsv(report->csv, "run-test-1", 2);
  const CsvRow& gn = table.at({"site-2", "SUBTYPE", "sensitivity", "GN"});
  EXPECT_EQ(gn.estimate, "NA");
  EXPECT_NE(gn.note.find("class suppressed at this site (< min cell count 5)"),
            std::string::npos)
      << gn.note;
  EXPECT_EQ(table.at({"site-2", "SUBTYPE", "auc", "GN"}).estimate, "NA");
  EXPECT_NE(table.at({"site-2", "SUBTYPE", "auc", "NB"}).estimate, "NA");
  const Concatenated internal = Concatenate(sites_, INTERNAL_VALIDATION);
  const CsvRow& patients =
      table.at({"pooled_internal", "SUBTYPE", "patients", ""});
  EXPECT_EQ(patients.estimate, absl::StrCat(internal.subtype.num_patients()));
  EXPECT_NE(patients.note.find("their patients not pooled: site-2: GN"),
            std::string::npos)
      << patients.note;
  ExpectValue(table, "pooled_internal", "SUBTYPE", "auc", "GN",
              Summarize(internal.subtype).classes[2].auc,
              Summarize(internal.subtype).classes[2].auc_ci);
  // The flow, one row per step; a suppressed count is NA with the reason.
  EXPECT_EQ(table.at({"site-1", "", "patient_flow", "screened"}).estimate,
            "60");
  const CsvRow& older =
      table.at({"site-4", "", "patient_flow", "excluded: older than 18 years"});
  EXPECT_EQ(older.estimate, "NA");
  EXPECT_EQ(older.n, "NA");
  EXPECT_EQ(older.note, "suppressed (< min cell count 5)");
  EXPECT_EQ(table.at({"site-2", "", "patient_flow", "analysed"}).estimate,
            absl::StrCat(sites_[1].cases.size()));

  // JSON.
  Struct json;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(report->json, &json).ok());
  bool site_2_seen = false, pool_seen = false;
  for (const Value& set : Get(json, "sets").list_value().values()) {
    const Struct& object = set.struct_value();
    if (Get(object, "set").string_value() == "site-2") {
      site_2_seen = true;
      const ListValue& withheld = Get(object, "withheld_classes").list_value();
      ASSERT_EQ(withheld.values_size(), 1);
      EXPECT_EQ(withheld.values(0).string_value(), "GN");
    }
    if (Get(object, "set").string_value() == "pooled_internal") {
      pool_seen = true;
      const ListValue& left_out = Get(object, "classes_left_out").list_value();
      ASSERT_EQ(left_out.values_size(), 1);
      EXPECT_EQ(left_out.values(0).string_value(), "site-2: GN");
    }
  }
  EXPECT_TRUE(site_2_seen);
  EXPECT_TRUE(pool_seen);
  const Struct& flow = Get(json, "patient_flow").struct_value();
  EXPECT_TRUE(Get(flow, "available_from_federation").bool_value());
  const ListValue& by_site = Get(flow, "by_site").list_value();
  ASSERT_EQ(by_site.values_size(), 5);
  const Struct& first = by_site.values(0).struct_value();
  EXPECT_EQ(Get(first, "site").string_value(), "site-1");
  const ListValue& steps = Get(first, "steps").list_value();
  ASSERT_EQ(steps.values_size(), 5);
  EXPECT_EQ(Get(steps.values(0).struct_value(), "patients").number_value(), 60);
  EXPECT_TRUE(Get(steps.values(1).struct_value(), "patients").has_null_value());
  EXPECT_TRUE(Get(steps.values(1).struct_value(), "suppressed").bool_value());
  const Struct& declared =
      Get(flow, "declared_at_join").list_value().values(0).struct_value();
  EXPECT_EQ(
      Get(declared, "withheld_labels").list_value().values(0).string_value(),
      "GNB");

  // HTML: the class marked at the site and in the suppressed list, the flow
  // tables, and the declared label held back.
  const std::string& html = report->html;
  EXPECT_NE(html.find("<td>SUBTYPE class GN</td>"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>GN</td><td colspan=\"8\"><span "
                      "class=\"suppressed\">class suppressed at this site"),
            std::string::npos);
  EXPECT_NE(html.find("<caption>site-4 (external validation)</caption>"),
            std::string::npos);
  EXPECT_NE(html.find("<tr><td>screened</td><td>60</td></tr>"),
            std::string::npos);
  EXPECT_NE(html.find("<tr><td class=\"indent\">excluded: older than 18 "
                      "years</td><td><span class=\"suppressed\">&lt; 5 or "
                      "suppressed</span></td></tr>"),
            std::string::npos);
  EXPECT_NE(html.find("GN: 97, GNB: <span class=\"suppressed\">&lt;5 "
                      "patients or suppressed</span>, NB: 210"),
            std::string::npos);
}

// Writes the disclosure fixture's report where ECHOFED_REPORT_OUT_DIR says
// (report_browser_check.sh --from-test renders it in Chromium); a no-op
// otherwise.
TEST_F(DisclosureReportTest, WritesTheReportForTheBrowserCheck) {
  const char* out_dir = std::getenv("ECHOFED_REPORT_OUT_DIR");
  if (out_dir == nullptr) GTEST_SKIP() << "ECHOFED_REPORT_OUT_DIR not set";
  absl::StatusOr<ReportPaths> paths =
      WriteReport(status_, ReportOptions(), out_dir);
  ASSERT_TRUE(paths.ok()) << paths.status();
}

}  // namespace
}  // namespace echofed
