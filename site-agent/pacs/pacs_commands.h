#ifndef ECHOFED_SITE_AGENT_PACS_PACS_COMMANDS_H_
#define ECHOFED_SITE_AGENT_PACS_PACS_COMMANDS_H_

// The bodies of `echofed-agent pacs echo|pull|pseudonyms` and of the PACS
// half of `diagnose --to-pacs`; the flags are in site-agent/main.cc. Each
// returns the process exit code and prints for site IT: 0 done, 1 a
// problem with the PACS or some patients (listed), 2 a configuration or
// usage error.

#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace echofed {

// The agent config's PACS block with paths resolved against the config
// file's folder and defaults filled in, and where pulled data goes.
struct PacsSettings {
  PacsConfig pacs;
  std::string data_dir;
  // Empty when pseudonymisation is off.
  std::string pseudonym_key_file;
};

// INVALID_ARGUMENT naming the config file and field: no pacs block, no
// host/port or DICOMweb URL, an unknown retrieve method, pseudonyms without
// a key file or state_dir, a malformed date.
absl::StatusOr<PacsSettings> LoadPacsSettings(const std::string& config_path);

int RunPacsEcho(const std::string& config_path, std::ostream& out);

struct PacsPullFlags {
  std::string config_path;
  std::string worklist_path;
  // Overwrite a manifest.csv / clinical.csv the pull did not write.
  bool replace_tables = false;
};
// SIGINT and SIGTERM stop the pull after the instance in flight; the
// manifest of everything complete is written either way.
int RunPacsPull(const PacsPullFlags& flags, std::ostream& out);

// worklist line, identifier kind and pseudonym of every row naming a
// PatientID (rows by accession number need the PACS: their pseudonyms are
// in the pull's own output). For site IT going back from a pseudonym to
// the patient; the output identifies patients and stays at the site.
int RunPacsPseudonyms(const std::string& config_path,
                      const std::string& worklist_path, std::ostream& out);

// Whether the manifest id `manifest_id` names the PACS patient
// `pacs_patient_id` at this site: the same id, or its pseudonym under the
// site's key (never creating a key).
absl::StatusOr<bool> IsSamePatient(const std::string& config_path,
                                   const std::string& manifest_id,
                                   const std::string& pacs_patient_id);

// Stores result objects (Part 10 files, by path) in the configured PACS.
absl::Status StoreInPacs(const std::string& config_path,
                         const std::vector<std::string>& dicom_files);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_PACS_COMMANDS_H_
