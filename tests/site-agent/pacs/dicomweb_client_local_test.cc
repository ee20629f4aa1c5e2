// The DICOMweb client against what Orthanc does not readily produce: bad
// configurations, a server that never answers, damaged WADO-RS answers,
// STOW-RS refusals with reasons, and HTTPS with client certificates, all
// served by small cpp-httplib servers in the test process.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "site-agent/pacs/dicomweb_client.h"
#include "site-agent/pacs/multipart.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using absl::StatusCode;
using testing::TempDir;
using testing::TestPki;

// A cpp-httplib server on a free loopback port, its routes set before it
// starts, stopped by the destructor.
class MockPacs {
 public:
  explicit MockPacs(const std::function<void(httplib::Server&)>& routes,
                    std::unique_ptr<httplib::Server> server =
                        std::make_unique<httplib::Server>())
      : server_(std::move(server)) {
    routes(*server_);
    port_ = server_->bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_->listen_after_bind(); });
  }
  ~MockPacs() {
    server_->stop();
    thread_.join();
  }
  std::string Url(const char* scheme = "http") const {
    return absl::StrCat(scheme, "://127.0.0.1:", port_, "/dicom-web");
  }

 private:
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<PacsClient>> ClientFor(const std::string& url,
                                                      int timeout = 5) {
  PacsConfig config;
  config.set_dicomweb_url(url);
  config.set_timeout_seconds(timeout);
  return NewDicomWebPacsClient(config);
}

std::string FakePart10(const std::string& uid) {
  return std::string(128, '\0') + "DICM" + uid;
}

PacsInstance Instance(const std::string& sop_instance_uid) {
  PacsInstance instance;
  instance.study_instance_uid = "1.2.3";
  instance.series_instance_uid = "1.2.3.4";
  instance.sop_instance_uid = sop_instance_uid;
  return instance;
}

TEST(DicomWebClientConfigTest, RefusesBadUrlsAndTlsFields) {
  for (const char* url :
       {"", "ftp://pacs/dicom-web", "pacs/dicom-web", "http:///dicom-web",
        "http://pacs/dicom-web?x=1", "https://pacs/dicom-web#top"}) {
    EXPECT_EQ(ClientFor(url).status().code(), StatusCode::kInvalidArgument)
        << url;
  }
  absl::Status with_user =
      ClientFor("http://admin:hunter2@pacs/dicom-web").status();
  EXPECT_EQ(with_user.code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(with_user.message(), "hunter2"));
  EXPECT_TRUE(absl::StrContains(with_user.message(), "credentials_file"));

  PacsConfig config;
  config.set_dicomweb_url("http://pacs/dicom-web");
  config.mutable_tls()->set_ca_cert("/etc/ca.pem");
  EXPECT_EQ(NewDicomWebPacsClient(config).status().code(),
            StatusCode::kInvalidArgument);
  config.set_dicomweb_url("https://pacs/dicom-web");
  config.mutable_tls()->set_cert("/etc/agent.pem");
  EXPECT_EQ(NewDicomWebPacsClient(config).status().code(),
            StatusCode::kInvalidArgument);
  config.mutable_tls()->set_key("/nonexistent/agent.key");
  EXPECT_EQ(NewDicomWebPacsClient(config).status().code(),
            StatusCode::kInvalidArgument);

  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      ClientFor("HTTP://127.0.0.1:9/dicom-web//");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Describe(), "DICOMweb http://127.0.0.1:9/dicom-web");
}

TEST(DicomWebClientConfigTest, CredentialsFileMustBePrivateAndWellFormed) {
  TempDir folder;
  PacsConfig config;
  config.set_dicomweb_url("http://127.0.0.1:9/dicom-web");
  const std::string path = folder.Join("credentials");
  config.set_dicomweb_credentials_file(path);
  EXPECT_EQ(NewDicomWebPacsClient(config).status().code(),
            StatusCode::kInvalidArgument);

  ASSERT_TRUE(WriteFileAtomically(path, "site:secret-1\n", 0644).ok());
  absl::Status readable = NewDicomWebPacsClient(config).status();
  EXPECT_EQ(readable.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(readable.message(), "chmod 600")) << readable;
  EXPECT_TRUE(absl::StrContains(readable.message(), "0644")) << readable;

  for (const char* bad : {"no-colon-secret-2", ":secret-3", "a:b\nc:d"}) {
    ASSERT_TRUE(WriteFileAtomically(path, bad, 0600).ok());
    absl::Status status = NewDicomWebPacsClient(config).status();
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_FALSE(absl::StrContains(status.message(), "secret")) << status;
  }
  ASSERT_TRUE(WriteFileAtomically(path, "site:secret:4\r\n", 0600).ok());
  EXPECT_TRUE(NewDicomWebPacsClient(config).ok());
}

TEST(DicomWebClientLocalTest, SilentServerIsUnavailableAfterTheTimeout) {
  // Listening but never accepting: the connection completes in the kernel
  // and the request then waits for an answer that never comes.
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(
      ::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
      0);
  ASSERT_EQ(::listen(listener, 8), 0);
  ASSERT_EQ(
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length),
      0);
  absl::StatusOr<std::unique_ptr<PacsClient>> client = ClientFor(
      absl::StrCat("http://127.0.0.1:", ntohs(address.sin_port), "/dicom-web"),
      1);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::Status echo = (*client)->Echo();
  const absl::Duration took = absl::Now() - start;
  ::close(listener);
  EXPECT_EQ(echo.code(), StatusCode::kUnavailable) << echo;
  EXPECT_TRUE(absl::StrContains(echo.message(), "within 1 s")) << echo;
  EXPECT_GE(took, absl::Milliseconds(900));
  EXPECT_LT(took, absl::Seconds(4));
}

TEST(DicomWebClientLocalTest, StowAnswersBecomeStatuses) {
  std::atomic<int> answer{0};
  std::vector<std::string> received;
  std::string content_type;
  MockPacs pacs([&](httplib::Server& server) {
    server.Post("/dicom-web/studies", [&](const httplib::Request& request,
                                          httplib::Response& response) {
      content_type = request.get_header_value("Content-Type");
      absl::StatusOr<MediaType> media = ParseMediaType(content_type);
      received.clear();
      if (media.ok()) {
        auto parts = ParseMultipart(request.body, media->Parameter("boundary"));
        if (parts.ok()) {
          for (const MultipartPart& part : *parts)
            received.push_back(part.body);
        }
      }
      switch (answer.load()) {
        case 0:
          response.set_content(R"({"00081199": {"vr": "SQ", "Value": [{}]}})",
                               "application/dicom+json");
          return;
        case 1:
          response.status = 202;
          response.set_content(R"({"00081198": {"vr": "SQ", "Value": [
              {"00081155": {"vr": "UI", "Value": ["1.2.3.9"]},
               "00081197": {"vr": "US", "Value": [272]}}]}})",
                               "application/dicom+json");
          return;
        case 2:
          response.status = 409;
          response.set_content("conflict", "text/plain");
          return;
        case 3:
          response.status = 500;
          return;
        default:
          response.status = 503;
      }
    });
  });
  absl::StatusOr<std::unique_ptr<PacsClient>> client = ClientFor(pacs.Url());
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<std::string> files = {FakePart10("1.2.3.8"),
                                          FakePart10("1.2.3.9")};

  absl::Status stored = (*client)->Store(files);
  EXPECT_TRUE(stored.ok()) << stored;
  EXPECT_EQ(received, files);
  EXPECT_TRUE(absl::StartsWith(
      content_type, "multipart/related; type=\"application/dicom\"; "))
      << content_type;

  answer = 1;
  stored = (*client)->Store(files);
  EXPECT_EQ(stored.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(stored.message(), "1 of 2")) << stored;
  EXPECT_TRUE(absl::StrContains(stored.message(),
                                "1.2.3.9: 0x0110 (processing failure)"))
      << stored;

  answer = 2;
  stored = (*client)->Store(files);
  EXPECT_EQ(stored.code(), StatusCode::kFailedPrecondition) << stored;
  EXPECT_TRUE(absl::StrContains(stored.message(), "HTTP 409")) << stored;
  answer = 3;
  EXPECT_EQ((*client)->Store(files).code(), StatusCode::kInternal);
  answer = 4;
  EXPECT_EQ((*client)->Store(files).code(), StatusCode::kUnavailable);
}

TEST(DicomWebClientLocalTest, DamagedRetrieveAnswersAreDataLoss) {
  std::string accept;
  MockPacs pacs([&](httplib::Server& server) {
    server.Get(
        R"(/dicom-web/studies/1\.2\.3/series/1\.2\.3\.4/instances/([\d.]+))",
        [&](const httplib::Request& request, httplib::Response& response) {
          accept = request.get_header_value("Accept");
          const std::string uid = request.matches[1];
          const std::string file = FakePart10(uid);
          const std::string type = "multipart/related; boundary=";
          if (uid == "1.1") {
            // A quoted boundary, a preamble and an epilogue.
            response.set_content(
                "preamble\r\n--b:1 (x)\r\n"
                "Content-Type: application/dicom; transfer-syntax=1.2.840."
                "10008.1.2.1\r\n\r\n" +
                    file + "\r\n--b:1 (x)--\r\nepilogue",
                "multipart/related; type=\"application/dicom\"; "
                "boundary=\"b:1 (x)\"");
          } else if (uid == "1.2") {
            response.set_content(
                BuildMultipart({file, file}, "application/dicom", "b"),
                type + "b");
          } else if (uid == "1.3") {
            response.set_content("--b\r\n\r\n" + file, type + "b");
          } else if (uid == "1.4") {
            response.set_content(
                BuildMultipart({"short"}, "application/dicom", "b"),
                type + "b");
          } else if (uid == "1.5") {
            response.set_content("--b--\r\n", type + "b");
          } else if (uid == "1.6") {
            response.status = 404;
          } else if (uid == "1.7") {
            response.set_content(file, "application/dicom");
          } else if (uid == "1.8") {
            response.set_content(
                BuildMultipart({FakePart10("9.9")}, "application/dicom", "b"),
                type + "b");
          } else if (uid == "1.9") {
            response.set_content("<html></html>", "text/html");
          } else {
            response.set_content(
                BuildMultipart({file}, "application/dicom+xml", "b"),
                type + "b");
          }
        });
  });
  absl::StatusOr<std::unique_ptr<PacsClient>> client = ClientFor(pacs.Url());
  ASSERT_TRUE(client.ok()) << client.status();

  absl::StatusOr<std::string> file =
      (*client)->RetrieveInstance(Instance("1.1"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*file, FakePart10("1.1"));
  EXPECT_TRUE(absl::StrContains(accept, "type=\"application/dicom\""))
      << accept;
  EXPECT_TRUE(absl::StrContains(accept, "transfer-syntax=*")) << accept;
  file = (*client)->RetrieveInstance(Instance("1.7"));
  ASSERT_TRUE(file.ok()) << file.status();

  for (const char* uid : {"1.2", "1.3", "1.4", "1.5", "1.8", "1.9", "1.10"}) {
    file = (*client)->RetrieveInstance(Instance(uid));
    EXPECT_EQ(file.status().code(), StatusCode::kDataLoss)
        << uid << ": " << file.status();
  }
  EXPECT_EQ((*client)->RetrieveInstance(Instance("1.6")).status().code(),
            StatusCode::kNotFound);
}

TEST(DicomWebClientLocalTest, HttpsWithClientCertificates) {
  TestPki pki;
  TempDir folder;
  const TlsMaterial server = pki.Coordinator();
  const TlsMaterial agent = pki.Participant("site-a", Role::kSite);
  const TlsMaterial stranger = TestPki::FromOtherCa("site-a", Role::kSite);
  for (const auto& [name, text] :
       std::vector<std::pair<std::string, std::string>>{
           {"ca.pem", pki.ca().cert},
           {"server.pem", server.cert},
           {"server.key", server.key},
           {"agent.pem", agent.cert},
           {"agent.key", agent.key},
           {"other-ca.pem", stranger.ca_cert}}) {
    ASSERT_TRUE(WriteFileAtomically(folder.Join(name), text, 0600).ok());
  }
  MockPacs pacs(
      [](httplib::Server& server) {
        server.Get("/dicom-web/studies",
                   [](const httplib::Request&, httplib::Response& response) {
                     response.set_content("[]", "application/dicom+json");
                   });
      },
      std::make_unique<httplib::SSLServer>(folder.Join("server.pem").c_str(),
                                           folder.Join("server.key").c_str(),
                                           folder.Join("ca.pem").c_str()));

  PacsConfig config;
  config.set_dicomweb_url(pacs.Url("https"));
  config.set_timeout_seconds(5);
  config.mutable_tls()->set_ca_cert(folder.Join("ca.pem"));
  config.mutable_tls()->set_cert(folder.Join("agent.pem"));
  config.mutable_tls()->set_key(folder.Join("agent.key"));
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDicomWebPacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status echo = (*client)->Echo();
  EXPECT_TRUE(echo.ok()) << echo;

  // The server's certificate from another CA's point of view.
  config.mutable_tls()->set_ca_cert(folder.Join("other-ca.pem"));
  client = NewDicomWebPacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  echo = (*client)->Echo();
  EXPECT_EQ(echo.code(), StatusCode::kUnavailable) << echo;
  EXPECT_TRUE(absl::StrContains(echo.message(), "not trusted")) << echo;

  // No client certificate: the server ends the handshake.
  config.mutable_tls()->set_ca_cert(folder.Join("ca.pem"));
  config.mutable_tls()->clear_cert();
  config.mutable_tls()->clear_key();
  client = NewDicomWebPacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_EQ((*client)->Echo().code(), StatusCode::kUnavailable);
}

// A QIDO-RS server that holds five studies of patient P1 (one series of
// one instance each) and answers at most two per request.
enum class Truncation {
  kFlagged,         // honours offset, says "additional results" (299)
  kIgnoresOffset,   // always the first two, flagged
  kFlagsButIsEmpty  // flags further results on an empty answer
};

void ServeTruncating(httplib::Server& server, Truncation mode,
                     std::vector<std::string>* requests) {
  server.Get("/dicom-web/studies", [=](const httplib::Request& request,
                                       httplib::Response& response) {
    requests->push_back(request.get_param_value("offset"));
    size_t offset = 0;
    size_t limit = 1000;
    if (request.has_param("offset")) {
      offset = std::stoul(request.get_param_value("offset"));
    }
    if (request.has_param("limit")) {
      limit = std::stoul(request.get_param_value("limit"));
    }
    if (mode == Truncation::kIgnoresOffset) offset = 0;
    const size_t total = mode == Truncation::kFlagsButIsEmpty ? 0 : 5;
    const size_t count =
        std::min({limit, size_t{2}, total > offset ? total - offset : 0});
    std::string body = "[";
    for (size_t i = offset; i < offset + count; ++i) {
      absl::StrAppend(&body, i > offset ? "," : "",
                      R"({"00100020": {"vr": "LO", "Value": ["P1"]},)",
                      R"("0020000D": {"vr": "UI", "Value": ["1.2.3.)", i + 1,
                      R"("]}})");
    }
    body += "]";
    if (offset + count < total || mode != Truncation::kFlagged) {
      response.set_header(
          "Warning",
          absl::StrCat("299 pacs: \"There are ", total - offset - count,
                       " additional results that can be requested\""));
    }
    response.set_content(body, "application/dicom+json");
  });
  server.Get(
      R"(/dicom-web/studies/([0-9.]+)/series)",
      [](const httplib::Request& request, httplib::Response& response) {
        response.set_content(
            absl::StrCat(R"([{"0020000E": {"vr": "UI", "Value": [")",
                         request.matches[1].str(), R"(.1"]},)",
                         R"("00080060": {"vr": "CS", "Value": ["US"]}}])"),
            "application/dicom+json");
      });
  server.Get(R"(/dicom-web/studies/[0-9.]+/series/([0-9.]+)/instances)",
             [](const httplib::Request& request, httplib::Response& response) {
               response.set_content(
                   absl::StrCat(R"([{"00080018": {"vr": "UI", "Value": [")",
                                request.matches[1].str(), R"(.1"]}}])"),
                   "application/dicom+json");
             });
}

TEST(DicomWebClientPagingTest, FollowsAServerThatTruncatesItsAnswers) {
  std::vector<std::string> requests;
  MockPacs pacs([&](httplib::Server& server) {
    ServeTruncating(server, Truncation::kFlagged, &requests);
  });
  absl::StatusOr<std::unique_ptr<PacsClient>> client = ClientFor(pacs.Url());
  ASSERT_TRUE(client.ok()) << client.status();
  PacsPatientQuery query;
  query.patient_id = "P1";
  absl::StatusOr<std::vector<PacsInstance>> found =
      (*client)->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 5u);
  for (size_t i = 0; i < found->size(); ++i) {
    EXPECT_EQ((*found)[i].sop_instance_uid,
              absl::StrCat("1.2.3.", i + 1, ".1.1"));
  }
  EXPECT_EQ(requests, (std::vector<std::string>{"0", "2", "4"}));
}

TEST(DicomWebClientPagingTest, ServerThatIgnoresOffsetIsAnError) {
  std::vector<std::string> requests;
  MockPacs pacs([&](httplib::Server& server) {
    ServeTruncating(server, Truncation::kIgnoresOffset, &requests);
  });
  absl::StatusOr<std::unique_ptr<PacsClient>> client = ClientFor(pacs.Url());
  ASSERT_TRUE(client.ok());
  PacsPatientQuery query;
  query.patient_id = "P1";
  absl::Status status = (*client)->FindInstances(query).status();
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "ignores the offset"))
      << status;
  EXPECT_EQ(requests.size(), 2u);
}

TEST(DicomWebClientPagingTest, FlaggedEmptyAnswerIsDataLoss) {
  std::vector<std::string> requests;
  MockPacs pacs([&](httplib::Server& server) {
    ServeTruncating(server, Truncation::kFlagsButIsEmpty, &requests);
  });
  absl::StatusOr<std::unique_ptr<PacsClient>> client = ClientFor(pacs.Url());
  ASSERT_TRUE(client.ok());
  PacsPatientQuery query;
  query.patient_id = "P1";
  absl::Status status = (*client)->FindInstances(query).status();
  EXPECT_EQ(status.code(), StatusCode::kDataLoss) << status;
}

}  // namespace
}  // namespace echofed
