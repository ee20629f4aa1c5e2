#include "site-agent/training/dataset.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/image_io.h"

namespace echofed {

namespace {

// The ROI box of a mask image: the bounding box of its non-zero pixels.
absl::StatusOr<RegionOfInterest> RoiFromMask(const std::string& mask_path,
                                             const GrayImage& image) {
  absl::StatusOr<GrayImage> mask = ReadGrayImage(mask_path);
  if (!mask.ok()) return mask.status();
  if (mask->width != image.width || mask->height != image.height) {
    return absl::InvalidArgumentError(
        absl::StrCat(mask_path, ": mask is ", mask->width, "x", mask->height,
                     ", the image ", image.width, "x", image.height));
  }
  int x0 = mask->width, y0 = mask->height, x1 = -1, y1 = -1;
  for (int y = 0; y < mask->height; ++y) {
    for (int x = 0; x < mask->width; ++x) {
      if (mask->pixels[static_cast<size_t>(y) * mask->width + x] == 0) continue;
      x0 = std::min(x0, x);
      y0 = std::min(y0, y);
      x1 = std::max(x1, x);
      y1 = std::max(y1, y);
    }
  }
  if (x1 < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(mask_path, ": mask is empty"));
  }
  return RegionOfInterest{x0, y0, x1 - x0 + 1, y1 - y0 + 1};
}

}  // namespace

Preprocessing PreprocessingFromPlan(const Plan& plan) {
  Preprocessing preprocessing;
  preprocessing.image_size = plan.image_size();
  preprocessing.normalization = plan.normalization() == Plan::FIXED_RANGE
                                    ? Plan::FIXED_RANGE
                                    : Plan::PER_IMAGE_ZSCORE;
  preprocessing.roi_margin = plan.has_roi_margin() ? plan.roi_margin() : 0.1;
  switch (plan.frame_selection()) {
    case Plan::EVERY_KTH_FRAME:
      preprocessing.frames.kind = FrameChoice::kEveryKth;
      break;
    case Plan::ALL_FRAMES:
      preprocessing.frames.kind = FrameChoice::kAll;
      break;
    default:
      preprocessing.frames.kind = FrameChoice::kMiddle;
      break;
  }
  preprocessing.frames.step =
      static_cast<int>(std::max<uint32_t>(1, plan.frame_step()));
  return preprocessing;
}

ImageSet LoadImageSet(const std::vector<ImageRecord>& records,
                      const std::vector<std::string>& class_names,
                      int image_size) {
  Preprocessing preprocessing;
  preprocessing.image_size = image_size;
  return LoadImageSet(records, class_names, preprocessing);
}

namespace {

// One decoded frame as model input [1, size, size]: cropped to the ROI
// with the plan's margin, resized, normalised.
absl::StatusOr<torch::Tensor> PrepareFrame(
    GrayImage& image, const std::optional<RegionOfInterest>& roi,
    const Preprocessing& preprocessing, const std::string& path) {
  const int64_t size = preprocessing.image_size;
  torch::Tensor pixels =
      torch::from_blob(image.pixels.data(), {1, 1, image.height, image.width},
                       torch::kUInt8)
          .to(torch::kFloat32);
  if (roi) {
    int margin_x = static_cast<int>(preprocessing.roi_margin * roi->width);
    int margin_y = static_cast<int>(preprocessing.roi_margin * roi->height);
    int x0 = std::max(0, roi->x - margin_x);
    int y0 = std::max(0, roi->y - margin_y);
    int x1 = std::min(image.width, roi->x + roi->width + margin_x);
    int y1 = std::min(image.height, roi->y + roi->height + margin_y);
    if (x1 - x0 < 2 || y1 - y0 < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ROI lies outside the ", image.width, "x",
                       image.height, " image"));
    }
    pixels = pixels.slice(2, y0, y1).slice(3, x0, x1);
  }
  pixels = torch::nn::functional::interpolate(
      pixels, torch::nn::functional::InterpolateFuncOptions()
                  .size(std::vector<int64_t>{size, size})
                  .mode(torch::kBilinear)
                  .align_corners(false)
                  .antialias(true));
  if (preprocessing.normalization == Plan::FIXED_RANGE) {
    pixels = pixels / 127.5 - 1.0;
  } else {
    torch::Tensor mean = pixels.mean();
    torch::Tensor std = pixels.std().clamp_min(1e-3);
    pixels = (pixels - mean) / std;
  }
  return pixels.squeeze(0);
}

}  // namespace

ImageSet LoadImageSet(const std::vector<ImageRecord>& records,
                      const std::vector<std::string>& class_names,
                      const Preprocessing& preprocessing) {
  ImageSet set;
  std::vector<torch::Tensor> images;
  std::vector<int64_t> labels;
  std::set<std::string> patients;
  for (const ImageRecord& record : records) {
    auto cls = std::find(class_names.begin(), class_names.end(), record.label);
    if (cls == class_names.end()) {
      set.errors.push_back({0, absl::StrCat("label '", record.label,
                                            "' is not a class of the plan")});
      continue;
    }
    // A record's frames count only if all of them load.
    std::vector<torch::Tensor> record_images;
    std::vector<int> record_frames;
    std::optional<RegionOfInterest> roi = record.roi;
    bool roi_known = record.roi_mask_path.empty();
    absl::Status status =
        ForEachGrayFrame(record.image_path, preprocessing.frames,
                         [&](int frame, GrayImage image) -> absl::Status {
                           if (!roi_known) {
                             // The mask is read once; every frame of a loop has
                             // its size.
                             absl::StatusOr<RegionOfInterest> from_mask =
                                 RoiFromMask(record.roi_mask_path, image);
                             if (!from_mask.ok()) return from_mask.status();
                             roi = *from_mask;
                             roi_known = true;
                           }
                           absl::StatusOr<torch::Tensor> pixels = PrepareFrame(
                               image, roi, preprocessing, record.image_path);
                           if (!pixels.ok()) return pixels.status();
                           record_images.push_back(*std::move(pixels));
                           record_frames.push_back(frame);
                           return absl::OkStatus();
                         });
    if (!status.ok()) {
      set.errors.push_back({0, std::string(status.message())});
      continue;
    }
    for (size_t i = 0; i < record_images.size(); ++i) {
      images.push_back(std::move(record_images[i]));
      labels.push_back(cls - class_names.begin());
      set.patient_ids.push_back(record.patient_id);
      set.frames.push_back(record_frames[i]);
    }
    patients.insert(record.patient_id);
  }
  if (!images.empty()) {
    set.images = torch::stack(images);
    set.labels = torch::tensor(labels, torch::kInt64);
  }
  set.patients = static_cast<int64_t>(patients.size());
  return set;
}

void AttachClinical(const ClinicalTable* table, const std::vector<int>& heads,
                    ImageSet* set) {
  const int64_t n = set->size();
  const int64_t features = static_cast<int64_t>(ClinicalFeatureNames().size());
  const float nan = std::numeric_limits<float>::quiet_NaN();
  set->clinical = torch::full({n, features}, nan);
  set->binary_targets.clear();
  set->survival_months = torch::full({n}, nan);
  set->survival_event = torch::full({n}, nan);
  for (int head : heads) {
    if (head != Plan::SUBTYPE && head != Plan::PROGNOSIS) {
      set->binary_targets[head] = torch::full({n}, nan);
    }
  }
  if (table == nullptr) return;
  auto clinical = set->clinical.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    auto row = table->records.find(set->patient_ids[i]);
    if (row == table->records.end()) continue;
    const ClinicalRecord& record = row->second;
    std::vector<float> values = ClinicalFeatures(record);
    for (int64_t f = 0; f < features; ++f) clinical[i][f] = values[f];
    for (auto& [head, targets] : set->binary_targets) {
      std::optional<bool> label =
          BinaryHeadLabel(record, static_cast<Plan::Head>(head));
      if (label) targets[i] = *label ? 1.0f : 0.0f;
    }
    if (std::optional<SurvivalLabel> survival = PrognosisLabel(record)) {
      set->survival_months[i] = survival->months;
      set->survival_event[i] = survival->event ? 1.0f : 0.0f;
    }
  }
}

}  // namespace echofed
