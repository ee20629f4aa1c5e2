// echofed-agent: the site daemon and its site-side commands.
//   run         join the coordinator and work through training tasks
//   synth       write the built-in synthetic cohort (demo, tests)
//   check-data  read the site's manifest and images, print what qualifies

#include <csignal>
#include <filesystem>
#include <iostream>
#include <set>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/log.h"
#include "proto/config.pb.h"
#include "site-agent/agent.h"
#include "site-agent/cohort.h"
#include "site-agent/dataset.h"
#include "site-agent/synthetic_cohort.h"
#include "torch/torch.h"

namespace {

echofed::Agent* g_agent = nullptr;

void StopOnSignal(int) {
  if (g_agent != nullptr) g_agent->Stop();
}

int RunAgent(const std::string& config_path, bool exit_after_run, int threads) {
  echofed::AgentConfig config;
  if (absl::Status status = echofed::LoadTextProto(config_path, &config);
      !status.ok()) {
    echofed::LogError(status.message());
    return 2;
  }
  echofed::TlsFiles files;
  files.set_ca_cert(
      echofed::ResolveRelativeTo(config_path, config.tls().ca_cert()));
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

int CheckData(const std::string& data_dir, std::vector<std::string> classes,
              std::string exclusions_path) {
  absl::StatusOr<echofed::SiteInputs> inputs =
      echofed::LoadSiteInputs(data_dir);
  if (!inputs.ok()) {
    std::cerr << "check-data: " << inputs.status().message() << "\n";
    return 1;
  }
  if (classes.empty()) {
    // Without a plan, every label present is a class.
    std::set<std::string> labels;
    for (const echofed::ImageRecord& record : inputs->manifest.records) {
      labels.insert(record.label);
    }
    if (inputs->clinical) labels = {"NB", "GNB", "GN"};
    classes.assign(labels.begin(), labels.end());
  }
  std::cout << "data folder: " << inputs->manifest.data_dir << "\n"
            << "classes: " << absl::StrJoin(classes, ", ") << "\n"
            << "clinical table: "
            << (inputs->clinical ? "clinical.csv" : "none") << "\n\n";
  for (const echofed::RecordError& error : inputs->manifest.errors) {
    std::cout << "manifest.csv line " << error.line << ": " << error.message
              << "\n";
  }
  if (inputs->clinical) {
    for (const echofed::ClinicalRowError& error : inputs->clinical->errors) {
      std::cout << "clinical.csv line " << error.line << ": " << error.message
                << "\n";
    }
  }
  echofed::CohortOptions options;
  options.class_names = classes;
  echofed::Cohort cohort = echofed::SelectCohort(
      inputs->manifest, inputs->clinical ? &*inputs->clinical : nullptr,
      options);
  std::cout << "\n" << echofed::FormatFlow(cohort.flow);
  if (exclusions_path.empty()) {
    exclusions_path =
        "echofed-excluded-" +
        std::filesystem::path(inputs->manifest.data_dir).filename().string() +
        ".csv";
  }
  absl::Status written =
      echofed::WriteExclusions(exclusions_path, cohort.exclusions);
  if (!written.ok()) {
    std::cerr << "check-data: " << written.message() << "\n";
    return 1;
  }
  std::cout
      << "\nexcluded patients with reasons: " << exclusions_path
      << " (mode 0600; it identifies patients and must stay at the site)\n";
  return cohort.flow.included > 0 ? 0 : 3;
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
  synth->add_option("--image-size", synth_options.image_size,
                    "pixels per side");
  synth->add_option("--seed", synth_options.seed, "random seed");

  CLI::App* check = app.add_subcommand(
      "check-data", "read the manifest and every image; print what qualifies");
  std::string data_dir;
  std::vector<std::string> classes;
  std::string exclusions_path;
  check->add_option("data_dir", data_dir, "site data folder")->required();
  check
      ->add_option("--classes", classes,
                   "the plan's classes (default: NB,GNB,GN with a clinical "
                   "table, else every label present)")
      ->delimiter(',');
  check->add_option("--excluded-out", exclusions_path,
                    "where to write the excluded patients (site-local file)");

  CLI11_PARSE(app, argc, argv);
  echofed::SetLogComponent("agent");

  if (run->parsed()) return RunAgent(config_path, exit_after_run, threads);
  if (synth->parsed()) {
    absl::Status status = echofed::WriteSyntheticCohort(synth_options);
    if (!status.ok()) {
      std::cerr << status.message() << "\n";
      return 1;
    }
    std::cout << "wrote " << synth_options.sites << " SYNTHETIC hospitals to "
              << synth_options.out_dir << "\n";
    return 0;
  }
  if (check->parsed()) return CheckData(data_dir, classes, exclusions_path);
  return 2;
}
