#ifndef ECHOFED_COORDINATOR_SERVER_H_
#define ECHOFED_COORDINATOR_SERVER_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_util.h"
#include "coordinator/coordinator.h"
#include "coordinator/services.h"

namespace echofed {

struct CoordinatorServerOptions {
  // host:port; port 0 picks a free one (see port()).
  std::string listen_address = "0.0.0.0:7443";
  TlsMaterial tls;
  EnrolmentList enrolment;
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
  Coordinator& coordinator() { return *coordinator_; }
  // Answers pending long polls, stops accepting calls and waits for the
  // ones in flight (bounded). Idempotent.
  void Shutdown();

 private:
  CoordinatorServer() = default;

  std::unique_ptr<Coordinator> coordinator_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<FederationService> federation_;
  std::unique_ptr<AdminService> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::thread ticker_;
  absl::Notification stop_ticker_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_SERVER_H_
