#include "coordinator/cli/demo.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "coordinator/cli/admin_client.h"
#include "coordinator/cli/kits.h"

namespace echofed {
namespace {

constexpr char kMarker[] = ".echofed-demo";

absl::Status PrepareWorkDir(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (fs::exists(dir)) {
    if (!fs::is_empty(dir) && !fs::exists(fs::path(dir) / kMarker)) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir,
          " exists and was not made by the demo; choose another --work-dir"));
    }
    fs::remove_all(dir, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("cannot clear ", dir, ": ", error.message()));
    }
  }
  if (absl::Status status = MakeDirectories(dir + "/logs"); !status.ok()) {
    return status;
  }
  return WriteFileAtomically(dir + "/" + kMarker, "echofed demo work folder\n");
}

std::string Tail(const std::string& path, int lines) {
  absl::StatusOr<std::string> content = ReadFileToString(path);
  if (!content.ok()) return "";
  size_t pos = content->size();
  for (int i = 0; i <= lines && pos != std::string::npos && pos > 0; ++i) {
    pos = content->rfind('\n', pos - 1);
  }
  return pos == std::string::npos ? *content : content->substr(pos + 1);
}

// Steps 1-6 of RunDemo in the prepared work folder `dir`, with the programs
// of `bin`.
absl::Status RunFederation(const DemoOptions& options, const std::string& dir,
                           const std::string& bin, std::ostream& out) {
  absl::Time start = absl::Now();
  absl::Time give_up = start + options.timeout;

  // 1. Throwaway PKI.
  std::string pki = dir + "/pki";
  if (absl::Status status = InitStudyPki(pki, "echofed demo study", 30);
      !status.ok()) {
    return status;
  }
  std::vector<std::string> sites;
  for (int i = 1; i <= options.sites; ++i)
    sites.push_back(absl::StrCat("site-", i));
  std::vector<CertificateRequest> requests;
  CertificateRequest coordinator{
      "coordinator", Role::kCoordinator, {"localhost", "127.0.0.1"}, 30};
  requests.push_back(coordinator);
  requests.push_back({"demo-operator", Role::kOperator, {}, 30});
  for (const std::string& site : sites)
    requests.push_back({site, Role::kSite, {}, 30});
  for (const CertificateRequest& request : requests) {
    if (absl::Status status = IssueKit(pki, request); !status.ok())
      return status;
  }
  out << "PKI: study CA and " << requests.size() << " certificates in " << pki
      << "\n";

  // 2. Synthetic cohort, written by the agent program (it owns patient-data
  //    code; this program never links it).
  Subprocess synth = *Subprocess::Start(
      {bin + "/echofed-agent", "synth", "--out", dir + "/data", "--sites",
       std::to_string(options.sites), "--patients",
       std::to_string(options.patients_per_site)},
      dir + "/logs/synth.log");
  if (synth.Wait(absl::Minutes(2)).value_or(-1) != 0) {
    return absl::InternalError(absl::StrCat("synthetic cohort failed:\n",
                                            Tail(dir + "/logs/synth.log", 20)));
  }
  out << "data: SYNTHETIC cohort of " << options.sites << " hospitals x "
      << options.patients_per_site << " patients in " << dir << "/data\n";

  // 3. The coordinator on a free loopback port.
  std::string config = absl::StrCat(
      "listen_address: \"127.0.0.1:0\"\n"
      "tls { ca_cert: \"pki/coordinator/ca.pem\" cert: "
      "\"pki/coordinator/cert.pem\" key: \"pki/coordinator/key.pem\" }\n"
      "state_dir: \"coordinator-state\"\n"
      "enrolment_file: \"pki/enrolment.textproto\"\n");
  if (absl::Status status =
          WriteFileAtomically(dir + "/coordinator.textproto", config);
      !status.ok()) {
    return status;
  }
  std::string port_file = dir + "/coordinator.port";
  absl::StatusOr<Subprocess> server = Subprocess::Start(
      {bin + "/echofed-coordinator", "--config", dir + "/coordinator.textproto",
       "--port-file", port_file},
      dir + "/logs/coordinator.log");
  if (!server.ok()) return server.status();
  int port = 0;
  while (port == 0 && absl::Now() < give_up) {
    absl::StatusOr<std::string> text = ReadFileToString(port_file);
    if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port))
      break;
    if (!server->running()) {
      return absl::InternalError(absl::StrCat(
          "coordinator exited:\n", Tail(dir + "/logs/coordinator.log", 20)));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  std::string address = absl::StrCat("127.0.0.1:", port);
  out << "coordinator: " << address << " (mutual TLS), log " << dir
      << "/logs/coordinator.log\n";

  // 4. One agent process per hospital.
  std::vector<Subprocess> agents;
  for (const std::string& site : sites) {
    std::string agent_config =
        absl::StrCat("coordinator_address: \"", address, "\"\n",
                     "coordinator_name: \"localhost\"\n",
                     "tls { ca_cert: \"pki/", site, "/ca.pem\" cert: \"pki/",
                     site, "/cert.pem\" key: \"pki/", site, "/key.pem\" }\n",
                     "data_dir: \"data/", site, "\"\n", "device: \"auto\"\n");
    std::string path = absl::StrCat(dir, "/", site, ".agent.textproto");
    if (absl::Status status = WriteFileAtomically(path, agent_config);
        !status.ok()) {
      return status;
    }
    absl::StatusOr<Subprocess> agent =
        Subprocess::Start({bin + "/echofed-agent", "run", "--config", path,
                           "--exit-after-run", "--threads", "1"},
                          absl::StrCat(dir, "/logs/", site, ".log"));
    if (!agent.ok()) return agent.status();
    agents.push_back(std::move(*agent));
  }
  out << "agents: " << sites.size() << " processes, logs in " << dir
      << "/logs/\n\n";

  // 5. Start the run as the operator.
  absl::StatusOr<TlsMaterial> operator_kit = LoadKit(pki + "/demo-operator");
  if (!operator_kit.ok()) return operator_kit.status();
  AdminClient admin(address, *operator_kit, "localhost");
  Plan plan;
  plan.set_name("demo: NB/GNB/GN subtype, synthetic cohort");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  // The study's integrated model: ultrasound and clinical data fused, with
  // every head (small enough to train on a laptop CPU).
  plan.set_model("resnet_small_fusion");
  for (Plan::Head head : {Plan::SUBTYPE, Plan::HIGH_RISK, Plan::BONE_MARROW,
                          Plan::RESPONSE, Plan::PROGNOSIS}) {
    plan.add_heads(head);
  }
  plan.set_image_size(64);
  plan.set_rounds(options.rounds);
  plan.set_local_epochs(options.local_epochs);
  plan.set_batch_size(16);
  plan.set_trainer(Plan::ADAMW);
  plan.set_learning_rate(3e-3);
  plan.set_schedule(Plan::COSINE);
  plan.set_strategy(Plan::FEDAVG);
  plan.set_round_deadline_seconds(120);
  plan.set_train_fraction(0.7);
  plan.set_split_seed(2026);
  plan.set_seed(42);
  plan.set_evaluate_every_round(true);
  int train_sites = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    Plan::SiteRole* role = plan.add_sites();
    role->set_site(sites[i]);
    bool external = sites.size() >= 3 && i + 1 == sites.size();
    role->set_role(external ? Plan::EXTERNAL_VALIDATION : Plan::TRAIN);
    if (!external) ++train_sites;
  }
  plan.set_min_sites(std::max(1, train_sites - 1));
  absl::StatusOr<std::string> run_id = admin.StartRun(plan);
  if (!run_id.ok()) return run_id.status();
  out << "run " << *run_id << " started: " << options.rounds << " rounds, "
      << train_sites << " training sites, "
      << (static_cast<int>(sites.size()) - train_sites)
      << " external validation site\n\n";

  // 6. Watch it.
  int printed = 0;
  absl::Status result = absl::DeadlineExceededError(
      absl::StrCat("the demo did not finish within ",
                   absl::FormatDuration(options.timeout)));
  RunStatus last;
  while (absl::Now() < give_up) {
    absl::StatusOr<RunStatus> status = admin.GetRunStatus(*run_id);
    if (status.ok()) {
      last = *status;
      bool finished = status->state() == RunStatus::DONE ||
                      status->state() == RunStatus::STOPPED ||
                      status->state() == RunStatus::FAILED;
      for (const RoundRecord& round : status->rounds()) {
        if (round.round() <= printed || round.round() == 0) continue;
        bool complete = round.evaluations_size() > 0 &&
                        (status->round() > round.round() || finished);
        if (!complete) break;
        out << FormatRound(*status, round) << "\n";
        printed = round.round();
      }
      if (finished) {
        result = status->state() == RunStatus::DONE
                     ? absl::OkStatus()
                     : absl::AbortedError(absl::StrCat(
                           "run ended ", RunStatus::State_Name(status->state()),
                           ": ", status->message()));
        break;
      }
    }
    bool agent_died = false;
    for (Subprocess& agent : agents) {
      if (!agent.running() &&
          agent.Wait(absl::ZeroDuration()).value_or(0) != 0) {
        agent_died = true;
      }
    }
    if (agent_died) {
      result = absl::InternalError("an agent exited with an error");
      break;
    }
    absl::SleepFor(absl::Milliseconds(250));
  }

  if (result.ok()) {
    std::string model = dir + "/final-model.efm";
    absl::StatusOr<std::string> digest =
        admin.DownloadModel(*run_id, -1, model);
    if (!digest.ok()) {
      result = digest.status();
    } else {
      // The plan beside the model: `echofed-agent diagnose` needs both.
      std::string plan_path = dir + "/plan.textproto";
      result = WriteFileAtomically(plan_path, ToTextProto(plan));
      out << "final global model: " << model << " (sha256 "
          << absl::BytesToHexString(*digest).substr(0, 16) << "..., round "
          << options.rounds << "), plan: " << plan_path << "\n"
          << "diagnose a synthetic patient, e.g.:\n  echofed-agent diagnose "
             "--model "
          << model << " --plan " << plan_path << " --data " << dir
          << "/data/site-" << options.sites << " --out " << dir
          << "/diagnose\n";
    }
  }
  for (Subprocess& agent : agents) {
    if (!agent.Wait(absl::Seconds(20))) agent.Terminate();
  }
  server->Terminate();
  if (!result.ok()) {
    out << "\nsite status at the end:\n" << FormatSites(last);
    out << "\ncoordinator log (end):\n"
        << Tail(dir + "/logs/coordinator.log", 15);
    for (const std::string& site : sites) {
      out << "\n"
          << site << " log (end):\n"
          << Tail(absl::StrCat(dir, "/logs/", site, ".log"), 8);
    }
    return result;
  }
  out << absl::StrFormat("demo finished in %.1f s; everything is in %s\n",
                         absl::ToDoubleSeconds(absl::Now() - start), dir);
  return absl::OkStatus();
}

}  // namespace

std::string DefaultDemoWorkDir() {
  // The XDG Base Directory specification: a relative XDG_STATE_HOME is
  // invalid and ignored, as is an empty one.
  const char* state_home = std::getenv("XDG_STATE_HOME");
  if (state_home != nullptr && state_home[0] == '/') {
    return absl::StrCat(state_home, "/echofed/demo");
  }
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] == '/') {
    return absl::StrCat(home, "/.local/state/echofed/demo");
  }
  // No home (a service account, a bare container): the user's id in the
  // name, since the temporary directory is shared.
  std::error_code error;
  std::filesystem::path temp = std::filesystem::temp_directory_path(error);
  if (error) temp = "/tmp";
  return absl::StrCat(temp.string(), "/echofed-demo-", ::getuid());
}

absl::Status RunDemo(const DemoOptions& options, std::ostream& out) {
  if (options.sites < 1 || options.rounds < 1) {
    return absl::InvalidArgumentError(
        "the demo needs at least 1 site and 1 round");
  }
  std::filesystem::path work_dir =
      std::filesystem::absolute(options.work_dir.empty() ? DefaultDemoWorkDir()
                                                         : options.work_dir)
          .lexically_normal();
  // "echofed-demo/" names the folder, not an empty name inside it.
  if (!work_dir.has_filename()) work_dir = work_dir.parent_path();
  std::string dir = work_dir.string();
  std::string bin = options.bin_dir.empty() ? ExecutableDir() : options.bin_dir;
  for (const char* program : {"echofed-coordinator", "echofed-agent"}) {
    if (!std::filesystem::exists(bin + "/" + program)) {
      return absl::NotFoundError(absl::StrCat(program, " not found in ", bin));
    }
  }
  if (absl::Status status = PrepareWorkDir(dir); !status.ok()) return status;
  out << "work folder: " << dir << " (--work-dir to choose another)\n";
  absl::Status status = RunFederation(options, dir, bin, out);
  if (status.ok()) return status;
  // The error is what a user reads last: it says where the logs are.
  return absl::Status(status.code(),
                      absl::StrCat(status.message(),
                                   "; logs and everything else the demo "
                                   "made are in ",
                                   dir));
}

}  // namespace echofed
