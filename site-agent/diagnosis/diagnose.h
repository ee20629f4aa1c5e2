#ifndef ECHOFED_SITE_AGENT_DIAGNOSIS_DIAGNOSE_H_
#define ECHOFED_SITE_AGENT_DIAGNOSIS_DIAGNOSE_H_

// The integrated diagnostic system at a site: the federated model run on
// one patient's ultrasound images and clinical record, giving a
// DiagnosticReport (site-agent/diagnosis/diagnostic_report.h): subtype
// probabilities, the model's risk, metastasis, response and prognosis heads
// beside the INRG rule group, Grad-CAM per image, and provenance. Decision
// support, not a diagnosis. Nothing here talks to the coordinator; reports
// identify the patient and stay at the site.
//
// Errors are refusals, never partial reports presented as complete:
//   NOT_FOUND            model file, image or the patient's clinical row
//                        missing;
//   INVALID_ARGUMENT     unreadable image, a clinical value out of range or
//                        malformed (the parser's row error, with its line),
//                        no images, a bad plan;
//   FAILED_PRECONDITION  the model file does not belong to the plan (other
//                        model, other heads, other layout) or its digest is
//                        not the expected one; a baseline hazard of another
//                        model;
//   DATA_LOSS            a damaged model file;
//   INTERNAL             the model gave non-finite outputs.
// A head the model does not have is not an error: its section says "not
// available from this model".

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/classifier.h"
#include "proto/plan.pb.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/manifest.h"
#include "site-agent/diagnosis/diagnostic_report.h"
#include "torch/torch.h"

namespace echofed {

struct DiagnosticModelOptions {
  // Lower-case or upper-case hex SHA-256 of the model (what `echofed model
  // download` prints); empty: not checked.
  std::string expected_digest_hex;
  // The global round the model comes from, for provenance (model files do
  // not record it).
  std::optional<int> global_round;
  torch::Device device = torch::kCPU;
};

struct PatientInput {
  std::string patient_id;
  // Paths and optional regions of interest; labels are ignored.
  std::vector<ImageRecord> images;
  // Without a record, a fusion model sees every clinical input missing, the
  // INRG rule is not classifiable, and the report says so in its warnings.
  std::optional<ClinicalRecord> clinical;
};

struct DiagnoseOptions {
  // Grad-CAM per image (the single-patient report); batch mode leaves it
  // out.
  bool saliency = true;
  // For the EFS curve; must belong to this model. Null: the report says
  // that no baseline hazard is available.
  const BaselineHazard* baseline = nullptr;
};

// Wall time of one Diagnose call, in milliseconds.
struct DiagnoseTimings {
  double decode_ms = 0;    // decode, crop, resize, normalise
  double model_ms = 0;     // forward pass (and Grad-CAM's backward)
  double saliency_ms = 0;  // maps, upsampling
  double total_ms = 0;
};

// A model file loaded for diagnosis, checked against its plan. Not
// thread-safe: one Diagnose at a time (autograd state, module buffers).
class DiagnosticModel {
 public:
  // Opens `model_path` (.efm), checks that the manifest's model is the
  // plan's, that the layout is the registry model's for the plan's classes
  // and heads, the optional expected digest and every tensor's digest, and
  // loads the weights. The plan gets its documented defaults
  // (ApplyPlanDefaults) first.
  static absl::StatusOr<std::unique_ptr<DiagnosticModel>> Load(
      const std::string& model_path, Plan plan,
      const DiagnosticModelOptions& options = {});

  absl::StatusOr<DiagnosticReport> Diagnose(const PatientInput& patient,
                                            const DiagnoseOptions& options = {},
                                            DiagnoseTimings* timings = nullptr);

  const Plan& plan() const { return plan_; }
  const std::string& digest_hex() const { return digest_hex_; }
  bool uses_clinical() const { return model_->uses_clinical(); }
  bool has_head(Plan::Head head) const;

 private:
  DiagnosticModel() = default;

  Plan plan_;
  std::string model_file_;
  std::string digest_hex_;
  std::optional<int> global_round_;
  torch::Device device_ = torch::kCPU;
  std::shared_ptr<ImageClassifierImpl> model_;
};

// The plan as a textproto file, with defaults applied.
absl::StatusOr<Plan> LoadDiagnosticPlan(const std::string& path);

// One patient's record from a clinical file: a clinical.csv (schema in
// site-agent/data/CLINICAL_SCHEMA.md), or a JSON object of one row with the
// same column names ("*.json"; null or "" is missing). `patient_id` may be
// empty when the file holds exactly one row. A row the parser refused
// (value out of range, unknown code...) is INVALID_ARGUMENT with the
// parser's message; no row for the patient is NOT_FOUND.
absl::StatusOr<ClinicalRecord> LoadPatientClinical(
    const std::string& path, const std::string& patient_id);
// The same from the file's content.
absl::StatusOr<ClinicalRecord> ParsePatientClinical(
    const std::string& content, const std::string& origin,
    const std::string& patient_id);

// Batch mode over a site folder (manifest.csv + clinical.csv): every
// patient of the manifest, one CSV row each, no Grad-CAM. A patient that
// cannot be diagnosed gets a row with status "error", the reason and no
// results. When the model has a PROGNOSIS head and the site has at least
// kMinBaselineEvents events among its labelled patients, a Breslow baseline
// hazard is estimated from them (labelled as estimated at this site, not
// federated), written beside the CSV, and the rows get the EFS estimates
// it implies (in-sample for those patients: say so when reading them).
struct BatchOptions {
  std::string data_dir;
  std::string out_dir;
};
struct BatchResult {
  std::string csv_path;       // mode 0600
  std::string baseline_path;  // empty when no baseline was estimated
  std::string baseline_note;  // why not, or how it was estimated
  int patients = 0;
  int diagnosed = 0;
  int failed = 0;
};
absl::StatusOr<BatchResult> DiagnoseBatch(DiagnosticModel& model,
                                          const BatchOptions& options);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DIAGNOSIS_DIAGNOSE_H_
