#include "coordinator/server.h"

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/log.h"

namespace echofed {

absl::StatusOr<CoordinatorServerOptions>
CoordinatorServer::OptionsFromConfigFile(const std::string& path) {
  CoordinatorConfig config;
  if (absl::Status status = LoadTextProto(path, &config); !status.ok()) {
    return status;
  }
  CoordinatorServerOptions options;
  if (!config.listen_address().empty()) {
    options.listen_address = config.listen_address();
  }
  TlsFiles files;
  files.set_ca_cert(ResolveRelativeTo(path, config.tls().ca_cert()));
  files.set_cert(ResolveRelativeTo(path, config.tls().cert()));
  files.set_key(ResolveRelativeTo(path, config.tls().key()));
  absl::StatusOr<TlsMaterial> tls = LoadTlsMaterial(files);
  if (!tls.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tls: ", tls.status().message()));
  }
  options.tls = std::move(*tls);
  if (config.enrolment_file().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": enrolment_file is required"));
  }
  if (absl::Status status = LoadTextProto(
          ResolveRelativeTo(path, config.enrolment_file()), &options.enrolment);
      !status.ok()) {
    return status;
  }
  if (config.state_dir().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": state_dir is required"));
  }
  options.coordinator.state_dir = ResolveRelativeTo(path, config.state_dir());
  return options;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorServerOptions options) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer);
  absl::StatusOr<CertificateVerifier> verifier =
      CertificateVerifier::Create(options.tls.ca_cert);
  if (!verifier.ok()) return verifier.status();
  absl::StatusOr<Enrolment> enrolment = Enrolment::FromProto(options.enrolment);
  if (!enrolment.ok()) return enrolment.status();
  options.coordinator.enrolled_sites = enrolment->Sites();
  absl::StatusOr<std::unique_ptr<Coordinator>> coordinator =
      Coordinator::Create(options.coordinator);
  if (!coordinator.ok()) return coordinator.status();
  server->coordinator_ = std::move(*coordinator);
  server->auth_ = std::make_unique<Authenticator>(
      std::move(*verifier), std::move(*enrolment), server->coordinator_.get());
  server->federation_ = std::make_unique<FederationService>(
      server->coordinator_.get(), server->auth_.get());
  server->admin_ = std::make_unique<AdminService>(server->coordinator_.get(),
                                                  server->auth_.get());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address,
                           MakeServerCredentials(options.tls), &server->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.RegisterService(server->federation_.get());
  builder.RegisterService(server->admin_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen_address,
                     " (address in use, or bad certificate/key?)"));
  }
  Coordinator* core = server->coordinator_.get();
  absl::Notification* stop = &server->stop_ticker_;
  absl::Duration tick = options.tick;
  server->ticker_ = std::thread([core, stop, tick] {
    while (!stop->WaitForNotificationWithTimeout(tick)) core->Tick();
  });
  LogInfo("listening on port ", server->port_, " (mutual TLS)");
  return server;
}

void CoordinatorServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  stop_ticker_.Notify();
  if (ticker_.joinable()) ticker_.join();
  coordinator_->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace echofed
