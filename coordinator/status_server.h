#ifndef ECHOFED_COORDINATOR_STATUS_SERVER_H_
#define ECHOFED_COORDINATOR_STATUS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "common/grpc_util.h"
#include "coordinator/services.h"
#include "coordinator/status_page.h"

namespace httplib {
class SSLServer;
}

namespace echofed {

struct StatusServerOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string listen_address;
  // The coordinator's own certificate and key, and the study CA.
  TlsMaterial tls;
};

// The coordinator's read-only status page (GET /) and Prometheus metrics
// (GET /metrics) over HTTPS. A thin adapter: every request is checked by
// the coordinator's Authenticator (study CA, revocation list, enrolment,
// and the operator or statistician role), like an Admin call, and answered
// 403 otherwise; the content comes from RenderStatusPage and
// RenderPrometheusMetrics.
//
// The TLS layer asks for a client certificate but lets the handshake finish
// without a good one, as the gRPC listener does, so that every refusal is a
// clear 403 with a reason, a log line, an audit entry and a metric rather
// than a bare handshake failure. TLS still proves the client holds the key
// of the certificate it shows.
//
// Thread-safe; requests are served by a small pool of its own threads.
class StatusServer {
 public:
  using SnapshotSource = std::function<StatusSnapshot()>;

  // `auth` must outlive the server; `snapshot` is called per request, from
  // the server's threads.
  static absl::StatusOr<std::unique_ptr<StatusServer>> Start(
      StatusServerOptions options, const Authenticator* auth,
      SnapshotSource snapshot);
  ~StatusServer();

  int port() const { return port_; }
  // Stops accepting, lets requests in flight finish. Idempotent.
  void Stop();

 private:
  StatusServer() = default;

  std::unique_ptr<httplib::SSLServer> http_;
  std::thread listener_;
  int port_ = 0;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_STATUS_SERVER_H_
