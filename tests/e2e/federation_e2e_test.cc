// Real processes: echofed-coordinator and echofed-agent binaries talking
// mutual TLS over loopback, driven through the Admin API as an operator.

#include <signal.h>

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/audit_log.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "coordinator/cli/admin_client.h"
#include "coordinator/cli/kits.h"
#include "gtest/gtest.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/tcp_relay.h"

namespace echofed {
namespace {

using testing::BinaryPath;
using testing::TempDir;

class FederationE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pki_ = dir_.Join("pki");
    ASSERT_TRUE(InitStudyPki(pki_, "e2e", 2).ok());
    ASSERT_TRUE(
        IssueKit(
            pki_,
            {"coordinator", Role::kCoordinator, {"localhost", "127.0.0.1"}, 2})
            .ok());
    ASSERT_TRUE(IssueKit(pki_, {"operator", Role::kOperator, {}, 2}).ok());
    for (const std::string& site : sites_) {
      ASSERT_TRUE(IssueKit(pki_, {site, Role::kSite, {}, 2}).ok());
    }
    absl::StatusOr<Subprocess> synth = Subprocess::Start(
        {BinaryPath("echofed-agent"), "synth", "--out", dir_.Join("data"),
         "--sites", "3", "--patients", "30", "--image-size", "64"},
        dir_.Join("synth.log"));
    ASSERT_TRUE(synth.ok());
    ASSERT_EQ(synth->Wait(absl::Seconds(60)), 0);

    ASSERT_TRUE(
        WriteFileAtomically(
            dir_.Join("coordinator.textproto"),
            "listen_address: \"127.0.0.1:0\"\n"
            "tls { ca_cert: \"pki/coordinator/ca.pem\" cert: "
            "\"pki/coordinator/cert.pem\" key: \"pki/coordinator/key.pem\" }\n"
            "state_dir: \"state\"\n"
            "enrolment_file: \"pki/enrolment.textproto\"\n")
            .ok());
    absl::StatusOr<Subprocess> coordinator = Subprocess::Start(
        {BinaryPath("echofed-coordinator"), "--config",
         dir_.Join("coordinator.textproto"), "--port-file", dir_.Join("port")},
        dir_.Join("coordinator.log"));
    ASSERT_TRUE(coordinator.ok());
    coordinator_ = std::make_unique<Subprocess>(std::move(*coordinator));
    int port = 0;
    for (int i = 0; i < 200 && port == 0; ++i) {
      absl::StatusOr<std::string> text = ReadFileToString(dir_.Join("port"));
      if (!text.ok() ||
          !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port)) {
        absl::SleepFor(absl::Milliseconds(50));
      }
    }
    ASSERT_NE(port, 0) << *ReadFileToString(dir_.Join("coordinator.log"));
    port_ = port;
    address_ = absl::StrCat("127.0.0.1:", port);
    admin_ = std::make_unique<AdminClient>(
        address_, *LoadKit(pki_ + "/operator"), "localhost");
    for (size_t i = 0; i < sites_.size(); ++i) StartAgent(i);
  }

  void TearDown() override {
    for (auto& agent : agents_) {
      if (agent) agent->Terminate(absl::Seconds(3));
    }
    if (coordinator_) coordinator_->Terminate();
    if (HasFailure()) {
      std::cerr << "--- coordinator log\n"
                << ReadFileToString(dir_.Join("coordinator.log")).value_or("");
      for (const std::string& site : sites_) {
        std::cerr << "--- " << site << " log\n"
                  << ReadFileToString(dir_.Join(site + ".log")).value_or("");
      }
    }
  }

  void StartAgent(size_t index) {
    const std::string& site = sites_[index];
    std::string config = dir_.Join(site + ".textproto");
    ASSERT_TRUE(
        WriteFileAtomically(
            config, absl::StrCat(
                        "coordinator_address: \"",
                        agent_address_.empty() ? address_ : agent_address_,
                        "\"\ncoordinator_name: \"localhost\"\n",
                        "tls { ca_cert: \"pki/", site, "/ca.pem\" cert: \"pki/",
                        site, "/cert.pem\" key: \"pki/", site, "/key.pem\" }\n",
                        "data_dir: \"data/", site, "\"\n",
                        // Nine validation patients a site (MakeRunPlan):
                        // disclosure control would rightly suppress them;
                        // it is tested in trainer_test and cohort_test.
                        "min_cell_count: 1\n",
                        initial_checkpoint_.empty()
                            ? ""
                            : absl::StrCat("initial_checkpoint: \"",
                                           initial_checkpoint_, "\"\n")))
            .ok());
    absl::StatusOr<Subprocess> agent =
        Subprocess::Start({BinaryPath("echofed-agent"), "run", "--config",
                           config, "--exit-after-run", "--threads", "1"},
                          dir_.Join(site + ".log"));
    ASSERT_TRUE(agent.ok());
    if (agents_.size() <= index) agents_.resize(index + 1);
    agents_[index] = std::make_unique<Subprocess>(std::move(*agent));
  }

  Plan MakeRunPlan(int rounds, int min_sites, int deadline_seconds) {
    Plan plan = testing::MakePlan(sites_, {}, rounds);
    plan.set_model("small_cnn");
    plan.set_image_size(64);
    plan.set_local_epochs(2);
    plan.set_learning_rate(0.02);
    plan.set_min_sites(min_sites);
    plan.set_round_deadline_seconds(deadline_seconds);
    // With the agents' own min_cell_count of 1 (see StartAgent).
    plan.set_min_cell_count(1);
    return plan;
  }

  // Polls until `done` holds for the run status or the time is up.
  template <typename Predicate>
  absl::StatusOr<RunStatus> WaitFor(const std::string& run_id, Predicate done,
                                    absl::Duration timeout) {
    absl::Time until = absl::Now() + timeout;
    absl::StatusOr<RunStatus> status;
    while (absl::Now() < until) {
      status = admin_->GetRunStatus(run_id);
      if (status.ok() && done(*status)) return status;
      absl::SleepFor(absl::Milliseconds(200));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "timed out; last state ", status.ok()
                                      ? RunStatus::State_Name(status->state())
                                      : status.status().ToString()));
  }

  // Starts the coordinator again on the same port and state (as systemd
  // would after a crash), appending to its log.
  void RestartCoordinator() {
    ASSERT_TRUE(
        WriteFileAtomically(
            dir_.Join("coordinator-again.textproto"),
            absl::StrCat("listen_address: \"127.0.0.1:", port_, "\"\n",
                         "tls { ca_cert: \"pki/coordinator/ca.pem\" cert: "
                         "\"pki/coordinator/cert.pem\" key: "
                         "\"pki/coordinator/key.pem\" }\n"
                         "state_dir: \"state\"\n"
                         "enrolment_file: \"pki/enrolment.textproto\"\n"))
            .ok());
    absl::StatusOr<Subprocess> coordinator =
        Subprocess::Start({BinaryPath("echofed-coordinator"), "--config",
                           dir_.Join("coordinator-again.textproto")},
                          dir_.Join("coordinator-again.log"));
    ASSERT_TRUE(coordinator.ok());
    coordinator_ = std::make_unique<Subprocess>(std::move(*coordinator));
  }

  // Round 1 committed and round 2 training: "mid-round" for fault tests.
  absl::StatusOr<RunStatus> WaitUntilRoundTwoIsOpen(const std::string& run_id) {
    return WaitFor(
        run_id,
        [](const RunStatus& s) {
          return s.rounds_size() >= 2 && s.state() == RunStatus::TRAINING;
        },
        absl::Seconds(120));
  }

  // Waits until every agent's log says it joined.
  void WaitUntilAllJoined() {
    absl::Time until = absl::Now() + absl::Seconds(60);
    for (const std::string& site : sites_) {
      while (absl::Now() < until &&
             ReadFileToString(dir_.Join(site + ".log"))
                     .value_or("")
                     .find("joined") == std::string::npos) {
        absl::SleepFor(absl::Milliseconds(100));
      }
    }
  }

  // Checks what must hold after any fault: every round committed once, each
  // site at most once per round, every model file matching its record, and
  // the audit log intact.
  void ExpectIntactRun(const RunStatus& status, int rounds) {
    ASSERT_EQ(status.rounds_size(), rounds + 1);
    for (int round = 0; round <= rounds; ++round) {
      const RoundRecord& record = status.rounds(round);
      EXPECT_EQ(record.round(), round);
      std::set<std::string> unique(record.contributors().begin(),
                                   record.contributors().end());
      EXPECT_EQ(unique.size(), static_cast<size_t>(record.contributors_size()))
          << "round " << round << " counted a site twice";
      absl::StatusOr<std::unique_ptr<ModelFileReader>> model =
          ModelFileReader::Open(absl::StrFormat("%s/models/%s/round-%05d.efm",
                                                dir_.Join("state"),
                                                status.run_id(), round));
      ASSERT_TRUE(model.ok()) << model.status();
      EXPECT_EQ((*model)->digest(), record.model_digest()) << round;
      EXPECT_TRUE((*model)->ReadAll().ok()) << round;
    }
    absl::StatusOr<AuditVerification> audit =
        VerifyAuditLog(dir_.Join("state/audit.log"));
    EXPECT_TRUE(audit.ok()) << audit.status();
  }

  bool AllJoined() {
    absl::StatusOr<ListRunsResponse> runs = admin_->ListRuns();
    return runs.ok();
  }

  TempDir dir_;
  std::string pki_;
  std::vector<std::string> sites_ = {"site-1", "site-2", "site-3"};
  int port_ = 0;
  std::string address_;
  // Where agents dial, when not the coordinator itself (a relay).
  std::string agent_address_;
  // Relative to the agents' config files; empty: none.
  std::string initial_checkpoint_;
  std::unique_ptr<Subprocess> coordinator_;
  std::vector<std::unique_ptr<Subprocess>> agents_;
  std::unique_ptr<AdminClient> admin_;
};

TEST_F(FederationE2eTest, ThreeHospitalsTrainTogetherOverMutualTls) {
  absl::StatusOr<std::string> run_id = admin_->StartRun(MakeRunPlan(2, 3, 60));
  ASSERT_TRUE(run_id.ok()) << run_id.status();
  absl::StatusOr<RunStatus> status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.state() == RunStatus::DONE; },
      absl::Seconds(150));
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_EQ(status->rounds_size(), 3);  // initial model + 2 rounds
  // The global model changed.
  EXPECT_NE(status->rounds(0).model_digest(), status->rounds(1).model_digest());
  EXPECT_NE(status->rounds(1).model_digest(), status->rounds(2).model_digest());
  for (int round = 1; round <= 2; ++round) {
    const RoundRecord& record = status->rounds(round);
    EXPECT_EQ(record.contributors_size(), 3);
    EXPECT_GT(record.total_weight(), 0);
    // Every site evaluated the new model, on its own internal split.
    ASSERT_EQ(record.evaluations_size(), 3);
    for (const SiteEvaluation& evaluation : record.evaluations()) {
      EXPECT_EQ(evaluation.aggregate().split(), INTERNAL_VALIDATION);
      EXPECT_GT(evaluation.aggregate().num_images(), 0);
      // The site's patient flow travels with its evaluation: 30 screened
      // patients, the last step the withheld ones (none at a minimum of 1).
      ASSERT_GT(evaluation.flow().steps_size(), 2);
      EXPECT_EQ(evaluation.flow().min_cell_count(), 1);
      EXPECT_EQ(evaluation.flow().steps(0).step(), "screened");
      EXPECT_EQ(evaluation.flow().steps(0).patients(), 30);
      EXPECT_EQ(evaluation.flow()
                    .steps(evaluation.flow().steps_size() - 2)
                    .patients(),
                evaluation.aggregate().num_patients());
    }
  }
  // The final model downloads intact.
  absl::StatusOr<std::string> digest =
      admin_->DownloadModel(*run_id, -1, dir_.Join("final.efm"));
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, status->rounds(2).model_digest());
  // Agents leave once the run is over.
  for (auto& agent : agents_) EXPECT_EQ(agent->Wait(absl::Seconds(30)), 0);
}

TEST_F(FederationE2eTest, InitialModelComesFromTheSitesCheckpoint) {
  // A PyTorch-format state dict at the sites (as a study would start from
  // pretrained weights); whichever site the coordinator asks for the
  // initial model must send exactly these weights.
  torch::manual_seed(99);
  auto model = *CreateClassifier({"small_cnn", 3});
  absl::StatusOr<TensorBundle> weights = ExportState(*model, "small_cnn");
  ASSERT_TRUE(weights.ok());
  ASSERT_TRUE(SaveTorchStateDict(*weights, dir_.Join("pretrained.pt")).ok());
  for (auto& agent : agents_) agent->Terminate(absl::Seconds(3));
  initial_checkpoint_ = "pretrained.pt";
  for (size_t i = 0; i < sites_.size(); ++i) StartAgent(i);

  absl::StatusOr<std::string> run_id = admin_->StartRun(MakeRunPlan(1, 3, 60));
  ASSERT_TRUE(run_id.ok()) << run_id.status();
  absl::StatusOr<RunStatus> status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.rounds_size() >= 1; },
      absl::Seconds(90));
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->rounds(0).model_digest(), ModelDigest(weights->manifest));
}

TEST_F(FederationE2eTest, KilledAgentRoundClosesAtDeadlineAndAgentRejoins) {
  // Wait until every agent has joined (its log says so), then kill one.
  absl::Time until = absl::Now() + absl::Seconds(60);
  for (const std::string& site : sites_) {
    while (absl::Now() < until &&
           ReadFileToString(dir_.Join(site + ".log"))
                   .value_or("")
                   .find("joined") == std::string::npos) {
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  agents_[2]->Signal(SIGKILL);
  agents_[2]->Wait(absl::Seconds(5));

  absl::StatusOr<std::string> run_id = admin_->StartRun(MakeRunPlan(3, 2, 6));
  ASSERT_TRUE(run_id.ok()) << run_id.status();
  // Round 1 closes at its deadline with the two live sites.
  absl::StatusOr<RunStatus> status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.rounds_size() >= 2; },
      absl::Seconds(90));
  ASSERT_TRUE(status.ok()) << status.status();
  const RoundRecord& first = status->rounds(1);
  EXPECT_EQ(first.contributors_size(), 2);
  for (const std::string& contributor : first.contributors()) {
    EXPECT_NE(contributor, "site-3");
  }
  // The hospital's IT restarts the agent; it rejoins and contributes again.
  StartAgent(2);
  status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.state() == RunStatus::DONE; },
      absl::Seconds(150));
  ASSERT_TRUE(status.ok()) << status.status();
  bool rejoined = false;
  for (int round = 2; round < status->rounds_size(); ++round) {
    for (const std::string& contributor :
         status->rounds(round).contributors()) {
      rejoined |= contributor == "site-3";
    }
  }
  EXPECT_TRUE(rejoined);
}

TEST_F(FederationE2eTest, SecureAggregationRoundsCommitAndSurviveALostSite) {
  Plan plan = MakeRunPlan(2, 2, 12);
  plan.set_secure_aggregation(true);
  absl::StatusOr<std::string> run_id = admin_->StartRun(plan);
  ASSERT_TRUE(run_id.ok()) << run_id.status();
  absl::StatusOr<RunStatus> status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.rounds_size() >= 2; },
      absl::Seconds(120));
  ASSERT_TRUE(status.ok()) << status.status();
  const RoundRecord first = status->rounds(1);
  EXPECT_EQ(first.contributors_size(), 3);
  EXPECT_EQ(first.masking_attempts(), 1);
  EXPECT_NE(first.model_digest(), status->rounds(0).model_digest());
  // The hospital's machine freezes: it misses round 2's masking, either
  // before sending its key (the cohort is fixed without it at the deadline)
  // or after (the round masks again without it).
  agents_[2]->Signal(SIGSTOP);
  status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.rounds_size() >= 3; },
      absl::Seconds(120));
  agents_[2]->Signal(SIGCONT);
  ASSERT_TRUE(status.ok()) << status.status();
  const RoundRecord second = status->rounds(2);
  EXPECT_EQ(second.contributors_size(), 2);
  for (const std::string& contributor : second.contributors()) {
    EXPECT_NE(contributor, "site-3");
  }
  if (second.masking_attempts() > 1) {
    ASSERT_EQ(second.masking_dropouts_size(), 1);
    EXPECT_EQ(second.masking_dropouts(0), "site-3");
  }
  EXPECT_NE(second.model_digest(), first.model_digest());
  status = WaitFor(
      *run_id, [](const RunStatus& s) { return s.state() == RunStatus::DONE; },
      absl::Seconds(90));
  ASSERT_TRUE(status.ok()) << status.status();
  std::string log = ReadFileToString(dir_.Join("site-1.log")).value_or("");
  EXPECT_NE(log.find("update masked with 2 other sites"), std::string::npos);
  // The global models are usable: every site evaluated them.
  EXPECT_GE(status->rounds(2).evaluations_size(), 2);
}

TEST_F(FederationE2eTest, AgentWithWrongCaCertificateGivesUpWithClearError) {
  // A kit from another study's CA.
  std::string other = dir_.Join("other-pki");
  ASSERT_TRUE(InitStudyPki(other, "other", 2).ok());
  ASSERT_TRUE(IssueKit(other, {"site-1", Role::kSite, {}, 2}).ok());
  std::string config = dir_.Join("stranger.textproto");
  ASSERT_TRUE(WriteFileAtomically(
                  config, absl::StrCat("coordinator_address: \"", address_,
                                       "\"\ncoordinator_name: \"localhost\"\n"
                                       "tls { ca_cert: \"pki/site-1/ca.pem\" "
                                       "cert: \"other-pki/site-1/cert.pem\" "
                                       "key: \"other-pki/site-1/key.pem\" }\n"
                                       "data_dir: \"data/site-1\"\n"))
                  .ok());
  absl::StatusOr<Subprocess> stranger = Subprocess::Start(
      {BinaryPath("echofed-agent"), "run", "--config", config},
      dir_.Join("stranger.log"));
  ASSERT_TRUE(stranger.ok());
  EXPECT_EQ(stranger->Wait(absl::Seconds(30)), 1);
  std::string log = ReadFileToString(dir_.Join("stranger.log")).value_or("");
  EXPECT_NE(log.find("UNAUTHENTICATED"), std::string::npos) << log;
  std::string server_log =
      ReadFileToString(dir_.Join("coordinator.log")).value_or("");
  EXPECT_NE(server_log.find("refused Join"), std::string::npos) << server_log;
}

}  // namespace
}  // namespace echofed

namespace echofed {
namespace {

TEST_F(FederationE2eTest, CoordinatorKilledMidRoundRestartsAndTheRunCompletes) {
  constexpr int kRounds = 4;
  absl::StatusOr<std::string> run_id =
      admin_->StartRun(MakeRunPlan(kRounds, 3, 60));
  ASSERT_TRUE(run_id.ok()) << run_id.status();
  // Round 1 is committed and round 2 is open: kill the coordinator there.
  absl::StatusOr<RunStatus> before = WaitUntilRoundTwoIsOpen(*run_id);
  ASSERT_TRUE(before.ok()) << before.status();
  coordinator_->Signal(SIGKILL);
  ASSERT_TRUE(coordinator_->Wait(absl::Seconds(10)).has_value());
  RestartCoordinator();

  // The agents find it again on their own; the run finishes all its rounds.
  absl::StatusOr<RunStatus> after = WaitFor(
      *run_id, [](const RunStatus& s) { return s.state() == RunStatus::DONE; },
      absl::Seconds(180));
  ASSERT_TRUE(after.ok()) << after.status();
  ExpectIntactRun(*after, kRounds);
  // What was committed before the crash is exactly what is there after.
  for (int round = 0; round < before->rounds_size(); ++round) {
    EXPECT_EQ(after->rounds(round).model_digest(),
              before->rounds(round).model_digest());
  }
  std::string log =
      ReadFileToString(dir_.Join("coordinator-again.log")).value_or("");
  EXPECT_NE(log.find("resum"), std::string::npos) << log;
}

TEST_F(FederationE2eTest,
       NetworkCutAndRestoredAgentsReconnectWithoutDuplicates) {
  // The agents reach the coordinator through a relay that fails like a
  // network link: established connections reset, new ones refused.
  testing::TcpRelay relay(port_);
  ASSERT_NE(relay.port(), 0);
  for (auto& agent : agents_) agent->Terminate(absl::Seconds(3));
  agent_address_ = absl::StrCat("127.0.0.1:", relay.port());
  for (size_t i = 0; i < sites_.size(); ++i) StartAgent(i);
  WaitUntilAllJoined();

  constexpr int kRounds = 3;
  absl::StatusOr<std::string> run_id =
      admin_->StartRun(MakeRunPlan(kRounds, 3, 90));
  ASSERT_TRUE(run_id.ok()) << run_id.status();
  absl::StatusOr<RunStatus> before = WaitUntilRoundTwoIsOpen(*run_id);
  ASSERT_TRUE(before.ok()) << before.status();
  relay.Cut();
  absl::SleepFor(absl::Seconds(6));
  relay.Restore();

  absl::StatusOr<RunStatus> after = WaitFor(
      *run_id, [](const RunStatus& s) { return s.state() == RunStatus::DONE; },
      absl::Seconds(180));
  ASSERT_TRUE(after.ok()) << after.status();
  ExpectIntactRun(*after, kRounds);
  // Nobody missed a round: each site contributed to every one, once.
  for (int round = 1; round <= kRounds; ++round) {
    EXPECT_EQ(after->rounds(round).contributors_size(), 3) << round;
  }
  // The cut was felt (connections refused while it lasted) and the agents
  // backed off before retrying.
  EXPECT_GT(relay.resets(), 0);
  int backoffs = 0;
  for (const std::string& site : sites_) {
    std::string log = ReadFileToString(dir_.Join(site + ".log")).value_or("");
    if (log.find("retrying in") != std::string::npos) ++backoffs;
  }
  EXPECT_GT(backoffs, 0);
}

}  // namespace
}  // namespace echofed
