#include "site-agent/data/manifest.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/metrics.h"
#include "common/sha256.h"
#include "site-agent/data/csv.h"
#include "site-agent/data/image_io.h"

namespace echofed {
namespace {

// True when `path` (resolved, following links) lies inside `root`.
bool IsInside(const std::filesystem::path& root,
              const std::filesystem::path& path) {
  std::error_code error;
  std::filesystem::path real = std::filesystem::weakly_canonical(path, error);
  if (error) return false;
  auto root_it = root.begin();
  auto it = real.begin();
  for (; root_it != root.end(); ++root_it, ++it) {
    if (it == real.end() || *it != *root_it) return false;
  }
  return true;
}

uint64_t SplitKey(uint64_t seed, const std::string& patient_id) {
  std::string digest = Sha256::Of(absl::StrCat(seed, ":", patient_id));
  uint64_t key;
  std::memcpy(&key, digest.data(), sizeof(key));
  return key;
}

}  // namespace

absl::StatusOr<SiteManifest> LoadManifest(const std::string& data_dir) {
  std::error_code error;
  std::filesystem::path root = std::filesystem::canonical(data_dir, error);
  if (error) {
    return absl::NotFoundError(
        absl::StrCat("data folder ", data_dir, ": ", error.message()));
  }
  std::string manifest_path = (root / "manifest.csv").string();
  std::ifstream in(manifest_path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("no manifest.csv in ", data_dir,
                     " (columns: patient_id,image,label; see README)"));
  }
  std::string line;
  if (!std::getline(in, line)) {
    return absl::InvalidArgumentError(absl::StrCat(manifest_path, " is empty"));
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  // Strip a UTF-8 byte-order mark, as spreadsheet exports often carry one.
  if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);
  std::vector<std::string> header = SplitCsvLine(line);
  int patient_col = -1, image_col = -1, label_col = -1;
  int roi_cols[4] = {-1, -1, -1, -1};
  const char* roi_names[4] = {"roi_x", "roi_y", "roi_w", "roi_h"};
  for (int i = 0; i < static_cast<int>(header.size()); ++i) {
    std::string name = absl::AsciiStrToLower(header[i]);
    if (name == "patient_id") patient_col = i;
    if (name == "image") image_col = i;
    if (name == "label") label_col = i;
    for (int k = 0; k < 4; ++k) {
      if (name == roi_names[k]) roi_cols[k] = i;
    }
  }
  bool has_roi = roi_cols[0] >= 0 && roi_cols[1] >= 0 && roi_cols[2] >= 0 &&
                 roi_cols[3] >= 0;
  int mask_col = -1;
  for (int i = 0; i < static_cast<int>(header.size()); ++i) {
    if (absl::AsciiStrToLower(header[i]) == "roi_mask") mask_col = i;
  }
  if (patient_col < 0 || image_col < 0 || label_col < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        manifest_path, ": header must name patient_id, image and label"));
  }
  SiteManifest manifest;
  manifest.data_dir = root.string();
  std::map<std::string, std::string> label_of_patient;
  std::set<std::string> conflicting;
  std::vector<std::pair<int, ImageRecord>> lines;
  std::set<std::string> seen_images;
  int line_number = 1;
  int needed = std::max({patient_col, image_col, label_col}) + 1;
  while (std::getline(in, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    std::vector<std::string> fields = SplitCsvLine(line);
    if (static_cast<int>(fields.size()) < needed) {
      manifest.errors.push_back({line_number, "too few columns"});
      continue;
    }
    ImageRecord record{fields[patient_col], fields[image_col],
                       fields[label_col], std::nullopt};
    if (has_roi) {
      std::string roi_problem;
      bool any = false, all = true;
      int values[4] = {0, 0, 0, 0};
      for (int k = 0; k < 4; ++k) {
        const std::string& text = roi_cols[k] < static_cast<int>(fields.size())
                                      ? fields[roi_cols[k]]
                                      : "";
        if (text.empty()) {
          all = false;
          continue;
        }
        any = true;
        if (!absl::SimpleAtoi(text, &values[k]) || values[k] < 0) {
          roi_problem = absl::StrCat(roi_names[k], " '", text,
                                     "' is not a non-negative integer");
        } else if (values[k] > kMaxImageSide) {
          // No readable image is larger, and the crop adds a margin to
          // x + w in int (dataset.cc), which overflowed near INT_MAX.
          roi_problem =
              absl::StrCat(roi_names[k], " ", values[k], " exceeds ",
                           kMaxImageSide, ", the largest image side read");
        }
      }
      if (any && !all)
        roi_problem = "ROI needs all of roi_x, roi_y, roi_w, roi_h";
      if (all && roi_problem.empty() && (values[2] == 0 || values[3] == 0)) {
        roi_problem = "ROI is empty";
      }
      if (!roi_problem.empty()) {
        manifest.errors.push_back({line_number, roi_problem});
        continue;
      }
      if (all)
        record.roi =
            RegionOfInterest{values[0], values[1], values[2], values[3]};
    }
    if (mask_col >= 0 && mask_col < static_cast<int>(fields.size()) &&
        !fields[mask_col].empty()) {
      std::filesystem::path mask(fields[mask_col]);
      if (mask.is_absolute() || !IsInside(root, root / mask)) {
        manifest.errors.push_back(
            {line_number, absl::StrCat("ROI mask path '", fields[mask_col],
                                       "' leaves the data folder")});
        continue;
      }
      if (record.roi) {
        manifest.errors.push_back(
            {line_number, "give an ROI box or an ROI mask, not both"});
        continue;
      }
      record.roi_mask_path = (root / mask).lexically_normal().string();
    }
    if (record.patient_id.empty() || record.image_path.empty() ||
        record.label.empty()) {
      manifest.errors.push_back(
          {line_number, "empty patient_id, image or label"});
      continue;
    }
    std::filesystem::path image(record.image_path);
    if (image.is_absolute() || !IsInside(root, root / image)) {
      manifest.errors.push_back(
          {line_number, absl::StrCat("image path '", record.image_path,
                                     "' leaves the data folder")});
      continue;
    }
    record.image_path = (root / image).lexically_normal().string();
    if (!seen_images.insert(record.image_path).second) {
      manifest.errors.push_back(
          {line_number,
           absl::StrCat("image '", fields[image_col], "' is listed twice")});
      continue;
    }
    auto [it, inserted] =
        label_of_patient.emplace(record.patient_id, record.label);
    if (!inserted && it->second != record.label) {
      conflicting.insert(record.patient_id);
    }
    lines.emplace_back(line_number, std::move(record));
  }
  for (auto& [number, record] : lines) {
    if (conflicting.count(record.patient_id)) {
      manifest.errors.push_back(
          {number, absl::StrCat("patient ", record.patient_id,
                                " has images with different labels")});
      continue;
    }
    manifest.records.push_back(std::move(record));
  }
  return manifest;
}

DataSummary Summarize(const SiteManifest& manifest, int min_cell_count) {
  DataSummary summary;
  std::set<std::string> patients;
  std::map<std::string, std::set<std::string>> patients_per_label;
  std::map<std::string, int64_t> images_per_label;
  for (const ImageRecord& record : manifest.records) {
    patients.insert(record.patient_id);
    patients_per_label[record.label].insert(record.patient_id);
    ++images_per_label[record.label];
  }
  summary.set_patients(static_cast<int64_t>(patients.size()));
  summary.set_images(static_cast<int64_t>(manifest.records.size()));
  summary.set_min_cell_count(min_cell_count);
  // The totals go out as they are (the coordinator caps a site's FedAvg
  // weight by them); the labels partition them, so a withheld label takes
  // another with it when the totals would give it away by subtraction.
  // Labels are per patient (LoadManifest), so the patient counts partition
  // the patients.
  DisclosureTable table;
  table.counts.push_back(summary.patients());
  table.public_cells.push_back(true);
  DisclosureTable::Partition partition;
  std::vector<std::string> labels;
  for (const auto& [label, ids] : patients_per_label) {
    partition.parts.push_back(static_cast<int>(table.counts.size()));
    table.counts.push_back(static_cast<int64_t>(ids.size()));
    table.public_cells.push_back(false);
    labels.push_back(label);
  }
  table.partitions.push_back(partition);
  std::vector<bool> withheld = WithheldCells(table, min_cell_count);
  for (size_t i = 0; i < labels.size(); ++i) {
    if (withheld[i + 1]) {
      summary.add_withheld_labels(labels[i]);
    } else {
      (*summary.mutable_images_per_label())[labels[i]] =
          images_per_label[labels[i]];
    }
  }
  return summary;
}

std::set<std::string> TrainingPatients(const std::vector<ImageRecord>& records,
                                       double train_fraction, uint64_t seed) {
  std::map<std::string, std::set<std::string>> patients_by_label;
  for (const ImageRecord& record : records) {
    patients_by_label[record.label].insert(record.patient_id);
  }
  std::set<std::string> training;
  for (const auto& [label, patients] : patients_by_label) {
    std::vector<std::pair<uint64_t, std::string>> ordered;
    for (const std::string& id : patients) {
      ordered.emplace_back(SplitKey(seed, id), id);
    }
    std::sort(ordered.begin(), ordered.end());
    size_t take = static_cast<size_t>(
        std::llround(train_fraction * static_cast<double>(ordered.size())));
    for (size_t i = 0; i < take && i < ordered.size(); ++i) {
      training.insert(ordered[i].second);
    }
  }
  return training;
}

}  // namespace echofed
