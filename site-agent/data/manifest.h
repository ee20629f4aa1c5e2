#ifndef ECHOFED_SITE_AGENT_DATA_MANIFEST_H_
#define ECHOFED_SITE_AGENT_DATA_MANIFEST_H_

// A site's image list (manifest.csv) and the patient-level split. No
// LibTorch here, so the readers can be fuzzed and reused on their own.

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/federation.pb.h"

namespace echofed {

// A region of interest in image pixels (origin top left).
struct RegionOfInterest {
  int x = 0, y = 0, width = 0, height = 0;
};

struct ImageRecord {
  std::string patient_id;
  std::string image_path;  // resolved, inside the data folder
  std::string label;
  // Optional ROI, either a box (manifest columns roi_x, roi_y, roi_w, roi_h)
  // or a mask image (column roi_mask: non-zero pixels mark the lesion, same
  // size as the image). The image is cropped to it with the plan's margin.
  std::optional<RegionOfInterest> roi;
  std::string roi_mask_path;  // resolved, inside the data folder
};

// A problem with one manifest line or image: counted and reported, never a
// crash and never silent.
struct RecordError {
  int line = 0;  // manifest line, 1-based; 0 when not tied to a line
  std::string message;
};

struct SiteManifest {
  std::string data_dir;
  std::vector<ImageRecord> records;
  std::vector<RecordError> errors;
};

// Reads `data_dir/manifest.csv` with columns patient_id,image,label and
// optionally roi_x,roi_y,roi_w,roi_h or roi_mask (header required, other
// columns ignored). Image paths are relative to data_dir and may not leave it.
// A patient whose images carry different labels is an error for all of its
// lines.
absl::StatusOr<SiteManifest> LoadManifest(const std::string& data_dir);

// Counts only, for Join: patients, images and images per label, except
// that labels with some patients but fewer than `min_cell_count` (and any
// label needed to keep those from being recovered by subtraction; see
// WithheldCells in common/metrics.h) are listed as withheld instead.
DataSummary Summarize(const SiteManifest& manifest, int min_cell_count);

// Patient-level, class-stratified split. Within each class, patients are
// ordered by SHA-256(seed, patient_id) and the first round(fraction * n) go
// to training: stable across runs and machines, and adding patients moves
// few others.
std::set<std::string> TrainingPatients(const std::vector<ImageRecord>& records,
                                       double train_fraction, uint64_t seed);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_MANIFEST_H_
