// The JSON of `echofed report` (coordinator/cli/report_json.h), read back
// with a real JSON parser.

#include "coordinator/cli/report_json.h"

#include <map>
#include <string>

#include "common/metrics.h"
#include "coordinator/cli/report.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/coordinator/cli/report_test_fixture.h"

namespace echofed {
namespace {

using ::echofed::testing::Concatenate;
using ::echofed::testing::Get;
using ::echofed::testing::ReportTest;
using ::google::protobuf::ListValue;
using ::google::protobuf::Struct;
using ::google::protobuf::Value;

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

}  // namespace
}  // namespace echofed
