// `echofed report` as a whole (coordinator/cli/report.h): the files it
// writes, the round it reports and what it refuses, no per-case data in any
// output, and differential privacy in every file.

#include "coordinator/cli/report.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/coordinator/cli/report_test_fixture.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::Case;
using ::echofed::testing::CsvRow;
using ::echofed::testing::CsvTable;
using ::echofed::testing::ExpectValue;
using ::echofed::testing::Get;
using ::echofed::testing::Parse;
using ::echofed::testing::ParseCsv;
using ::echofed::testing::ReportTest;
using ::echofed::testing::SiteData;
using ::google::protobuf::Struct;
using ::google::protobuf::Value;

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

}  // namespace
}  // namespace echofed
