#ifndef ECHOFED_SITE_AGENT_TRAINING_DATASET_H_
#define ECHOFED_SITE_AGENT_TRAINING_DATASET_H_

// A site's images as the tensors the trainer uses. Everything here stays
// inside the hospital.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/plan.pb.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/image_io.h"
#include "site-agent/data/manifest.h"
#include "torch/torch.h"

namespace echofed {

// Images as the model sees them: [N, 1, size, size] float, cropped to the
// ROI (with margin) when there is one, resized, and normalised as the plan
// says; labels [N] int64 indexing class_names.
struct ImageSet {
  torch::Tensor images;
  torch::Tensor labels;
  int64_t patients = 0;
  std::vector<RecordError> errors;
  // Per image: its patient (site-local, never sent), and the frame of a
  // multi-frame object it was decoded from (0 for single images).
  std::vector<std::string> patient_ids;
  std::vector<int> frames;
  // Fusion models (AttachClinical): [N, F] features with NaN for missing;
  // per binary head [N] 0/1 with NaN for unknown; event-free survival
  // months and event (0/1) [N], NaN for unknown.
  torch::Tensor clinical;
  std::map<int, torch::Tensor> binary_targets;
  torch::Tensor survival_months, survival_event;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

// Fills the clinical inputs and the labels of `heads` (Plan::Head values)
// of every image from its patient's row; a patient without a row gets
// missing features and unknown labels.
void AttachClinical(const ClinicalTable* table, const std::vector<int>& heads,
                    ImageSet* set);

// How every site turns an image into model input; from the plan, so that
// all sites preprocess identically.
struct Preprocessing {
  int image_size = 64;
  Plan::Normalization normalization = Plan::PER_IMAGE_ZSCORE;
  double roi_margin = 0.1;
  // Which frames of a cine loop become images (plan.frame_selection): each
  // is a separate image of the record's patient, cropped to the record's
  // ROI, so every frame of a patient lands in that patient's split.
  FrameChoice frames;
};
Preprocessing PreprocessingFromPlan(const Plan& plan);

// Loads the records whose label is one of class_names (others are reported
// as errors). Unreadable images are reported and left out; so is a whole
// multi-frame record when one of its chosen frames is unreadable. Frames
// are decoded and resized one at a time, so memory grows with the number of
// samples at the model's size, never with a loop's full resolution.
ImageSet LoadImageSet(const std::vector<ImageRecord>& records,
                      const std::vector<std::string>& class_names,
                      const Preprocessing& preprocessing);
// Default preprocessing at the given size.
ImageSet LoadImageSet(const std::vector<ImageRecord>& records,
                      const std::vector<std::string>& class_names,
                      int image_size);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_TRAINING_DATASET_H_
