#ifndef ECHOFED_SITE_AGENT_TRAINING_TRAINER_H_
#define ECHOFED_SITE_AGENT_TRAINING_TRAINER_H_

#include <functional>
#include <optional>

#include "absl/status/statusor.h"
#include "models/classifier.h"
#include "proto/metrics.pb.h"
#include "proto/plan.pb.h"
#include "site-agent/training/dataset.h"
#include "site-agent/training/training_progress.h"
#include "torch/torch.h"

namespace echofed {

// "auto" picks CUDA when this LibTorch build has it and a GPU is present.
absl::StatusOr<torch::Device> ResolveDevice(const std::string& requested);

struct TrainOptions {
  Plan::Trainer trainer = Plan::SGD;
  int class_count = 3;
  int epochs = 1;
  int batch_size = 16;
  double learning_rate = 0.01;
  uint64_t seed = 1;
  torch::Device device = torch::kCPU;
  // L2 (SGD, Adam) or decoupled (AdamW) weight decay; see
  // DefaultWeightDecay for the plan's default.
  double weight_decay = 1e-4;
  // Augmentation fit for B-mode ultrasound (Plan::Augmentation).
  bool augment = true;
  Plan::Augmentation augmentation = Plan::STRONG;
  // Cosine decay of learning_rate to 0 over the whole run, set at every
  // batch: this call covers the fraction [run_progress_begin,
  // run_progress_end) of the run. Off: learning_rate throughout.
  bool cosine_over_run = false;
  double run_progress_begin = 0;
  double run_progress_end = 1;
  // The optimiser's state (moments, step counts) carried from the previous
  // call, serialised; read when non-empty and written back after training.
  // It stays at the site. Null: a fresh optimiser every call.
  std::string* optimizer_state = nullptr;
  Plan::Loss loss = Plan::WEIGHTED_CROSS_ENTROPY;
  double focal_gamma = 2.0;
  // Cross-entropy against targets smoothed by this much: the true class
  // gets 1 - s + s / classes, every other s / classes (0: off; focal loss
  // ignores it).
  double label_smoothing = 0;
  // Mixup (Zhang et al. 2018, plan.mixup_alpha) of each batch with a
  // permutation of itself, the mixing weight drawn from Beta(alpha, alpha);
  // 0: off. Image models only (a fusion model's batches are not mixed).
  double mixup_alpha = 0;
  // FedProx: adds (mu / 2) ||w - w_start||^2, w_start being the weights
  // the training started from (the global model). 0: off.
  double proximal_mu = 0;
  // bfloat16 autocast on CUDA (no effect on CPU).
  bool mixed_precision = true;
  // Batch assembly (index gather, augmentation, collation, pinned memory
  // for CUDA) on this many worker threads, at most loader_depth batches
  // ahead of the training step; 0: on the training thread, in turn. The
  // batches are the same either way (batch_pipeline.h).
  int loader_workers = 1;
  int loader_depth = 2;
  // The channels_last memory format for the model's 4-D weights and the
  // images during training (the weights are back in the default format
  // when TrainLocal returns). Unset: on for CUDA (cuDNN's NHWC kernels),
  // off for CPU, where it was measured not to help (README, "GPU and
  // performance").
  std::optional<bool> channels_last;
  // Reproducible training (plan.deterministic): cuDNN's deterministic
  // kernels without benchmarking, deterministic algorithms (warn-only) and
  // cuBLAS's fixed workspace; off: cuDNN benchmarking on CUDA. The global
  // switches are restored when TrainLocal returns.
  bool deterministic = false;
  std::function<void(const TrainProgress&)> on_progress;
};

// The model's 4-D floating parameters and buffers (convolution weights) in
// `format`, in place (the same tensors, so an optimiser keeps them).
// TrainLocal uses ChannelsLast while it trains on CUDA and puts the
// default (Contiguous) format back.
void SetConvMemoryFormat(ImageClassifierImpl& model,
                         torch::MemoryFormat format);

// Drops every parameter's gradient instead of zeroing it, before a step:
// backward then stores fresh gradients rather than adding them to zeroed
// buffers, one fill and one read of every gradient less per step (the
// default of PyTorch 2.x's zero_grad; LibTorch 1.13's only zeroes).
// Optimisers skip parameters without a gradient, weight decay and momentum
// included: a parameter the loss does not reach no longer decays.
void ReleaseGradients(torch::optim::Optimizer& optimizer);

// The learning rate of a round under the plan's schedule (COSINE_OVER_RUN:
// the base rate, which the trainer decays batch by batch).
double ScheduledLearningRate(const Plan& plan, int round);

// Everything the plan says about training in `round` (1-based): optimiser,
// schedule, batch, augmentation, loss, seed. Device, progress callback and
// optimiser state are the caller's.
TrainOptions TrainOptionsFromPlan(const Plan& plan, int round);

struct TrainResult {
  double mean_loss = 0;     // over the last epoch
  int64_t num_samples = 0;  // training images (the FedAvg weight)
  // Where the time went: training steps taken, the wall time of the
  // training loop, and the part of it the training thread waited for its
  // next batch (with loader_workers 0: the time it spent assembling them).
  int64_t steps = 0;
  double train_seconds = 0;
  double data_wait_seconds = 0;
};

// Trains `model` in place on `data`. The subtype loss is cross-entropy (or
// focal loss) weighted by inverse class frequency, so rare subtypes count;
// a fusion model's extra heads add binary cross-entropy (HIGH_RISK,
// BONE_MARROW, RESPONSE) and the Cox partial likelihood (PROGNOSIS), each
// over the images whose label is known. NOOP adds a tiny constant to every
// float parameter (federation overhead benchmarks).
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

struct EvaluationOptions {
  int class_count = 3;
  EvalSplit split = INTERNAL_VALIDATION;
  torch::Device device = torch::kCPU;
  // Disclosure control (README, "Disclosure control"): a true class with
  // fewer patients (but some) is withheld and its patients left out of
  // every aggregate of the set; a set with fewer patients, before or after
  // that, is suppressed; a binary head with fewer labelled, positive or
  // negative patients, or a survival head with fewer patients, events or
  // censored patients, is suppressed.
  int min_cell_count = 1;
  // Test-time horizontal flip (plan.test_time_flip): each image is scored
  // with the mean of its own and its mirror image's class probabilities
  // (the extra heads: the mean of their two outputs). A mirrored B-mode
  // image is as plausible as the original (training flips it too), and the
  // mean is less sensitive to one view's noise; it costs a second forward
  // pass.
  bool test_time_flip = false;
};
// The test-time flip: `direct` (the model's outputs for `images`) combined
// with the model's outputs for the mirrored images, computed here without
// gradients. Subtype: log of the mean of the two views' probabilities
// (float64; softmax gives the mean back); extra heads: the mean of the two
// outputs (float64). On the images' device.
ModelOutputs AverageWithMirror(ImageClassifierImpl& model,
                               const ModelOutputs& direct,
                               const torch::Tensor& images,
                               const torch::Tensor& clinical);

struct LocalEvaluation {
  EvalAggregate subtype;
  // One per extra head of a fusion model: binary heads as 2-class
  // aggregates over the images with a known label; PROGNOSIS as a survival
  // aggregate over patients (their images' mean risk score).
  std::vector<HeadAggregate> heads;
  // The unit of analysis the study registers: one case per patient, scored
  // with the mean of the patient's image probabilities (same disclosure
  // control as `subtype`).
  EvalAggregate patient_subtype;
  // The set released nothing (subtype and heads suppressed).
  bool suppressed = false;
  // Patients left out because their class was withheld (site-local: the
  // patient flow releases it under its own disclosure control).
  int64_t withheld_patients = 0;
};
LocalEvaluation EvaluateModel(ImageClassifierImpl& model, const ImageSet& data,
                              const EvaluationOptions& options);

// Replaces every aggregate of `evaluation` by an empty one marked
// suppressed, keeping split, class count and heads.
void SuppressEvaluation(LocalEvaluation* evaluation);

// Negative Cox partial log-likelihood (Breslow; tied times in arbitrary
// order) of `risk` [N] for `months` [N] and `event` [N] (0/1), averaged over
// events; zero when there is no event.
torch::Tensor CoxLoss(torch::Tensor risk, torch::Tensor months,
                      torch::Tensor event);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_TRAINING_TRAINER_H_
