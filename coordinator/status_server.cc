#include "coordinator/status_server.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "httplib.h"

namespace echofed {
namespace {

// Connections served at once; the page is for a few people and a scraper.
// Each idle keep-alive connection holds a thread for up to the read
// timeout, so a few more than needed.
constexpr int kThreads = 4;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The server certificate (with any chain after it), its key, and the study
// CA as the one name offered for client certificates, so that a browser
// proposes only the kits of this study.
bool SetUpContext(const TlsMaterial& tls, SSL_CTX& ctx) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  BioPtr cert_bio = MemoryBio(tls.cert);
  X509Ptr cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr || SSL_CTX_use_certificate(&ctx, cert.get()) != 1) {
    return false;
  }
  while (X509* extra =
             PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr)) {
    if (SSL_CTX_add0_chain_cert(&ctx, extra) != 1) {
      X509_free(extra);
      return false;
    }
  }
  BioPtr key_bio = MemoryBio(tls.key);
  KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr || SSL_CTX_use_PrivateKey(&ctx, key.get()) != 1 ||
      SSL_CTX_check_private_key(&ctx) != 1) {
    return false;
  }
  BioPtr ca_bio = MemoryBio(tls.ca_cert);
  X509Ptr ca(PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr));
  if (ca == nullptr || SSL_CTX_add_client_CA(&ctx, ca.get()) != 1) {
    return false;
  }
  // Ask for a certificate, accept the handshake whatever comes: the
  // Authenticator decides, with the CRL and the enrolment list.
  SSL_CTX_set_verify(&ctx, SSL_VERIFY_PEER,
                     [](int, X509_STORE_CTX*) { return 1; });
  // Browsers resume sessions; with peer verification OpenSSL refuses a
  // resumption on a context without a session id context, so a reload
  // failed. No resumption at all: every connection shows its certificate
  // again (and each request is checked against the current CRL anyway).
  static constexpr unsigned char kContext[] = "echofed-status";
  SSL_CTX_set_session_id_context(&ctx, kContext, sizeof(kContext) - 1);
  SSL_CTX_set_session_cache_mode(&ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(&ctx, SSL_OP_NO_TICKET);
  return true;
}

std::string PeerCertificatePem(const SSL* ssl) {
  if (ssl == nullptr) return "";
  X509Ptr cert(SSL_get1_peer_certificate(ssl));
  if (cert == nullptr) return "";
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), cert.get()) != 1) {
    return "";
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

void SetCommonHeaders(httplib::Response& response) {
  // Current numbers only; and nothing but inline style may load or run.
  response.set_header("Cache-Control", "no-store");
  response.set_header("Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'; "
                      "frame-ancestors 'none'");
  response.set_header("X-Content-Type-Options", "nosniff");
  response.set_header("Referrer-Policy", "no-referrer");
}

}  // namespace

absl::StatusOr<std::unique_ptr<StatusServer>> StatusServer::Start(
    StatusServerOptions options, const Authenticator* auth,
    SnapshotSource snapshot) {
  const std::string host = HostOf(options.listen_address);
  const size_t colon = options.listen_address.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(options.listen_address.substr(colon + 1), &port) ||
      port < 0 || port > 65535 || host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("status listen address '",
                                                   options.listen_address,
                                                   "' is not host:port"));
  }
  std::unique_ptr<StatusServer> server(new StatusServer);
  const TlsMaterial tls = options.tls;
  server->http_ = std::make_unique<httplib::SSLServer>(
      [&tls](SSL_CTX& ctx) { return SetUpContext(tls, ctx); });
  if (!server->http_->is_valid()) {
    return absl::InvalidArgumentError(
        "status page: the coordinator certificate, key or CA does not load");
  }
  httplib::SSLServer& http = *server->http_;
  http.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  http.set_read_timeout(5);
  http.set_write_timeout(5);
  http.set_payload_max_length(64 * 1024);
  http.set_pre_routing_handler(
      [auth](const httplib::Request& request, httplib::Response& response) {
        SetCommonHeaders(response);
        absl::StatusOr<PeerIdentity> peer = auth->AuthenticateCertificate(
            PeerCertificatePem(request.ssl),
            absl::StrCat(request.remote_addr, ":", request.remote_port),
            {Role::kOperator, Role::kStatistician}, "status page", "status");
        if (peer.ok()) return httplib::Server::HandlerResponse::Unhandled;
        response.status = 403;
        response.set_content(
            absl::StrCat("403 Forbidden: the status page needs an operator or "
                         "statistician certificate of this study (",
                         peer.status().message(), ")\n"),
            "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      });
  http.Get("/",
           [snapshot](const httplib::Request&, httplib::Response& response) {
             response.set_content(RenderStatusPage(snapshot()),
                                  "text/html; charset=utf-8");
           });
  http.Get("/metrics",
           [snapshot](const httplib::Request&, httplib::Response& response) {
             response.set_content(RenderPrometheusMetrics(snapshot()),
                                  kPrometheusContentType);
           });
  if (port == 0) {
    server->port_ = http.bind_to_any_port(host);
  } else if (http.bind_to_port(host, port)) {
    server->port_ = port;
  }
  if (server->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("status page: cannot listen on ", options.listen_address));
  }
  httplib::SSLServer* raw = server->http_.get();
  server->listener_ = std::thread([raw] { raw->listen_after_bind(); });
  // stop() is a no-op until the loop runs, so Stop() right after Start()
  // would wait forever: return only once it runs.
  for (int i = 0; i < 5000 && !raw->is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  LogInfo("status page on port ", server->port_,
          " (HTTPS, operator or statistician certificate)");
  return server;
}

void StatusServer::Stop() {
  if (http_ != nullptr) http_->stop();
  if (listener_.joinable()) listener_.join();
}

StatusServer::~StatusServer() { Stop(); }

}  // namespace echofed
