#include "coordinator/server.h"

#include <grpcpp/resource_quota.h>

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
  if (config.stream_window_kib() > 0) {
    if (config.stream_window_kib() > (1u << 20)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": stream_window_kib must be at most 1048576"));
    }
    options.stream_window_bytes =
        static_cast<int>(config.stream_window_kib()) * 1024;
  }
  if (config.grpc_memory_mib() > 0) {
    options.grpc_memory_bytes = size_t{config.grpc_memory_mib()} << 20;
  }
  if (!config.crl_file().empty()) {
    options.crl_file = ResolveRelativeTo(path, config.crl_file());
  }
  options.status_listen_address = config.status_listen_address();
  return options;
}

absl::StatusOr<std::unique_ptr<CoordinatorServer>> CoordinatorServer::Start(
    CoordinatorServerOptions options) {
  std::unique_ptr<CoordinatorServer> server(new CoordinatorServer);
  // A CA that does not parse is refused before any state is touched.
  if (absl::StatusOr<CertificateVerifier> verifier =
          CertificateVerifier::Create(options.tls.ca_cert);
      !verifier.ok()) {
    return verifier.status();
  }
  absl::StatusOr<Enrolment> enrolment = Enrolment::FromProto(options.enrolment);
  if (!enrolment.ok()) return enrolment.status();
  options.coordinator.enrolled_sites = enrolment->Sites();
  absl::StatusOr<std::unique_ptr<Coordinator>> coordinator =
      Coordinator::Create(options.coordinator);
  if (!coordinator.ok()) return coordinator.status();
  server->coordinator_ = std::move(*coordinator);
  Coordinator* audit = server->coordinator_.get();
  ReloadingVerifierOptions verifier_options;
  verifier_options.ca_pem = options.tls.ca_cert;
  verifier_options.crl_file = options.crl_file;
  verifier_options.check_interval = options.crl_check_interval;
  verifier_options.on_event = [audit](const std::string& action,
                                      const std::string& detail) {
    audit->Audit({"coordinator", action, "", -1, "", detail});
  };
  absl::StatusOr<std::unique_ptr<ReloadingVerifier>> reloading =
      ReloadingVerifier::Create(std::move(verifier_options));
  if (!reloading.ok()) return reloading.status();
  server->auth_ = std::make_unique<Authenticator>(std::move(*reloading),
                                                  std::move(*enrolment), audit);
  server->stream_watch_ =
      std::make_unique<StreamWatch>(options.stream_idle_timeout);
  server->download_gate_ =
      std::make_unique<StreamGate>(options.max_concurrent_downloads);
  server->federation_ = std::make_unique<FederationService>(
      server->coordinator_.get(), server->auth_.get(),
      server->stream_watch_.get(), server->download_gate_.get());
  server->admin_ = std::make_unique<AdminService>(
      server->coordinator_.get(), server->auth_.get(),
      server->stream_watch_.get(), server->download_gate_.get());

  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address,
                           MakeServerCredentials(options.tls), &server->port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  // A fixed window instead of BDP probing: with probing each upload
  // stream's window grows to many megabytes of unread data, and coordinator
  // memory grew with the number of sites (682 MiB at 16 sites of an 11M
  // model, 150 MiB with the fixed window: tests/bench/federation_bench).
  if (options.make_interceptors) {
    builder.experimental().SetInterceptorCreators(options.make_interceptors());
  }
  if (options.grpc_memory_bytes > 0) {
    // gRPC's own memory accounting: under pressure it shrinks windows and
    // read buffers, which keeps memory flat however many sites upload at
    // once (load_bench: 351 -> 88 MiB at 200 sites).
    grpc::ResourceQuota quota("echofed-coordinator");
    quota.Resize(options.grpc_memory_bytes);
    builder.SetResourceQuota(quota);
  }
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                             options.stream_window_bytes);
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
  StreamWatch* watch = server->stream_watch_.get();
  server->ticker_ = std::thread([core, stop, tick, watch] {
    while (!stop->WaitForNotificationWithTimeout(tick)) {
      core->Tick();
      for (const std::string& stream : watch->CancelStalled(absl::Now())) {
        LogWarning(stream, " made no progress for too long; cancelled");
      }
    }
  });
  LogInfo("listening on port ", server->port_, " (mutual TLS)");
  if (!options.status_listen_address.empty()) {
    StatusServerOptions status_options;
    status_options.listen_address = options.status_listen_address;
    status_options.tls = options.tls;
    absl::StatusOr<std::unique_ptr<StatusServer>> status =
        StatusServer::Start(std::move(status_options), server->auth_.get(),
                            [core] { return TakeStatusSnapshot(*core); });
    if (!status.ok()) return status.status();
    server->status_ = std::move(*status);
  }
  return server;
}

void CoordinatorServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // The page reads the coordinator: it goes first.
  if (status_ != nullptr) status_->Stop();
  stop_ticker_.Notify();
  if (ticker_.joinable()) ticker_.join();
  // Start may fail half-way (a CRL that does not load, a port in use), so
  // any part may be missing here.
  if (coordinator_ != nullptr) coordinator_->Shutdown();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(5));
    server_->Wait();
  }
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

}  // namespace echofed
