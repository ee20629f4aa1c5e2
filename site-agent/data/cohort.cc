#include "site-agent/data/cohort.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/metrics.h"
#include "site-agent/data/csv.h"
#include "site-agent/data/image_io.h"

namespace echofed {
namespace {

// Reason names, in rule order.
constexpr char kInvalidRecord[] = "invalid record";
constexpr char kNoHistology[] = "histology not confirmed as NB/GNB/GN";
constexpr char kLabelConflict[] = "image label disagrees with histology";
constexpr char kNotAClass[] = "label not a class of the plan";
constexpr char kOver18[] = "older than 18 years";
constexpr char kPriorResection[] = "prior resection elsewhere";
constexpr char kPoorQuality[] = "poor image quality (flag)";
constexpr char kNoImage[] = "no readable image of usable size";
constexpr char kMissingData[] = "severe missing data";

const std::vector<std::string>& ReasonOrder() {
  static const auto* order = new std::vector<std::string>{
      kInvalidRecord,  kNoHistology, kLabelConflict, kNotAClass,  kOver18,
      kPriorResection, kPoorQuality, kNoImage,       kMissingData};
  return *order;
}

constexpr double kMaxAgeMonths = 18 * 12;

// A field is present when its CSV form is not empty; this keeps one
// definition of every column (clinical.cc).
bool HasField(const ClinicalRecord& record, const std::string& field) {
  const std::vector<std::string>& columns = ClinicalColumns();
  auto column = std::find(columns.begin(), columns.end(), field);
  if (column == columns.end()) return false;
  std::vector<std::string> values = SplitCsvLine(ClinicalCsvLine(record));
  size_t index = static_cast<size_t>(column - columns.begin());
  return index < values.size() && !values[index].empty();
}

absl::Status DefaultImageCheck(const ImageRecord& record, int min_side) {
  absl::StatusOr<GrayImage> image = ReadGrayImage(record.image_path);
  if (!image.ok()) return image.status();
  if (image->width < min_side || image->height < min_side) {
    return absl::InvalidArgumentError(
        absl::StrCat(record.image_path, ": ", image->width, "x", image->height,
                     " is smaller than ", min_side, " pixels per side"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SiteInputs> LoadSiteInputs(const std::string& data_dir) {
  absl::StatusOr<SiteManifest> manifest = LoadManifest(data_dir);
  if (!manifest.ok()) return manifest.status();
  SiteInputs inputs;
  inputs.manifest = std::move(*manifest);
  std::string clinical_path = inputs.manifest.data_dir + "/clinical.csv";
  if (std::filesystem::exists(clinical_path)) {
    absl::StatusOr<ClinicalTable> clinical = LoadClinicalCsv(clinical_path);
    if (!clinical.ok()) return clinical.status();
    inputs.clinical = std::move(*clinical);
  }
  return inputs;
}

std::vector<ImageRecord> Cohort::Records() const {
  std::vector<ImageRecord> records;
  for (const CohortPatient& patient : included) {
    for (ImageRecord record : patient.images) {
      // With a clinical table the confirmed histology is the label.
      record.label = patient.label;
      records.push_back(std::move(record));
    }
  }
  return records;
}

Cohort SelectCohort(const SiteManifest& manifest, const ClinicalTable* clinical,
                    const CohortOptions& options) {
  Cohort cohort;
  std::map<std::string, std::vector<ImageRecord>> images_of;
  for (const ImageRecord& record : manifest.records) {
    images_of[record.patient_id].push_back(record);
  }
  // Screened: every patient named anywhere, including those whose only
  // record was invalid.
  std::map<std::string, std::string> invalid;  // patient -> first problem
  if (clinical != nullptr) {
    for (const ClinicalRowError& error : clinical->errors) {
      if (!error.patient_id.empty())
        invalid.emplace(error.patient_id, error.message);
    }
  }
  std::set<std::string> patients;
  for (const auto& [id, images] : images_of) patients.insert(id);
  if (clinical != nullptr) {
    for (const auto& [id, record] : clinical->records) patients.insert(id);
  }
  for (const auto& [id, message] : invalid) patients.insert(id);
  if (clinical == nullptr) {
    cohort.flow.notes.push_back(
        "no clinical table: labels taken from manifest.csv; age, prior "
        "resection and quality flags not assessed");
  }

  std::map<std::string, int> counts;
  auto exclude = [&](const std::string& id, const char* reason,
                     std::string detail) {
    ++counts[reason];
    cohort.exclusions.push_back({id, reason, std::move(detail)});
  };
  for (const std::string& id : patients) {
    ++cohort.flow.screened;
    if (auto it = invalid.find(id); it != invalid.end()) {
      exclude(id, kInvalidRecord, it->second);
      continue;
    }
    const ClinicalRecord* record = nullptr;
    if (clinical != nullptr) {
      auto it = clinical->records.find(id);
      if (it != clinical->records.end()) record = &it->second;
    }
    const std::vector<ImageRecord>& images = images_of[id];
    std::string label = images.empty() ? "" : images.front().label;
    if (clinical != nullptr) {
      if (record == nullptr || !record->histology) {
        exclude(id, kNoHistology,
                record == nullptr ? "no clinical row" : "histology missing");
        continue;
      }
      std::string histology = HistologyName(*record->histology);
      if (!label.empty() && label != histology) {
        exclude(
            id, kLabelConflict,
            absl::StrCat("manifest says ", label, ", clinical ", histology));
        continue;
      }
      label = histology;
    }
    if (std::find(options.class_names.begin(), options.class_names.end(),
                  label) == options.class_names.end()) {
      exclude(id, kNotAClass, absl::StrCat("label '", label, "'"));
      continue;
    }
    if (record != nullptr && record->age_months &&
        *record->age_months > kMaxAgeMonths) {
      exclude(id, kOver18, absl::StrCat(*record->age_months, " months"));
      continue;
    }
    if (record != nullptr &&
        record->prior_resection_elsewhere.value_or(false)) {
      exclude(id, kPriorResection, "");
      continue;
    }
    if (record != nullptr && record->image_quality == ImageQuality::kPoor) {
      exclude(id, kPoorQuality, "");
      continue;
    }
    CohortPatient patient;
    patient.patient_id = id;
    patient.label = label;
    if (record != nullptr) patient.clinical = *record;
    std::string last_problem = images.empty() ? "no image in manifest.csv" : "";
    for (const ImageRecord& image : images) {
      absl::Status status =
          options.check_image
              ? options.check_image(image)
              : DefaultImageCheck(image, options.min_image_side);
      if (status.ok()) {
        patient.images.push_back(image);
      } else {
        ++cohort.flow.unreadable_images;
        last_problem = std::string(status.message());
      }
    }
    if (patient.images.empty()) {
      exclude(id, kNoImage, last_problem);
      continue;
    }
    if (clinical != nullptr) {
      std::vector<std::string> missing;
      if (!record->age_months) missing.push_back("age_months");
      for (const std::string& field : options.required_fields) {
        if (!HasField(*record, field)) missing.push_back(field);
      }
      if (!missing.empty()) {
        exclude(id, kMissingData, absl::StrJoin(missing, ", "));
        continue;
      }
    }
    ++cohort.flow.included;
    ++cohort.flow.included_per_class[label];
    cohort.flow.included_images += static_cast<int>(patient.images.size());
    cohort.included.push_back(std::move(patient));
  }
  for (const std::string& reason : ReasonOrder()) {
    cohort.flow.excluded.emplace_back(reason, counts[reason]);
  }
  return cohort;
}

std::string FormatFlow(const CohortFlow& flow) {
  std::string out =
      absl::StrFormat("%-52s %5d patients\n", "screened", flow.screened);
  for (const auto& [reason, count] : flow.excluded) {
    absl::StrAppend(&out,
                    absl::StrFormat("  excluded: %-40s %5d\n", reason, count));
  }
  absl::StrAppend(&out,
                  absl::StrFormat("%-52s %5d patients, %d images\n", "included",
                                  flow.included, flow.included_images));
  for (const auto& [label, count] : flow.included_per_class) {
    absl::StrAppend(&out, absl::StrFormat("  %-50s %5d\n", label, count));
  }
  if (flow.unreadable_images > 0) {
    absl::StrAppend(
        &out, absl::StrFormat("%-52s %5d\n", "images unreadable or too small",
                              flow.unreadable_images));
  }
  for (const std::string& note : flow.notes) {
    absl::StrAppend(&out, "note: ", note, "\n");
  }
  return out;
}

PatientFlow ReleasePatientFlow(const FlowCounts& counts, int min_cell_count) {
  DisclosureTable table;
  std::vector<std::string> steps;
  auto add = [&](std::string step, int64_t patients, bool is_public) {
    steps.push_back(std::move(step));
    table.counts.push_back(patients);
    table.public_cells.push_back(is_public);
    return static_cast<int>(table.counts.size()) - 1;
  };
  const int screened = add("screened", counts.cohort.screened, false);
  DisclosureTable::Partition screening{screened, {}};
  for (const auto& [reason, patients] : counts.cohort.excluded) {
    screening.parts.push_back(
        add(absl::StrCat("excluded: ", reason), patients, false));
  }
  const int included = add("included", counts.cohort.included, false);
  screening.parts.push_back(included);
  table.partitions.push_back(screening);
  int evaluation_set = included;
  if (counts.training_site) {
    const int training = add("training", counts.training, false);
    evaluation_set = add("internal validation", counts.validation, false);
    table.partitions.push_back({included, {training, evaluation_set}});
  }
  const int not_loaded =
      add("evaluation set: no image could be loaded", counts.not_loaded, false);
  const int analysed =
      add("analysed", counts.analysed, counts.analysed_released);
  const int withheld = add("withheld: class below the minimum cell count",
                           counts.withheld, false);
  table.partitions.push_back(
      {evaluation_set, {not_loaded, analysed, withheld}});

  std::vector<bool> hidden = WithheldCells(table, min_cell_count);
  PatientFlow flow;
  flow.set_min_cell_count(min_cell_count);
  for (size_t i = 0; i < steps.size(); ++i) {
    FlowCount* step = flow.add_steps();
    step->set_step(steps[i]);
    if (hidden[i]) {
      step->set_suppressed(true);
    } else {
      step->set_patients(table.counts[i]);
    }
  }
  FlowCount* refused = flow.mutable_refused_manifest_lines();
  refused->set_step("manifest lines refused (images)");
  if (counts.refused_manifest_lines > 0 &&
      counts.refused_manifest_lines < min_cell_count) {
    refused->set_suppressed(true);
  } else {
    refused->set_patients(counts.refused_manifest_lines);
  }
  for (const std::string& note : counts.cohort.notes) flow.add_notes(note);
  return flow;
}

absl::Status WriteExclusions(const std::string& path,
                             const std::vector<Exclusion>& exclusions) {
  std::string content = "patient_id,reason,detail\n";
  for (const Exclusion& exclusion : exclusions) {
    absl::StrAppend(&content, CsvField(exclusion.patient_id), ",",
                    CsvField(exclusion.reason), ",", CsvField(exclusion.detail),
                    "\n");
  }
  return WriteFileAtomically(path, content, 0600);
}

}  // namespace echofed
