// The real coordinator server on a loopback port with real certificates:
// who gets in, who is refused, and models crossing the wire.

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>

#include "absl/synchronization/notification.h"
#include "common/audit_log.h"
#include "common/files.h"
#include "common/grpc_util.h"
#include "common/tensor_bundle.h"
#include "coordinator/server.h"
#include "grpcpp/generic/generic_stub.h"
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
  void SetUp() override { StartServer(""); }

  void StartServer(const std::string& crl_file) {
    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.tls = pki_.Coordinator();
    options.enrolment = MakeEnrolment({{"site-a", "site"},
                                       {"site-b", "site"},
                                       {"op", "operator"},
                                       {"stats", "statistician"},
                                       {"old-site", "site"}});
    options.coordinator.state_dir = dir_.Join("state");
    options.crl_file = crl_file;
    // Short, so the stalled-stream test need not wait long.
    options.stream_idle_timeout = absl::Seconds(2);
    // Every call looks at the CRL file, so the test needs no sleeps.
    options.crl_check_interval = absl::ZeroDuration();
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

std::string AuditText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)),
                     std::istreambuf_iterator<char>());
}

// An agent killed (or its link dropped) halfway through an upload: the
// partial update is discarded, and the same upload sent again counts once.
TEST_F(MtlsServerTest, BrokenOffUploadIsDiscardedAndTheRetryCountsOnce) {
  ASSERT_TRUE(Join(*site_a_).ok());
  ASSERT_TRUE(Join(*site_b_).ok());
  std::string run = StartRun(MakeBundle("test_model", 0.0f, 3, 1'000'000),
                             /*min_sites=*/2);
  UploadHeader header;
  header.set_run_id(run);
  header.set_round(1);
  header.set_num_samples(10);
  header.set_upload_id("a-round-1");
  TensorBundle update = MakeBundle("test_model", 2.0f, 3, 1'000'000);
  {
    grpc::ClientContext context;
    Deadline(&context, 60);
    UploadReceipt receipt;
    auto writer = site_a_->UploadUpdate(&context, &receipt);
    UploadChunk first;
    *first.mutable_header() = header;
    ASSERT_TRUE(writer->Write(first));
    BundleSource source(&update);
    ModelChunker chunker(&source);
    UploadChunk chunk;
    for (int i = 0; i < 4 && *chunker.Next(chunk.mutable_chunk()); ++i) {
      ASSERT_TRUE(writer->Write(chunk));
    }
    context.TryCancel();  // the process dies mid-stream
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // The round is still waiting for both sites; nothing half-received stays.
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (absl::Now() < until &&
         !std::filesystem::is_empty(dir_.Join("state/incoming"))) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir_.Join("state/incoming")));
  UploadReceipt receipt;
  ASSERT_TRUE(Upload(*site_a_, header, update, &receipt).ok());
  EXPECT_FALSE(receipt.duplicate());
  ASSERT_TRUE(Upload(*site_a_, header, update, &receipt).ok());  // a retry
  EXPECT_TRUE(receipt.duplicate());
  header.set_upload_id("b-round-1");
  ASSERT_TRUE(Upload(*site_b_, header, MakeBundle("test_model", 4.0f, 3,
                                                  1'000'000),
                     &receipt)
                  .ok());
  absl::StatusOr<TensorBundle> global = Download(*site_a_, run, 1);
  ASSERT_TRUE(global.ok()) << global.status();
  float value;
  std::memcpy(&value, global->data[0].data(), 4);
  EXPECT_FLOAT_EQ(value, 3.0f);  // each site once, equal weights
}

// A site that opens an upload and then sends nothing is cut off; it cannot
// hold the coordinator's stream and spool file for as long as it likes.
TEST_F(MtlsServerTest, StalledUploadIsCancelled) {
  ASSERT_TRUE(Join(*site_a_).ok());
  ASSERT_TRUE(Join(*site_b_).ok());
  std::string run = StartRun(MakeBundle("test_model", 0.0f));
  grpc::ClientContext context;
  Deadline(&context, 60);
  UploadReceipt receipt;
  auto writer = site_a_->UploadUpdate(&context, &receipt);
  UploadChunk first;
  first.mutable_header()->set_run_id(run);
  first.mutable_header()->set_round(1);
  first.mutable_header()->set_num_samples(10);
  first.mutable_header()->set_upload_id("stalled");
  ASSERT_TRUE(writer->Write(first));
  absl::Time started = absl::Now();
  // Silence; the coordinator's watch (2 s here) cancels the stream.
  grpc::Status status = writer->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED)
      << status.error_message();
  EXPECT_LT(absl::Now() - started, absl::Seconds(30));
  EXPECT_TRUE(std::filesystem::is_empty(dir_.Join("state/incoming")));
}

// Identity comes from the certificate alone: site-a cannot take site-b's
// place in a round, and an update replayed from an earlier round is refused.
TEST_F(MtlsServerTest, NoSiteFillsAnothersPlaceAndOldUpdatesAreNotReplayed) {
  ASSERT_TRUE(Join(*site_a_).ok());
  ASSERT_TRUE(Join(*site_b_).ok());
  std::string run = StartRun(MakeBundle("test_model", 0.0f), /*min_sites=*/2);
  UploadHeader header;
  header.set_run_id(run);
  header.set_round(1);
  header.set_num_samples(10);
  header.set_upload_id("a-1");
  UploadReceipt receipt;
  ASSERT_TRUE(
      Upload(*site_a_, header, MakeBundle("test_model", 1.0f), &receipt).ok());
  UploadHeader as_b = header;
  as_b.set_upload_id("b-1");  // site-a's certificate, site-b's upload id
  grpc::Status second =
      Upload(*site_a_, as_b, MakeBundle("test_model", 9.0f), &receipt);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  header.set_upload_id("b-1");
  ASSERT_TRUE(
      Upload(*site_b_, header, MakeBundle("test_model", 3.0f), &receipt).ok());
  absl::StatusOr<TensorBundle> round1 = Download(*site_a_, run, 1);
  ASSERT_TRUE(round1.ok()) << round1.status();
  float value;
  std::memcpy(&value, round1->data[0].data(), 4);
  EXPECT_FLOAT_EQ(value, 2.0f);  // 1 and 3; the 9 never counted

  // Round 1 has closed: its upload sent again, exactly as before, is refused.
  header.set_upload_id("a-1");
  grpc::Status replay =
      Upload(*site_a_, header, MakeBundle("test_model", 1.0f), &receipt);
  EXPECT_EQ(replay.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << replay.error_message();
  std::string audit = AuditText(dir_.Join("state/audit.log"));
  EXPECT_NE(audit.find("site-a\tupdate-refused"), std::string::npos) << audit;
  EXPECT_TRUE(VerifyAuditLog(dir_.Join("state/audit.log")).ok());
}

// Bytes that are not the message the method expects, and a message over
// the size limit: refused, and the server goes on serving.
TEST_F(MtlsServerTest, MalformedAndOversizedMessagesAreRefused) {
  grpc::GenericStub generic(Channel(pki_.Participant("site-a", Role::kSite)));
  grpc::Slice garbage_slice(std::string("\xff\xff\xff\xff\x0f garbage", 14));
  grpc::ByteBuffer garbage(&garbage_slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  Deadline(&context);
  absl::Notification done;
  grpc::Status malformed;
  generic.UnaryCall(&context, "/echofed.Federation/Join", grpc::StubOptions(),
                    &garbage, &response, [&](grpc::Status status) {
                      malformed = status;
                      done.Notify();
                    });
  done.WaitForNotification();
  EXPECT_FALSE(malformed.ok());
  EXPECT_NE(malformed.error_code(), grpc::StatusCode::UNAVAILABLE);

  // A client without our own 64 MB send cap, sending 80 MB.
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto unlimited = Federation::NewStub(grpc::CreateCustomChannel(
      address_,
      MakeChannelCredentials(pki_.Participant("site-a", Role::kSite)), args));
  grpc::ClientContext big_context;
  Deadline(&big_context, 60);
  JoinRequest big;
  big.set_device(std::string(80 << 20, 'x'));
  JoinResponse joined;
  EXPECT_EQ(unlimited->Join(&big_context, big, &joined).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);

  EXPECT_TRUE(Join(*site_a_).ok());  // still serving
}

// The coordinator with the study CA's CRL file (crl_file), as deployed.
class MtlsRevocationTest : public MtlsServerTest {
 protected:
  void SetUp() override {
    // site-a's first certificate is revoked before the coordinator starts.
    WriteCrl({Serial(revoked_a_)}, 1);
    StartServer(crl_path_);
    site_a_ = Site(revoked_a_);
    site_b_ = Site(site_b_kit_);
  }

  static std::string Serial(const TlsMaterial& kit) {
    return ReadCertificateDetails(kit.cert)->serial;
  }
  // Replaces the file atomically, as `echofed pki revoke` does.
  void WriteCrl(const std::vector<std::string>& serials, int64_t number) {
    RevocationListRequest request;
    request.crl_number = number;
    for (const std::string& serial : serials) {
      request.revoked.push_back(
          {serial, absl::Now(), RevocationReason::kKeyCompromise});
    }
    absl::StatusOr<std::string> crl = CreateRevocationList(pki_.ca(), request);
    ASSERT_TRUE(crl.ok()) << crl.status();
    ASSERT_TRUE(WriteFileAtomically(crl_path_, *crl).ok());
  }
  std::string AuditText() {
    absl::StatusOr<AuditVerification> audit =
        VerifyAuditLog(dir_.Join("state/audit.log"));
    EXPECT_TRUE(audit.ok()) << audit.status();
    absl::StatusOr<std::string> text =
        ReadFileToString(dir_.Join("state/audit.log"));
    return text.ok() ? *text : "";
  }

  std::string crl_path_ = dir_.Join("crl.pem");
  TlsMaterial revoked_a_ = pki_.Participant("site-a", Role::kSite);
  TlsMaterial site_b_kit_ = pki_.Participant("site-b", Role::kSite);
};

TEST_F(MtlsRevocationTest, RevokedSiteCertificateIsRefusedAndAudited) {
  grpc::Status status = Join(*site_a_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << status.error_message();
  EXPECT_NE(status.error_message().find("revoked"), std::string::npos)
      << status.error_message();
  // Only the revoked certificate: site-b's goes on.
  EXPECT_TRUE(Join(*site_b_).ok());
  std::string audit = AuditText();
  EXPECT_NE(audit.find("\tcrl-loaded\t"), std::string::npos) << audit;
  EXPECT_NE(audit.find("\trefused\t-\t-\t-\tJoin: UNAUTHENTICATED: client "
                       "certificate refused: it has been revoked "
                       "(certificate of 'site-a', serial " +
                       Serial(revoked_a_)),
            std::string::npos)
      << audit;
}

TEST_F(MtlsRevocationTest, CertificateRevokedWhileRunningIsRefused) {
  ASSERT_TRUE(Join(*site_b_).ok());
  // A new list, written while the coordinator runs, revokes site-b too:
  // the next call on the same channel is refused.
  WriteCrl({Serial(revoked_a_), Serial(site_b_kit_)}, 2);
  grpc::Status status = Join(*site_b_);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << status.error_message();
  EXPECT_NE(status.error_message().find("revoked"), std::string::npos)
      << status.error_message();
  // A replacement that is not the study CA's does not lift the revocation.
  TestPki other;
  absl::StatusOr<std::string> foreign =
      CreateRevocationList(other.ca(), RevocationListRequest());
  ASSERT_TRUE(foreign.ok());
  ASSERT_TRUE(WriteFileAtomically(crl_path_, *foreign).ok());
  EXPECT_EQ(Join(*site_b_).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  ASSERT_TRUE(WriteFileAtomically(crl_path_, "not a CRL").ok());
  EXPECT_EQ(Join(*site_b_).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  std::string audit = AuditText();
  EXPECT_NE(audit.find("CRL number 2, 2 revoked"), std::string::npos) << audit;
  EXPECT_NE(audit.find("\tcrl-refused\t"), std::string::npos) << audit;
}

TEST_F(MtlsRevocationTest, ReissuedCertificateConnects) {
  ASSERT_EQ(Join(*site_a_).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Re-issued: same identity and role, a new serial; the old one stays
  // listed.
  TlsMaterial reissued = pki_.Participant("site-a", Role::kSite);
  ASSERT_NE(Serial(reissued), Serial(revoked_a_));
  auto site_a = Site(reissued);
  grpc::Status status = Join(*site_a);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(Join(*Site(revoked_a_)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

// crl_file in the config file: resolved beside it, and a list the
// coordinator cannot load stops it from starting rather than being ignored.
TEST(CoordinatorConfigTest, CrlFileMustLoadAtStart) {
  TempDir dir;
  TestPki pki;
  TlsMaterial tls = pki.Coordinator();
  ASSERT_TRUE(WriteFileAtomically(dir.Join("ca.pem"), tls.ca_cert).ok());
  ASSERT_TRUE(WriteFileAtomically(dir.Join("cert.pem"), tls.cert).ok());
  ASSERT_TRUE(WriteFileAtomically(dir.Join("key.pem"), tls.key, 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(dir.Join("enrolment.textproto"), "").ok());
  ASSERT_TRUE(
      WriteFileAtomically(dir.Join("coordinator.textproto"),
                          "listen_address: \"127.0.0.1:0\"\n"
                          "tls { ca_cert: \"ca.pem\" cert: \"cert.pem\" key: "
                          "\"key.pem\" }\n"
                          "state_dir: \"state\"\n"
                          "enrolment_file: \"enrolment.textproto\"\n"
                          "crl_file: \"crl.pem\"\n")
          .ok());
  absl::StatusOr<CoordinatorServerOptions> options =
      CoordinatorServer::OptionsFromConfigFile(
          dir.Join("coordinator.textproto"));
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->crl_file, dir.Join("crl.pem"));

  EXPECT_EQ(CoordinatorServer::Start(*options).status().code(),
            absl::StatusCode::kNotFound);
  TestPki other;
  ASSERT_TRUE(WriteFileAtomically(dir.Join("crl.pem"),
                                  *CreateRevocationList(other.ca(), {}))
                  .ok());
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> refused =
      CoordinatorServer::Start(*options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("crl_file"), std::string::npos)
      << refused.status();
  ASSERT_TRUE(WriteFileAtomically(dir.Join("crl.pem"),
                                  *CreateRevocationList(pki.ca(), {}))
                  .ok());
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> started =
      CoordinatorServer::Start(*options);
  EXPECT_TRUE(started.ok()) << started.status();
}

}  // namespace
}  // namespace echofed
