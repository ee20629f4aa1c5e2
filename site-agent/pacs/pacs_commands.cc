#include "site-agent/pacs/pacs_commands.h"

#include <atomic>
#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "site-agent/pacs/pacs_client.h"
#include "site-agent/pacs/pseudonym.h"
#include "site-agent/pacs/pull.h"
#include "site-agent/pacs/worklist.h"

namespace echofed {
namespace {

std::atomic<bool> g_stop_pull{false};

void RequestStop(int) { g_stop_pull.store(true); }

bool IsDicomDate(const std::string& date) {
  return date.size() == 8 &&
         date.find_first_not_of("0123456789") == std::string::npos;
}

std::string Resolve(const std::string& config_path, const std::string& path) {
  return path.empty() ? path : ResolveRelativeTo(config_path, path);
}

}  // namespace

absl::StatusOr<PacsSettings> LoadPacsSettings(const std::string& config_path) {
  AgentConfig config;
  if (absl::Status loaded = LoadTextProto(config_path, &config); !loaded.ok()) {
    return loaded;
  }
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", what));
  };
  if (!config.has_pacs()) {
    return invalid(
        "no pacs { ... } block (deploy/examples/agent.textproto shows one)");
  }
  PacsSettings settings;
  settings.pacs = config.pacs();
  PacsConfig& pacs = settings.pacs;
  if (pacs.dicomweb_url().empty()) {
    if (pacs.host().empty() || pacs.port() == 0 || pacs.port() > 65535 ||
        pacs.peer_ae_title().empty()) {
      return invalid(
          "pacs needs host, port and peer_ae_title (DICOM), or dicomweb_url");
    }
  }
  for (const std::string* title :
       {&pacs.peer_ae_title(), &pacs.own_ae_title()}) {
    if (title->size() > 16) {
      return invalid(
          absl::StrCat("AE title '", *title, "' is longer than 16 characters"));
    }
  }
  if (pacs.own_ae_title().empty()) pacs.set_own_ae_title("ECHOFED");
  if (pacs.retrieve().empty()) pacs.set_retrieve("c-get");
  if (pacs.retrieve() != "c-get" && pacs.retrieve() != "c-move") {
    return invalid(absl::StrCat("pacs retrieve '", pacs.retrieve(),
                                "': use \"c-get\" or \"c-move\""));
  }
  if (pacs.retrieve() == "c-move" && pacs.move_port() == 0) {
    return invalid(
        "pacs retrieve \"c-move\" needs move_port (the agent's "
        "storage port, registered at the PACS)");
  }
  if (pacs.timeout_seconds() == 0) pacs.set_timeout_seconds(30);
  if (pacs.modality().empty()) pacs.set_modality("US");
  for (const std::string* date :
       {&pacs.study_date_from(), &pacs.study_date_to()}) {
    if (!date->empty() && !IsDicomDate(*date)) {
      return invalid(
          absl::StrCat("pacs study date '", *date, "': write it as YYYYMMDD"));
    }
  }
  // Touching tls would create the block, and a tls block means DICOM over
  // TLS.
  if (pacs.has_tls()) {
    pacs.mutable_tls()->set_ca_cert(Resolve(config_path, pacs.tls().ca_cert()));
    pacs.mutable_tls()->set_cert(Resolve(config_path, pacs.tls().cert()));
    pacs.mutable_tls()->set_key(Resolve(config_path, pacs.tls().key()));
  }
  pacs.set_dicomweb_credentials_file(
      Resolve(config_path, pacs.dicomweb_credentials_file()));
  if (config.data_dir().empty()) return invalid("data_dir is required");
  settings.data_dir = Resolve(config_path, config.data_dir());
  const bool pseudonymise = !pacs.has_pseudonymise() || pacs.pseudonymise();
  if (pseudonymise) {
    if (!pacs.pseudonym_key_file().empty()) {
      settings.pseudonym_key_file =
          Resolve(config_path, pacs.pseudonym_key_file());
    } else if (!config.state_dir().empty()) {
      settings.pseudonym_key_file =
          Resolve(config_path, config.state_dir()) + "/pseudonym.key";
    } else {
      return invalid(
          "pseudonyms need a secret: set state_dir (the key is created "
          "there) or pacs.pseudonym_key_file, or pseudonymise: false if the "
          "PACS's PatientIDs are already pseudonymous");
    }
  }
  return settings;
}

int RunPacsEcho(const std::string& config_path, std::ostream& out) {
  absl::StatusOr<PacsSettings> settings = LoadPacsSettings(config_path);
  if (!settings.ok()) {
    out << "pacs echo: " << settings.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewPacsClient(settings->pacs);
  if (!client.ok()) {
    out << "pacs echo: " << client.status().message() << "\n";
    return 2;
  }
  absl::Status echo = (*client)->Echo();
  out << (*client)->Describe() << ": "
      << (echo.ok() ? "answers" : std::string(echo.message())) << "\n";
  return echo.ok() ? 0 : 1;
}

int RunPacsPull(const PacsPullFlags& flags, std::ostream& out) {
  absl::StatusOr<PacsSettings> settings = LoadPacsSettings(flags.config_path);
  if (!settings.ok()) {
    out << "pacs pull: " << settings.status().message() << "\n";
    return 2;
  }
  absl::StatusOr<Worklist> worklist = LoadWorklist(flags.worklist_path);
  if (!worklist.ok()) {
    out << "pacs pull: " << worklist.status().message() << "\n";
    return 2;
  }
  std::optional<PseudonymKey> key;
  if (!settings->pseudonym_key_file.empty()) {
    absl::StatusOr<PseudonymKey> loaded =
        PseudonymKey::LoadOrCreate(settings->pseudonym_key_file);
    if (!loaded.ok()) {
      out << "pacs pull: " << loaded.status().message() << "\n";
      return 2;
    }
    key = std::move(*loaded);
    if (key->created()) {
      out << "created the pseudonym key " << settings->pseudonym_key_file
          << " (mode 0600): back it up with the site's other secrets; "
             "without it the same patients get new pseudonyms\n";
    }
  }
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewPacsClient(settings->pacs);
  if (!client.ok()) {
    out << "pacs pull: " << client.status().message() << "\n";
    return 2;
  }
  // Fail fast, before any file is touched, when the PACS is not there or
  // does not accept us: every patient would fail the same way.
  if (absl::Status echo = (*client)->Echo(); !echo.ok()) {
    out << "pacs pull: " << (*client)->Describe() << ": " << echo.message()
        << "\n";
    return 1;
  }
  out << "pulling " << worklist->entries.size() << " worklist row(s) from "
      << (*client)->Describe() << " into " << settings->data_dir << "\n"
      << std::flush;

  PullOptions options;
  options.data_dir = settings->data_dir;
  options.pseudonym_key = key ? &*key : nullptr;
  options.modality = settings->pacs.modality();
  options.study_date_from = settings->pacs.study_date_from();
  options.study_date_to = settings->pacs.study_date_to();
  options.replace_existing_tables = flags.replace_tables;
  g_stop_pull.store(false);
  auto previous_int = std::signal(SIGINT, RequestStop);
  auto previous_term = std::signal(SIGTERM, RequestStop);
  options.stop_requested = [] { return g_stop_pull.load(); };
  options.progress = [&out](const std::string& line) {
    out << "  " << line << "\n" << std::flush;
  };
  absl::StatusOr<PullResult> result = PullCohort(**client, *worklist, options);
  std::signal(SIGINT, previous_int);
  std::signal(SIGTERM, previous_term);
  if (!result.ok()) {
    out << "pacs pull: " << result.status().message() << "\n";
    return absl::IsFailedPrecondition(result.status()) ? 2 : 1;
  }
  const PullResult& r = *result;
  out << "\n"
      << r.patients_complete << " patient(s) in the manifest, "
      << r.patients_left_out << " left out; instances: " << r.instances_found
      << " found, " << r.instances_fetched << " fetched now, "
      << r.instances_already_present << " already here, "
      << r.instances_not_images << " not images, " << r.instances_undecodable
      << " not decodable\n"
      << "manifest: " << r.manifest_path << "\n";
  if (!r.clinical_path.empty()) out << "clinical: " << r.clinical_path << "\n";
  if (!r.problems.empty()) {
    out << "\nproblems (" << r.problems.size() << "):\n";
    for (const PullProblem& problem : r.problems) {
      out << "  worklist line " << problem.line;
      if (!problem.patient.empty()) out << " patient " << problem.patient;
      out << ": " << problem.message
          << (problem.patient_left_out ? " [left out]" : "") << "\n";
    }
  }
  if (r.stopped_early) {
    out << "\nstopped at worklist line " << r.resume_line << ": "
        << r.stop_reason
        << "\nrun the same command again to continue; nothing fetched is "
           "fetched twice\n";
  }
  return r.stopped_early || r.patients_left_out > 0 ? 1 : 0;
}

int RunPacsPseudonyms(const std::string& config_path,
                      const std::string& worklist_path, std::ostream& out) {
  absl::StatusOr<PacsSettings> settings = LoadPacsSettings(config_path);
  if (!settings.ok()) {
    out << "pacs pseudonyms: " << settings.status().message() << "\n";
    return 2;
  }
  if (settings->pseudonym_key_file.empty()) {
    out << "pacs pseudonyms: " << config_path
        << " turns pseudonyms off (pseudonymise: false)\n";
    return 2;
  }
  absl::StatusOr<Worklist> worklist = LoadWorklist(worklist_path);
  if (!worklist.ok()) {
    out << "pacs pseudonyms: " << worklist.status().message() << "\n";
    return 2;
  }
  // Never create a key here: a new key would make pseudonyms that match
  // nothing pulled so far.
  if (!std::filesystem::exists(settings->pseudonym_key_file)) {
    out << "pacs pseudonyms: no pseudonym key at "
        << settings->pseudonym_key_file
        << " (it is created by the first `pacs pull`)\n";
    return 2;
  }
  absl::StatusOr<PseudonymKey> key =
      PseudonymKey::LoadOrCreate(settings->pseudonym_key_file);
  if (!key.ok()) {
    out << "pacs pseudonyms: " << key.status().message() << "\n";
    return 2;
  }
  out << "line,pseudonym\n";
  for (const WorklistEntry& entry : worklist->entries) {
    if (entry.patient_id.empty()) continue;
    out << entry.line << "," << key->Pseudonym(entry.patient_id) << "\n";
  }
  return 0;
}

absl::StatusOr<bool> IsSamePatient(const std::string& config_path,
                                   const std::string& manifest_id,
                                   const std::string& pacs_patient_id) {
  if (manifest_id == pacs_patient_id) return true;
  absl::StatusOr<PacsSettings> settings = LoadPacsSettings(config_path);
  if (!settings.ok()) return settings.status();
  if (settings->pseudonym_key_file.empty() ||
      !std::filesystem::exists(settings->pseudonym_key_file)) {
    return false;
  }
  absl::StatusOr<PseudonymKey> key =
      PseudonymKey::LoadOrCreate(settings->pseudonym_key_file);
  if (!key.ok()) return key.status();
  return key->Pseudonym(pacs_patient_id) == manifest_id;
}

absl::Status StoreInPacs(const std::string& config_path,
                         const std::vector<std::string>& dicom_files) {
  absl::StatusOr<PacsSettings> settings = LoadPacsSettings(config_path);
  if (!settings.ok()) return settings.status();
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewPacsClient(settings->pacs);
  if (!client.ok()) return client.status();
  std::vector<std::string> contents;
  for (const std::string& path : dicom_files) {
    absl::StatusOr<std::string> content = ReadFileToString(path);
    if (!content.ok()) return content.status();
    contents.push_back(*std::move(content));
  }
  absl::Status stored = (*client)->Store(contents);
  if (!stored.ok()) {
    return absl::Status(stored.code(), absl::StrCat((*client)->Describe(), ": ",
                                                    stored.message()));
  }
  return absl::OkStatus();
}

}  // namespace echofed
