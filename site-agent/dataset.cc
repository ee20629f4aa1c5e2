#include "site-agent/dataset.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "site-agent/image_io.h"

namespace echofed {

ImageSet LoadImageSet(const std::vector<ImageRecord>& records,
                      const std::vector<std::string>& class_names,
                      int image_size) {
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
    absl::StatusOr<GrayImage> image = ReadGrayImage(record.image_path);
    if (!image.ok()) {
      set.errors.push_back({0, std::string(image.status().message())});
      continue;
    }
    torch::Tensor pixels =
        torch::from_blob(image->pixels.data(), {1, 1, image->height, image->width},
                         torch::kUInt8)
            .to(torch::kFloat32);
    if (record.roi) {
      const RegionOfInterest& roi = *record.roi;
      int margin_x = static_cast<int>(kRoiMargin * roi.width);
      int margin_y = static_cast<int>(kRoiMargin * roi.height);
      int x0 = std::max(0, roi.x - margin_x);
      int y0 = std::max(0, roi.y - margin_y);
      int x1 = std::min(image->width, roi.x + roi.width + margin_x);
      int y1 = std::min(image->height, roi.y + roi.height + margin_y);
      if (x1 - x0 < 2 || y1 - y0 < 2) {
        set.errors.push_back(
            {0, absl::StrCat(record.image_path, ": ROI lies outside the ",
                             image->width, "x", image->height, " image")});
        continue;
      }
      pixels = pixels.slice(2, y0, y1).slice(3, x0, x1);
    }
    pixels = torch::nn::functional::interpolate(
        pixels, torch::nn::functional::InterpolateFuncOptions()
                    .size(std::vector<int64_t>{image_size, image_size})
                    .mode(torch::kBilinear)
                    .align_corners(false)
                    .antialias(true));
    torch::Tensor mean = pixels.mean();
    torch::Tensor std = pixels.std().clamp_min(1e-3);
    images.push_back(((pixels - mean) / std).squeeze(0));
    labels.push_back(cls - class_names.begin());
    patients.insert(record.patient_id);
  }
  if (!images.empty()) {
    set.images = torch::stack(images);
    set.labels = torch::tensor(labels, torch::kInt64);
  }
  set.patients = static_cast<int64_t>(patients.size());
  return set;
}

}  // namespace echofed
