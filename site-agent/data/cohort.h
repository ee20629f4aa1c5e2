#ifndef ECHOFED_SITE_AGENT_DATA_COHORT_H_
#define ECHOFED_SITE_AGENT_DATA_COHORT_H_

// The study protocol's cohort rules, applied at the site:
//   inclusion: histology confirmed as NB, GNB or GN; age <= 18 years; at
//     least one readable ultrasound image; the clinical fields the task
//     needs;
//   exclusion: prior resection elsewhere (recurrence or residual), poor
//     image quality (flag, or no image readable at a usable size), severe
//     missing data.
// The outcome is a CONSORT-style flow (counts) that may be shared, and a
// list of excluded patients with reasons that never leaves the site.

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "proto/metrics.pb.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/manifest.h"

namespace echofed {

struct CohortOptions {
  // The plan's classes; a patient's label must be one of them.
  std::vector<std::string> class_names;
  // Images smaller than this on either side do not count as readable.
  int min_image_side = 64;
  // Clinical fields (schema column names) the task needs, beyond age.
  std::vector<std::string> required_fields;
  // Checks one image; the default decodes it (ReadGrayImage) and checks its
  // size. Tests and benchmarks may pass a cheaper check.
  std::function<absl::Status(const ImageRecord&)> check_image;
};

struct CohortPatient {
  std::string patient_id;
  std::string label;
  std::vector<ImageRecord> images;  // readable ones only
  std::optional<ClinicalRecord> clinical;
};

struct Exclusion {
  std::string patient_id;
  std::string reason;  // one of the flow's reason names
  std::string detail;
};

struct CohortFlow {
  int screened = 0;
  // Reason -> patients, in the order the rules are applied (a patient is
  // counted under the first rule it fails).
  std::vector<std::pair<std::string, int>> excluded;
  int included = 0;
  std::map<std::string, int> included_per_class;
  int included_images = 0;
  int unreadable_images = 0;
  // Rules that could not be assessed (e.g. no clinical table).
  std::vector<std::string> notes;
};

struct Cohort {
  std::vector<CohortPatient> included;
  std::vector<Exclusion> exclusions;  // site-local
  CohortFlow flow;

  // Image records of the included patients.
  std::vector<ImageRecord> Records() const;
};

// What a site folder holds: manifest.csv and, when present, clinical.csv.
struct SiteInputs {
  SiteManifest manifest;
  std::optional<ClinicalTable> clinical;
};
absl::StatusOr<SiteInputs> LoadSiteInputs(const std::string& data_dir);

// `clinical` may be null: then labels come from the manifest and the rules
// that need clinical data are reported as not assessed.
Cohort SelectCohort(const SiteManifest& manifest, const ClinicalTable* clinical,
                    const CohortOptions& options);

// The flow as text, one line per step.
std::string FormatFlow(const CohortFlow& flow);

// The counts behind one evaluation's patient flow, all site-local.
struct FlowCounts {
  CohortFlow cohort;
  // Manifest lines LoadManifest refused (images, before patients).
  int64_t refused_manifest_lines = 0;
  // A training site splits the included patients into training and
  // internal validation; an external validation site validates all.
  bool training_site = false;
  int64_t training = 0;
  int64_t validation = 0;
  // Of the evaluation set: patients none of whose images loaded, patients
  // evaluated and released, patients withheld with their class.
  int64_t not_loaded = 0;
  int64_t analysed = 0;
  int64_t withheld = 0;
  // The evaluation released `analysed` as its patient count, so that step
  // is public anyway and never hidden (nor used to hide another).
  bool analysed_released = false;
};

// The flow as it may leave the site: every step with 0 < patients <
// min_cell_count withheld, and more where the others would give it away
// by subtraction (screened = excluded + included, included = training +
// validation, evaluation set = not loaded + analysed + withheld; see
// WithheldCells in common/metrics.h).
PatientFlow ReleasePatientFlow(const FlowCounts& counts, int min_cell_count);

// patient_id,reason,detail lines; for the site's own files only.
absl::Status WriteExclusions(const std::string& path,
                             const std::vector<Exclusion>& exclusions);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_COHORT_H_
