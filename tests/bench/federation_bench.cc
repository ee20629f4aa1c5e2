// Federation overhead benchmark: the real coordinator and N real agent
// processes over loopback mutual TLS, with the NOOP trainer (each update is
// the received model plus 1e-6), so a round is transfer, digests, checks
// and aggregation only.
//
//   federation_bench [--configs 1M:4:10,11M:4:10,11M:16:6,11M:64:3,100M:4:3]
//                    [--secure-aggregation]
//
// After the summary table it prints each config's round timeline: the
// medians of the coordinator's phases (RoundRecord.timeline, read from the
// run status) and of the agents' steps (from their logs).
//
// Each config is PARAMETERS:SITES:ROUNDS. Run as root where possible: the
// benchmark then re-runs itself in a private network namespace, so the
// loopback byte counters in /proc/net/dev see only its own traffic.

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "coordinator/cli/admin_client.h"
#include "coordinator/cli/kits.h"

namespace echofed {
namespace {

struct Config {
  int64_t parameters = 0;
  int sites = 0;
  int rounds = 0;
  std::string label;
  // Plan secure_aggregation: masked uploads of 8 bytes a value.
  bool secure_aggregation = false;
  // Appended to the coordinator's config (textproto fields), to measure a
  // setting's effect, e.g. "stream_window_kib: 8192".
  std::string coordinator_config;
};

// Medians over the measured rounds, in milliseconds: coordinator phases
// since the round opened (RoundRecord.timeline), then agent-side steps
// from the agents' logs.
struct Timeline {
  double first_download = 0, last_download = 0, first_upload = 0,
         last_upload = 0, last_fold = 0, model_written = 0, committed = 0,
         audited = 0, since_previous = 0;
  double agent_download = 0, agent_train = 0, agent_export = 0,
         agent_upload = 0;
};

struct Result {
  Config config;
  Timeline timeline;
  double median_round_seconds = 0;
  double max_round_seconds = 0;
  int64_t wire_bytes = 0;
  int64_t ideal_bytes = 0;
  int64_t coordinator_rss = 0;
  int64_t agent_rss = 0;
  double coordinator_cpu = 0;
  double agents_cpu = 0;
  std::string error;
};

absl::StatusOr<Config> ParseConfig(const std::string& text) {
  std::vector<std::string> parts = absl::StrSplit(text, ':');
  Config config;
  config.label = text;
  if (parts.size() != 3)
    return absl::InvalidArgumentError("PARAMS:SITES:ROUNDS");
  std::string params = parts[0];
  double scale = 1;
  if (!params.empty() && (params.back() == 'M' || params.back() == 'm')) {
    scale = 1e6;
    params.pop_back();
  }
  double value;
  if (!absl::SimpleAtod(params, &value) ||
      !absl::SimpleAtoi(parts[1], &config.sites) ||
      !absl::SimpleAtoi(parts[2], &config.rounds) || value <= 0 ||
      config.sites < 1 || config.rounds < 2) {
    return absl::InvalidArgumentError(absl::StrCat("bad config '", text, "'"));
  }
  config.parameters = static_cast<int64_t>(value * scale);
  return config;
}

// Bytes sent on the loopback device (each byte crosses it once).
int64_t LoopbackBytes() {
  std::ifstream in("/proc/net/dev");
  std::string line;
  while (std::getline(in, line)) {
    std::string trimmed(absl::StripLeadingAsciiWhitespace(line));
    if (trimmed.rfind("lo:", 0) != 0) continue;
    std::istringstream fields(trimmed.substr(3));
    int64_t rx_bytes = 0;
    fields >> rx_bytes;
    return rx_bytes;
  }
  return 0;
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

// Rounds from the second on: the first also holds each agent building its
// model and reading its data.
void FillTimeline(const RunStatus& status, int sites, const std::string& work,
                  Timeline* out) {
  std::vector<std::vector<double>> phases(9);
  for (int r = 1; r < status.rounds_size(); ++r) {
    if (r == 1 && status.rounds_size() > 2) continue;
    const RoundTimeline& t = status.rounds(r).timeline();
    int64_t values[] = {
        t.first_download_us(), t.last_download_us(), t.first_upload_us(),
        t.last_upload_us(),    t.last_fold_us(),     t.model_written_us(),
        t.committed_us(),      t.audited_us(),       t.since_previous_us()};
    for (int i = 0; i < 9; ++i) phases[i].push_back(values[i] / 1000.0);
  }
  double* fields[] = {
      &out->first_download, &out->last_download, &out->first_upload,
      &out->last_upload,    &out->last_fold,     &out->model_written,
      &out->committed,      &out->audited,       &out->since_previous};
  for (int i = 0; i < 9; ++i) *fields[i] = Median(phases[i]);
  // "round N timing: download+load A s, train B s, export C s" and
  // "uploaded round N (digest) in D s" (site-agent/agent.cc).
  std::vector<double> download, train, exported, upload;
  for (int i = 1; i <= sites; ++i) {
    std::ifstream in(absl::StrCat(work, "/site-", i, ".log"));
    std::string line;
    while (std::getline(in, line)) {
      int round = 0;
      double a = 0, b = 0, c = 0;
      size_t at = line.find("] round ");
      if (at != std::string::npos &&
          std::sscanf(line.c_str() + at,
                      "] round %d timing: download+load %lf s, train %lf s, "
                      "export %lf s",
                      &round, &a, &b, &c) == 4 &&
          round >= 2) {
        download.push_back(a * 1000);
        train.push_back(b * 1000);
        exported.push_back(c * 1000);
      }
      at = line.find("] uploaded round ");
      size_t in_at = line.rfind(" in ");
      if (at != std::string::npos && in_at != std::string::npos &&
          std::sscanf(line.c_str() + at, "] uploaded round %d", &round) == 1 &&
          round >= 2 &&
          std::sscanf(line.c_str() + in_at, " in %lf s", &a) == 1) {
        upload.push_back(a * 1000);
      }
    }
  }
  out->agent_download = Median(download);
  out->agent_train = Median(train);
  out->agent_export = Median(exported);
  out->agent_upload = Median(upload);
}

std::string Bin(const std::string& name) {
  return ExecutableDir() + "/../bin/" + name;
}

Result RunConfig(const Config& config, const std::string& work) {
  Result result;
  result.config = config;
  auto fail = [&](absl::string_view message) {
    result.error = std::string(message);
    return result;
  };
  std::filesystem::remove_all(work);
  std::string pki = work + "/pki";
  if (!InitStudyPki(pki, "bench", 2).ok()) return fail("pki");
  IssueKit(pki,
           {"coordinator", Role::kCoordinator, {"localhost", "127.0.0.1"}, 2})
      .IgnoreError();
  IssueKit(pki, {"operator", Role::kOperator, {}, 2}).IgnoreError();
  std::vector<std::string> sites;
  for (int i = 1; i <= config.sites; ++i) {
    sites.push_back(absl::StrCat("site-", i));
    IssueKit(pki, {sites.back(), Role::kSite, {}, 2}).IgnoreError();
  }
  Subprocess synth = *Subprocess::Start(
      {Bin("echofed-agent"), "synth", "--out", work + "/data", "--sites",
       std::to_string(config.sites), "--patients", "4", "--image-size", "64"},
      work + "/synth.log");
  if (synth.Wait(absl::Minutes(5)).value_or(-1) != 0) return fail("synth");
  WriteFileAtomically(
      work + "/coordinator.textproto",
      absl::StrCat(
          "listen_address: \"127.0.0.1:0\"\n"
          "tls { ca_cert: \"pki/coordinator/ca.pem\" cert: "
          "\"pki/coordinator/cert.pem\" key: \"pki/coordinator/key.pem\" }\n"
          "state_dir: \"state\"\n"
          "enrolment_file: \"pki/enrolment.textproto\"\n",
          config.coordinator_config, "\n"))
      .IgnoreError();
  absl::StatusOr<Subprocess> coordinator = Subprocess::Start(
      {Bin("echofed-coordinator"), "--config", work + "/coordinator.textproto",
       "--port-file", work + "/port"},
      work + "/coordinator.log");
  if (!coordinator.ok()) return fail("coordinator");
  int port = 0;
  for (int i = 0; i < 400 && port == 0; ++i) {
    absl::StatusOr<std::string> text = ReadFileToString(work + "/port");
    if (!text.ok() ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port)) {
      absl::SleepFor(absl::Milliseconds(25));
    }
  }
  if (port == 0) return fail("coordinator did not start");
  std::string address = absl::StrCat("127.0.0.1:", port);
  std::vector<Subprocess> agents;
  for (const std::string& site : sites) {
    std::string config_path = absl::StrCat(work, "/", site, ".textproto");
    WriteFileAtomically(
        config_path,
        absl::StrCat(
            "coordinator_address: \"", address,
            "\"\ncoordinator_name: \"localhost\"\ntls { ca_cert: \"pki/", site,
            "/ca.pem\" cert: \"pki/", site, "/cert.pem\" key: \"pki/", site,
            "/key.pem\" }\ndata_dir: \"data/", site, "\"\ndevice: \"cpu\"\n"))
        .IgnoreError();
    absl::StatusOr<Subprocess> agent =
        Subprocess::Start({Bin("echofed-agent"), "run", "--config", config_path,
                           "--exit-after-run", "--threads", "1"},
                          absl::StrCat(work, "/", site, ".log"));
    if (!agent.ok()) return fail("agent");
    agents.push_back(std::move(*agent));
  }
  AdminClient admin(address, *LoadKit(pki + "/operator"), "localhost");
  Plan plan;
  plan.set_name("federation overhead benchmark");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  plan.set_model(absl::StrCat("bench_blob_", config.parameters));
  plan.set_image_size(32);
  plan.set_rounds(config.rounds);
  plan.set_trainer(Plan::NOOP);
  plan.set_min_sites(config.sites);
  plan.set_round_deadline_seconds(600);
  plan.set_evaluate_every_round(false);
  plan.set_secure_aggregation(config.secure_aggregation);
  for (const std::string& site : sites) {
    Plan::SiteRole* role = plan.add_sites();
    role->set_site(site);
    role->set_role(Plan::TRAIN);
  }
  int64_t bytes_before = LoopbackBytes();
  absl::StatusOr<std::string> run_id = admin.StartRun(plan);
  if (!run_id.ok()) return fail(run_id.status().ToString());
  absl::StatusOr<RunStatus> status;
  absl::Time give_up = absl::Now() + absl::Minutes(20);
  while (absl::Now() < give_up) {
    status = admin.GetRunStatus(*run_id);
    if (status.ok() && (status->state() == RunStatus::DONE ||
                        status->state() == RunStatus::FAILED)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  if (!status.ok() || status->state() != RunStatus::DONE) {
    return fail("run did not finish");
  }
  for (Subprocess& agent : agents) {
    if (!agent.Wait(absl::Seconds(60))) agent.Terminate();
    result.agent_rss = std::max(result.agent_rss, agent.max_rss_bytes());
    result.agents_cpu += agent.cpu_seconds();
  }
  result.wire_bytes = LoopbackBytes() - bytes_before;
  // Its own peak since exec (the kernel's rusage peak would include this
  // process's pages at spawn).
  result.coordinator_rss = coordinator->PeakRssNow();
  coordinator->Terminate();
  if (result.coordinator_rss == 0) {
    result.coordinator_rss = coordinator->max_rss_bytes();
  }
  result.coordinator_cpu = coordinator->cpu_seconds();

  std::vector<double> rounds;
  for (int r = 1; r < status->rounds_size(); ++r) {
    rounds.push_back((status->rounds(r).closed_unix_ms() -
                      status->rounds(r - 1).closed_unix_ms()) /
                     1000.0);
  }
  std::sort(rounds.begin(), rounds.end());
  FillTimeline(*status, config.sites, work, &result.timeline);
  result.median_round_seconds = rounds[rounds.size() / 2];
  result.max_round_seconds = rounds.back();
  // Ideal: the initial model up once, each round every site down and up
  // (masked: twice the bytes up), and the final evaluation every site down
  // once.
  int64_t model_bytes = config.parameters * 4;
  int64_t up = config.secure_aggregation ? 2 : 1;
  result.ideal_bytes =
      model_bytes *
      (1 + (1 + up) * int64_t{config.sites} * config.rounds + config.sites);
  // ECHOFED_BENCH_KEEP=1 keeps the logs for a look at the round timeline.
  if (std::getenv("ECHOFED_BENCH_KEEP") == nullptr) {
    std::filesystem::remove_all(work);
  }
  return result;
}

std::string Mib(int64_t bytes) {
  return absl::StrFormat("%.0f", bytes / 1048576.0);
}

}  // namespace
}  // namespace echofed

int main(int argc, char** argv) {
  using echofed::Config;
  std::string configs = "1M:4:10,11M:4:10,11M:16:6,11M:64:3,100M:4:3";
  bool secure_aggregation = false;
  std::string coordinator_config;
  CLI::App app{
      "Federation overhead: the real coordinator and N real agent processes "
      "over loopback mutual TLS, NOOP trainer; prints one table row per "
      "config"};
  app.add_option("--configs", configs,
                 "comma-separated PARAMETERS:SITES:ROUNDS (M: millions of "
                 "parameters; at least 2 rounds)")
      ->capture_default_str();
  app.add_flag("--secure-aggregation", secure_aggregation,
               "masked uploads (plan secure_aggregation)");
  app.add_option("--coordinator-config", coordinator_config,
                 "textproto fields appended to the coordinator's config, "
                 "e.g. 'stream_window_kib: 8192'");
  app.footer(
      "Run as root where possible: the benchmark then re-runs itself in a "
      "private network namespace (unshare), so the loopback byte counts are "
      "its own.\nEnvironment: ECHOFED_BENCH_NO_NETNS=1 stays in the current "
      "namespace; ECHOFED_BENCH_KEEP=1 keeps the work folder ($TMPDIR or "
      "/tmp) with its logs.");
  CLI11_PARSE(app, argc, argv);
  // Private network namespace: only our traffic on this loopback.
  bool isolated = std::getenv("ECHOFED_BENCH_NETNS") != nullptr;
  if (!isolated && ::geteuid() == 0 &&
      std::filesystem::exists("/usr/bin/unshare") &&
      std::getenv("ECHOFED_BENCH_NO_NETNS") == nullptr) {
    setenv("ECHOFED_BENCH_NETNS", "1", 1);
    std::string self = echofed::ExecutableDir() + "/federation_bench";
    std::vector<char*> args = {
        const_cast<char*>("unshare"),
        const_cast<char*>("--net"),
        const_cast<char*>("--"),
        const_cast<char*>("/bin/sh"),
        const_cast<char*>("-c"),
        const_cast<char*>("ip link set lo up && exec \"$0\" \"$@\""),
        const_cast<char*>(self.c_str())};
    for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
    args.push_back(nullptr);
    execv("/usr/bin/unshare", args.data());
    perror("unshare");
  }
  if (!isolated) {
    std::cerr << "note: not in a private network namespace (needs root and "
                 "unshare); byte counts include any other loopback traffic\n";
  }
  std::vector<echofed::Result> results;
  std::string work =
      std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
      "/echofed-federation-bench-" + std::to_string(::getpid());
  for (absl::string_view text : absl::StrSplit(configs, ',')) {
    absl::StatusOr<Config> config = echofed::ParseConfig(std::string(text));
    if (!config.ok()) {
      std::cerr << config.status() << "\n";
      return 2;
    }
    config->secure_aggregation = secure_aggregation;
    config->coordinator_config = coordinator_config;
    if (secure_aggregation) config->label += " masked";
    std::cerr << "running " << config->label << " ...\n";
    results.push_back(echofed::RunConfig(*config, work));
  }
  std::printf(
      "\n| params x sites (rounds) | median s/round | max s/round | wire MiB "
      "| ideal MiB | wire/ideal | coordinator peak RSS MiB | agent peak RSS "
      "MiB | coordinator CPU s | agents CPU s "
      "|\n|---|---|---|---|---|---|---|---|---|---|\n");
  bool ok = true;
  for (const echofed::Result& r : results) {
    if (!r.error.empty()) {
      std::printf("| %s | failed: %s |\n", r.config.label.c_str(),
                  r.error.c_str());
      ok = false;
      continue;
    }
    std::printf(
        "| %s | %.3f | %.3f | %s | %s | %.4f | %s | %s | %.1f | %.1f |\n",
        r.config.label.c_str(), r.median_round_seconds, r.max_round_seconds,
        echofed::Mib(r.wire_bytes).c_str(), echofed::Mib(r.ideal_bytes).c_str(),
        static_cast<double>(r.wire_bytes) / r.ideal_bytes,
        echofed::Mib(r.coordinator_rss).c_str(),
        echofed::Mib(r.agent_rss).c_str(), r.coordinator_cpu, r.agents_cpu);
  }
  // Coordinator phases are cumulative from the round's opening; the gap
  // from the previous round's audit to this opening is its own column.
  std::printf(
      "\nRound timeline, ms (median over rounds 2..N; coordinator: since the "
      "round opened; agents: per site)\n\n| params x sites | prev audit -> "
      "open | first download byte | last download done | first upload | "
      "last upload byte | last fold | model written | committed | audited | "
      "agent download+load | agent train | agent export | agent upload "
      "|\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const echofed::Result& r : results) {
    if (!r.error.empty()) continue;
    const echofed::Timeline& t = r.timeline;
    std::printf(
        "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f "
        "| %.1f | %.1f | %.1f | %.1f |\n",
        r.config.label.c_str(), t.since_previous, t.first_download,
        t.last_download, t.first_upload, t.last_upload, t.last_fold,
        t.model_written, t.committed, t.audited, t.agent_download,
        t.agent_train, t.agent_export, t.agent_upload);
  }
  return ok ? 0 : 1;
}
