// The coordinator's HTTPS status page and metrics on a loopback port with
// real certificates: who may read them, what they say, and the page as a
// browser (headless Chromium) renders it.

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/grpc_util.h"
#include "common/subprocess.h"
#include "common/tensor_bundle.h"
#include "coordinator/server.h"
#include "gtest/gtest.h"
#include "httplib.h"
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

struct Fetched {
  int status = -1;  // -1: no HTTP answer (connection or TLS failed)
  std::string body;
  std::string content_type;
  std::string csp;
  std::string error;
};

// GET over HTTPS, the server checked against the study CA; `tls.cert`
// empty: no client certificate.
Fetched Get(int port, const TlsMaterial& tls, const std::string& path) {
  auto read_cert = [](const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    return cert;
  };
  X509* cert = nullptr;
  EVP_PKEY* key = nullptr;
  if (!tls.cert.empty()) {
    cert = read_cert(tls.cert);
    BIO* bio =
        BIO_new_mem_buf(tls.key.data(), static_cast<int>(tls.key.size()));
    key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
  }
  Fetched fetched;
  {
    std::unique_ptr<httplib::SSLClient> client =
        cert != nullptr
            ? std::make_unique<httplib::SSLClient>("127.0.0.1", port, cert, key)
            : std::make_unique<httplib::SSLClient>("127.0.0.1", port);
    X509_STORE* store = X509_STORE_new();
    X509* ca = read_cert(tls.ca_cert);
    X509_STORE_add_cert(store, ca);
    X509_free(ca);
    client->set_ca_cert_store(store);  // the client owns it now
    client->enable_server_certificate_verification(true);
    client->set_connection_timeout(10);
    client->set_read_timeout(10);
    httplib::Result result = client->Get(path.c_str());
    if (result) {
      fetched.status = result->status;
      fetched.body = result->body;
      fetched.content_type = result->get_header_value("Content-Type");
      fetched.csp = result->get_header_value("Content-Security-Policy");
    } else {
      fetched.error = httplib::to_string(result.error());
    }
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return fetched;
}

class StatusServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.status_listen_address = "127.0.0.1:0";
    options.tls = pki_.Coordinator();
    options.enrolment = MakeEnrolment({{"site-a", "site"},
                                       {"site-b", "site"},
                                       {"op", "operator"},
                                       {"stats", "statistician"}});
    options.coordinator.state_dir = dir_.Join("state");
    absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
        CoordinatorServer::Start(std::move(options));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    ASSERT_GT(server_->status_port(), 0);
    ASSERT_NE(server_->status_port(), server_->port());
  }

  std::shared_ptr<grpc::Channel> Channel(const TlsMaterial& tls) {
    return grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", server_->port()),
        MakeChannelCredentials(tls), MakeChannelArguments("localhost"));
  }

  static void Deadline(grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(10));
  }

  // A run of site-a and site-b in which site-a has joined.
  std::string StartRunWithOneSite() {
    grpc::ClientContext context;
    Deadline(&context);
    StartRunRequest request;
    *request.mutable_plan() = MakePlan({"site-a", "site-b"}, {}, 3);
    request.mutable_plan()->set_name("status-page-plan");
    StartRunResponse response;
    grpc::Status started =
        Admin::NewStub(Channel(op_))->StartRun(&context, request, &response);
    EXPECT_TRUE(started.ok()) << started.error_message();
    grpc::ClientContext join_context;
    Deadline(&join_context);
    JoinRequest join;
    join.mutable_data()->set_images(100);
    JoinResponse joined;
    grpc::Status status =
        Federation::NewStub(Channel(pki_.Participant("site-a", Role::kSite)))
            ->Join(&join_context, join, &joined);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.run_id();
  }

  TempDir dir_;
  TestPki pki_;
  TlsMaterial op_ = pki_.Participant("op", Role::kOperator);
  std::unique_ptr<CoordinatorServer> server_;
  std::string run_id_;
};

TEST_F(StatusServerTest, OperatorAndStatisticianReadMetricsAndPage) {
  Fetched metrics = Get(server_->status_port(), op_, "/metrics");
  ASSERT_EQ(metrics.status, 200) << metrics.error << metrics.body;
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_TRUE(
      absl::StrContains(metrics.body, "# TYPE echofed_sites_joined gauge\n"));
  EXPECT_TRUE(
      absl::StrContains(metrics.body, "echofed_coordinator_uptime_seconds "));

  Fetched page = Get(server_->status_port(),
                     pki_.Participant("stats", Role::kStatistician), "/");
  ASSERT_EQ(page.status, 200) << page.error << page.body;
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_TRUE(absl::StrContains(page.body, "No run yet."));
  EXPECT_TRUE(absl::StartsWith(page.csp, "default-src 'none'")) << page.csp;

  EXPECT_EQ(Get(server_->status_port(), op_, "/nothing-here").status, 404);
}

TEST_F(StatusServerTest, EveryoneElseIsRefusedAndCounted) {
  const int port = server_->status_port();
  Fetched none = Get(port, pki_.NoClientCertificate(), "/metrics");
  EXPECT_EQ(none.status, 403) << none.error;
  EXPECT_TRUE(absl::StrContains(none.body, "no client certificate"))
      << none.body;
  EXPECT_FALSE(absl::StrContains(none.body, "echofed_"));

  Fetched site = Get(port, pki_.Participant("site-a", Role::kSite), "/");
  EXPECT_EQ(site.status, 403) << site.error;
  EXPECT_FALSE(absl::StrContains(site.body, "<html"));

  TlsMaterial other = TestPki::FromOtherCa("op", Role::kOperator);
  other.ca_cert = pki_.ca().cert;  // trusts our server, shows a foreign cert
  EXPECT_EQ(Get(port, other, "/metrics").status, 403);

  EXPECT_EQ(Get(port, pki_.Participant("intruder", Role::kOperator), "/metrics")
                .status,
            403);

  // A site calling the Admin service is refused on the gRPC listener.
  grpc::ClientContext context;
  Deadline(&context);
  ListRunsResponse runs;
  grpc::Status admin_as_site =
      Admin::NewStub(Channel(pki_.Participant("site-b", Role::kSite)))
          ->ListRuns(&context, ListRunsRequest(), &runs);
  EXPECT_EQ(admin_as_site.error_code(), grpc::StatusCode::PERMISSION_DENIED);

  Fetched metrics = Get(port, op_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  for (const char* line : {
           "echofed_connection_refusals_total{listener=\"status\","
           "reason=\"no_certificate\"} 1\n",
           "echofed_connection_refusals_total{listener=\"status\","
           "reason=\"role_not_allowed\"} 1\n",
           "echofed_connection_refusals_total{listener=\"status\","
           "reason=\"bad_certificate\"} 1\n",
           "echofed_connection_refusals_total{listener=\"status\","
           "reason=\"not_enrolled\"} 1\n",
           "echofed_connection_refusals_total{listener=\"grpc\","
           "reason=\"role_not_allowed\"} 1\n",
       }) {
    EXPECT_TRUE(absl::StrContains(metrics.body, line)) << line << "\n"
                                                       << metrics.body;
  }
}

TEST_F(StatusServerTest, ShowsTheRunAndItsSites) {
  const std::string run_id = StartRunWithOneSite();
  Fetched metrics = Get(server_->status_port(), op_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_TRUE(absl::StrContains(metrics.body, "echofed_sites_joined 1\n"));
  EXPECT_TRUE(absl::StrContains(metrics.body, "echofed_sites_live 1\n"));
  EXPECT_TRUE(absl::StrContains(
      metrics.body, absl::StrCat("echofed_run_phase{run=\"", run_id,
                                 "\",phase=\"waiting_for_sites\"} 1\n")))
      << metrics.body;
  EXPECT_TRUE(absl::StrContains(
      metrics.body,
      absl::StrCat("echofed_run_rounds_planned{run=\"", run_id, "\"} 3\n")));

  Fetched page = Get(server_->status_port(), op_, "/");
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(absl::StrContains(page.body, run_id));
  EXPECT_TRUE(absl::StrContains(page.body, "status-page-plan"));
  EXPECT_TRUE(absl::StrContains(page.body, "waiting_for_sites"));
}

// Bytes both ways, a refused update and a committed round, as /metrics
// counts them: the counters sit in the real gRPC adapters.
TEST_F(StatusServerTest, CountsModelTrafficRefusedUpdatesAndRounds) {
  const TensorBundle initial = MakeBundle("status-model", 1.0f);
  Plan plan = MakePlan({"site-a"}, {}, 1);
  plan.set_model(initial.manifest.model_name());
  plan.set_evaluate_every_round(false);
  {
    grpc::ClientContext context;
    Deadline(&context);
    StartRunRequest request;
    *request.mutable_plan() = plan;
    StartRunResponse response;
    ASSERT_TRUE(Admin::NewStub(Channel(op_))
                    ->StartRun(&context, request, &response)
                    .ok());
    run_id_ = response.run_id();
  }
  std::unique_ptr<Federation::Stub> site =
      Federation::NewStub(Channel(pki_.Participant("site-a", Role::kSite)));
  {
    grpc::ClientContext context;
    Deadline(&context);
    JoinRequest join;
    join.mutable_data()->set_images(100);
    JoinResponse joined;
    ASSERT_TRUE(site->Join(&context, join, &joined).ok());
  }
  auto next_task = [&] {
    grpc::ClientContext context;
    Deadline(&context);
    Task task;
    EXPECT_TRUE(site->NextTask(&context, NextTaskRequest(), &task).ok());
    return task.kind();
  };
  auto upload = [&](int round, const std::string& id) {
    grpc::ClientContext context;
    Deadline(&context);
    UploadReceipt receipt;
    auto writer = site->UploadUpdate(&context, &receipt);
    UploadChunk first;
    first.mutable_header()->set_run_id(run_id_);
    first.mutable_header()->set_round(round);
    first.mutable_header()->set_num_samples(10);
    first.mutable_header()->set_upload_id(id);
    writer->Write(first);
    BundleSource source(&initial);
    ModelChunker chunker(&source);
    UploadChunk chunk;
    while (*chunker.Next(chunk.mutable_chunk())) {
      if (!writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return writer->Finish();
  };
  ASSERT_EQ(next_task(), Task::INITIALIZE);
  ASSERT_TRUE(upload(0, "init").ok());
  ASSERT_EQ(next_task(), Task::TRAIN);
  {
    grpc::ClientContext context;
    Deadline(&context);
    DownloadRequest request;
    request.set_run_id(run_id_);
    request.set_round(0);
    auto reader = site->DownloadModel(&context, request);
    ModelChunk chunk;
    int chunks = 0;
    while (reader->Read(&chunk)) ++chunks;
    ASSERT_TRUE(reader->Finish().ok());
    ASSERT_GT(chunks, 0);
  }
  EXPECT_EQ(upload(7, "wrong-round").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ASSERT_TRUE(upload(1, "round-1").ok());

  Fetched metrics = Get(server_->status_port(), op_, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  auto value = [&](const std::string& series) {
    size_t at = metrics.body.find("\n" + series + " ");
    if (at == std::string::npos) return -1.0;
    return std::stod(metrics.body.substr(at + series.size() + 2));
  };
  // Two whole uploads of the model (the refused one ends at its header)
  // and one download: each at least the model's 3 x 10 floats.
  const double model_bytes = 3 * 10 * 4;
  EXPECT_GT(value("echofed_received_bytes_total"), 2 * model_bytes)
      << metrics.body;
  EXPECT_GT(value("echofed_sent_bytes_total"), model_bytes);
  EXPECT_EQ(
      value("echofed_upload_refusals_total{reason=\"FAILED_PRECONDITION\"}"), 1)
      << metrics.body;
  EXPECT_EQ(value("echofed_rounds_committed_total"), 1);
  EXPECT_EQ(value("echofed_round_duration_seconds_count"), 1);
  EXPECT_EQ(value("echofed_round_duration_seconds_bucket{le=\"+Inf\"}"), 1);
  EXPECT_EQ(value(absl::StrCat("echofed_run_rounds_committed{run=\"", run_id_,
                               "\"}")),
            1);
}

std::string FindChromium() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    const char* path = std::getenv("PATH");
    for (absl::string_view dir :
         absl::StrSplit(path != nullptr ? path : "/usr/bin", ':')) {
      std::string candidate = absl::StrCat(dir, "/", name);
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
  }
  return "";
}

// The page fetched over mutual TLS (a browser would need the operator's
// certificate installed), saved to a file, and loaded from there by
// headless Chromium with the network cut off: what the browser parsed
// must hold the run and its sites, so the page needs nothing beyond itself.
TEST_F(StatusServerTest, ChromiumRendersTheSavedPage) {
  const std::string chromium = FindChromium();
  if (chromium.empty()) {
    GTEST_SKIP() << "no Chromium on PATH (Debian: apt-get install chromium); "
                    "the status page's browser test is skipped";
  }
  const std::string run_id = StartRunWithOneSite();
  Fetched page = Get(server_->status_port(), op_, "/");
  ASSERT_EQ(page.status, 200) << page.error;
  const std::string html = dir_.Join("status.html");
  ASSERT_TRUE(WriteFileAtomically(html, page.body).ok());

  const std::string dom = dir_.Join("dom.html");
  // --no-sandbox: the sandbox refuses to run as root (containers, CI); a
  // throwaway profile; every host name resolves nowhere, so an external
  // resource could not load even if the page asked for one.
  const std::string command = absl::StrCat(
      "exec timeout 120 '", chromium,
      "' --headless=new --no-sandbox --disable-gpu --no-first-run "
      "--user-data-dir='",
      dir_.Join("profile"),
      "' --host-resolver-rules='MAP * ~NOTFOUND' --dump-dom 'file://", html,
      "' > '", dom, "'");
  absl::StatusOr<Subprocess> browser =
      Subprocess::Start({"/bin/sh", "-c", command}, dir_.Join("chromium.log"));
  ASSERT_TRUE(browser.ok()) << browser.status();
  std::optional<int> exit_code = browser->Wait(absl::Seconds(150));
  absl::StatusOr<std::string> log = ReadFileToString(dir_.Join("chromium.log"));
  ASSERT_TRUE(exit_code.has_value()) << "Chromium hung";
  ASSERT_EQ(*exit_code, 0) << (log.ok() ? *log : "");
  absl::StatusOr<std::string> parsed = ReadFileToString(dom);
  ASSERT_TRUE(parsed.ok()) << parsed.status();

  // Chromium's serialisation of the DOM, not our text: its parser put the
  // rows of the sites table into a tbody of its own.
  const size_t table = parsed->find("<table id=\"sites\">");
  ASSERT_NE(table, std::string::npos) << *parsed;
  const size_t end = parsed->find("</table>", table);
  const std::string sites = parsed->substr(table, end - table);
  EXPECT_TRUE(absl::StrContains(sites, "<tbody>")) << sites;
  EXPECT_EQ(sites.find("<tbody>"), sites.rfind("<tbody>"));
  int rows = 0;
  for (size_t at = sites.find("<tr class=\"site\""); at != std::string::npos;
       at = sites.find("<tr class=\"site\"", at + 1)) {
    ++rows;
  }
  EXPECT_EQ(rows, 2) << sites;
  EXPECT_FALSE(absl::StrContains(page.body, "<tbody>"));  // not ours
  EXPECT_TRUE(absl::StrContains(*parsed, run_id));
  EXPECT_TRUE(absl::StrContains(*parsed, "<td>site-a</td>"));
  EXPECT_TRUE(absl::StrContains(*parsed, "<td>site-b</td>"));
  EXPECT_TRUE(absl::StrContains(*parsed, ">joined<")) << *parsed;
  EXPECT_TRUE(absl::StrContains(*parsed, ">not joined<"));
  EXPECT_TRUE(absl::StrContains(*parsed, "id=\"phase\">waiting_for_sites<"));
  EXPECT_TRUE(absl::StrContains(*parsed, "</html>"));
}

}  // namespace
}  // namespace echofed
