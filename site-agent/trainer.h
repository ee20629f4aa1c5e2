#ifndef ECHOFED_SITE_AGENT_TRAINER_H_
#define ECHOFED_SITE_AGENT_TRAINER_H_

#include <functional>

#include "absl/status/statusor.h"
#include "models/classifier.h"
#include "proto/metrics.pb.h"
#include "proto/plan.pb.h"
#include "site-agent/dataset.h"
#include "torch/torch.h"

namespace echofed {

// "auto" picks CUDA when this LibTorch build has it and a GPU is present.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& requested);

struct TrainProgress {
  int epoch = 0;  // 1-based
  int epochs = 0;
  int batch = 0;  // 1-based
  int batches = 0;
  double loss = 0;  // running mean over the epoch so far
};

struct TrainOptions {
  Plan::Trainer trainer = Plan::SGD;
  int class_count = 3;
  int epochs = 1;
  int batch_size = 16;
  double learning_rate = 0.01;
  uint64_t seed = 1;
  torch::Device device = torch::kCPU;
  // Random flips and gain/gamma jitter, fit for B-mode ultrasound.
  bool augment = true;
  std::function<void(const TrainProgress&)> on_progress;
};

struct TrainResult {
  double mean_loss = 0;     // over the last epoch
  int64_t num_samples = 0;  // training images (the FedAvg weight)
};

// Trains `model` in place on `data`: cross-entropy weighted by inverse class
// frequency (rare subtypes count), SGD with momentum or Adam. NOOP adds a
// tiny constant to every float parameter (federation overhead benchmarks).
absl::StatusOr<TrainResult> TrainLocal(ImageClassifierImpl& model,
                                       const ImageSet& data,
                                       const TrainOptions& options);

// Aggregate counts of the model's predictions on `data` (eval mode): the
// confusion matrix, and per image its softmax probabilities binned into the
// score histograms and Brier sums by AddCase (common/metrics.h). A model with
// non-finite outputs gives a NaN loss_sum, which the coordinator refuses.
EvalAggregate EvaluateLocal(ImageClassifierImpl& model, const ImageSet& data,
                            int class_count, EvalSplit split,
                            torch::Device device);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_TRAINER_H_
