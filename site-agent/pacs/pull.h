#ifndef ECHOFED_SITE_AGENT_PACS_PULL_H_
#define ECHOFED_SITE_AGENT_PACS_PULL_H_

// `echofed-agent pacs pull`: a cohort straight from the PACS into the
// site's data folder. For every worklist row it searches the patient's
// ultrasound instances, retrieves the ones not yet on disk, checks that each
// decodes, and at the end writes manifest.csv (and clinical.csv from the
// worklist's clinical columns) itself.
//
//   <data_dir>/pacs/<patient>/<SOP Instance UID>.dcm   as the PACS sent it
//   <data_dir>/manifest.csv, <data_dir>/clinical.csv    written by the pull
//
// <patient> is the manifest's patient id: the keyed pseudonym of the PACS
// PatientID (pseudonym.h) unless pseudonymisation is off. Logs, errors,
// the manifest and everything downstream carry only that id and worklist
// line numbers, never a PatientID or accession number.
//
// Idempotent and resumable: an instance is written to a temporary file,
// made durable and renamed, so a file under its final name is complete; a
// second pull fetches only what is missing, and a pull killed at any point
// loses only the instance in flight. A problem with one patient (nothing
// found, a retrieve that fails, an object that is not an image or does not
// decode) is reported with the worklist line and the rest of the cohort
// continues; a PACS that stops answering ends the pull early, with the
// manifest of everything complete so far written and the place it stopped
// reported.

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/pacs/pacs_client.h"
#include "site-agent/pacs/pseudonym.h"
#include "site-agent/pacs/worklist.h"

namespace echofed {

struct PullOptions {
  std::string data_dir;
  // Null: manifest ids are the PACS PatientIDs themselves (only for data
  // that is already pseudonymous at the PACS, e.g. a research archive).
  const PseudonymKey* pseudonym_key = nullptr;
  // Series-level modality and study date range of every search.
  std::string modality = "US";
  std::string study_date_from;
  std::string study_date_to;
  // manifest.csv and clinical.csv that the last pull did not write (a
  // hand-made manifest, or one edited since) are not overwritten unless this
  // is set: the pull must not destroy a site's curated list.
  bool replace_existing_tables = false;
  // Polled between instances; true stops the pull cleanly (SIGINT).
  std::function<bool()> stop_requested;
  // One line per patient and per problem, for the operator.
  std::function<void(const std::string&)> progress;
};

struct PullProblem {
  int line = 0;         // worklist line
  std::string patient;  // manifest id, empty when the PACS found none
  std::string message;
  bool patient_left_out = false;  // the patient is not in the manifest
};

struct PullResult {
  int worklist_rows = 0;
  int patients_complete = 0;  // in the manifest
  int patients_left_out = 0;  // nothing usable, or a failed retrieve
  int instances_found = 0;
  int instances_fetched = 0;          // retrieved in this run
  int instances_already_present = 0;  // from an earlier run
  int instances_not_images = 0;       // skipped: SR, presentation state...
  int instances_undecodable = 0;
  std::vector<PullProblem> problems;  // worklist row errors included
  // Set when the pull ended before the last row: why, and the first
  // worklist line not done.
  bool stopped_early = false;
  std::string stop_reason;
  int resume_line = 0;
  std::string manifest_path;
  std::string clinical_path;  // empty when the worklist has no clinical columns
};

// Errors (nothing written): the data folder cannot be written, or a
// manifest.csv / clinical.csv there was not written by the last pull and
// replace_existing_tables is false. The first search that finds the PACS
// unreachable also ends the pull, as stopped_early.
absl::StatusOr<PullResult> PullCohort(PacsClient& client,
                                      const Worklist& worklist,
                                      const PullOptions& options);

// The manifest id of a PACS PatientID: the pseudonym, or the id itself when
// `key` is null.
std::string ManifestPatientId(const PseudonymKey* key,
                              const std::string& pacs_patient_id);

// Whether a SOP class is one whose pixel data a model can be trained on
// (ultrasound, secondary capture and their multi-frame forms). Structured
// reports, presentation states, key object selections and encapsulated
// documents are not.
bool IsImageStorageClass(const std::string& sop_class_uid);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_PULL_H_
