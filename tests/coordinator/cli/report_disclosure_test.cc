// Disclosure control in `echofed report`: classes a site withheld, the
// patient flow with its suppressed counts, and the labels held back at join;
// and the page of that fixture for report_browser_check.sh.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
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
using ::echofed::testing::Concatenated;
using ::echofed::testing::CsvRow;
using ::echofed::testing::CsvTable;
using ::echofed::testing::Evaluate;
using ::echofed::testing::ExpectValue;
using ::echofed::testing::Get;
using ::echofed::testing::ParseCsv;
using ::echofed::testing::ReportTest;
using ::echofed::testing::SiteData;
using ::google::protobuf::ListValue;
using ::google::protobuf::Struct;
using ::google::protobuf::Value;

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
