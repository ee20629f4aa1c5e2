#include "site-agent/diagnosis/diagnose.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/plan_util.h"
#include "common/sha256.h"
#include "common/tensor_bundle.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "models/state_exchange.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/cohort.h"
#include "site-agent/data/csv.h"
#include "site-agent/data/image_io.h"
#include "site-agent/diagnosis/inrg_risk.h"
#include "site-agent/training/dataset.h"
#include "site-agent/training/trainer.h"

namespace echofed {
namespace {

constexpr Plan::Head kExtraHeads[] = {Plan::HIGH_RISK, Plan::BONE_MARROW,
                                      Plan::RESPONSE, Plan::PROGNOSIS};

std::string HeadTensorPrefix(Plan::Head head) {
  return absl::StrCat("head_", absl::AsciiStrToLower(Plan::Head_Name(head)),
                      ".");
}

std::string HeadList(const std::set<int>& heads) {
  std::vector<std::string> names;
  for (int head : heads) {
    names.push_back(Plan::Head_Name(static_cast<Plan::Head>(head)));
  }
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

double MillisecondsSince(absl::Time start) {
  return absl::ToDoubleMilliseconds(absl::Now() - start);
}

// The part of the image the model sees: the manifest's ROI with the plan's
// margin, as LoadImageSet crops it (site-agent/training/dataset.cc), so that
// the heat map lies over what was analysed.
struct CropBox {
  int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

absl::StatusOr<CropBox> ModelCrop(const ImageRecord& record,
                                  const GrayImage& image, double margin) {
  CropBox full{0, 0, image.width, image.height};
  std::optional<RegionOfInterest> roi = record.roi;
  if (!record.roi_mask_path.empty()) {
    absl::StatusOr<GrayImage> mask = ReadGrayImage(record.roi_mask_path);
    if (!mask.ok()) return mask.status();
    if (mask->width != image.width || mask->height != image.height) {
      return absl::InvalidArgumentError(absl::StrCat(
          record.roi_mask_path, ": mask size differs from the image's"));
    }
    int x0 = mask->width, y0 = mask->height, x1 = -1, y1 = -1;
    for (int y = 0; y < mask->height; ++y) {
      for (int x = 0; x < mask->width; ++x) {
        if (mask->pixels[static_cast<size_t>(y) * mask->width + x] == 0) {
          continue;
        }
        x0 = std::min(x0, x);
        y0 = std::min(y0, y);
        x1 = std::max(x1, x);
        y1 = std::max(y1, y);
      }
    }
    if (x1 < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(record.roi_mask_path, ": mask is empty"));
    }
    roi = RegionOfInterest{x0, y0, x1 - x0 + 1, y1 - y0 + 1};
  }
  if (!roi) return full;
  int margin_x = static_cast<int>(margin * roi->width);
  int margin_y = static_cast<int>(margin * roi->height);
  CropBox box{std::max(0, roi->x - margin_x), std::max(0, roi->y - margin_y),
              std::min(image.width, roi->x + roi->width + margin_x),
              std::min(image.height, roi->y + roi->height + margin_y)};
  if (box.x1 - box.x0 < 2 || box.y1 - box.y0 < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(record.image_path, ": ROI lies outside the image"));
  }
  return box;
}

GrayImage Crop(const GrayImage& image, const CropBox& box) {
  if (box.x0 == 0 && box.y0 == 0 && box.x1 == image.width &&
      box.y1 == image.height) {
    return image;
  }
  GrayImage out;
  out.width = box.x1 - box.x0;
  out.height = box.y1 - box.y0;
  out.pixels.reserve(static_cast<size_t>(out.width) * out.height);
  for (int y = box.y0; y < box.y1; ++y) {
    const uint8_t* row =
        image.pixels.data() + static_cast<size_t>(y) * image.width;
    out.pixels.insert(out.pixels.end(), row + box.x0, row + box.x1);
  }
  return out;
}

// The clinical fields a clinician sees in the report, and who reads them.
struct ShownField {
  const char* column;
  bool model_input;
  bool inrg_input;
};
constexpr ShownField kShownFields[] = {
    {"age_months", true, true}, {"sex", true, false},
    {"inrg_stage", true, true}, {"mycn", true, true},
    {"chr11q", true, true},     {"ploidy", true, true},
    {"histology", false, true}, {"differentiation", false, true},
    {"ldh", true, false},       {"nse", true, false},
    {"ferritin", true, false},  {"vma", true, false},
    {"hva", true, false},
};

std::vector<ClinicalInput> ShownClinicalInputs(
    const ClinicalRecord& record, bool model_reads_clinical,
    std::vector<std::string>* missing) {
  const std::vector<std::string>& columns = ClinicalColumns();
  std::vector<std::string> values = SplitCsvLine(ClinicalCsvLine(record));
  std::vector<ClinicalInput> shown;
  for (const ShownField& field : kShownFields) {
    auto at = std::find(columns.begin(), columns.end(), field.column);
    size_t index = static_cast<size_t>(at - columns.begin());
    std::string value = index < values.size() ? values[index] : "";
    std::vector<std::string> users;
    if (field.model_input && model_reads_clinical) users.push_back("model");
    if (field.inrg_input) users.push_back("INRG rule");
    if (value.empty()) {
      value = "missing";
      if (field.model_input && model_reads_clinical) {
        missing->push_back(field.column);
      }
    }
    shown.push_back({field.column, value, absl::StrJoin(users, ", ")});
  }
  return shown;
}

std::string FormatJsonNumber(double value) {
  if (std::isfinite(value) && value == std::floor(value) &&
      std::abs(value) < 1e15) {
    return absl::StrFormat("%.0f", value);
  }
  return absl::StrFormat("%.10g", value);
}

// One JSON object -> the two lines of a one-row clinical.csv, so that the
// same parser (types, ranges, codes) judges both forms.
absl::StatusOr<std::string> JsonRowToCsv(const std::string& json,
                                         const std::string& origin) {
  google::protobuf::Struct row;
  auto parsed = google::protobuf::util::JsonStringToMessage(json, &row);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not a JSON object of one clinical row: ",
                     std::string(parsed.message())));
  }
  std::map<std::string, std::string> fields;
  for (const auto& [key, value] : row.fields()) {
    switch (value.kind_case()) {
      case google::protobuf::Value::kNullValue:
        fields[key] = "";
        break;
      case google::protobuf::Value::kStringValue:
        fields[key] = value.string_value();
        break;
      case google::protobuf::Value::kNumberValue:
        fields[key] = FormatJsonNumber(value.number_value());
        break;
      case google::protobuf::Value::kBoolValue:
        fields[key] = value.bool_value() ? "yes" : "no";
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat(origin, ": field '", key,
                         "' must be a string, number, "
                         "true/false or null"));
    }
  }
  std::vector<std::string> header, line;
  for (const auto& [key, value] : fields) {
    header.push_back(CsvField(key));
    line.push_back(CsvField(value));
  }
  return absl::StrCat(absl::StrJoin(header, ","), "\n",
                      absl::StrJoin(line, ","), "\n");
}

std::string NoBaselineNote() {
  return "No baseline hazard was given. The federated model carries none "
         "(the federation does not estimate one yet), and a risk score alone "
         "does not determine a survival curve. A site may estimate a "
         "baseline from its own labelled cohort (echofed-agent diagnose "
         "--data DIR writes one) and pass it with --baseline-hazard.";
}

}  // namespace

absl::StatusOr<Plan> LoadDiagnosticPlan(const std::string& path) {
  Plan plan;
  if (absl::Status status = LoadTextProto(path, &plan); !status.ok()) {
    return status;
  }
  ApplyPlanDefaults(&plan);
  return plan;
}

absl::StatusOr<std::unique_ptr<DiagnosticModel>> DiagnosticModel::Load(
    const std::string& model_path, Plan plan,
    const DiagnosticModelOptions& options) {
  ApplyPlanDefaults(&plan);
  if (plan.class_names_size() < 2) {
    return absl::InvalidArgumentError(
        "plan.class_names: the plan names fewer than two classes");
  }
  if (plan.image_size() < 16 || plan.image_size() > 1024) {
    return absl::InvalidArgumentError(
        "plan.image_size: must be between 16 and 1024");
  }
  std::set<int> plan_heads;
  for (int head : plan.heads()) {
    if (!Plan::Head_IsValid(head) || head == Plan::HEAD_UNSPECIFIED) {
      return absl::InvalidArgumentError("plan.heads: unknown head");
    }
    plan_heads.insert(head);
  }
  plan_heads.insert(Plan::SUBTYPE);

  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      ModelFileReader::Open(model_path);
  if (!reader.ok()) return reader.status();
  const ModelManifest& manifest = (*reader)->manifest();
  std::string digest_hex = HexDigest((*reader)->digest());
  if (!options.expected_digest_hex.empty()) {
    std::string expected = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(options.expected_digest_hex));
    if (expected.size() != 64 ||
        !std::all_of(expected.begin(), expected.end(), absl::ascii_isxdigit)) {
      return absl::InvalidArgumentError(
          "the expected digest must be 64 hex digits (SHA-256)");
    }
    if (expected != digest_hex) {
      return absl::FailedPreconditionError(
          absl::StrCat("model file ", model_path, " has digest ", digest_hex,
                       ", not the expected ", expected,
                       ": it is not the model you meant to run"));
    }
  }
  if (manifest.model_name() != plan.model()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model file ", model_path, " holds a '", manifest.model_name(),
        "' model, but the plan '", plan.name(), "' names '", plan.model(),
        "': give the plan the model was trained with"));
  }
  // A fusion model's heads are visible in its tensor names; say which
  // differ before the generic layout check would.
  if (IsFusionModel(plan.model())) {
    std::set<int> file_heads = {Plan::SUBTYPE};
    for (Plan::Head head : kExtraHeads) {
      for (const TensorSpec& spec : manifest.tensors()) {
        if (absl::StartsWith(spec.name(), HeadTensorPrefix(head))) {
          file_heads.insert(head);
        }
      }
    }
    if (file_heads != plan_heads) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model file ", model_path, " was trained for the heads ",
          HeadList(file_heads), ", but the plan asks for ",
          HeadList(plan_heads), ": give the plan the model was trained with"));
    }
  }

  ModelOptions model_options;
  model_options.name = plan.model();
  model_options.num_classes = plan.class_names_size();
  model_options.heads.assign(plan_heads.begin(), plan_heads.end());
  model_options.clinical_features =
      static_cast<int>(ClinicalFeatureNames().size());
  absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> model =
      CreateClassifier(model_options);
  if (!model.ok()) return model.status();
  absl::StatusOr<TensorBundle> expected = ExportState(**model, plan.model());
  if (!expected.ok()) return expected.status();
  if (absl::Status status = CheckSameLayout(expected->manifest, manifest);
      !status.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model file ", model_path, " does not fit the plan's '", plan.model(),
        "' with ", plan.class_names_size(), " classes: ", status.message()));
  }
  // ReadAll checks every tensor against its digest.
  absl::StatusOr<TensorBundle> bundle = (*reader)->ReadAll();
  if (!bundle.ok()) return bundle.status();
  if (absl::Status status = ImportState(*bundle, **model); !status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model file ", model_path, ": ", status.message()));
  }
  (*model)->eval();
  (*model)->to(options.device);

  std::unique_ptr<DiagnosticModel> loaded(new DiagnosticModel);
  loaded->plan_ = std::move(plan);
  loaded->model_file_ = std::filesystem::path(model_path).filename().string();
  loaded->digest_hex_ = digest_hex;
  loaded->global_round_ = options.global_round;
  loaded->device_ = options.device;
  loaded->model_ = std::move(*model);
  return loaded;
}

bool DiagnosticModel::has_head(Plan::Head head) const {
  if (head == Plan::SUBTYPE) return true;
  if (!model_->uses_clinical()) return false;
  return std::find(plan_.heads().begin(), plan_.heads().end(), head) !=
         plan_.heads().end();
}

absl::StatusOr<DiagnosticReport> DiagnosticModel::Diagnose(
    const PatientInput& patient, const DiagnoseOptions& options,
    DiagnoseTimings* timings) {
  const absl::Time start = absl::Now();
  DiagnoseTimings local_timings;
  DiagnoseTimings& time = timings != nullptr ? *timings : local_timings;
  time = DiagnoseTimings();
  if (patient.images.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("patient ", patient.patient_id, ": no images given"));
  }
  if (options.baseline != nullptr &&
      options.baseline->model_digest_hex != digest_hex_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the baseline hazard belongs to model ",
        options.baseline->model_digest_hex, ", not to this model (",
        digest_hex_, "): risk scores of different models are not comparable"));
  }
  const std::vector<std::string> class_names(plan_.class_names().begin(),
                                             plan_.class_names().end());
  Preprocessing preprocessing = PreprocessingFromPlan(plan_);
  preprocessing.frames = FrameChoice();  // one input per image shown: middle

  DiagnosticReport report;
  report.patient_id = patient.patient_id;
  report.class_names = class_names;

  // Decode each image once for display (and for errors with their proper
  // code: a missing file is NOT_FOUND), then let LoadImageSet prepare the
  // model input exactly as training and evaluation do.
  std::vector<ImageRecord> records = patient.images;
  for (ImageRecord& record : records) {
    absl::StatusOr<GrayImage> image = ReadGrayImage(record.image_path);
    if (!image.ok()) {
      return absl::Status(
          image.status().code(),
          absl::StrCat("patient ", patient.patient_id, ": image ",
                       record.image_path, ": ", image.status().message()));
    }
    absl::StatusOr<CropBox> box =
        ModelCrop(record, *image, preprocessing.roi_margin);
    if (!box.ok()) return box.status();
    ImageResult result;
    result.file_name =
        std::filesystem::path(record.image_path).filename().string();
    result.image = Crop(*image, *box);
    report.images.push_back(std::move(result));
    // The label plays no part in diagnosis; LoadImageSet wants a class.
    record.label = class_names.front();
  }
  ImageSet set = LoadImageSet(records, class_names, preprocessing);
  if (!set.errors.empty() ||
      set.size() != static_cast<int64_t>(records.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("patient ", patient.patient_id, ": ",
                     set.errors.empty() ? "an image could not be prepared"
                                        : set.errors.front().message));
  }
  const int64_t count = set.size();
  const ClinicalRecord record =
      patient.clinical ? *patient.clinical : ClinicalRecord();
  std::vector<float> features = ClinicalFeatures(record);
  torch::Tensor clinical =
      torch::tensor(features, torch::kFloat32)
          .unsqueeze(0)
          .expand({count, static_cast<int64_t>(features.size())})
          .contiguous();
  time.decode_ms = MillisecondsSince(start);

  const absl::Time model_start = absl::Now();
  torch::Tensor probabilities;  // [count, classes] float64, CPU
  std::map<int, torch::Tensor> heads;
  torch::Tensor cam;  // [count, 1, h, w] CPU, or undefined
  try {
    torch::Tensor images = set.images.to(device_);
    torch::Tensor clinical_input = clinical.to(device_);
    // Probabilities and head outputs on the CPU, with the plan's test-time
    // flip as validation scored the model.
    auto take_scores = [&](const ModelOutputs& outputs) {
      const ModelOutputs scored =
          UsesTestTimeFlip(plan_)
              ? AverageWithMirror(*model_, outputs, images, clinical_input)
              : outputs;
      probabilities = torch::softmax(
          scored.subtype.detach().to(torch::kCPU, torch::kFloat64), 1);
      for (const auto& [head, value] : scored.heads) {
        heads[head] = value.detach().to(torch::kCPU, torch::kFloat64);
      }
    };
    if (options.saliency) {
      torch::AutoGradMode enable_grad(true);
      auto [map, outputs] =
          model_->PredictWithFeatureMap(images, clinical_input);
      take_scores(outputs);
      if (map.defined() && map.requires_grad()) {
        // The class the report predicts; the map itself is of the image as
        // shown, not of its mirror.
        const int64_t predicted =
            probabilities.mean(0).argmax().item<int64_t>();
        // Each image's logit depends only on its own feature map (eval
        // mode), so one backward pass serves the whole batch.
        torch::Tensor target = outputs.subtype.select(1, predicted).sum();
        torch::Tensor gradient = torch::autograd::grad({target}, {map})[0];
        torch::Tensor weights = gradient.mean({2, 3}, /*keepdim=*/true);
        cam = torch::relu((weights * map.detach()).sum(1, /*keepdim=*/true))
                  .to(torch::kCPU, torch::kFloat32);
      }
    } else {
      torch::NoGradGuard no_grad;
      take_scores(model_->Predict(images, clinical_input));
    }
  } catch (const c10::Error& error) {
    return absl::InternalError(
        absl::StrCat("model failed: ", error.what_without_backtrace()));
  }
  time.model_ms = MillisecondsSince(model_start);

  if (!torch::isfinite(probabilities).all().item<bool>()) {
    return absl::InternalError(
        "the model gave non-finite subtype outputs; no report is made");
  }
  torch::Tensor mean = probabilities.mean(0);
  report.subtype_probabilities.assign(mean.data_ptr<double>(),
                                      mean.data_ptr<double>() + mean.numel());
  report.predicted_class = static_cast<int>(mean.argmax().item<int64_t>());
  for (int64_t i = 0; i < count; ++i) {
    torch::Tensor row = probabilities[i].contiguous();
    report.images[i].subtype_probabilities.assign(
        row.data_ptr<double>(), row.data_ptr<double>() + row.numel());
  }

  for (auto& [head, values] : heads) {
    if (!torch::isfinite(values).all().item<bool>()) {
      return absl::InternalError(
          absl::StrCat("the model gave non-finite ",
                       Plan::Head_Name(static_cast<Plan::Head>(head)),
                       " outputs; no report is made"));
    }
  }
  auto binary = [&](Plan::Head head) {
    BinaryHeadResult result;
    auto it = heads.find(head);
    if (it == heads.end()) return result;
    result.available = true;
    result.probability = torch::sigmoid(it->second).mean().item<double>();
    return result;
  };
  report.high_risk = binary(Plan::HIGH_RISK);
  report.bone_marrow = binary(Plan::BONE_MARROW);
  report.good_response = binary(Plan::RESPONSE);
  if (auto it = heads.find(Plan::PROGNOSIS); it != heads.end()) {
    report.prognosis.available = true;
    report.prognosis.risk_score = it->second.mean().item<double>();
    if (options.baseline != nullptr) {
      report.prognosis.baseline = *options.baseline;
      report.prognosis.curve =
          SurvivalCurve(*options.baseline, report.prognosis.risk_score);
    } else {
      report.prognosis.curve_note = NoBaselineNote();
    }
  }

  const absl::Time saliency_start = absl::Now();
  if (!options.saliency) {
    report.saliency_note = "Grad-CAM was not computed (batch mode).";
  } else if (!cam.defined()) {
    report.saliency_note =
        absl::StrCat("Grad-CAM: ", kNotAvailableFromModel,
                     " (it has no convolutional feature map to explain).");
  } else {
    for (int64_t i = 0; i < count; ++i) {
      ImageResult& image = report.images[i];
      torch::Tensor up = torch::nn::functional::interpolate(
          cam.slice(0, i, i + 1),
          torch::nn::functional::InterpolateFuncOptions()
              .size(std::vector<int64_t>{image.image.height, image.image.width})
              .mode(torch::kBilinear)
              .align_corners(false));
      up = up.squeeze().clamp_min(0).contiguous();
      const float peak = up.max().item<float>();
      SaliencyMap map;
      map.width = image.image.width;
      map.height = image.image.height;
      map.all_zero = !(peak > 0);
      if (!map.all_zero) up = up / peak;
      map.values.assign(up.data_ptr<float>(),
                        up.data_ptr<float>() + up.numel());
      image.saliency = std::move(map);
    }
  }
  time.saliency_ms = MillisecondsSince(saliency_start);

  // Clinical record, INRG rule and what limits the report.
  const bool reads_clinical = model_->uses_clinical();
  report.has_clinical_record = patient.clinical.has_value();
  report.inrg = ClassifyInrgRisk(record);
  if (patient.clinical) {
    std::vector<std::string> missing;
    report.clinical_inputs =
        ShownClinicalInputs(*patient.clinical, reads_clinical, &missing);
    if (!missing.empty()) {
      report.warnings.push_back(absl::StrCat(
          "Clinical inputs missing: ", absl::StrJoin(missing, ", "),
          ". The model treats them as unknown."));
    }
    if (!reads_clinical) {
      report.warnings.push_back(
          "This model reads the images only; the clinical record was used "
          "for the INRG rule alone.");
    }
  } else {
    report.warnings.push_back(
        reads_clinical
            ? "No clinical record: the fusion model ran with every clinical "
              "input missing, which makes its risk, metastasis, response and "
              "prognosis outputs less reliable; the INRG rule group cannot be "
              "computed."
            : "No clinical record: the INRG rule group cannot be computed.");
  }
  if (!reads_clinical) {
    report.warnings.push_back(absl::StrCat(
        "Model '", plan_.model(),
        "' predicts the subtype only: risk, bone-marrow, response and "
        "prognosis are ",
        kNotAvailableFromModel, "."));
  }

  report.provenance.model_name = plan_.model();
  report.provenance.model_digest_hex = digest_hex_;
  report.provenance.model_file = model_file_;
  report.provenance.plan_name = plan_.name();
  report.provenance.global_round = global_round_;
  report.provenance.generated_at =
      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::Now(), absl::UTCTimeZone());
  report.provenance.software_version = ECHOFED_VERSION;
  time.total_ms = MillisecondsSince(start);
  return report;
}

absl::StatusOr<ClinicalRecord> ParsePatientClinical(
    const std::string& content, const std::string& origin,
    const std::string& patient_id) {
  std::string csv = content;
  if (absl::EndsWithIgnoreCase(origin, ".json")) {
    absl::StatusOr<std::string> converted = JsonRowToCsv(content, origin);
    if (!converted.ok()) return converted.status();
    csv = std::move(*converted);
  }
  absl::StatusOr<ClinicalTable> table = ParseClinicalCsv(csv, origin);
  if (!table.ok()) return table.status();
  std::string id = patient_id;
  if (id.empty()) {
    size_t rows = table->records.size() + table->errors.size();
    if (rows != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, " holds ", rows, " rows: name the patient (--patient)"));
    }
    if (!table->errors.empty()) {
      const ClinicalRowError& error = table->errors.front();
      return absl::InvalidArgumentError(
          absl::StrCat(origin, " line ", error.line, ": ", error.message));
    }
    return table->records.begin()->second;
  }
  for (const ClinicalRowError& error : table->errors) {
    if (error.patient_id == id) {
      return absl::InvalidArgumentError(absl::StrCat(origin, " line ",
                                                     error.line, " (patient ",
                                                     id, "): ", error.message));
    }
  }
  auto found = table->records.find(id);
  if (found == table->records.end()) {
    std::string unattributed;
    for (const ClinicalRowError& error : table->errors) {
      if (error.patient_id.empty()) {
        unattributed = absl::StrCat(
            " (line ", error.line,
            " was refused and may be this patient's: ", error.message, ")");
        break;
      }
    }
    return absl::NotFoundError(
        absl::StrCat(origin, ": no row for patient ", id, unattributed));
  }
  return found->second;
}

absl::StatusOr<ClinicalRecord> LoadPatientClinical(
    const std::string& path, const std::string& patient_id) {
  absl::StatusOr<std::string> content = ReadFileToString(path);
  if (!content.ok()) return content.status();
  return ParsePatientClinical(*content, path, patient_id);
}

namespace {

std::string Probability(const BinaryHeadResult& head) {
  return head.available ? absl::StrFormat("%.4f", head.probability) : "NA";
}

}  // namespace

absl::StatusOr<BatchResult> DiagnoseBatch(DiagnosticModel& model,
                                          const BatchOptions& options) {
  absl::StatusOr<SiteInputs> inputs = LoadSiteInputs(options.data_dir);
  if (!inputs.ok()) return inputs.status();
  if (absl::Status status = MakeDirectories(options.out_dir); !status.ok()) {
    return status;
  }
  // Patients in the manifest's order, each with its images.
  std::vector<std::string> order;
  std::map<std::string, std::vector<ImageRecord>> images;
  for (const ImageRecord& record : inputs->manifest.records) {
    auto [it, inserted] = images.try_emplace(record.patient_id);
    if (inserted) order.push_back(record.patient_id);
    it->second.push_back(record);
  }
  std::map<std::string, std::string> clinical_errors;
  if (inputs->clinical) {
    for (const ClinicalRowError& error : inputs->clinical->errors) {
      if (!error.patient_id.empty()) {
        clinical_errors[error.patient_id] =
            absl::StrCat("clinical.csv line ", error.line, ": ", error.message);
      }
    }
  }

  struct Row {
    std::string patient_id;
    std::string label;
    int images = 0;
    absl::StatusOr<DiagnosticReport> report;
    std::optional<SurvivalLabel> survival;
  };
  std::vector<Row> rows;
  BatchResult result;
  for (const std::string& id : order) {
    Row row{id, images[id].front().label, static_cast<int>(images[id].size()),
            absl::UnknownError("not run"), std::nullopt};
    PatientInput patient;
    patient.patient_id = id;
    patient.images = images[id];
    if (auto error = clinical_errors.find(id); error != clinical_errors.end()) {
      row.report = absl::InvalidArgumentError(error->second);
    } else {
      if (inputs->clinical) {
        auto found = inputs->clinical->records.find(id);
        if (found != inputs->clinical->records.end()) {
          patient.clinical = found->second;
          row.survival = PrognosisLabel(found->second);
        }
      }
      DiagnoseOptions diagnose;
      diagnose.saliency = false;
      row.report = model.Diagnose(patient, diagnose);
    }
    ++result.patients;
    (row.report.ok() ? result.diagnosed : result.failed) += 1;
    rows.push_back(std::move(row));
  }

  // A Breslow baseline from the site's own labelled patients.
  std::optional<BaselineHazard> baseline;
  if (!model.has_head(Plan::PROGNOSIS)) {
    result.baseline_note =
        "no baseline hazard: the model has no PROGNOSIS head";
  } else {
    std::vector<SurvivalCase> cases;
    for (const Row& row : rows) {
      if (row.report.ok() && row.survival) {
        cases.push_back({row.report->prognosis.risk_score, row.survival->months,
                         row.survival->event});
      }
    }
    std::string site =
        std::filesystem::path(inputs->manifest.data_dir).filename().string();
    absl::StatusOr<BaselineHazard> estimated = EstimateBreslowBaseline(
        cases, model.digest_hex(),
        absl::StrCat("Breslow estimate at site '", site,
                     "' from its own labelled cohort, not federated; "
                     "in-sample for the patients it was estimated from"));
    if (!estimated.ok()) {
      result.baseline_note =
          absl::StrCat("no baseline hazard: ", estimated.status().message());
    } else {
      baseline = std::move(*estimated);
      result.baseline_path = options.out_dir + "/site-baseline-hazard.csv";
      if (absl::Status status = WriteFileAtomically(
              result.baseline_path, FormatBaselineHazard(*baseline), 0600);
          !status.ok()) {
        return status;
      }
      result.baseline_note = absl::StrCat(
          "site baseline hazard from ", baseline->patients, " patients, ",
          baseline->events, " events: ", result.baseline_path);
    }
  }

  const std::vector<std::string> class_names(model.plan().class_names().begin(),
                                             model.plan().class_names().end());
  std::vector<std::string> header = {"patient_id",     "images",
                                     "recorded_label", "status",
                                     "error",          "predicted_subtype"};
  for (const std::string& name : class_names) {
    header.push_back(CsvField("p_" + name));
  }
  for (const char* column :
       {"high_risk_probability", "inrg_rule_group", "inrg_cell",
        "inrg_missing_inputs", "bone_marrow_probability",
        "good_response_probability", "prognosis_risk_score",
        "site_baseline_efs_12_months", "site_baseline_efs_36_months",
        "site_baseline_efs_60_months", "warnings"}) {
    header.push_back(column);
  }
  std::string csv = absl::StrCat(absl::StrJoin(header, ","), "\n");
  for (const Row& row : rows) {
    std::vector<std::string> fields = {CsvField(row.patient_id),
                                       absl::StrCat(row.images),
                                       CsvField(row.label)};
    if (!row.report.ok()) {
      fields.push_back("error");
      fields.push_back(CsvField(std::string(row.report.status().message())));
      // No results at all: a failed patient's row cannot be mistaken for a
      // diagnosed one.
      fields.resize(header.size(), "");
      absl::StrAppend(&csv, absl::StrJoin(fields, ","), "\n");
      continue;
    }
    const DiagnosticReport& report = *row.report;
    fields.push_back("ok");
    fields.push_back("");
    fields.push_back(CsvField(class_names[report.predicted_class]));
    for (double p : report.subtype_probabilities) {
      fields.push_back(absl::StrFormat("%.4f", p));
    }
    fields.push_back(Probability(report.high_risk));
    fields.push_back(report.inrg.classifiable ? RiskGroupName(report.inrg.group)
                                              : "not_classifiable");
    fields.push_back(report.inrg.classifiable
                         ? std::string(1, report.inrg.cell_letter)
                         : "");
    fields.push_back(CsvField(absl::StrJoin(report.inrg.missing_inputs, " ")));
    fields.push_back(Probability(report.bone_marrow));
    fields.push_back(Probability(report.good_response));
    fields.push_back(report.prognosis.available
                         ? absl::StrFormat("%.4f", report.prognosis.risk_score)
                         : "NA");
    for (double months : {12.0, 36.0, 60.0}) {
      std::optional<double> s;
      if (baseline && report.prognosis.available) {
        s = SurvivalAt(*baseline, report.prognosis.risk_score, months);
      }
      fields.push_back(s ? absl::StrFormat("%.4f", *s) : "NA");
    }
    fields.push_back(CsvField(absl::StrJoin(report.warnings, " | ")));
    absl::StrAppend(&csv, absl::StrJoin(fields, ","), "\n");
  }
  result.csv_path = options.out_dir + "/diagnose-batch.csv";
  if (absl::Status status = WriteFileAtomically(result.csv_path, csv, 0600);
      !status.ok()) {
    return status;
  }
  return result;
}

}  // namespace echofed
