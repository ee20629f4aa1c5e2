// Differential privacy in a real federation: agent processes train under a
// plan with differential_privacy while the coordinator records what they
// send (a gRPC interceptor, after TLS). Each site's epsilon in the run's
// status is the accountant's for the rounds done; no training loss leaves a
// site; the global model carries the noise. A site with its own privacy
// budget declines runs that do not keep it, and sends no model.

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "common/tensor_bundle.h"
#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/federation.grpc.pb.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/received_messages.h"

namespace echofed {
namespace {

using testing::BinaryPath;
using testing::MakeEnrolment;
using testing::TempDir;
using testing::TestPki;

// The upload headers and heartbeats the coordinator received.
struct Recording {
  absl::Mutex mu;
  std::vector<UploadHeader> headers ABSL_GUARDED_BY(mu);
  // The model digest of each upload's manifest, in order.
  std::vector<std::string> upload_digests ABSL_GUARDED_BY(mu);
  std::vector<HeartbeatRequest> heartbeats ABSL_GUARDED_BY(mu);
  int uploads ABSL_GUARDED_BY(mu) = 0;
};

// Keeps what the coordinator received that this test looks at.
void Record(Recording* recording, const std::string& method, void* message) {
  absl::MutexLock lock(&recording->mu);
  if (method == "/echofed.Federation/UploadUpdate") {
    ++recording->uploads;
    auto* chunk = static_cast<UploadChunk*>(message);
    if (chunk->has_header()) recording->headers.push_back(chunk->header());
    if (chunk->has_chunk() && chunk->chunk().has_manifest()) {
      recording->upload_digests.push_back(
          ModelDigest(chunk->chunk().manifest()));
    }
  } else if (method == "/echofed.Federation/Heartbeat") {
    recording->heartbeats.push_back(*static_cast<HeartbeatRequest*>(message));
  }
}

// The floating-point tensors of a committed model, by name.
std::map<std::string, std::vector<double>> Floats(const std::string& path) {
  std::map<std::string, std::vector<double>> out;
  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      ModelFileReader::Open(path);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  TensorBundle bundle = *(*reader)->ReadAll();
  for (int i = 0; i < bundle.manifest.tensors_size(); ++i) {
    const DType dtype = bundle.manifest.tensors(i).dtype();
    std::vector<double>& values = out[bundle.manifest.tensors(i).name()];
    if (dtype == FLOAT32) {
      std::vector<float> floats(bundle.data[i].size() / 4);
      std::memcpy(floats.data(), bundle.data[i].data(), floats.size() * 4);
      values.assign(floats.begin(), floats.end());
    } else if (dtype == FLOAT64) {
      values.resize(bundle.data[i].size() / 8);
      std::memcpy(values.data(), bundle.data[i].data(), values.size() * 8);
    } else {
      out.erase(bundle.manifest.tensors(i).name());
    }
  }
  return out;
}

class DifferentialPrivacyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Subprocess> synth = Subprocess::Start(
        {BinaryPath("echofed-agent"), "synth", "--out", dir_.Join("data"),
         "--sites", "2", "--patients", "16", "--image-size", "64"},
        dir_.Join("synth.log"));
    ASSERT_TRUE(synth.ok());
    ASSERT_EQ(synth->Wait(absl::Seconds(120)), 0);

    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.tls = pki_.Coordinator();
    options.enrolment = MakeEnrolment(
        {{"site-1", "site"}, {"site-2", "site"}, {"op", "operator"}});
    options.coordinator.state_dir = dir_.Join("state");
    Recording* recording = &recording_;
    options.make_interceptors = testing::ObserveReceivedMessages(
        [recording](const std::string& method, void* message) {
          Record(recording, method, message);
        });
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
        CoordinatorServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = absl::StrCat("127.0.0.1:", server_->port());
    admin_ = Admin::NewStub(grpc::CreateCustomChannel(
        address_,
        MakeChannelCredentials(pki_.Participant("op", Role::kOperator)),
        MakeChannelArguments("localhost")));
  }

  void TearDown() override {
    for (Subprocess& agent : agents_) agent.Terminate();
    if (HasFailure() || std::getenv("ECHOFED_SHOW_AGENT_LOGS") != nullptr) {
      for (const char* site : {"site-1", "site-2"}) {
        std::cerr << "--- " << site << ".log\n"
                  << ReadFileToString(dir_.Join(absl::StrCat(site, ".log")))
                         .value_or("(none)");
      }
    }
  }

  // An agent for `site`; `extra_config` is added to its AgentConfig.
  void StartAgent(const std::string& site, const std::string& extra_config) {
    TlsMaterial tls = pki_.Participant(site, Role::kSite);
    const std::string kit = dir_.Join("kits/" + site);
    ASSERT_TRUE(MakeDirectories(kit).ok());
    ASSERT_TRUE(WriteFileAtomically(kit + "/ca.pem", tls.ca_cert).ok());
    ASSERT_TRUE(WriteFileAtomically(kit + "/cert.pem", tls.cert).ok());
    ASSERT_TRUE(WriteFileAtomically(kit + "/key.pem", tls.key).ok());
    const std::string config = dir_.Join(site + ".textproto");
    ASSERT_TRUE(WriteFileAtomically(
                    config, absl::StrCat("coordinator_address: \"", address_,
                                         "\"\ncoordinator_name: \"localhost\"\n"
                                         "tls { ca_cert: \"kits/",
                                         site, "/ca.pem\" cert: \"kits/", site,
                                         "/cert.pem\" key: \"kits/", site,
                                         "/key.pem\" }\ndata_dir: \"data/",
                                         site, "\"\n", extra_config))
                    .ok());
    absl::StatusOr<Subprocess> agent =
        Subprocess::Start({BinaryPath("echofed-agent"), "run", "--config",
                           config, "--exit-after-run", "--threads", "1"},
                          dir_.Join(site + ".log"));
    ASSERT_TRUE(agent.ok());
    agents_.push_back(std::move(*agent));
  }

  // The run's status once it is done or has failed (4 minutes at most).
  RunStatus WaitUntilOver(const std::string& run_id) {
    return WaitFor(
        run_id,
        [](const RunStatus& run) {
          return run.state() == RunStatus::DONE ||
                 run.state() == RunStatus::FAILED;
        },
        absl::Minutes(4));
  }

  std::string StartRun(const Plan& plan) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    StartRunRequest request;
    *request.mutable_plan() = plan;
    StartRunResponse started;
    grpc::Status status = admin_->StartRun(&context, request, &started);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return started.run_id();
  }

  RunStatus Status(const std::string& run_id) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    RunStatusRequest request;
    request.set_run_id(run_id);
    RunStatus run;
    admin_->GetRunStatus(&context, request, &run);
    return run;
  }

  // Polls the run's status until `done` holds or `limit` passes.
  RunStatus WaitFor(const std::string& run_id,
                    const std::function<bool(const RunStatus&)>& done,
                    absl::Duration limit) {
    RunStatus run;
    for (absl::Time give_up = absl::Now() + limit; absl::Now() < give_up;
         absl::SleepFor(absl::Milliseconds(200))) {
      run = Status(run_id);
      if (done(run)) break;
    }
    return run;
  }

  TestPki pki_;
  TempDir dir_;
  Recording recording_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
  std::unique_ptr<Admin::Stub> admin_;
  std::vector<Subprocess> agents_;
};

TEST_F(DifferentialPrivacyTest, EachSitesEpsilonIsTheAccountantsForItsRounds) {
  StartAgent("site-1", "");
  // A budget the plan keeps (it projects to about 9.0).
  StartAgent("site-2", "max_epsilon: 12\n");
  Plan plan = testing::MakePlan({"site-1", "site-2"}, {}, 3);
  // A fusion model: its clinical statistics buffers depend on the data.
  plan.set_model("resnet_small_fusion");
  plan.set_image_size(64);
  plan.set_evaluate_every_round(false);
  const double clip_norm = 0.05, noise_multiplier = 2.0;
  plan.mutable_differential_privacy()->set_clip_norm(clip_norm);
  plan.mutable_differential_privacy()->set_noise_multiplier(noise_multiplier);
  const std::string run_id = StartRun(plan);
  RunStatus run = WaitUntilOver(run_id);
  ASSERT_EQ(run.state(), RunStatus::DONE) << run.message();

  // The run's status: per site and round, the accountant's epsilon for the
  // rounds done, at the default delta.
  ASSERT_EQ(run.rounds_size(), 4);
  EXPECT_EQ(run.plan().differential_privacy().delta(), 1e-5);
  for (int round = 1; round <= 3; ++round) {
    const double expected =
        SiteLevelEpsilon(noise_multiplier, round, 1e-5)->epsilon;
    const RoundRecord& record = run.rounds(round);
    ASSERT_EQ(record.privacy_size(), 2) << round;
    for (const SitePrivacy& privacy : record.privacy()) {
      EXPECT_DOUBLE_EQ(privacy.epsilon(), expected)
          << privacy.site() << " round " << round;
      EXPECT_EQ(privacy.delta(), 1e-5);
    }
  }
  std::vector<SitePrivacySpent> latest = LatestSitePrivacy(run);
  ASSERT_EQ(latest.size(), 2u);
  for (const SitePrivacySpent& site : latest) {
    EXPECT_DOUBLE_EQ(site.epsilon, ProjectedRunEpsilon(run.plan())->epsilon);
  }

  {
    absl::MutexLock lock(&recording_.mu);
    int trained = 0;
    for (const UploadHeader& header : recording_.headers) {
      if (header.round() == 0) {
        // The initial model spends nothing.
        EXPECT_EQ(header.privacy_epsilon(), 0);
        continue;
      }
      ++trained;
      // The training loss depends on the data and is not noised.
      EXPECT_EQ(header.mean_train_loss(), 0);
      EXPECT_GT(header.privacy_epsilon(), 0);
    }
    EXPECT_EQ(trained, 6);
    int training_heartbeats = 0;
    for (const HeartbeatRequest& heartbeat : recording_.heartbeats) {
      EXPECT_EQ(heartbeat.loss(), 0) << heartbeat.activity();
      training_heartbeats += heartbeat.activity() == "training";
    }
    EXPECT_GT(training_heartbeats, 0);
  }

  // The initial model carries no site data: the clinical statistics are
  // those of a fresh model (zeros), not the initialising site's.
  int statistics = 0;
  for (const auto& [name, values] : Floats(absl::StrFormat(
           "%s/models/%s/round-00000.efm", dir_.Join("state"), run_id))) {
    if (!absl::StrContains(name, "stat_")) continue;
    ++statistics;
    for (double value : values) ASSERT_EQ(value, 0) << name;
  }
  EXPECT_EQ(statistics, 3);

  // The global model moved by the noise: two clipped updates average to a
  // change of norm at most C, the noise adds about z C sqrt(d / 2) (equal
  // FedAvg weights).
  for (int round = 1; round <= 3; ++round) {
    auto before = Floats(absl::StrFormat(
        "%s/models/%s/round-%05d.efm", dir_.Join("state"), run_id, round - 1));
    auto after = Floats(absl::StrFormat("%s/models/%s/round-%05d.efm",
                                        dir_.Join("state"), run_id, round));
    ASSERT_EQ(before.size(), after.size());
    double squares = 0;
    int64_t coordinates = 0;
    for (const auto& [name, values] : after) {
      const std::vector<double>& old = before[name];
      ASSERT_EQ(old.size(), values.size()) << name;
      for (size_t i = 0; i < values.size(); ++i) {
        squares += std::pow(values[i] - old[i], 2);
      }
      coordinates += values.size();
    }
    const double expected_noise =
        noise_multiplier * clip_norm * std::sqrt(coordinates / 2.0);
    EXPECT_GT(std::sqrt(squares), 0.8 * expected_noise - clip_norm)
        << "round " << round << ", " << coordinates << " coordinates";
    // At most z C sqrt(d) (one site with all the weight).
    EXPECT_LT(std::sqrt(squares), 1.45 * expected_noise + clip_norm);
  }
}

// The update is measured from the global model as downloaded. Under FedBN a
// site puts its own batch-norm layers back after loading the global model;
// measured from those, the released layers would be the site's private
// ones plus noise. With a tiny clip norm and noise, every released update
// is then the global model it started from: the model does not move.
TEST_F(DifferentialPrivacyTest, FedBnUpdatesAreMeasuredFromTheGlobalModel) {
  StartAgent("site-1", "");
  StartAgent("site-2", "");
  Plan plan = testing::MakePlan({"site-1", "site-2"}, {}, 3);
  plan.set_model("resnet_small_fusion");
  plan.set_image_size(64);
  plan.set_strategy(Plan::FEDBN);
  plan.set_evaluate_every_round(false);
  plan.mutable_differential_privacy()->set_clip_norm(1e-7);
  plan.mutable_differential_privacy()->set_noise_multiplier(1e-3);
  const std::string run_id = StartRun(plan);
  RunStatus run = WaitUntilOver(run_id);
  ASSERT_EQ(run.state(), RunStatus::DONE) << run.message();
  for (int round = 1; round <= 3; ++round) {
    auto before = Floats(absl::StrFormat(
        "%s/models/%s/round-%05d.efm", dir_.Join("state"), run_id, round - 1));
    auto after = Floats(absl::StrFormat("%s/models/%s/round-%05d.efm",
                                        dir_.Join("state"), run_id, round));
    ASSERT_EQ(before.size(), after.size());
    int batch_norm_tensors = 0;
    for (const auto& [name, values] : after) {
      batch_norm_tensors += absl::StrContains(name, "running_mean");
      const std::vector<double>& old = before[name];
      ASSERT_EQ(old.size(), values.size()) << name;
      for (size_t i = 0; i < values.size(); ++i) {
        // float32 rounding of a value near 1 and the 1e-7 move.
        ASSERT_NEAR(values[i], old[i], 1e-5 * std::max(1.0, std::abs(old[i])))
            << name << "[" << i << "] round " << round;
      }
    }
    EXPECT_GT(batch_norm_tensors, 0);
  }
}

// A round already released is not released again with fresh noise (that
// would be a second release the count leaves out): here the coordinator
// refuses every update (max_update_norm), and asks for the round again; the
// agent sends the very same update each time.
TEST_F(DifferentialPrivacyTest, ARoundIsReleasedOnce) {
  StartAgent("site-1", "");
  Plan plan = testing::MakePlan({"site-1"}, {}, 2);
  plan.set_model("small_cnn");
  plan.set_image_size(32);
  plan.set_max_update_norm(1e-3);
  plan.mutable_differential_privacy()->set_clip_norm(1);
  plan.mutable_differential_privacy()->set_noise_multiplier(1);
  const std::string run_id = StartRun(plan);
  // The initial model, then round 1's update (refused), then at least two
  // more TRAIN tasks for round 1 (the agent backs off 0.25 s, 0.5 s, ...).
  absl::SleepFor(absl::Seconds(5));
  RunStatus run = Status(run_id);
  EXPECT_EQ(run.state(), RunStatus::TRAINING);
  EXPECT_EQ(run.round(), 1);
  absl::MutexLock lock(&recording_.mu);
  ASSERT_EQ(recording_.headers.size(), recording_.upload_digests.size());
  int round_one = 0;
  std::set<std::string> round_one_models;
  for (size_t i = 0; i < recording_.headers.size(); ++i) {
    if (recording_.headers[i].round() != 1) continue;
    ++round_one;
    round_one_models.insert(recording_.upload_digests[i]);
  }
  EXPECT_GE(round_one, 2);
  EXPECT_EQ(round_one_models.size(), 1u);
}

// The same across a restart of the agent: its privacy ledger (state_dir)
// remembers the release, so the new process does not train round 1 again.
TEST_F(DifferentialPrivacyTest, ARestartedAgentDoesNotReleaseARoundAgain) {
  const std::string config = "state_dir: \"agent-state\"\n";
  StartAgent("site-1", config);
  Plan plan = testing::MakePlan({"site-1"}, {}, 2);
  plan.set_model("small_cnn");
  plan.set_image_size(32);
  plan.set_max_update_norm(1e-3);  // every update refused
  plan.mutable_differential_privacy()->set_clip_norm(1);
  plan.mutable_differential_privacy()->set_noise_multiplier(1);
  const std::string run_id = StartRun(plan);
  auto round_one_models = [&] {
    absl::MutexLock lock(&recording_.mu);
    std::set<std::string> models;
    for (size_t i = 0;
         i < recording_.headers.size() && i < recording_.upload_digests.size();
         ++i) {
      if (recording_.headers[i].round() == 1) {
        models.insert(recording_.upload_digests[i]);
      }
    }
    return models;
  };
  absl::Time until = absl::Now() + absl::Seconds(60);
  while (round_one_models().empty() && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(round_one_models().size(), 1u);
  agents_.back().Signal(SIGKILL);
  agents_.back().Wait(absl::Seconds(10));
  StartAgent("site-1", config);
  // The new process is asked for round 1 again: it either refuses (its log
  // says so) or sends a second model.
  auto refused = [&] {
    return ReadFileToString(dir_.Join("site-1.log"))
               .value_or("")
               .find("already released under differential privacy") !=
           std::string::npos;
  };
  until = absl::Now() + absl::Seconds(60);
  while (!refused() && round_one_models().size() < 2 && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(Status(run_id).round(), 1);
  EXPECT_EQ(round_one_models().size(), 1u);
  absl::StatusOr<std::string> ledger =
      ReadFileToString(dir_.Join("agent-state/privacy-ledger.txt"));
  ASSERT_TRUE(ledger.ok()) << ledger.status();
  EXPECT_EQ(*ledger, absl::StrCat(run_id, " 1\n"));
  EXPECT_TRUE(refused());
}

TEST_F(DifferentialPrivacyTest, SiteWithABudgetDeclinesAndSendsNoModel) {
  StartAgent("site-1", "max_epsilon: 4\n");
  auto declined = [](const RunStatus& run) {
    return run.sites_size() > 0 &&
           absl::StartsWith(run.sites(0).activity(), "declined");
  };
  // A plan without differential privacy.
  Plan plan = testing::MakePlan({"site-1"}, {}, 2);
  plan.set_model("small_cnn");
  plan.set_image_size(32);
  std::string run_id = StartRun(plan);
  RunStatus run = WaitFor(run_id, declined, absl::Seconds(60));
  ASSERT_TRUE(declined(run)) << run.sites(0).activity();
  EXPECT_EQ(run.sites(0).activity(), "declined: plan has no DP");
  {
    grpc::ClientContext context;
    StopRunRequest request;
    request.set_run_id(run_id);
    StopRunResponse response;
    ASSERT_TRUE(admin_->StopRun(&context, request, &response).ok());
  }
  // The agent leaves once told the run is over (--exit-after-run); a new
  // one for the next run.
  EXPECT_TRUE(agents_.back().Wait(absl::Seconds(60)).has_value());
  StartAgent("site-1", "max_epsilon: 4\n");
  // Differential privacy, but more rounds than the budget allows:
  // z = 1 over 2 rounds projects to about 16.5 > 4.
  plan.mutable_differential_privacy()->set_clip_norm(1);
  plan.mutable_differential_privacy()->set_noise_multiplier(1);
  run_id = StartRun(plan);
  run = WaitFor(
      run_id,
      [&](const RunStatus& run) {
        return declined(run) &&
               absl::StrContains(run.sites(0).activity(), "epsilon");
      },
      absl::Seconds(60));
  EXPECT_EQ(run.sites(0).activity(),
            absl::StrFormat("declined: epsilon %.3g > 4",
                            ProjectedRunEpsilon(run.plan())->epsilon));
  EXPECT_EQ(run.state(), RunStatus::INITIALIZING);
  absl::MutexLock lock(&recording_.mu);
  EXPECT_EQ(recording_.uploads, 0);
}

}  // namespace
}  // namespace echofed
