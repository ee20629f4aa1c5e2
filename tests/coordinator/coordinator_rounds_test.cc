// Training rounds (coordinator/coordinator_rounds.cc): updates taken or
// refused, rounds closed at the deadline or held open below the minimum,
// the commit of the new global model, and the privacy each update spent.

#include <sys/resource.h>

#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/audit_log.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "coordinator/coordinator.h"
#include "gtest/gtest.h"
#include "tests/coordinator/coordinator_test_fixture.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::CoordinatorTest;
using ::echofed::testing::MakeBundle;
using ::echofed::testing::MakePlan;

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
