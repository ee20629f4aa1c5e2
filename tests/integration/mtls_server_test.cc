// The real coordinator server on a loopback port with real certificates:
// who gets in, who is refused, and models crossing the wire.

#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include "common/audit_log.h"
#include "common/grpc_util.h"
#include "common/tensor_bundle.h"
#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/federation.grpc.pb.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::MakeBundle;
using testing::MakeEnrolment;
using testing::MakePlan;
using testing::TempDir;
using testing::TestPki;

class MtlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.tls = pki_.Coordinator();
    options.enrolment = MakeEnrolment({{"site-a", "site"},
                                       {"site-b", "site"},
                                       {"op", "operator"},
                                       {"stats", "statistician"},
                                       {"old-site", "site"}});
    options.coordinator.state_dir = dir_.Join("state");
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
        CoordinatorServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    address_ = "127.0.0.1:" + std::to_string(server_->port());
    site_a_ = Site(pki_.Participant("site-a", Role::kSite));
    site_b_ = Site(pki_.Participant("site-b", Role::kSite));
  }

  std::shared_ptr<grpc::Channel> Channel(const TlsMaterial& tls) {
    return grpc::CreateCustomChannel(address_, MakeChannelCredentials(tls),
                                     MakeChannelArguments("localhost"));
  }
  std::unique_ptr<Federation::Stub> Site(const TlsMaterial& tls) {
    return Federation::NewStub(Channel(tls));
  }
  std::unique_ptr<Admin::Stub> AdminStub(const TlsMaterial& tls) {
    return Admin::NewStub(Channel(tls));
  }

  static void Deadline(grpc::ClientContext* context, int seconds = 10) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(seconds));
  }

  grpc::Status Join(Federation::Stub& stub, int64_t images = 100) {
    grpc::ClientContext context;
    Deadline(&context);
    JoinRequest request;
    request.mutable_data()->set_images(images);
    JoinResponse response;
    return stub.Join(&context, request, &response);
  }

  grpc::Status Upload(Federation::Stub& stub, const UploadHeader& header,
                      const TensorBundle& bundle, UploadReceipt* receipt) {
    grpc::ClientContext context;
    Deadline(&context, 60);
    auto writer = stub.UploadUpdate(&context, receipt);
    UploadChunk first;
    *first.mutable_header() = header;
    writer->Write(first);
    BundleSource source(&bundle);
    ModelChunker chunker(&source);
    UploadChunk chunk;
    while (*chunker.Next(chunk.mutable_chunk())) {
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  }

  absl::StatusOr<TensorBundle> Download(Federation::Stub& stub,
                                        const std::string& run, int round) {
    grpc::ClientContext context;
    Deadline(&context, 60);
    DownloadRequest request;
    request.set_run_id(run);
    request.set_round(round);
    auto reader = stub.DownloadModel(&context, request);
    BundleAssembler assembler;
    ModelChunk chunk;
    absl::Status failure;
    while (reader->Read(&chunk)) {
      if (failure.ok()) failure = assembler.Accept(chunk);
    }
    absl::Status status = FromGrpcStatus(reader->Finish());
    if (!status.ok()) return status;
    if (!failure.ok()) return failure;
    return assembler.Finish();
  }

  // Starts a one-site-per-round run and feeds the initial model.
  std::string StartRun(const TensorBundle& initial, int min_sites = 1) {
    Plan plan = MakePlan({"site-a", "site-b"}, {}, 2);
    plan.set_min_sites(min_sites);
    plan.set_model(initial.manifest.model_name());
    grpc::ClientContext context;
    Deadline(&context);
    StartRunRequest request;
    *request.mutable_plan() = plan;
    StartRunResponse response;
    EXPECT_TRUE(AdminStub(op_)->StartRun(&context, request, &response).ok());
    // Whoever is asked uploads the initial model.
    for (auto* stub : {site_a_.get(), site_b_.get()}) {
      grpc::ClientContext poll;
      Deadline(&poll);
      NextTaskRequest next;
      Task task;
      EXPECT_TRUE(stub->NextTask(&poll, next, &task).ok());
      if (task.kind() == Task::INITIALIZE) {
        UploadHeader header;
        header.set_run_id(response.run_id());
        header.set_round(0);
        header.set_upload_id("init");
        UploadReceipt receipt;
        grpc::Status status = Upload(*stub, header, initial, &receipt);
        EXPECT_TRUE(status.ok()) << status.error_message();
        break;
      }
    }
    return response.run_id();
  }

  TempDir dir_;
  TestPki pki_;
  std::unique_ptr<CoordinatorServer> server_;
  std::string address_;
  TlsMaterial op_ = pki_.Participant("op", Role::kOperator);
  std::unique_ptr<Federation::Stub> site_a_;
  std::unique_ptr<Federation::Stub> site_b_;
};

TEST_F(MtlsServerTest, EnrolledSiteJoins) { EXPECT_TRUE(Join(*site_a_).ok()); }

TEST_F(MtlsServerTest, ClientWithoutCertificateIsUnauthenticated) {
  grpc::Status status = Join(*Site(pki_.NoClientCertificate()));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << status.error_message();
}

TEST_F(MtlsServerTest, CertificateFromAnotherCaIsUnauthenticated) {
  TlsMaterial stranger = TestPki::FromOtherCa("site-a", Role::kSite);
  // The stranger trusts our CA for the server, but its own certificate
  // comes from elsewhere.
  stranger.ca_cert = pki_.ca().cert;
  grpc::Status status = Join(*Site(stranger));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << status.error_message();
}

TEST_F(MtlsServerTest, ExpiredCertificateIsUnauthenticated) {
  TlsMaterial expired =
      pki_.Participant("old-site", Role::kSite, -10L * 86400, 1);
  EXPECT_EQ(Join(*Site(expired)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(MtlsServerTest, UnknownIdentityIsPermissionDenied) {
  grpc::Status status = Join(*Site(pki_.Participant("site-z", Role::kSite)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << status.error_message();
}

TEST_F(MtlsServerTest, RoleMustMatchEnrolment) {
  // "op" is enrolled as operator; a site certificate in its name is refused.
  EXPECT_EQ(Join(*Site(pki_.Participant("op", Role::kSite))).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(MtlsServerTest, SiteCannotCallTheAdminApi) {
  auto admin = AdminStub(pki_.Participant("site-a", Role::kSite));
  grpc::ClientContext context;
  Deadline(&context);
  StartRunRequest request;
  *request.mutable_plan() = MakePlan({"site-a"});
  StartRunResponse response;
  EXPECT_EQ(admin->StartRun(&context, request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  grpc::ClientContext status_context;
  Deadline(&status_context);
  RunStatus status;
  EXPECT_EQ(admin->GetRunStatus(&status_context, RunStatusRequest(), &status)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Both refusals are in the hash-chained audit log, and it verifies.
  std::string audit_path = dir_.Join("state/audit.log");
  absl::StatusOr<AuditVerification> audit = VerifyAuditLog(audit_path);
  ASSERT_TRUE(audit.ok()) << audit.status();
  std::ifstream in(audit_path);
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("site-a\trefused\t-\t-\t-\tStartRun: PERMISSION_DENIED"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("GetRunStatus: PERMISSION_DENIED"), std::string::npos);
}

TEST_F(MtlsServerTest, OperatorCannotActAsSite) {
  EXPECT_EQ(Join(*Site(op_)).error_code(), grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(MtlsServerTest, StatisticianReadsButCannotStartRuns) {
  auto stats = AdminStub(pki_.Participant("stats", Role::kStatistician));
  grpc::ClientContext list_context;
  Deadline(&list_context);
  ListRunsResponse runs;
  EXPECT_TRUE(stats->ListRuns(&list_context, ListRunsRequest(), &runs).ok());
  grpc::ClientContext start_context;
  Deadline(&start_context);
  StartRunRequest request;
  *request.mutable_plan() = MakePlan({"site-a"});
  StartRunResponse response;
  EXPECT_EQ(stats->StartRun(&start_context, request, &response).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
}

TEST_F(MtlsServerTest, BadUploadsAreRefusedOverTheWireAndTheRoundGoesOn) {
  ASSERT_TRUE(Join(*site_a_).ok());
  ASSERT_TRUE(Join(*site_b_).ok());
  std::string run = StartRun(MakeBundle("test_model", 0.0f));
  UploadHeader header;
  header.set_run_id(run);
  header.set_round(1);
  header.set_num_samples(10);
  header.set_upload_id("a1");
  UploadReceipt receipt;

  grpc::Status status =
      Upload(*site_a_, header, MakeBundle("test_model", 1.0f, 3, 99), &receipt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("expected"), std::string::npos)
      << status.error_message();

  TensorBundle poisoned = MakeBundle("test_model", 1.0f);
  float inf = std::numeric_limits<float>::infinity();
  std::memcpy(poisoned.data[1].data(), &inf, 4);
  ASSERT_TRUE(SealBundle(&poisoned).ok());
  status = Upload(*site_a_, header, poisoned, &receipt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  UploadHeader closed = header;
  closed.set_round(0);
  status = Upload(*site_b_, closed, MakeBundle("test_model", 1.0f), &receipt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // The good updates still make the round.
  ASSERT_TRUE(
      Upload(*site_a_, header, MakeBundle("test_model", 2.0f), &receipt).ok());
  header.set_upload_id("b1");
  ASSERT_TRUE(
      Upload(*site_b_, header, MakeBundle("test_model", 4.0f), &receipt).ok());
  absl::StatusOr<TensorBundle> global = Download(*site_a_, run, 1);
  ASSERT_TRUE(global.ok()) << global.status();
  float value;
  std::memcpy(&value, global->data[0].data(), 4);
  EXPECT_FLOAT_EQ(value, 3.0f);
}

TEST_F(MtlsServerTest, ModelsLargerThanAnyMessageLimitTransfer) {
  ASSERT_TRUE(Join(*site_a_).ok());
  ASSERT_TRUE(Join(*site_b_).ok());
  // 3 x 30M floats = 360 MB: far over gRPC's 4 MB default and our 64 MB cap.
  TensorBundle big = MakeBundle("big_model", 0.25f, 3, 30'000'000);
  std::string run = StartRun(big);
  absl::StatusOr<TensorBundle> downloaded = Download(*site_b_, run, 0);
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(ModelDigest(downloaded->manifest), ModelDigest(big.manifest));
  EXPECT_EQ(downloaded->data, big.data);
}

TEST_F(MtlsServerTest, DownloadOfUnknownRoundIsNotFound) {
  ASSERT_TRUE(Join(*site_a_).ok());
  ASSERT_TRUE(Join(*site_b_).ok());
  std::string run = StartRun(MakeBundle("test_model", 0.0f));
  EXPECT_EQ(Download(*site_a_, run, 5).status().code(),
            absl::StatusCode::kNotFound);
  auto outsider = Site(pki_.Participant("site-z", Role::kSite));
  EXPECT_EQ(Download(*outsider, run, 0).status().code(),
            absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace echofed
