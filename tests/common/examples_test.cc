// The example configuration files in deploy/examples parse and validate, so
// the documentation cannot drift from the code.

#include <cstdlib>

#include "common/files.h"
#include "common/plan_util.h"
#include "gtest/gtest.h"
#include "proto/config.pb.h"
#include "proto/plan.pb.h"

namespace echofed {
namespace {

std::string Example(const std::string& name) {
  const char* source = std::getenv("ECHOFED_SOURCE_DIR");
  return std::string(source != nullptr ? source : ".") + "/deploy/examples/" +
         name;
}

TEST(ExamplesTest, PlanIsValid) {
  Plan plan;
  ASSERT_TRUE(LoadTextProto(Example("plan-subtype.textproto"), &plan).ok());
  ApplyPlanDefaults(&plan);
  absl::Status status = ValidatePlan(plan);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ExamplesTest, ConfigsParse) {
  CoordinatorConfig coordinator;
  EXPECT_TRUE(
      LoadTextProto(Example("coordinator.textproto"), &coordinator).ok());
  AgentConfig agent;
  EXPECT_TRUE(LoadTextProto(Example("agent.textproto"), &agent).ok());
}

// Validated, and provisioned, in tests/coordinator/cli/kits_test.cc.
TEST(ExamplesTest, StudyDescriptionParses) {
  StudyDescription study;
  absl::Status status = LoadTextProto(Example("study.textproto"), &study);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(study.participants_size(), 5);
  EXPECT_FALSE(study.coordinator_hosts().empty());
}

TEST(ExamplesTest, TypoIsAnErrorNamingTheLine) {
  Plan plan;
  absl::Status status =
      ParseTextProto("name: \"x\"\nroundz: 3\n", "plan.textproto", &plan);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("plan.textproto:2:"), std::string::npos)
      << status;
  EXPECT_NE(status.message().find("roundz"), std::string::npos) << status;
}

}  // namespace
}  // namespace echofed
