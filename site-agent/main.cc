// echofed-agent: the site daemon and its site-side commands.
//   run         join the coordinator and work through training tasks
//   synth       write the built-in synthetic cohort (demo, tests)
//   check-data  read the site's manifest and images, print what qualifies

#include <csignal>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/log.h"
#include "proto/config.pb.h"
#include "site-agent/agent.h"
#include "site-agent/dataset.h"
#include "site-agent/synthetic_cohort.h"
#include "torch/torch.h"

namespace {

echofed::Agent* g_agent = nullptr;

void StopOnSignal(int) {
  if (g_agent != nullptr) g_agent->Stop();
}

int RunAgent(const std::string& config_path, bool exit_after_run,
             int threads) {
  echofed::AgentConfig config;
  if (absl::Status status = echofed::LoadTextProto(config_path, &config);
      !status.ok()) {
    echofed::LogError(status.message());
    return 2;
  }
  echofed::TlsFiles files;
  files.set_ca_cert(echofed::ResolveRelativeTo(config_path, config.tls().ca_cert()));
  files.set_cert(echofed::ResolveRelativeTo(config_path, config.tls().cert()));
  files.set_key(echofed::ResolveRelativeTo(config_path, config.tls().key()));
  absl::StatusOr<echofed::TlsMaterial> tls = echofed::LoadTlsMaterial(files);
  if (!tls.ok()) {
    echofed::LogError(config_path, ": tls: ", tls.status().message());
    return 2;
  }
  if (config.coordinator_address().empty() || config.data_dir().empty()) {
    echofed::LogError(config_path,
                      ": coordinator_address and data_dir are required");
    return 2;
  }
  if (threads > 0) {
    torch::set_num_threads(threads);
    torch::set_num_interop_threads(1);
  }
  echofed::AgentOptions options;
  options.coordinator_address = config.coordinator_address();
  options.coordinator_name = config.coordinator_name();
  options.tls = std::move(*tls);
  options.data_dir = echofed::ResolveRelativeTo(config_path, config.data_dir());
  if (!config.device().empty()) options.device = config.device();
  options.exit_after_run = exit_after_run;
  echofed::Agent agent(std::move(options));
  g_agent = &agent;
  std::signal(SIGTERM, StopOnSignal);
  std::signal(SIGINT, StopOnSignal);
  absl::Status status = agent.Run();
  g_agent = nullptr;
  if (!status.ok()) {
    echofed::LogError(status.ToString());
    return 1;
  }
  return 0;
}

int CheckData(const std::string& data_dir) {
  absl::StatusOr<echofed::SiteManifest> manifest =
      echofed::LoadManifest(data_dir);
  if (!manifest.ok()) {
    std::cerr << manifest.status().message() << "\n";
    return 1;
  }
  std::map<std::string, int> labels;
  int unreadable = 0;
  for (const echofed::ImageRecord& record : manifest->records) {
    std::vector<std::string> classes = {record.label};
    echofed::ImageSet set = echofed::LoadImageSet({record}, classes, 32);
    if (set.size() == 1) {
      labels[record.label]++;
    } else {
      ++unreadable;
      for (const auto& error : set.errors) std::cout << "  " << error.message << "\n";
    }
  }
  echofed::DataSummary summary = echofed::Summarize(*manifest);
  std::cout << absl::StrFormat(
      "%s: %d manifest lines with problems, %d images listed, %d unreadable, "
      "%d patients\n",
      data_dir, manifest->errors.size(), manifest->records.size(), unreadable,
      summary.patients());
  for (const auto& error : manifest->errors) {
    std::cout << "  line " << error.line << ": " << error.message << "\n";
  }
  for (const auto& [label, count] : labels) {
    std::cout << absl::StrFormat("  %-12s %5d readable images\n", label, count);
  }
  return unreadable == 0 && manifest->errors.empty() ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"echofed site agent"};
  app.require_subcommand(1);

  CLI::App* run = app.add_subcommand("run", "join the coordinator and train");
  std::string config_path;
  bool exit_after_run = false;
  int threads = 0;
  run->add_option("-c,--config", config_path, "AgentConfig textproto")
      ->required();
  run->add_flag("--exit-after-run", exit_after_run,
                "leave once a run this site took part in has ended");
  run->add_option("--threads", threads, "LibTorch CPU threads (0: default)");

  CLI::App* synth = app.add_subcommand(
      "synth", "write the built-in SYNTHETIC neuroblastic-tumour cohort");
  echofed::SyntheticCohortOptions synth_options;
  synth->add_option("-o,--out", synth_options.out_dir, "output folder")
      ->required();
  synth->add_option("--sites", synth_options.sites, "virtual hospitals");
  synth->add_option("--patients", synth_options.patients_per_site,
                    "patients per hospital");
  synth->add_option("--image-size", synth_options.image_size, "pixels per side");
  synth->add_option("--seed", synth_options.seed, "random seed");

  CLI::App* check = app.add_subcommand(
      "check-data", "read the manifest and every image; print what qualifies");
  std::string data_dir;
  check->add_option("data_dir", data_dir, "site data folder")->required();

  CLI11_PARSE(app, argc, argv);
  echofed::SetLogComponent("agent");

  if (run->parsed()) return RunAgent(config_path, exit_after_run, threads);
  if (synth->parsed()) {
    absl::Status status = echofed::WriteSyntheticCohort(synth_options);
    if (!status.ok()) {
      std::cerr << status.message() << "\n";
      return 1;
    }
    std::cout << "wrote " << synth_options.sites
              << " SYNTHETIC hospitals to " << synth_options.out_dir << "\n";
    return 0;
  }
  if (check->parsed()) return CheckData(data_dir);
  return 2;
}
