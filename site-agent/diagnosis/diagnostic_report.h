#ifndef ECHOFED_SITE_AGENT_DIAGNOSIS_DIAGNOSTIC_REPORT_H_
#define ECHOFED_SITE_AGENT_DIAGNOSIS_DIAGNOSTIC_REPORT_H_

// One patient's diagnostic decision-support report (`echofed-agent
// diagnose`, site-agent/diagnosis/diagnose.h computes it) and its writers:
// JSON, and a self-contained HTML page for clinicians (images embedded as data
// URIs, no scripts, no external resources). The survival curve it draws
// comes from baseline_hazard.h.
//
// Everything here identifies a patient and stays at the site: files are
// written with mode 0600 and nothing is ever sent to the coordinator.
// No LibTorch here, so the writers compile and test on their own.
//
// Pure functions and plain structs; thread-compatible.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "site-agent/data/image_io.h"
#include "site-agent/diagnosis/baseline_hazard.h"
#include "site-agent/diagnosis/inrg_risk.h"

namespace echofed {

// Printed at the top and the bottom of every report, and in the JSON.
inline constexpr char kDecisionSupportStatement[] =
    "Decision support only, not a diagnosis. These are the outputs of a "
    "statistical model; the diagnosis, the risk group and treatment "
    "decisions rest with the clinical team, on histopathology and the full "
    "clinical picture.";

// The wording of a section the model cannot fill.
inline constexpr char kNotAvailableFromModel[] =
    "not available from this model";

// A binary head (HIGH_RISK, BONE_MARROW, RESPONSE).
struct BinaryHeadResult {
  // False: the model has no such head; the report says
  // kNotAvailableFromModel.
  bool available = false;
  // Mean over the patient's images of the head's sigmoid.
  double probability = 0;
};

struct PrognosisResult {
  bool available = false;
  // The Cox log-risk score, mean over the patient's images (as in the
  // federated evaluation); higher means earlier events. Unitless.
  double risk_score = 0;
  // The estimated event-free survival curve, when a baseline hazard was
  // given; otherwise `curve_note` says why there is none.
  std::optional<BaselineHazard> baseline;
  std::vector<SurvivalPoint> curve;
  std::string curve_note;
};

// Grad-CAM of one image for the predicted subtype.
struct SaliencyMap {
  // Row-major, width * height, in [0, 1], over `image` (the region the
  // model saw, at the file's resolution).
  int width = 0;
  int height = 0;
  std::vector<float> values;
  // True when the map is zero everywhere (no region raised the predicted
  // class's score); the report says so instead of drawing nothing.
  bool all_zero = false;
};

struct ImageResult {
  std::string file_name;  // base name only
  GrayImage image;        // what the model saw (cropped to the ROI if any)
  std::vector<double> subtype_probabilities;  // this image alone
  std::optional<SaliencyMap> saliency;
};

// A clinical value as shown in the report ("missing" when absent).
struct ClinicalInput {
  std::string column;
  std::string value;
  // "model" (a fusion-model input), "INRG" (the rule only), or "model,
  // INRG".
  std::string used_by;
};

struct Provenance {
  std::string model_name;
  std::string model_digest_hex;
  std::string model_file;  // base name
  std::string plan_name;
  std::optional<int> global_round;  // not recorded in model files
  std::string generated_at;         // ISO 8601, UTC
  std::string software_version;
};

struct DiagnosticReport {
  std::string patient_id;
  std::vector<std::string> class_names;
  // Mean over the images of each image's softmax, and its argmax.
  std::vector<double> subtype_probabilities;
  int predicted_class = -1;
  std::vector<ImageResult> images;
  // Why there is no saliency map, when there is none (e.g. a model without
  // a convolutional feature map, or batch mode).
  std::string saliency_note;

  BinaryHeadResult high_risk;
  BinaryHeadResult bone_marrow;
  BinaryHeadResult good_response;
  PrognosisResult prognosis;

  bool has_clinical_record = false;
  std::vector<ClinicalInput> clinical_inputs;
  // The INRG rule on the clinical record (Cohn 2009); not classifiable
  // without one.
  InrgClassification inrg;

  // Shown prominently: anything that limits the report (no clinical
  // record, an image-only model, ...).
  std::vector<std::string> warnings;
  Provenance provenance;
};

// "not classifiable: missing age_months, mycn" or "high (cell P)".
std::string DescribeInrg(const InrgClassification& inrg);

std::string DiagnosticReportJson(const DiagnosticReport& report);
// The page, with every image and heat map embedded (base64 PNG).
absl::StatusOr<std::string> DiagnosticReportHtml(
    const DiagnosticReport& report);

// The heat map over the image: a blue-to-red colour map, blended in
// proportion to the map's value so that cold regions show the image.
// RGB, width * height * 3.
std::vector<uint8_t> SaliencyOverlay(const GrayImage& image,
                                     const SaliencyMap& map);

// PNG in memory (libpng's simplified API): gray (channels 1) or RGB (3).
absl::StatusOr<std::string> EncodePng(const uint8_t* pixels, int width,
                                      int height, int channels);

// Paths of what WriteDiagnosticReport wrote.
struct DiagnosticReportFiles {
  std::string json;
  std::string html;
  std::vector<std::string> saliency_pngs;  // one per image with a map
};

// Writes <out_dir>/<patient>-diagnose.json, .html and one Grad-CAM overlay
// PNG per image, all with mode 0600. The patient id is reduced to
// [A-Za-z0-9._-] for file names.
absl::StatusOr<DiagnosticReportFiles> WriteDiagnosticReport(
    const DiagnosticReport& report, const std::string& out_dir);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DIAGNOSIS_DIAGNOSTIC_REPORT_H_
