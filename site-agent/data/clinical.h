#ifndef ECHOFED_SITE_AGENT_DATA_CLINICAL_H_
#define ECHOFED_SITE_AGENT_DATA_CLINICAL_H_

// The clinical table of a site: one row per patient, schema in
// site-agent/data/CLINICAL_SCHEMA.md. Missing values are explicit (empty or NA)
// and stay missing (std::nullopt); a malformed value is an error for that
// row, never a silent default.

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace echofed {

enum class Histology { kNB, kGNB, kGN };
// The histologic category of the INRG classification (Cohn 2009), finer
// than Histology where it matters for risk: intermixed GNB groups with
// maturing GN, nodular GNB with NB.
enum class InrgHistology {
  kGnMaturingOrGnbIntermixed,
  kGnbNodular,
  kNeuroblastoma
};
enum class Sex { kMale, kFemale };
enum class Differentiation {
  kUndifferentiated,
  kPoorlyDifferentiated,
  kDifferentiating
};
enum class Mki { kLow, kIntermediate, kHigh };
enum class InrgStage { kL1, kL2, kM, kMS };
enum class Ploidy { kHyperdiploid, kDiploid };
enum class RiskGroup { kVeryLow, kLow, kIntermediate, kHigh };
enum class Response { kCR, kPR, kMR, kSD, kPD };
enum class ImageQuality { kGood, kPoor };

struct ClinicalRecord {
  std::string patient_id;
  std::optional<double> age_months;
  std::optional<Sex> sex;
  std::optional<Histology> histology;
  // Set together with `histology` from the same column; missing for a plain
  // `GNB` (intermixed or nodular not recorded).
  std::optional<InrgHistology> inrg_histology;
  std::optional<Differentiation> differentiation;
  std::optional<Mki> mki;
  std::optional<InrgStage> inrg_stage;
  std::optional<bool> mycn_amplified;
  std::optional<bool> chr11q_aberration;
  std::optional<Ploidy> ploidy;
  std::optional<double> ldh;       // U/L
  std::optional<double> nse;       // ng/mL
  std::optional<double> ferritin;  // ng/mL
  std::optional<double> vma;       // urinary, mg/g creatinine
  std::optional<double> hva;       // urinary, mg/g creatinine
  std::optional<bool> bone_marrow_metastasis;
  std::optional<RiskGroup> inrg_risk;
  std::optional<Response> response;
  std::optional<double> efs_months;
  std::optional<bool> efs_event;
  std::optional<bool> prior_resection_elsewhere;
  std::optional<ImageQuality> image_quality;
};

struct ClinicalRowError {
  int line = 0;
  std::string patient_id;  // empty when unknown
  std::string message;
};

struct ClinicalTable {
  std::map<std::string, ClinicalRecord> records;  // by patient_id
  std::vector<ClinicalRowError> errors;
};

// Parses CSV text (header required; unknown columns are an error so a
// misspelt column is not silently ignored; absent optional columns are
// missing for everyone). Rows with bad types, out-of-range values, unknown
// codes or duplicate ids are reported in `errors` and left out.
absl::StatusOr<ClinicalTable> ParseClinicalCsv(const std::string& text,
                                               const std::string& origin);
absl::StatusOr<ClinicalTable> LoadClinicalCsv(const std::string& path);

// Names used in files and reports.
const char* HistologyName(Histology histology);
const char* RiskGroupName(RiskGroup risk);
const char* StageName(InrgStage stage);
const char* ResponseName(Response response);

// Every column of the schema, in the documented order.
const std::vector<std::string>& ClinicalColumns();
// One CSV line (no newline) for a record, missing values empty.
std::string ClinicalCsvLine(const ClinicalRecord& record);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_CLINICAL_H_
