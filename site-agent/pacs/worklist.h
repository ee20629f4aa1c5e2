#ifndef ECHOFED_SITE_AGENT_PACS_WORKLIST_H_
#define ECHOFED_SITE_AGENT_PACS_WORKLIST_H_

// The cohort worklist of `echofed-agent pacs pull` (cohort.csv): one row per
// patient, naming the patient as the PACS knows them (PatientID, or the
// AccessionNumber of one study), the training label, and optionally the
// patient's clinical columns (site-agent/data/CLINICAL_SCHEMA.md), which
// the pull joins into clinical.csv under the manifest's patient id.
//
//   patient_id,accession_number,label,age_months,sex,...
//   12345678,,NB,14,F,...
//   ,ACC-2024-0042,GN,60,M,...
//
// The file holds PatientIDs and stays at the site, like the PACS itself.

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace echofed {

struct WorklistEntry {
  int line = 0;  // 1-based line in the file
  // Exactly one of the two is set.
  std::string patient_id;
  std::string accession_number;
  std::string label;
  // Clinical column -> value as written (validated when clinical.csv is
  // written, by the clinical table's own parser).
  std::map<std::string, std::string> clinical;
};

struct WorklistRowError {
  int line = 0;
  std::string message;
};

struct Worklist {
  std::string origin;
  // The clinical columns the file has, in its order.
  std::vector<std::string> clinical_columns;
  std::vector<WorklistEntry> entries;
  // Rows left out (no identifier, both identifiers, no label, a duplicate).
  std::vector<WorklistRowError> errors;
};

// Header required. Columns: patient_id and/or accession_number, label, and
// any clinical column of the schema; an unknown column is an error (a
// misspelt clinical column must not be silently dropped). Rows naming the
// same PatientID or AccessionNumber twice are both left out.
absl::StatusOr<Worklist> ParseWorklist(const std::string& text,
                                       const std::string& origin);
absl::StatusOr<Worklist> LoadWorklist(const std::string& path);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_WORKLIST_H_
