#include "coordinator/coordinator.h"

#include <sys/resource.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "common/metrics.h"
#include "common/pki.h"
#include "common/secure_aggregation.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::MakeBundle;
using testing::MakePlan;
using testing::TempDir;

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Restart(); }

  void Restart() {
    coordinator_.reset();
    CoordinatorOptions options;
    options.state_dir = dir_.Join("state");
    options.clock = &clock_;
    absl::StatusOr<std::unique_ptr<Coordinator>> created =
        Coordinator::Create(options);
    ASSERT_TRUE(created.ok()) << created.status();
    coordinator_ = std::move(*created);
  }

  void Join(const std::string& site, int64_t images = 100) {
    JoinRequest request;
    request.set_device("cpu");
    request.mutable_data()->set_images(images);
    request.mutable_data()->set_patients(images);
    ASSERT_TRUE(coordinator_->Join(site, request).ok());
  }

  absl::StatusOr<Task> Poll(const std::string& site) {
    std::optional<absl::StatusOr<Task>> result;
    coordinator_->NextTask(site, absl::ZeroDuration(),
                           [&](absl::StatusOr<Task> task) { result = task; });
    EXPECT_TRUE(result.has_value());
    return *result;
  }

  absl::StatusOr<UploadReceipt> Upload(const std::string& site,
                                       const std::string& run_id, int round,
                                       const TensorBundle& bundle,
                                       int64_t samples = 10,
                                       const std::string& upload_id = "",
                                       double privacy_epsilon = 0) {
    UploadHeader header;
    header.set_run_id(run_id);
    header.set_round(round);
    header.set_num_samples(samples);
    header.set_mean_train_loss(0.5);
    if (privacy_epsilon > 0) {
      header.set_privacy_epsilon(privacy_epsilon);
      header.set_privacy_delta(1e-5);
    }
    header.set_upload_id(upload_id.empty() ? site + "-" + std::to_string(round)
                                           : upload_id);
    return Send(site, header, bundle);
  }

  // Streams `bundle` in small slices, as an agent would.
  absl::StatusOr<UploadReceipt> Send(const std::string& site,
                                     const UploadHeader& header,
                                     const TensorBundle& bundle) {
    absl::StatusOr<std::unique_ptr<UploadSession>> session =
        coordinator_->BeginUpload(site, header);
    if (!session.ok()) return session.status();
    BundleSource source(&bundle);
    ModelChunker chunker(&source, 16);
    ModelChunk chunk;
    while (*chunker.Next(&chunk)) {
      if (absl::Status status = (*session)->Accept(chunk); !status.ok()) {
        return status;
      }
    }
    return (*session)->Finish();
  }

  absl::Status Report(const std::string& site, const std::string& run_id,
                      int round, EvalSplit split, int correct = 4,
                      int wrong = 1) {
    EvaluationReport report;
    report.set_run_id(run_id);
    report.set_round(round);
    EvalAggregate* a = report.mutable_aggregate();
    a->set_split(split);
    a->set_class_count(3);
    for (int i = 0; i < 9; ++i) a->add_confusion(0);
    a->set_confusion(0, correct);
    a->set_confusion(1, wrong);
    a->set_num_images(correct + wrong);
    a->set_num_patients(correct + wrong);
    a->set_loss_sum(1.0);
    return coordinator_->ReportEvaluation(site, report);
  }

  // Starts a run and delivers the initial model from whoever is asked.
  std::string StartAndInitialize(const Plan& plan) {
    absl::StatusOr<std::string> run_id = coordinator_->StartRun(plan);
    EXPECT_TRUE(run_id.ok()) << run_id.status();
    for (const Plan::SiteRole& site : plan.sites()) {
      absl::StatusOr<Task> task = Poll(site.site());
      if (task.ok() && task->kind() == Task::INITIALIZE) {
        EXPECT_TRUE(
            Upload(site.site(), *run_id, 0, MakeBundle("test_model", 0.0f))
                .ok());
        return *run_id;
      }
    }
    ADD_FAILURE() << "nobody was asked for the initial model";
    return *run_id;
  }

  RunStatus Status(const std::string& run_id = "") {
    return *coordinator_->GetRunStatus(run_id);
  }

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
};

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

TEST_F(CoordinatorTest, RoundClosesAtDeadlineOnceMinimumIsMet) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  Plan plan = MakePlan({"a", "b", "c"}, {}, 2);
  plan.set_min_sites(2);
  plan.set_round_deadline_seconds(30);
  std::string run = StartAndInitialize(plan);
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  ASSERT_TRUE(Upload("b", run, 1, MakeBundle("test_model", 1.0f)).ok());
  coordinator_->Tick();
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);  // c still has time
  clock_.Advance(absl::Seconds(31));
  coordinator_->Tick();
  RunStatus status = Status();
  EXPECT_EQ(status.state(), RunStatus::EVALUATING);
  EXPECT_EQ(status.rounds(1).contributors_size(), 2);
  // The straggler's update arrives after the round closed.
  absl::StatusOr<UploadReceipt> late =
      Upload("c", run, 1, MakeBundle("test_model", 1.0f));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
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

TEST_F(CoordinatorTest, RoundWaitsBeyondDeadlineBelowMinimum) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  Plan plan = MakePlan({"a", "b", "c"}, {}, 1);
  plan.set_min_sites(2);
  plan.set_round_deadline_seconds(30);
  std::string run = StartAndInitialize(plan);
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  clock_.Advance(absl::Seconds(31));
  coordinator_->Tick();
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
  ASSERT_TRUE(Upload("b", run, 1, MakeBundle("test_model", 1.0f)).ok());
  clock_.Advance(absl::Seconds(31));
  coordinator_->Tick();
  EXPECT_EQ(Status().state(), RunStatus::EVALUATING);
}

TEST_F(CoordinatorTest, BadUpdatesAreRefusedAndTheRoundGoesOn) {
  Join("a");
  Join("b");
  Join("outsider");
  std::string run = StartAndInitialize(MakePlan({"a", "b"}, {}, 1));

  // Wrong shapes.
  EXPECT_EQ(Upload("a", run, 1, MakeBundle("test_model", 1.0f, 3, 11))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Wrong number of tensors.
  EXPECT_EQ(Upload("a", run, 1, MakeBundle("test_model", 1.0f, 2, 10))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Another model.
  EXPECT_EQ(
      Upload("a", run, 1, MakeBundle("other_model", 1.0f)).status().code(),
      absl::StatusCode::kInvalidArgument);
  // NaN.
  TensorBundle poisoned = MakeBundle("test_model", 1.0f);
  float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(poisoned.data[0].data(), &nan, 4);
  ASSERT_TRUE(SealBundle(&poisoned).ok());
  EXPECT_EQ(Upload("a", run, 1, poisoned).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A round that is not open, and a site that is not in the plan.
  EXPECT_EQ(Upload("a", run, 2, MakeBundle("test_model", 1.0f)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Upload("a", "run-other", 1, MakeBundle("test_model", 1.0f))
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Upload("outsider", run, 1, MakeBundle("test_model", 1.0f))
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Status().rounds_size(), 1);

  // Nothing of the above counted: good updates still make the round.
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 2.0f)).ok());
  ASSERT_TRUE(Upload("b", run, 1, MakeBundle("test_model", 4.0f)).ok());
  RunStatus status = Status();
  ASSERT_EQ(status.rounds_size(), 2);
  TensorBundle average = *(*coordinator_->OpenModel(run, 1))->ReadAll();
  float value;
  std::memcpy(&value, average.data[2].data(), 4);
  EXPECT_FLOAT_EQ(value, 3.0f);
  // No spool files are left behind by the refused uploads.
  EXPECT_TRUE(std::filesystem::is_empty(dir_.Join("state/incoming")));
}

TEST_F(CoordinatorTest, NormBoundingRefusesOrLeavesOutFarUpdates) {
  for (const char* site : {"a", "b", "c", "d"}) Join(site);
  Plan plan = MakePlan({"a", "b", "c", "d"}, {}, 1);
  plan.set_max_update_norm(1000);
  plan.set_update_norm_outlier_factor(10);
  std::string run = StartAndInitialize(plan);
  // Far above the absolute bound: refused on arrival, like any bad update.
  absl::StatusOr<UploadReceipt> refused =
      Upload("d", run, 1, MakeBundle("test_model", 1e6f));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("max_update_norm"),
            std::string::npos)
      << refused.status();
  // Within it, but far beyond the others: accepted, then left out.
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f), 10).ok());
  ASSERT_TRUE(Upload("b", run, 1, MakeBundle("test_model", 2.0f), 10).ok());
  ASSERT_TRUE(Upload("c", run, 1, MakeBundle("test_model", 3.0f), 10).ok());
  ASSERT_TRUE(Upload("d", run, 1, MakeBundle("test_model", 90.0f), 10).ok());
  RunStatus status = Status();
  ASSERT_EQ(status.rounds_size(), 2);
  const RoundRecord& round = status.rounds(1);
  EXPECT_EQ(std::vector<std::string>(round.excluded().begin(),
                                     round.excluded().end()),
            std::vector<std::string>{"d"});
  EXPECT_EQ(round.total_weight(), 30);
  TensorBundle model = *(*coordinator_->OpenModel(run, 1))->ReadAll();
  float value;
  std::memcpy(&value, model.data[2].data(), 4);
  EXPECT_FLOAT_EQ(value, 2.0f);
  std::ifstream audit(dir_.Join("state/audit.log"));
  std::string text((std::istreambuf_iterator<char>(audit)),
                   std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\tupdate-excluded\t"), std::string::npos) << text;
}

// The disk fills up while the round's model is written: the commit fails
// with the system's reason, the run says so, the last committed model stays
// the valid global one, and the round commits once there is room again.
TEST_F(CoordinatorTest, DiskFullAtCommitKeepsThePreviousModelAndRetries) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  Plan plan = MakePlan({"a", "b", "c"}, {}, 1);
  plan.set_min_sites(2);
  plan.set_round_deadline_seconds(30);
  absl::StatusOr<std::string> run = coordinator_->StartRun(plan);
  ASSERT_TRUE(run.ok()) << run.status();
  constexpr int kElements = 300'000;  // 3.6 MB models
  for (const char* site : {"a", "b", "c"}) {
    absl::StatusOr<Task> task = Poll(site);
    if (task.ok() && task->kind() == Task::INITIALIZE) {
      ASSERT_TRUE(
          Upload(site, *run, 0, MakeBundle("test_model", 0.0f, 3, kElements))
              .ok());
    }
  }
  ASSERT_EQ(Status().rounds_size(), 1);
  const std::string initial_digest = Status().rounds(0).model_digest();
  ASSERT_TRUE(
      Upload("a", *run, 1, MakeBundle("test_model", 1.0f, 3, kElements)).ok());
  ASSERT_TRUE(
      Upload("b", *run, 1, MakeBundle("test_model", 3.0f, 3, kElements)).ok());

  // A file-size limit makes every write past 1 MB fail as a full disk would
  // (EFBIG instead of ENOSPC; the signal it raises is ignored).
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct rlimit small = saved;
  small.rlim_cur = 1 << 20;
  void (*previous_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  clock_.Advance(absl::Seconds(31));
  coordinator_->Tick();
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  std::signal(SIGXFSZ, previous_handler);

  RunStatus status = Status();
  EXPECT_EQ(status.state(), RunStatus::TRAINING);
  EXPECT_EQ(status.rounds_size(), 1);
  EXPECT_NE(status.message().find("cannot commit round 1"), std::string::npos)
      << status.message();
  EXPECT_NE(status.message().find("too large"), std::string::npos)
      << status.message();
  // The committed model is intact and still served.
  absl::StatusOr<std::unique_ptr<ModelFileReader>> initial =
      coordinator_->OpenModel(*run, 0);
  ASSERT_TRUE(initial.ok()) << initial.status();
  EXPECT_EQ((*initial)->digest(), initial_digest);
  EXPECT_TRUE((*initial)->ReadAll().ok());
  EXPECT_FALSE(coordinator_->OpenModel(*run, 1).ok());
  // No half-written file is left to fill the disk further.
  for (const auto& entry : std::filesystem::recursive_directory_iterator(
           dir_.Join("state/models"))) {
    EXPECT_EQ(entry.path().string().find("partial"), std::string::npos)
        << entry.path();
  }

  // Room again: the retry commits the same round from the same updates.
  clock_.Advance(absl::Seconds(6));
  coordinator_->Tick();
  status = Status();
  ASSERT_EQ(status.rounds_size(), 2) << status.message();
  EXPECT_TRUE(status.message().empty()) << status.message();
  TensorBundle model = *(*coordinator_->OpenModel(*run, 1))->ReadAll();
  float value;
  std::memcpy(&value, model.data[2].data(), 4);
  EXPECT_FLOAT_EQ(value, 2.0f);
}

TEST_F(CoordinatorTest, RetriedUploadIsCountedOnce) {
  Join("a");
  Join("b");
  std::string run = StartAndInitialize(MakePlan({"a", "b"}, {}, 1));
  ASSERT_TRUE(
      Upload("a", run, 1, MakeBundle("test_model", 1.0f), 10, "u1").ok());
  absl::StatusOr<UploadReceipt> again =
      Upload("a", run, 1, MakeBundle("test_model", 1.0f), 10, "u1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->duplicate());
  EXPECT_EQ(Upload("a", run, 1, MakeBundle("test_model", 9.0f), 10, "u2")
                .status()
                .code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
}

TEST_F(CoordinatorTest, ClaimedSampleCountIsCapped) {
  Join("small", 10);
  Join("big", 1000);
  std::string run = StartAndInitialize(MakePlan({"small", "big"}, {}, 1));
  // "small" declared 10 images but claims a million.
  ASSERT_TRUE(
      Upload("small", run, 1, MakeBundle("test_model", 0.0f), 1000000).ok());
  ASSERT_TRUE(
      Upload("big", run, 1, MakeBundle("test_model", 11.0f), 1000).ok());
  TensorBundle average = *(*coordinator_->OpenModel(run, 1))->ReadAll();
  float value;
  std::memcpy(&value, average.data[0].data(), 4);
  EXPECT_NEAR(value, 11.0f * 1000 / 1010, 1e-4);
  EXPECT_EQ(Status().rounds(1).total_weight(), 1010);
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

TEST_F(CoordinatorTest, BadEvaluationReportsAreRefused) {
  Join("a");
  Join("x");
  std::string run = StartAndInitialize(MakePlan({"a"}, {"x"}, 1));
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  // A training site reporting as external, and counts that do not add up.
  EXPECT_EQ(Report("a", run, 1, EXTERNAL_VALIDATION).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("a", run, 1, INTERNAL_VALIDATION, -1, 3).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("a", run, 7, INTERNAL_VALIDATION).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Report("a", run, 1, INTERNAL_VALIDATION).ok());
  EXPECT_EQ(Report("a", run, 1, INTERNAL_VALIDATION).code(),
            absl::StatusCode::kAlreadyExists);
}

// An evaluation as a current agent sends it: 8 images of 5 patients (of
// two of the three classes), and the same 5 patients at the patient level
// (one case each, scored with the mean of their images' probabilities).
EvaluationReport PatientLevelReport(const std::string& run_id, int round,
                                    EvalSplit split) {
  EvaluationReport report;
  report.set_run_id(run_id);
  report.set_round(round);
  EvalAggregate* images = report.mutable_aggregate();
  InitAggregate(3, images);
  images->set_split(split);
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(AddCase(images, i % 2,
                        i % 4 == 3 ? std::vector<double>{0.2, 0.5, 0.3}
                                   : std::vector<double>{0.1, 0.1, 0.8})
                    .ok());
  }
  images->set_num_patients(5);
  images->set_loss_sum(4.0);
  EvalAggregate* patients = report.mutable_patient_aggregate();
  InitAggregate(3, patients);
  patients->set_split(split);
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(AddCase(patients, i % 2, {0.6, 0.3, 0.1}).ok());
  }
  patients->set_num_patients(5);
  return report;
}

TEST_F(CoordinatorTest, PatientLevelAggregatesAreCheckedAndStored) {
  Join("a");
  Join("x");
  std::string run = StartAndInitialize(MakePlan({"a"}, {"x"}, 1));
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  const EvaluationReport good = PatientLevelReport(run, 1, INTERNAL_VALIDATION);
  ASSERT_EQ(good.patient_aggregate().num_images(), 5);

  // Malformed patient-level aggregates refuse the whole report.
  std::vector<std::pair<std::string, EvaluationReport>> bad;
  EvaluationReport wrong_classes = good;
  InitAggregate(2, wrong_classes.mutable_patient_aggregate());
  bad.emplace_back("classes", wrong_classes);
  EvaluationReport wrong_split = good;
  wrong_split.mutable_patient_aggregate()->set_split(EXTERNAL_VALIDATION);
  bad.emplace_back("split", wrong_split);
  EvaluationReport inconsistent = good;
  inconsistent.mutable_patient_aggregate()->set_confusion(0, 7);
  bad.emplace_back("counts", inconsistent);
  EvaluationReport two_cases_a_patient = good;
  two_cases_a_patient.mutable_patient_aggregate()->set_num_patients(3);
  bad.emplace_back("cases per patient", two_cases_a_patient);
  EvaluationReport other_patients = good;
  other_patients.mutable_aggregate()->set_num_patients(6);
  bad.emplace_back("patients", other_patients);
  EvaluationReport suppressed_alone = good;
  *suppressed_alone.mutable_patient_aggregate() = EvalAggregate();
  suppressed_alone.mutable_patient_aggregate()->set_split(INTERNAL_VALIDATION);
  suppressed_alone.mutable_patient_aggregate()->set_class_count(3);
  suppressed_alone.mutable_patient_aggregate()->mutable_confusion()->Resize(9,
                                                                            0);
  suppressed_alone.mutable_patient_aggregate()->set_suppressed(true);
  bad.emplace_back("suppressed", suppressed_alone);
  // Class 2 has no images, so either may withhold it, but not just one.
  EvaluationReport other_withheld = good;
  other_withheld.mutable_aggregate()->add_withheld_classes(2);
  bad.emplace_back("withheld", other_withheld);
  for (const auto& [what, report] : bad) {
    absl::Status status = coordinator_->ReportEvaluation("a", report);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(status.message().find("patient-level aggregate"),
              std::string::npos)
        << what << ": " << status.message();
  }
  EXPECT_TRUE(Status().rounds(1).evaluations().empty());

  // The well-formed one is stored beside the image-level aggregate; a site
  // whose agent sends none (before patient-level reporting) is still heard.
  ASSERT_TRUE(coordinator_->ReportEvaluation("a", good).ok());
  ASSERT_TRUE(Report("x", run, 1, EXTERNAL_VALIDATION).ok());
  for (bool restarted : {false, true}) {
    if (restarted) Restart();
    RunStatus status = Status(run);
    EXPECT_EQ(status.state(), RunStatus::DONE);
    ASSERT_EQ(status.rounds(1).evaluations_size(), 2);
    for (const SiteEvaluation& evaluation : status.rounds(1).evaluations()) {
      if (evaluation.site() == "a") {
        ASSERT_TRUE(evaluation.has_patient_aggregate()) << restarted;
        EXPECT_EQ(evaluation.patient_aggregate().SerializeAsString(),
                  good.patient_aggregate().SerializeAsString());
        EXPECT_EQ(evaluation.aggregate().num_images(), 8);
      } else {
        EXPECT_FALSE(evaluation.has_patient_aggregate()) << restarted;
      }
    }
  }
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

// --- Secure aggregation.

class SecureAggregationTest : public CoordinatorTest {
 protected:
  Plan SecurePlan() {
    Plan plan = MakePlan({"a", "b", "c"}, {}, 1);
    plan.set_secure_aggregation(true);
    plan.set_min_sites(2);
    return plan;
  }

  // Each site's certificate, as an agent signs its masking keys with it.
  const PemPair& SiteCertificate(const std::string& site) {
    static const PemPair ca = *CreateCertificateAuthority("test", 2);
    auto it = certificates_.find(site);
    if (it == certificates_.end()) {
      it = certificates_
               .emplace(site, *IssueCertificate(ca, {site, Role::kSite, {}, 2}))
               .first;
    }
    return it->second;
  }

  absl::Status SubmitKey(const std::string& site, const std::string& run_id,
                         int attempt, const MaskingKey& key,
                         const std::string& signer = "") {
    MaskingKeyRequest request;
    request.set_run_id(run_id);
    request.set_round(1);
    request.set_attempt(attempt);
    request.set_public_key(key.public_key());
    const PemPair& certificate =
        SiteCertificate(signer.empty() ? site : signer);
    request.set_certificate_pem(certificate.cert);
    request.set_key_signature(*SignWithKey(
        certificate.key,
        MaskingKeyStatement(run_id, 1, attempt, site, key.public_key())));
    return coordinator_->SubmitMaskingKey(site, request);
  }

  absl::StatusOr<MaskingCohort> Cohort(const std::string& site,
                                       const std::string& run_id, int attempt) {
    MaskingCohortRequest request;
    request.set_run_id(run_id);
    request.set_round(1);
    request.set_attempt(attempt);
    return coordinator_->GetMaskingCohort(site, request);
  }

  // Masks `local` against the initial model (all zeros) as a site does
  // and uploads it for round 1.
  absl::StatusOr<UploadReceipt> MaskedUpload(const std::string& site,
                                             const std::string& run_id,
                                             int attempt, const MaskingKey& key,
                                             float local, int64_t samples) {
    absl::StatusOr<MaskingCohort> cohort = Cohort(site, run_id, attempt);
    if (!cohort.ok()) return cohort.status();
    std::vector<MaskingPeerKey> peers;
    for (const MaskingPeer& peer : cohort->peers()) {
      peers.push_back({peer.site(), peer.public_key(), peer.certificate_pem(),
                       peer.key_signature()});
    }
    absl::StatusOr<UpdateMasker> masker =
        UpdateMasker::Create(key, site, peers, run_id, 1, attempt, 2);
    if (!masker.ok()) return masker.status();
    absl::StatusOr<TensorBundle> masked =
        masker->Mask(MakeBundle("test_model", local),
                     MakeBundle("test_model", 0.0f), samples);
    if (!masked.ok()) return masked.status();
    return UploadAs(site, run_id, *masked, samples, attempt);
  }

  absl::StatusOr<UploadReceipt> UploadAs(const std::string& site,
                                         const std::string& run_id,
                                         const TensorBundle& bundle,
                                         int64_t samples, int attempt) {
    UploadHeader header;
    header.set_run_id(run_id);
    header.set_round(1);
    header.set_num_samples(samples);
    header.set_upload_id(absl::StrCat(site, "-a", attempt));
    header.set_masking_attempt(attempt);
    return Send(site, header, bundle);
  }

  std::map<std::string, PemPair> certificates_;

  float CommittedValue(const std::string& run_id) {
    absl::StatusOr<std::unique_ptr<ModelFileReader>> model =
        coordinator_->OpenModel(run_id, 1);
    EXPECT_TRUE(model.ok());
    TensorBundle bundle = *(*model)->ReadAll();
    float value;
    std::memcpy(&value, bundle.data[0].data(), 4);
    return value;
  }
};

TEST_F(SecureAggregationTest, CoordinatorLearnsOnlyTheCohortsSum) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  std::string run = StartAndInitialize(SecurePlan());
  for (const char* site : {"a", "b", "c"}) {
    absl::StatusOr<Task> task = Poll(site);
    ASSERT_TRUE(task.ok());
    EXPECT_EQ(task->kind(), Task::TRAIN);
    EXPECT_EQ(task->masking_attempt(), 1);
  }
  MaskingKey key_a = *MaskingKey::Generate();
  MaskingKey key_b = *MaskingKey::Generate();
  MaskingKey key_c = *MaskingKey::Generate();
  // No update before the cohort is fixed, and none in the clear.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 1).status()));
  ASSERT_TRUE(SubmitKey("a", run, 1, key_a).ok());
  ASSERT_TRUE(SubmitKey("b", run, 1, key_b).ok());
  EXPECT_FALSE(Cohort("a", run, 1)->ready());
  MaskingKeyRequest malformed;
  malformed.set_run_id(run);
  malformed.set_round(1);
  malformed.set_attempt(1);
  malformed.set_public_key("short");
  EXPECT_TRUE(
      absl::IsInvalidArgument(coordinator_->SubmitMaskingKey("c", malformed)));
  // A key must come signed with the caller's own certificate.
  EXPECT_TRUE(absl::IsInvalidArgument(SubmitKey("c", run, 1, key_c, "a")));
  MaskingKeyRequest unsigned_key;
  unsigned_key.set_run_id(run);
  unsigned_key.set_round(1);
  unsigned_key.set_attempt(1);
  unsigned_key.set_public_key(key_c.public_key());
  unsigned_key.set_certificate_pem(SiteCertificate("c").cert);
  EXPECT_TRUE(absl::IsInvalidArgument(
      coordinator_->SubmitMaskingKey("c", unsigned_key)));
  EXPECT_FALSE(Cohort("a", run, 1)->ready());
  ASSERT_TRUE(SubmitKey("c", run, 1, key_c).ok());
  absl::StatusOr<MaskingCohort> cohort = Cohort("c", run, 1);
  ASSERT_TRUE(cohort.ok());
  ASSERT_TRUE(cohort->ready());
  ASSERT_EQ(cohort->peers_size(), 3);
  EXPECT_EQ(cohort->peers(2).site(), "c");
  EXPECT_EQ(cohort->peers(2).public_key(), key_c.public_key());
  EXPECT_TRUE(absl::IsInvalidArgument(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 1).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 2).status()));

  ASSERT_TRUE(MaskedUpload("a", run, 1, key_a, 1.0f, 30).ok());
  ASSERT_TRUE(MaskedUpload("b", run, 1, key_b, 2.0f, 10).ok());
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
  ASSERT_TRUE(MaskedUpload("c", run, 1, key_c, 6.0f, 20).ok());
  RunStatus status = Status();
  ASSERT_EQ(status.rounds_size(), 2);
  EXPECT_EQ(status.rounds(1).total_weight(), 60);
  EXPECT_EQ(status.rounds(1).masking_attempts(), 1);
  EXPECT_EQ(status.rounds(1).masking_dropouts_size(), 0);
  // (30 x 1 + 10 x 2 + 20 x 6) / 60, to the fixed-point resolution.
  EXPECT_NEAR(CommittedValue(run), 170.0 / 60, 1e-6);
}

TEST_F(SecureAggregationTest, DropoutAfterMaskingRedoesTheRoundWithout) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  std::string run = StartAndInitialize(SecurePlan());
  for (const char* site : {"a", "b", "c"}) ASSERT_TRUE(Poll(site).ok());
  MaskingKey key_a = *MaskingKey::Generate();
  MaskingKey key_b = *MaskingKey::Generate();
  MaskingKey key_c = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 1, key_a).ok());
  ASSERT_TRUE(SubmitKey("b", run, 1, key_b).ok());
  ASSERT_TRUE(SubmitKey("c", run, 1, key_c).ok());
  ASSERT_TRUE(MaskedUpload("a", run, 1, key_a, 1.0f, 30).ok());
  ASSERT_TRUE(MaskedUpload("b", run, 1, key_b, 2.0f, 10).ok());
  // c goes silent; a and b stay in touch.
  clock_.Advance(absl::Seconds(61));
  ASSERT_TRUE(Poll("a").ok());
  ASSERT_TRUE(Poll("b").ok());
  coordinator_->Tick();
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
  absl::StatusOr<Task> again = Poll("a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind(), Task::TRAIN);
  EXPECT_EQ(again->masking_attempt(), 2);
  EXPECT_EQ(Poll("c")->kind(), Task::WAIT);
  // The first attempt is over for everyone.
  EXPECT_TRUE(absl::IsAborted(Cohort("a", run, 1).status()));
  EXPECT_TRUE(
      absl::IsAborted(MaskedUpload("c", run, 1, key_c, 6.0f, 20).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(SubmitKey("c", run, 2, key_c)));

  MaskingKey key_a2 = *MaskingKey::Generate();
  MaskingKey key_b2 = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 2, key_a2).ok());
  ASSERT_TRUE(SubmitKey("b", run, 2, key_b2).ok());
  ASSERT_TRUE(MaskedUpload("a", run, 2, key_a2, 1.0f, 30).ok());
  ASSERT_TRUE(MaskedUpload("b", run, 2, key_b2, 2.0f, 10).ok());
  RunStatus status = Status();
  ASSERT_EQ(status.rounds_size(), 2);
  EXPECT_EQ(status.rounds(1).masking_attempts(), 2);
  ASSERT_EQ(status.rounds(1).masking_dropouts_size(), 1);
  EXPECT_EQ(status.rounds(1).masking_dropouts(0), "c");
  EXPECT_EQ(status.rounds(1).total_weight(), 40);
  EXPECT_NEAR(CommittedValue(run), 50.0 / 40, 1e-6);
}

TEST_F(SecureAggregationTest, NoCohortOfOneAndNoUnusableKeys) {
  Join("a");
  Join("b");
  Plan plan = MakePlan({"a", "b"}, {}, 1);
  plan.set_secure_aggregation(true);
  std::string run = StartAndInitialize(plan);
  ASSERT_TRUE(Poll("a").ok());
  ASSERT_TRUE(Poll("b").ok());
  // The all-zero point: no peer could agree a seed with it.
  MaskingKeyRequest zero;
  zero.set_run_id(run);
  zero.set_round(1);
  zero.set_attempt(1);
  zero.set_public_key(std::string(kMaskingKeyBytes, '\0'));
  zero.set_certificate_pem(SiteCertificate("a").cert);
  zero.set_key_signature(
      *SignWithKey(SiteCertificate("a").key,
                   MaskingKeyStatement(run, 1, 1, "a", zero.public_key())));
  EXPECT_TRUE(
      absl::IsInvalidArgument(coordinator_->SubmitMaskingKey("a", zero)));

  MaskingKey key_a = *MaskingKey::Generate();
  MaskingKey key_b = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 1, key_a).ok());
  ASSERT_TRUE(SubmitKey("b", run, 1, key_b).ok());
  ASSERT_TRUE(MaskedUpload("a", run, 1, key_a, 1.0f, 30).ok());
  // b leaves after masking: the redo has a alone, and a cohort of one
  // would publish a's update, so none is fixed, at the deadline either.
  // (95 s: b is past the liveness window, so the redo selects a alone.)
  clock_.Advance(absl::Seconds(95));
  ASSERT_TRUE(Poll("a").ok());
  coordinator_->Tick();
  EXPECT_EQ(Poll("a")->masking_attempt(), 2);
  MaskingKey key_a2 = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 2, key_a2).ok());
  clock_.Advance(absl::Seconds(100));
  ASSERT_TRUE(Poll("a").ok());
  coordinator_->Tick();
  absl::StatusOr<MaskingCohort> cohort = Cohort("a", run, 2);
  ASSERT_TRUE(cohort.ok()) << cohort.status();
  EXPECT_FALSE(cohort->ready());
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
}

TEST_F(SecureAggregationTest, RestartRemovesAnUncommittedModel) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  std::string run = StartAndInitialize(SecurePlan());
  // As if the coordinator died between writing round 1's model and
  // committing it.
  std::string orphan =
      dir_.Join("state") + "/models/" + run + "/round-00001.efm";
  ASSERT_TRUE(WriteModelFile(orphan, MakeBundle("test_model", 3.0f)).ok());
  Restart();
  EXPECT_FALSE(std::filesystem::exists(orphan));
  EXPECT_TRUE(std::filesystem::exists(dir_.Join("state") + "/models/" + run +
                                      "/round-00000.efm"));
}

TEST_F(SecureAggregationTest, PlansThatNeedSingleUpdatesAreRefused) {
  Plan median = SecurePlan();
  median.set_strategy(Plan::MEDIAN);
  EXPECT_TRUE(absl::IsInvalidArgument(coordinator_->StartRun(median).status()));
  Plan bounded = SecurePlan();
  bounded.set_max_update_norm(10);
  EXPECT_TRUE(
      absl::IsInvalidArgument(coordinator_->StartRun(bounded).status()));
  Plan alone = MakePlan({"a"}, {"x"}, 1);
  alone.set_secure_aggregation(true);
  EXPECT_TRUE(absl::IsInvalidArgument(coordinator_->StartRun(alone).status()));
}

TEST_F(SecureAggregationTest, PlainRunsRefuseMaskedUploadsAndMaskingCalls) {
  Join("a");
  Join("b");
  std::string run = StartAndInitialize(MakePlan({"a", "b"}, {}, 1));
  ASSERT_EQ(Poll("a")->kind(), Task::TRAIN);
  EXPECT_EQ(Poll("b")->masking_attempt(), 0);
  EXPECT_TRUE(absl::IsInvalidArgument(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 1).status()));
  MaskingKey key = *MaskingKey::Generate();
  EXPECT_TRUE(absl::IsFailedPrecondition(SubmitKey("a", run, 1, key)));
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

TEST_F(CoordinatorTest, DifferentialPrivacyRunRecordsEpsilonPerSiteAndRound) {
  Join("a");
  Join("b");
  Plan plan = MakePlan({"a", "b"}, {}, 2);
  plan.set_evaluate_every_round(false);
  plan.mutable_differential_privacy()->set_clip_norm(1);
  plan.mutable_differential_privacy()->set_noise_multiplier(2);
  // The initial model carries no site data: it needs no epsilon.
  std::string run = StartAndInitialize(plan);
  ASSERT_EQ(Status().state(), RunStatus::TRAINING);
  for (int round = 1; round <= 2; ++round) {
    // An agent without differential privacy reports none: refused.
    absl::StatusOr<UploadReceipt> without =
        Upload("a", run, round, MakeBundle("test_model", 1.0f), 10);
    EXPECT_EQ(without.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(without.status().message().find("privacy_epsilon"),
              std::string::npos);
    ASSERT_TRUE(Upload("a", run, round, MakeBundle("test_model", 1.0f), 10, "",
                       1.5 * round)
                    .ok());
    ASSERT_TRUE(Upload("b", run, round, MakeBundle("test_model", 1.0f), 10, "",
                       2.5 * round)
                    .ok());
  }
  ASSERT_EQ(Status(run).state(), RunStatus::EVALUATING);
  auto check = [](const RunStatus& status) {
    ASSERT_EQ(status.rounds_size(), 3);
    EXPECT_EQ(status.rounds(0).privacy_size(), 0);
    for (int round = 1; round <= 2; ++round) {
      const RoundRecord& record = status.rounds(round);
      ASSERT_EQ(record.privacy_size(), 2) << round;
      EXPECT_EQ(record.privacy(0).site(), "a");
      EXPECT_EQ(record.privacy(0).epsilon(), 1.5 * round);
      EXPECT_EQ(record.privacy(0).delta(), 1e-5);
      EXPECT_EQ(record.privacy(1).site(), "b");
      EXPECT_EQ(record.privacy(1).epsilon(), 2.5 * round);
    }
    std::vector<SitePrivacySpent> latest = LatestSitePrivacy(status);
    ASSERT_EQ(latest.size(), 2u);
    EXPECT_EQ(latest[1].site, "b");
    EXPECT_EQ(latest[1].epsilon, 5.0);
    EXPECT_EQ(latest[1].round, 2);
  };
  check(Status(run));
  // Persisted with the round records.
  Restart();
  check(Status(run));
}

TEST_F(CoordinatorTest, RunsWithoutDifferentialPrivacyRecordNone) {
  Join("a");
  Plan plan = MakePlan({"a"}, {}, 2);
  plan.set_evaluate_every_round(false);
  std::string run = StartAndInitialize(plan);
  ASSERT_TRUE(
      Upload("a", run, 1, MakeBundle("test_model", 1.0f), 10, "", 3.0).ok());
  EXPECT_EQ(Status(run).rounds(1).privacy_size(), 0);
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

// Every committed round keeps the audit log's head as it stood right after
// the round's own audit lines, so that a log cut at the end is found by
// whoever holds the run status.
TEST_F(CoordinatorTest, RoundRecordsCarryTheAuditHeadOfTheirCommit) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  Plan plan = MakePlan({"a", "b", "c"}, {}, 2);
  plan.set_update_norm_outlier_factor(10);
  std::string run = StartAndInitialize(plan);
  for (int round = 1; round <= 2; ++round) {
    ASSERT_TRUE(Upload("a", run, round, MakeBundle("test_model", 1.0f)).ok());
    ASSERT_TRUE(Upload("b", run, round, MakeBundle("test_model", 2.0f)).ok());
    // Round 2: c's update is left out, written after the commit line.
    ASSERT_TRUE(Upload("c", run, round,
                       MakeBundle("test_model", round == 1 ? 3.0f : 90.0f))
                    .ok());
    for (const char* site : {"a", "b", "c"}) {
      ASSERT_TRUE(Report(site, run, round, INTERNAL_VALIDATION).ok());
    }
  }
  RunStatus status = Status();
  ASSERT_EQ(status.state(), RunStatus::DONE);
  ASSERT_EQ(status.rounds_size(), 3);
  EXPECT_EQ(status.rounds(2).excluded_size(), 1);

  const std::string path = dir_.Join("state/audit.log");
  absl::StatusOr<std::string> text = ReadFileToString(path);
  ASSERT_TRUE(text.ok()) << text.status();
  std::vector<std::string> lines =
      absl::StrSplit(*text, '\n', absl::SkipEmpty());
  for (const RoundRecord& record : status.rounds()) {
    SCOPED_TRACE(absl::StrCat("round ", record.round()));
    ASSERT_TRUE(record.has_audit_head());
    const int64_t records = record.audit_head().records();
    ASSERT_GE(records, 1);
    ASSERT_LE(records, static_cast<int64_t>(lines.size()));
    // The head is the line of the round's commit (the last of its lines):
    // its own number and hash.
    std::vector<std::string> fields = absl::StrSplit(lines[records - 1], '\t');
    ASSERT_EQ(fields.size(), 9u);
    EXPECT_EQ(fields[0], absl::StrCat(records));
    EXPECT_EQ(fields[8], record.audit_head().hash());
    EXPECT_EQ(fields[4], run);
    EXPECT_EQ(fields[5], absl::StrCat(record.round()));
    EXPECT_EQ(fields[3], record.round() == 0   ? "initial-model"
                         : record.round() == 1 ? "round-commit"
                                               : "update-excluded");
    if (record.round() == 2) {
      EXPECT_NE(lines[records - 2].find("\tround-commit\t"), std::string::npos);
    }
    absl::StatusOr<AuditVerification> verified =
        VerifyAuditLogHead(path, {records, record.audit_head().hash()});
    EXPECT_TRUE(verified.ok()) << verified.status();
  }
  const AuditLogHead last = status.rounds(2).audit_head();
  // Kept by the store through the evaluation reports' saves and a restart.
  Restart();
  status = Status(run);
  ASSERT_EQ(status.rounds_size(), 3);
  EXPECT_EQ(status.rounds(2).audit_head().records(), last.records());
  EXPECT_EQ(status.rounds(2).audit_head().hash(), last.hash());

  // The log cut back to before the last commit: the chain still verifies,
  // the recorded head does not.
  coordinator_.reset();
  std::string cut;
  for (int64_t i = 0; i < last.records() - 2; ++i) {
    absl::StrAppend(&cut, lines[i], "\n");
  }
  std::ofstream(path, std::ios::binary | std::ios::trunc) << cut;
  EXPECT_TRUE(VerifyAuditLog(path).ok());
  absl::StatusOr<AuditVerification> verified =
      VerifyAuditLogHead(path, {last.records(), last.hash()});
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(verified.status().message().find("2 records missing at the end"),
            std::string::npos)
      << verified.status();
}

}  // namespace
}  // namespace echofed

namespace echofed {
namespace {

TEST(SuppressedEvaluationTest, SuppressedReportsCarryNoCounts) {
  EvalAggregate suppressed;
  suppressed.set_class_count(3);
  suppressed.mutable_confusion()->Resize(9, 0);
  suppressed.set_suppressed(true);
  EXPECT_TRUE(ValidateAggregate(suppressed, 3).ok());
  suppressed.set_confusion(4, 1);
  suppressed.set_num_images(1);
  EXPECT_EQ(ValidateAggregate(suppressed, 3).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace echofed
