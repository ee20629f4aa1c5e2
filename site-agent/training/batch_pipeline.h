#ifndef ECHOFED_SITE_AGENT_TRAINING_BATCH_PIPELINE_H_
#define ECHOFED_SITE_AGENT_TRAINING_BATCH_PIPELINE_H_

// Training batches made ahead of the training step: which images each batch
// holds (from the seed alone), how a batch is assembled (gather, the plan's
// augmentation, pinned host memory for a CUDA copy), and a bounded
// producer/consumer queue that assembles them on worker threads while the
// device trains on the previous ones.
//
// Determinism: every batch carries its own seed, derived from the run's
// seed, its epoch and its position, and its augmentation draws only from a
// generator made from that seed. What a batch holds therefore never
// depends on which thread made it, when, or how many workers there are;
// the trainer gets the same batches, in the same order, with the pipeline
// on or off.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/plan.pb.h"
#include "site-agent/training/dataset.h"
#include "torch/torch.h"

namespace echofed {

// Which images a batch holds, and the seed of its augmentation.
struct BatchSpec {
  int epoch = 1;       // 1-based
  int index = 0;       // 0-based position within the epoch
  torch::Tensor rows;  // int64 indices into the ImageSet
  uint64_t seed = 0;
};

// The batches of `epochs` passes over `n` images: per epoch a permutation
// drawn from (seed, epoch), cut into batches of `batch_size`. A trailing
// batch of one image is left out (BatchNorm needs two), keeping the index
// of the batches after it. `batches_per_epoch`, if given, gets the count
// including such a left-out batch (what progress reports count).
std::vector<BatchSpec> PlanBatches(int64_t n, int64_t batch_size, int epochs,
                                   uint64_t seed,
                                   int* batches_per_epoch = nullptr);

// One training batch on the host, as the trainer consumes it.
struct TrainBatch {
  int epoch = 1;
  int index = 0;
  torch::Tensor images;  // [B, 1, S, S] float, augmented
  torch::Tensor labels;  // [B] int64
  // Undefined when the set has none (see ImageSet).
  torch::Tensor clinical, survival_months, survival_event;
  std::map<int, torch::Tensor> binary_targets;
  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
};

struct BatchAssembly {
  bool augment = true;
  Plan::Augmentation augmentation = Plan::STRONG;
  // Page-locked host memory, so that the copy to a CUDA device can be
  // asynchronous (non_blocking). Only with a CUDA device.
  bool pin_memory = false;
};

// Gathers the spec's rows of `data` and augments the images with the
// spec's seed. Reads `data` only (safe from several threads at once).
absl::StatusOr<TrainBatch> AssembleBatch(const ImageSet& data,
                                         const BatchSpec& spec,
                                         const BatchAssembly& assembly);

// Augmentation fit for B-mode ultrasound (Plan::Augmentation), drawing only
// from `generator`.
torch::Tensor AugmentImages(torch::Tensor images, Plan::Augmentation kind,
                            at::Generator generator);

struct BatchPipelineOptions {
  // Threads assembling batches; 0: each batch is assembled on the calling
  // thread when Next asks for it (no overlap).
  int workers = 1;
  // Batches assembled ahead of the one the trainer holds, at most (ready or
  // in the making): bounds the memory to depth batches.
  int depth = 2;
};

// Assembles the batches of `specs` with `make`, on worker threads, and
// hands them out in the order of `specs`. Next is for one consumer thread;
// the workers run `make` concurrently, so it must be thread-safe. A batch
// that fails ends the run: Next hands out the batches before it, then its
// error, and the workers stop. The destructor stops the workers and waits
// for them (each finishes the batch in hand).
class BatchPipeline {
 public:
  using MakeBatch = std::function<absl::StatusOr<TrainBatch>(const BatchSpec&)>;

  BatchPipeline(std::vector<BatchSpec> specs, MakeBatch make,
                const BatchPipelineOptions& options);
  ~BatchPipeline();
  BatchPipeline(const BatchPipeline&) = delete;
  BatchPipeline& operator=(const BatchPipeline&) = delete;

  // The next batch; nullopt after the last. After an error, or once
  // stopped, every call returns an error.
  absl::StatusOr<std::optional<TrainBatch>> Next();

  // Stops the workers and waits for them; Next returns CANCELLED after it.
  void Stop();

  // Seconds the consumer spent in Next (waiting for, or inline: making,
  // its batches).
  double wait_seconds() const { return wait_seconds_; }

 private:
  absl::StatusOr<std::optional<TrainBatch>> Take();
  absl::StatusOr<TrainBatch> MakeGuarded(const BatchSpec& spec);
  void Work();
  bool CanClaim() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  bool CanTake() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  const std::vector<BatchSpec> specs_;
  const MakeBatch make_;
  const int depth_;
  const bool inline_;
  double wait_seconds_ = 0;  // consumer thread only

  absl::Mutex mutex_;
  size_t next_claim_ ABSL_GUARDED_BY(mutex_) = 0;
  size_t next_take_ ABSL_GUARDED_BY(mutex_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mutex_) = false;
  bool failed_ ABSL_GUARDED_BY(mutex_) = false;
  std::map<size_t, absl::StatusOr<TrainBatch>> ready_ ABSL_GUARDED_BY(mutex_);
  std::vector<std::thread> workers_;
};

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_TRAINING_BATCH_PIPELINE_H_
