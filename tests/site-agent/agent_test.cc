// The agent's task handling against a coordinator in memory
// (fake_coordinator_client.h): real local data (the synthetic cohort on
// disk), real LibTorch training, no sockets. The same agent over gRPC and
// mutual TLS is exercised by the integration and end-to-end tests.

#include "site-agent/agent.h"

#include <memory>
#include <set>

#include "gtest/gtest.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/synthetic_cohort.h"
#include "tests/site-agent/fake_coordinator_client.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::FakeCoordinatorClient;
using ::echofed::testing::FakeCoordinatorState;
using ::echofed::testing::MakePlan;
using ::echofed::testing::TempDir;

// Patients at a step of the released patient flow (-1: no such step).
int64_t FlowStep(const PatientFlow& flow, const std::string& step) {
  for (const FlowCount& count : flow.steps()) {
    if (count.step() == step) return count.patients();
  }
  return -1;
}

class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SyntheticCohortOptions cohort;
    cohort.out_dir = dir_.path();
    cohort.sites = 1;
    cohort.patients_per_site = 24;
    cohort.image_size = 64;
    ASSERT_TRUE(WriteSyntheticCohort(cohort).ok());
    plan_ = MakePlan({"site-1"}, {}, /*rounds=*/2);
    plan_.set_model("small_cnn");
    plan_.set_image_size(32);
    plan_.set_batch_size(8);
    plan_.set_local_epochs(1);
    plan_.set_learning_rate(1e-3);
    plan_.set_train_fraction(0.7);
    plan_.set_seed(3);
  }

  Task MakeTask(Task::Kind kind, int round,
                Plan::Role role = Plan::TRAIN) const {
    Task task;
    task.set_kind(kind);
    task.set_run_id(state_.run_id);
    task.set_round(round);
    *task.mutable_plan() = plan_;
    task.set_role(role);
    return task;
  }

  // A task that names the digest of the global model it is about (TRAIN:
  // round - 1; EVALUATE: round), as the coordinator announces it.
  void Then(Task::Kind kind, int round, Plan::Role role = Plan::TRAIN) {
    Task task = MakeTask(kind, round, role);
    const int model_round = kind == Task::TRAIN ? round - 1 : round;
    state_.script.push_back(
        [task, model_round](const FakeCoordinatorState& state) mutable {
          task.set_model_digest(state.DigestOf(model_round));
          return task;
        });
  }

  // A fresh model of the plan, as a training site would have initialised.
  TensorBundle PlanModel() const {
    ModelOptions options;
    options.name = plan_.model();
    options.num_classes = plan_.class_names_size();
    options.clinical_features = static_cast<int>(ClinicalFeatureNames().size());
    absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> model =
        CreateClassifier(options);
    EXPECT_TRUE(model.ok()) << model.status();
    absl::StatusOr<TensorBundle> state = ExportState(**model, plan_.model());
    EXPECT_TRUE(state.ok()) << state.status();
    return *state;
  }

  AgentOptions Options() const {
    AgentOptions options;
    options.data_dir = dir_.path() + "/site-1";
    options.device = "cpu";
    options.exit_after_run = true;
    options.first_backoff = absl::Milliseconds(1);
    options.max_backoff = absl::Milliseconds(5);
    options.long_poll_seconds = 0;
    // Every class of the small internal set reported, none withheld.
    options.min_cell_count = 1;
    return options;
  }

  absl::Status RunAgent(AgentOptions options) {
    Agent agent(options, std::make_unique<FakeCoordinatorClient>(&state_));
    return agent.Run();
  }
  absl::Status RunAgent() { return RunAgent(Options()); }

  TempDir dir_;
  Plan plan_;
  FakeCoordinatorState state_;
};

TEST_F(AgentTest, InitialisesTrainsAndEvaluatesOneRun) {
  Then(Task::INITIALIZE, 0);
  Then(Task::TRAIN, 1);
  Then(Task::EVALUATE, 1);
  ASSERT_TRUE(RunAgent().ok());

  EXPECT_EQ(state_.joins, 1);
  ASSERT_EQ(state_.AcceptedUploads(0).size(), 1u);
  ASSERT_EQ(state_.AcceptedUploads(1).size(), 1u);
  const FakeCoordinatorState::Upload& update = *state_.AcceptedUploads(1)[0];
  // The update was trained from the initial model the site uploaded.
  ASSERT_FALSE(state_.downloads.empty());
  EXPECT_EQ(state_.downloads[0].round(), 0);
  EXPECT_GT(update.header.num_samples(), 0);
  EXPECT_GT(update.header.mean_train_loss(), 0);
  EXPECT_NE(ModelDigest(update.model.manifest), state_.DigestOf(0));
  EXPECT_EQ(update.model.manifest.model_name(), "small_cnn");

  // Evaluation of the global model of round 1 on the internal set: counts
  // only, the 30% of patients the site did not train on.
  ASSERT_EQ(state_.reports.size(), 1u);
  const EvaluationReport& report = state_.reports[0];
  EXPECT_EQ(report.round(), 1);
  EXPECT_EQ(report.aggregate().split(), INTERNAL_VALIDATION);
  EXPECT_GT(report.aggregate().num_images(), 0);
  EXPECT_GT(FlowStep(report.flow(), "internal validation"), 0);
  EXPECT_EQ(FlowStep(report.flow(), "training") +
                FlowStep(report.flow(), "internal validation"),
            FlowStep(report.flow(), "included"));
  EXPECT_GT(FlowStep(report.flow(), "training"),
            FlowStep(report.flow(), "internal validation"));
}

TEST_F(AgentTest, RepeatedTrainTaskSendsTheSameUpdateAgain) {
  Then(Task::INITIALIZE, 0);
  Then(Task::TRAIN, 1);
  Then(Task::TRAIN, 1);
  ASSERT_TRUE(RunAgent().ok());

  std::vector<const FakeCoordinatorState::Upload*> updates =
      state_.AcceptedUploads(1);
  ASSERT_EQ(updates.size(), 2u);
  EXPECT_EQ(updates[0]->header.upload_id(), updates[1]->header.upload_id());
  EXPECT_EQ(ModelDigest(updates[0]->model.manifest),
            ModelDigest(updates[1]->model.manifest));
  // Trained once: the second task did not even download the model.
  EXPECT_EQ(state_.downloads.size(), 1u);
}

TEST_F(AgentTest, ExternalValidationSiteEvaluatesItsWholeCohort) {
  state_.models[1] = PlanModel();
  Then(Task::EVALUATE, 1, Plan::EXTERNAL_VALIDATION);
  ASSERT_TRUE(RunAgent().ok());

  EXPECT_TRUE(state_.uploads.empty());
  ASSERT_EQ(state_.reports.size(), 1u);
  const EvaluationReport& report = state_.reports[0];
  EXPECT_EQ(report.aggregate().split(), EXTERNAL_VALIDATION);
  EXPECT_GT(report.aggregate().num_patients(), 0);
  EXPECT_EQ(report.aggregate().num_patients(),
            FlowStep(report.flow(), "included"));
  EXPECT_EQ(FlowStep(report.flow(), "training"), -1);
}

TEST_F(AgentTest, RefusedCertificateEndsTheAgentAtOnce) {
  state_.failures["Join"].push_back(
      absl::UnauthenticatedError("certificate revoked"));
  Then(Task::INITIALIZE, 0);
  absl::Status status = RunAgent();
  EXPECT_TRUE(absl::IsUnauthenticated(status)) << status;
  EXPECT_EQ(state_.joins, 1);
  EXPECT_EQ(state_.next_task_calls, 0);
}

TEST_F(AgentTest, CoordinatorDownIsRetriedAndTheRunGoesOn) {
  state_.failures["Join"].push_back(absl::UnavailableError("connect failed"));
  state_.failures["NextTask"].push_back(absl::UnavailableError("reset"));
  Then(Task::INITIALIZE, 0);
  ASSERT_TRUE(RunAgent().ok());
  // Joins again after losing the coordinator: it may have restarted.
  EXPECT_EQ(state_.joins, 3);
  EXPECT_EQ(state_.AcceptedUploads(0).size(), 1u);
}

TEST_F(AgentTest, FailedUploadIsRetriedUnderTheSameUploadId) {
  state_.failures["UploadUpdate"].push_back(
      absl::UnavailableError("stream reset"));
  Then(Task::INITIALIZE, 0);
  ASSERT_TRUE(RunAgent().ok());
  ASSERT_EQ(state_.uploads.size(), 2u);
  EXPECT_FALSE(state_.uploads[0].accepted);
  EXPECT_TRUE(state_.uploads[1].accepted);
  EXPECT_EQ(state_.uploads[0].header.upload_id(),
            state_.uploads[1].header.upload_id());
}

TEST_F(AgentTest, ModelNotMatchingTheAnnouncedDigestIsNotTrainedOn) {
  Then(Task::INITIALIZE, 0);
  Task tampered = MakeTask(Task::TRAIN, 1);
  tampered.set_model_digest("not the digest of any model");
  state_.script.push_back(
      [tampered](const FakeCoordinatorState&) { return tampered; });
  ASSERT_TRUE(RunAgent().ok());
  EXPECT_EQ(state_.downloads.size(), 1u);
  EXPECT_TRUE(state_.AcceptedUploads(1).empty());
}

TEST_F(AgentTest, AnotherPlanForTheSameRunIsRefused) {
  Then(Task::INITIALIZE, 0);
  plan_.set_learning_rate(0.5);
  Then(Task::TRAIN, 1);
  ASSERT_TRUE(RunAgent().ok());
  EXPECT_EQ(state_.AcceptedUploads(0).size(), 1u);
  EXPECT_TRUE(state_.downloads.empty());
  EXPECT_TRUE(state_.AcceptedUploads(1).empty());
}

TEST_F(AgentTest, SiteWithAPrivacyBudgetDeclinesAPlanWithoutPrivacy) {
  Then(Task::INITIALIZE, 0);
  AgentOptions options = Options();
  options.max_epsilon = 8;
  ASSERT_TRUE(RunAgent(options).ok());
  EXPECT_TRUE(state_.uploads.empty());
  // The operator sees why in the site's activity.
  ASSERT_FALSE(state_.heartbeats.empty());
  EXPECT_EQ(state_.heartbeats[0].activity(), "declined: plan has no DP");
}

}  // namespace
}  // namespace echofed
