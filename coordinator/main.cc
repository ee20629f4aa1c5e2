// echofed-coordinator: the study's server. Agents dial in over mutual TLS;
// operators and statisticians use the `echofed` command.

#include <csignal>
#include <cstdio>
#include <fstream>

#include "CLI/CLI.hpp"
#include "absl/synchronization/notification.h"
#include "common/files.h"
#include "common/log.h"
#include "coordinator/server.h"

namespace {

absl::Notification* g_stop = nullptr;

void OnSignal(int) {
  // Notify is not async-signal-safe in general; a dedicated thread waits on
  // sigwait instead (see main).
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"echofed coordinator: federated training server (mutual TLS)"};
  std::string config_path;
  std::string listen_override;
  std::string port_file;
  app.add_option("-c,--config", config_path,
                 "CoordinatorConfig textproto (see deploy/coordinator.textproto)")
      ->required();
  app.add_option("--listen", listen_override,
                 "host:port, overrides the config (port 0 picks a free port)");
  app.add_option("--port-file", port_file,
                 "write the bound port to this file once listening");
  CLI11_PARSE(app, argc, argv);
  echofed::SetLogComponent("coordinator");

  // Block SIGINT/SIGTERM in every thread; one thread waits for them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  (void)OnSignal;
  (void)g_stop;

  absl::StatusOr<echofed::CoordinatorServerOptions> options =
      echofed::CoordinatorServer::OptionsFromConfigFile(config_path);
  if (!options.ok()) {
    echofed::LogError(options.status().message());
    return 2;
  }
  if (!listen_override.empty()) options->listen_address = listen_override;
  absl::StatusOr<std::unique_ptr<echofed::CoordinatorServer>> server =
      echofed::CoordinatorServer::Start(std::move(*options));
  if (!server.ok()) {
    echofed::LogError(server.status().message());
    return 1;
  }
  if (!port_file.empty()) {
    absl::Status written = echofed::WriteFileAtomically(
        port_file, std::to_string((*server)->port()) + "\n");
    if (!written.ok()) {
      echofed::LogError(written.message());
      return 1;
    }
  }
  int signal = 0;
  sigwait(&signals, &signal);
  echofed::LogInfo("signal ", signal, ": shutting down");
  (*server)->Shutdown();
  return 0;
}
