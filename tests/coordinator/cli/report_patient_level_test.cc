// Patient-level metrics in `echofed report`: "not reported" when no site
// sent them, pooled like the image-level ones when sites did, and a
// malformed patient-level aggregate refused.

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics.h"
#include "coordinator/cli/report.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/coordinator/cli/report_test_fixture.h"

namespace echofed {
namespace {

using ::echofed::testing::Case;
using ::echofed::testing::Concatenate;
using ::echofed::testing::CsvRow;
using ::echofed::testing::CsvTable;
using ::echofed::testing::ExpectValue;
using ::echofed::testing::Get;
using ::echofed::testing::kClasses;
using ::echofed::testing::ParseCsv;
using ::echofed::testing::ReportTest;
using ::echofed::testing::SiteData;
using ::google::protobuf::ListValue;
using ::google::protobuf::Struct;
using ::google::protobuf::Value;

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

}  // namespace
}  // namespace echofed
