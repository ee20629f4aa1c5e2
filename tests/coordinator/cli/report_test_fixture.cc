#include "tests/coordinator/cli/report_test_fixture.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/metrics.h"
#include "coordinator/cli/report.h"
#include "google/protobuf/struct.pb.h"
#include "gtest/gtest.h"
#include "site-agent/data/csv.h"
#include "tests/testing/fixtures.h"

namespace echofed::testing {

std::vector<Case> MakeCases(int count, double signal, unsigned seed,
                            bool without_last_class) {
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

void ExpectValue(const CsvTable& table, const std::string& set,
                 const std::string& head, const std::string& metric,
                 const std::string& class_name, double expected,
                 const Interval& ci) {
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

const google::protobuf::Value& Get(const google::protobuf::Struct& object,
                                   const std::string& key) {
  static const google::protobuf::Value* missing = new google::protobuf::Value();
  auto it = object.fields().find(key);
  EXPECT_NE(it, object.fields().end()) << "no key " << key;
  return it == object.fields().end() ? *missing : it->second;
}

void ReportTest::SetUp() {
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

}  // namespace echofed::testing
