// `echofed-agent doctor` against the real coordinator on a loopback port
// with real certificates: the network checks in-process, then the command
// itself as a separate process.

#include "site-agent/doctor.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "proto/federation.grpc.pb.h"
#include "site-agent/data/synthetic_cohort.h"
#include "tests/testing/doctor_checks.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::DescribeChecks;
using testing::FindCheck;
using testing::MakeEnrolment;
using testing::TempDir;
using testing::TestPki;

class DoctorIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.tls = pki_.Coordinator();
    options.enrolment = MakeEnrolment({{"site-1", "site"}, {"op", "operator"}});
    options.coordinator.state_dir = dir_.Join("state");
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
        CoordinatorServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
  }

  DoctorOptions Options() {
    DoctorOptions options;
    options.coordinator_address = address_;
    options.coordinator_name = "localhost";
    options.network_timeout = absl::Seconds(5);
    return options;
  }

  std::vector<DoctorCheck> Check(const TlsMaterial& tls,
                                 const DoctorOptions& options,
                                 absl::Duration* skew = nullptr) {
    return CheckCoordinator(options, &tls, skew);
  }

  // Writes a kit and an agent config that points at it; returns the config.
  std::string WriteAgentConfig(const std::string& name, const TlsMaterial& tls,
                               const std::string& data_dir) {
    std::string kit = dir_.Join(name);
    EXPECT_TRUE(MakeDirectories(kit).ok());
    EXPECT_TRUE(WriteFileAtomically(kit + "/ca.pem", tls.ca_cert).ok());
    EXPECT_TRUE(WriteFileAtomically(kit + "/cert.pem", tls.cert).ok());
    EXPECT_TRUE(WriteFileAtomically(kit + "/key.pem", tls.key, 0600).ok());
    std::string config = kit + "/agent.textproto";
    EXPECT_TRUE(WriteFileAtomically(
                    config, absl::StrCat("coordinator_address: \"", address_,
                                         "\"\n"
                                         "coordinator_name: \"localhost\"\n"
                                         "tls { ca_cert: \"ca.pem\" cert: "
                                         "\"cert.pem\" key: \"key.pem\" }\n"
                                         "data_dir: \"",
                                         data_dir, "\"\ndevice: \"cpu\"\n"))
                    .ok());
    return config;
  }

  TempDir dir_;
  TestPki pki_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
};

TEST_F(DoctorIntegrationTest, HealthySiteHandshakesAndMeasuresSkewNearZero) {
  absl::Duration skew = absl::InfiniteDuration();
  std::vector<DoctorCheck> checks = Check(
      pki_.Participant("site-1", Role::kSite, -300, 365), Options(), &skew);
  for (const char* name :
       {"coordinator DNS", "coordinator TCP", "TLS handshake", "clock skew"}) {
    const DoctorCheck* check = FindCheck(checks, name);
    ASSERT_NE(check, nullptr) << name << "\n" << DescribeChecks(checks);
    EXPECT_EQ(check->outcome, CheckOutcome::kPass) << DescribeChecks(checks);
  }
  EXPECT_TRUE(absl::StrContains(FindCheck(checks, "TLS handshake")->detail,
                                "as site 'site-1'"))
      << DescribeChecks(checks);
  // Same machine, same clock: only the round trip separates the readings.
  EXPECT_LT(absl::AbsDuration(skew), absl::Milliseconds(500)) << skew;
}

TEST_F(DoctorIntegrationTest, SkewedLocalClockFails) {
  // This machine's clock an hour behind the coordinator's.
  FakeClock slow(absl::Now() - absl::Hours(1));
  DoctorOptions options = Options();
  options.clock = &slow;
  absl::Duration skew;
  std::vector<DoctorCheck> checks =
      Check(pki_.Participant("site-1", Role::kSite, -300, 365), options, &skew);
  const DoctorCheck* check = FindCheck(checks, "clock skew");
  ASSERT_NE(check, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(check->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(check->detail, "behind")) << check->detail;
  EXPECT_NEAR(absl::ToDoubleSeconds(skew), 3600, 5);
}

TEST_F(DoctorIntegrationTest, CertificateOfAnotherCaIsRefused) {
  TlsMaterial stranger = TestPki::FromOtherCa("site-1", Role::kSite);
  stranger.ca_cert = pki_.ca().cert;
  std::vector<DoctorCheck> checks = Check(stranger, Options());
  const DoctorCheck* check = FindCheck(checks, "TLS handshake");
  ASSERT_NE(check, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(check->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(check->detail, "refused this certificate"))
      << check->detail;
  EXPECT_TRUE(absl::StrContains(check->fix, "echofed pki issue")) << check->fix;
  EXPECT_EQ(FindCheck(checks, "clock skew"), nullptr);
}

TEST_F(DoctorIntegrationTest, UnenrolledSiteIsToldToEnrol) {
  std::vector<DoctorCheck> checks =
      Check(pki_.Participant("site-9", Role::kSite), Options());
  const DoctorCheck* check = FindCheck(checks, "TLS handshake");
  ASSERT_NE(check, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(check->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(check->fix, "enrol")) << check->fix;
}

TEST_F(DoctorIntegrationTest, WrongServerNameFailsTheHandshake) {
  DoctorOptions options = Options();
  options.coordinator_name = "coordinator.elsewhere.example";
  std::vector<DoctorCheck> checks =
      Check(pki_.Participant("site-1", Role::kSite), options);
  const DoctorCheck* check = FindCheck(checks, "TLS handshake");
  ASSERT_NE(check, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(check->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(check->fix, "coordinator_name")) << check->fix;
}

TEST_F(DoctorIntegrationTest, ClosedPortFailsTcpWithFirewallFix) {
  // A bound socket that does not listen: connections to it are refused.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  DoctorOptions options = Options();
  options.coordinator_address =
      absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  std::vector<DoctorCheck> checks =
      Check(pki_.Participant("site-1", Role::kSite), options);
  close(fd);
  const DoctorCheck* check = FindCheck(checks, "coordinator TCP");
  ASSERT_NE(check, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(check->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(check->detail, "refused")) << check->detail;
  EXPECT_TRUE(absl::StrContains(check->fix, "outbound TCP")) << check->fix;
  EXPECT_EQ(FindCheck(checks, "TLS handshake"), nullptr);
}

TEST_F(DoctorIntegrationTest, UnresolvableHostFailsDns) {
  DoctorOptions options = Options();
  // .invalid never resolves (RFC 6761).
  options.coordinator_address = "coordinator.invalid:7443";
  std::vector<DoctorCheck> checks =
      Check(pki_.Participant("site-1", Role::kSite), options);
  const DoctorCheck* check = FindCheck(checks, "coordinator DNS");
  ASSERT_NE(check, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(check->outcome, CheckOutcome::kFail);
  EXPECT_EQ(FindCheck(checks, "coordinator TCP"), nullptr);
}

TEST_F(DoctorIntegrationTest, PingIsForSitesAndChangesNothing) {
  auto stub = [&](const TlsMaterial& tls) {
    return Federation::NewStub(
        grpc::CreateCustomChannel(address_, MakeChannelCredentials(tls),
                                  MakeChannelArguments("localhost")));
  };
  auto deadline = [](grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(10));
  };
  std::unique_ptr<Federation::Stub> site =
      stub(pki_.Participant("site-1", Role::kSite));
  grpc::ClientContext ping;
  deadline(&ping);
  PingResponse response;
  grpc::Status status = site->Ping(&ping, PingRequest(), &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.site(), "site-1");
  EXPECT_NEAR(static_cast<double>(response.server_time_unix_micros()),
              static_cast<double>(absl::ToUnixMicros(absl::Now())), 5e6);
  // The site has not joined: a Ping is not a join.
  grpc::ClientContext heartbeat;
  deadline(&heartbeat);
  HeartbeatResponse beat;
  EXPECT_EQ(site->Heartbeat(&heartbeat, HeartbeatRequest(), &beat).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  // Operators do not speak the federation API.
  grpc::ClientContext operator_ping;
  deadline(&operator_ping);
  EXPECT_EQ(stub(pki_.Participant("op", Role::kOperator))
                ->Ping(&operator_ping, PingRequest(), &response)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

// The command as site IT runs it: exit status and printed verdicts.
class DoctorCommandTest : public DoctorIntegrationTest {
 protected:
  void SetUp() override {
    DoctorIntegrationTest::SetUp();
    SyntheticCohortOptions cohort;
    cohort.out_dir = dir_.Join("data");
    cohort.sites = 1;
    cohort.patients_per_site = 10;
    cohort.image_size = 64;
    ASSERT_TRUE(WriteSyntheticCohort(cohort).ok());
    Plan plan = testing::MakePlan({"site-1"});
    plan.set_model("small_cnn");
    plan.set_image_size(32);
    plan.set_batch_size(4);
    plan_path_ = dir_.Join("plan.textproto");
    ASSERT_TRUE(WriteFileAtomically(plan_path_, ToTextProto(plan)).ok());
    ASSERT_TRUE(MakeDirectories(dir_.Join("agent-state")).ok());
  }

  // Runs the doctor; returns its exit code and fills `output`.
  int RunDoctor(const std::string& config, std::string* output) {
    std::string log = dir_.Join("doctor.log");
    std::remove(log.c_str());
    absl::StatusOr<Subprocess> doctor = Subprocess::Start(
        {testing::BinaryPath("echofed-agent"), "doctor", "--config", config,
         "--plan", plan_path_, "--state-dir", dir_.Join("agent-state"),
         "--threads", "1"},
        log);
    EXPECT_TRUE(doctor.ok()) << doctor.status();
    if (!doctor.ok()) return -1;
    std::optional<int> code = doctor->Wait(absl::Seconds(120));
    absl::StatusOr<std::string> text = ReadFileToString(log);
    *output = text.ok() ? *text : "";
    return code ? *code : -1;
  }

  std::string plan_path_;
};

TEST_F(DoctorCommandTest, HealthySiteExitsZero) {
  std::string config = WriteAgentConfig(
      "site-1", pki_.Participant("site-1", Role::kSite, -300, 365),
      dir_.Join("data/site-1"));
  std::string output;
  EXPECT_EQ(RunDoctor(config, &output), 0) << output;
  for (const char* line :
       {"PASS  certificate ", "PASS  study CA", "PASS  TLS handshake",
        "PASS  clock skew", "PASS  device", "PASS  site data",
        "PASS  round time", " 0 failed"}) {
    EXPECT_TRUE(absl::StrContains(output, line)) << line << "\n" << output;
  }
  EXPECT_FALSE(absl::StrContains(output, "FAIL")) << output;
}

TEST_F(DoctorCommandTest, WrongCaExitsNonZeroWithFix) {
  TlsMaterial stranger = TestPki::FromOtherCa("site-1", Role::kSite);
  stranger.ca_cert = pki_.ca().cert;
  std::string config =
      WriteAgentConfig("stranger", stranger, dir_.Join("data/site-1"));
  std::string output;
  EXPECT_EQ(RunDoctor(config, &output), 1) << output;
  EXPECT_TRUE(absl::StrContains(output, "FAIL  study CA")) << output;
  EXPECT_TRUE(absl::StrContains(
      output, "fix: use ca.pem and cert.pem from the same kit"))
      << output;
  EXPECT_TRUE(absl::StrContains(output, "FAIL  TLS handshake")) << output;
}

TEST_F(DoctorCommandTest, BrokenCertificateExitsNonZero) {
  TlsMaterial tls = pki_.Participant("site-1", Role::kSite);
  tls.cert = "garbage\n";
  std::string config =
      WriteAgentConfig("broken", tls, dir_.Join("data/site-1"));
  std::string output;
  EXPECT_EQ(RunDoctor(config, &output), 1) << output;
  EXPECT_TRUE(absl::StrContains(output, "FAIL  certificate ")) << output;
  EXPECT_TRUE(absl::StrContains(output, "fix: copy cert.pem from your kit"))
      << output;
}

}  // namespace
}  // namespace echofed
