// The coordinator's lifecycle (coordinator/coordinator.cc): sites joining,
// the tasks they are given, runs started, stopped and restored after a
// restart, and the run status.

#include "coordinator/coordinator.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "gtest/gtest.h"
#include "tests/coordinator/coordinator_test_fixture.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::CoordinatorTest;
using ::echofed::testing::MakeBundle;
using ::echofed::testing::MakePlan;

TEST_F(CoordinatorTest, FullRunCommitsEveryRoundAndEvaluates) {
  Join("a", 100);
  Join("b", 100);
  Join("x", 50);
  std::string run = StartAndInitialize(MakePlan({"a", "b"}, {"x"}, 2));
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);

  for (int round = 1; round <= 2; ++round) {
    absl::StatusOr<Task> task_a = Poll("a");
    ASSERT_TRUE(task_a.ok());
    EXPECT_EQ(task_a->kind(), Task::TRAIN);
    EXPECT_EQ(task_a->round(), round);
    EXPECT_EQ(task_a->model_digest(),
              Status().rounds(round - 1).model_digest());
    // The external site does not train.
    EXPECT_EQ(Poll("x")->kind(), Task::WAIT);
    ASSERT_TRUE(
        Upload("a", run, round, MakeBundle("test_model", 1.0f), 30).ok());
    EXPECT_EQ(Status().state(), RunStatus::TRAINING);
    ASSERT_TRUE(
        Upload("b", run, round, MakeBundle("test_model", 5.0f), 10).ok());

    RunStatus status = Status();
    EXPECT_EQ(status.state(), RunStatus::EVALUATING);
    ASSERT_EQ(status.rounds_size(), round + 1);
    EXPECT_EQ(status.rounds(round).total_weight(), 40);
    // (30 * 1 + 10 * 5) / 40 = 2
    absl::StatusOr<std::unique_ptr<ModelFileReader>> model =
        coordinator_->OpenModel(run, round);
    ASSERT_TRUE(model.ok());
    TensorBundle average = *(*model)->ReadAll();
    float value;
    std::memcpy(&value, average.data[0].data(), 4);
    EXPECT_FLOAT_EQ(value, 2.0f);

    for (const std::string site : {"a", "b", "x"}) {
      absl::StatusOr<Task> evaluate = Poll(site);
      ASSERT_TRUE(evaluate.ok());
      EXPECT_EQ(evaluate->kind(), Task::EVALUATE) << site;
    }
    ASSERT_TRUE(Report("a", run, round, INTERNAL_VALIDATION).ok());
    ASSERT_TRUE(Report("b", run, round, INTERNAL_VALIDATION).ok());
    ASSERT_TRUE(Report("x", run, round, EXTERNAL_VALIDATION).ok());
  }
  RunStatus done = Status();
  EXPECT_EQ(done.state(), RunStatus::DONE);
  EXPECT_EQ(done.rounds(2).evaluations_size(), 3);
  EXPECT_EQ(Poll("a")->kind(), Task::STOP);
  EXPECT_EQ(Poll("a")->kind(), Task::WAIT);  // told once
}

TEST_F(CoordinatorTest, StatusCarriesTheCountsSitesDeclaredAtJoin) {
  JoinRequest request;
  request.set_device("cpu");
  request.mutable_data()->set_patients(40);
  request.mutable_data()->set_images(120);
  (*request.mutable_data()->mutable_images_per_label())["NB"] = 70;
  (*request.mutable_data()->mutable_images_per_label())["GN"] = 50;
  ASSERT_TRUE(coordinator_->Join("a", request).ok());
  JoinRequest without_data;
  without_data.set_device("cpu");
  ASSERT_TRUE(coordinator_->Join("b", without_data).ok());
  ASSERT_TRUE(coordinator_->StartRun(MakePlan({"a", "b", "c"}, {}, 1)).ok());

  const RunStatus status = Status();
  ASSERT_EQ(status.sites_size(), 3);
  const SiteStatus& a = status.sites(0);
  ASSERT_EQ(a.site(), "a");
  ASSERT_TRUE(a.has_declared_data());
  EXPECT_EQ(a.declared_data().patients(), 40);
  EXPECT_EQ(a.declared_data().images(), 120);
  EXPECT_EQ(a.declared_data().images_per_label().at("NB"), 70);
  EXPECT_EQ(a.declared_data().images_per_label().at("GN"), 50);
  EXPECT_EQ(status.sites(1).site(), "b");  // joined, declared nothing
  EXPECT_FALSE(status.sites(1).has_declared_data());
  EXPECT_EQ(status.sites(2).site(), "c");  // never joined
  EXPECT_FALSE(status.sites(2).has_declared_data());

  // A rejoin replaces the declaration.
  request.mutable_data()->set_patients(41);
  ASSERT_TRUE(coordinator_->Join("a", request).ok());
  EXPECT_EQ(Status().sites(0).declared_data().patients(), 41);
}

TEST_F(CoordinatorTest, RestartKeepsCommittedRoundsAndResumes) {
  Join("a");
  Join("b");
  std::string run = StartAndInitialize(MakePlan({"a", "b"}, {}, 3));
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  ASSERT_TRUE(Upload("b", run, 1, MakeBundle("test_model", 3.0f)).ok());
  std::string digest = Status().rounds(1).model_digest();
  // Round 2 was open when the coordinator went away.
  Restart();
  RunStatus status = Status(run);
  EXPECT_EQ(status.state(), RunStatus::WAITING_FOR_SITES);
  ASSERT_EQ(status.rounds_size(), 2);
  EXPECT_EQ(status.rounds(1).model_digest(), digest);
  // Agents that poll before joining again are told to join.
  EXPECT_EQ(Poll("a").status().code(), absl::StatusCode::kFailedPrecondition);
  Join("a");
  Join("b");
  status = Status(run);
  EXPECT_EQ(status.state(), RunStatus::TRAINING);
  EXPECT_EQ(status.round(), 2);
  absl::StatusOr<Task> task = Poll("a");
  ASSERT_TRUE(task.ok());
  EXPECT_EQ(task->kind(), Task::TRAIN);
  EXPECT_EQ(task->model_digest(), digest);
}

TEST_F(CoordinatorTest, LongPollIsAnsweredWhenWorkAppearsOrTimeRunsOut) {
  Join("a");
  std::optional<absl::StatusOr<Task>> answer;
  coordinator_->NextTask("a", absl::Seconds(10),
                         [&](absl::StatusOr<Task> task) { answer = task; });
  EXPECT_FALSE(answer.has_value());
  ASSERT_TRUE(coordinator_->StartRun(MakePlan({"a"}, {}, 1)).ok());
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ((*answer)->kind(), Task::INITIALIZE);

  Join("idle");
  std::optional<absl::StatusOr<Task>> idle;
  coordinator_->NextTask("idle", absl::Seconds(10),
                         [&](absl::StatusOr<Task> task) { idle = task; });
  clock_.Advance(absl::Seconds(5));
  coordinator_->Tick();
  EXPECT_FALSE(idle.has_value());
  clock_.Advance(absl::Seconds(6));
  coordinator_->Tick();
  ASSERT_TRUE(idle.has_value());
  EXPECT_EQ((*idle)->kind(), Task::WAIT);
}

TEST_F(CoordinatorTest, InvalidPlansAndSecondActiveRunAreRefused) {
  Plan no_classes = MakePlan({"a"});
  no_classes.clear_class_names();
  EXPECT_EQ(coordinator_->StartRun(no_classes).status().code(),
            absl::StatusCode::kInvalidArgument);
  Plan too_few = MakePlan({"a"});
  too_few.set_min_sites(2);
  EXPECT_EQ(coordinator_->StartRun(too_few).status().code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(coordinator_->StartRun(MakePlan({"a"})).ok());
  EXPECT_EQ(coordinator_->StartRun(MakePlan({"a"})).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, DifferentialPrivacyPlanValuesAreChecked) {
  auto code_and_field = [&](double clip, double noise, double delta,
                            const std::string& field) {
    Plan plan = MakePlan({"a"});
    DifferentialPrivacy* dp = plan.mutable_differential_privacy();
    dp->set_clip_norm(clip);
    dp->set_noise_multiplier(noise);
    dp->set_delta(delta);
    absl::StatusOr<std::string> run = coordinator_->StartRun(plan);
    EXPECT_EQ(run.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(run.status().message().find("differential_privacy." + field),
              std::string::npos)
        << run.status();
  };
  code_and_field(0, 1, 1e-5, "clip_norm");
  code_and_field(-1, 1, 1e-5, "clip_norm");
  code_and_field(std::nan(""), 1, 1e-5, "clip_norm");
  code_and_field(1, 0, 1e-5, "noise_multiplier");
  code_and_field(1, -2, 1e-5, "noise_multiplier");
  code_and_field(1, 1, 1, "delta");
  code_and_field(1, 1, -1e-5, "delta");
  code_and_field(1, 1, 2, "delta");

  // Present but empty is "on" with nothing set: refused, not silently off.
  Plan empty = MakePlan({"a"});
  empty.mutable_differential_privacy();
  EXPECT_EQ(coordinator_->StartRun(empty).status().code(),
            absl::StatusCode::kInvalidArgument);

  // delta 0 takes the default.
  Plan plan = MakePlan({"a"});
  plan.mutable_differential_privacy()->set_clip_norm(1);
  plan.mutable_differential_privacy()->set_noise_multiplier(1.5);
  absl::StatusOr<std::string> run = coordinator_->StartRun(plan);
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(Status(*run).plan().differential_privacy().delta(), 1e-5);
}

TEST_F(CoordinatorTest, StoppedRunTellsSitesToStop) {
  Join("a");
  absl::StatusOr<std::string> run = coordinator_->StartRun(MakePlan({"a"}));
  ASSERT_TRUE(run.ok());
  ASSERT_TRUE(coordinator_->StopRun(*run).ok());
  EXPECT_EQ(Status().state(), RunStatus::STOPPED);
  EXPECT_EQ(Poll("a")->kind(), Task::STOP);
  EXPECT_EQ(coordinator_->StopRun(*run).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(CoordinatorTest, PollBeforeJoinAsksToJoin) {
  EXPECT_EQ(Poll("stranger").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace echofed
