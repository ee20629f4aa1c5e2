#ifndef ECHOFED_COORDINATOR_SERVER_H_
#define ECHOFED_COORDINATOR_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_util.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"
#include "coordinator/status_server.h"
#include "grpcpp/support/server_interceptor.h"

namespace echofed {

struct CoordinatorServerOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string listen_address = "0.0.0.0:7443";
  TlsMaterial tls;
  EnrolmentList enrolment;
  // The study CA's CRL (PEM file); empty: no revocation checking. Re-read
  // when it changes, looked at no more often than `crl_check_interval`.
  std::string crl_file;
  absl::Duration crl_check_interval = absl::Seconds(1);
  // HTTP/2 flow-control window per stream (see CoordinatorConfig).
  int stream_window_bytes = 1 << 20;
  // A model stream (upload or download) that moves no data for this long
  // is cancelled: a stalled site cannot hold coordinator resources.
  absl::Duration stream_idle_timeout = absl::Seconds(120);
  // Model downloads moving at once (others queue): bounds memory by this,
  // not by the number of sites.
  int max_concurrent_downloads = 8;
  // Memory gRPC may use for connections and streams (0: unlimited).
  size_t grpc_memory_bytes = size_t{256} << 20;
  // Makes gRPC server interceptors (tests record what crosses the wire with
  // one). A factory keeps the options copyable.
  std::function<std::vector<
      std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>()>
      make_interceptors;
  // host:port of the HTTPS status page and metrics; empty: not served.
  std::string status_listen_address;
  CoordinatorOptions coordinator;
  // How often deadlines and long polls are checked.
  absl::Duration tick = absl::Milliseconds(100);
};

// The coordinator as a running mTLS gRPC server with its deadline ticker.
// Used by the binary and by integration tests.
class CoordinatorServer {
 public:
  static absl::StatusOr<std::unique_ptr<CoordinatorServer>> Start(
      CoordinatorServerOptions options);
  // Loads a CoordinatorConfig textproto (paths relative to the file).
  static absl::StatusOr<CoordinatorServerOptions> OptionsFromConfigFile(
      const std::string& path);
  ~CoordinatorServer();

  int port() const { return port_; }
  // Port of the status page; 0 when it is off.
  int status_port() const { return status_ == nullptr ? 0 : status_->port(); }
  Coordinator& coordinator() { return *coordinator_; }
  // Answers pending long polls, stops accepting calls and waits for the
  // ones in flight (bounded). Idempotent.
  void Shutdown();

 private:
  CoordinatorServer() = default;

  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<StreamWatch> stream_watch_;
  std::unique_ptr<StreamGate> download_gate_;
  std::unique_ptr<FederationService> federation_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<StatusServer> status_;
  std::thread ticker_;
  absl::Notification stop_ticker_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_SERVER_H_
