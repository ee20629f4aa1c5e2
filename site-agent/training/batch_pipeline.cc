#include "site-agent/training/batch_pipeline.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <utility>

#include "ATen/CPUGeneratorImpl.h"
#include "absl/strings/str_cat.h"

namespace echofed {

namespace {

// SplitMix64's finaliser: well-mixed 64-bit seeds from small, related
// inputs (a run's seed, an epoch, a batch index).
uint64_t Mix(uint64_t value) {
  value += 0x9e3779b97f4a7c15ULL;
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
  return value ^ (value >> 31);
}

uint64_t DeriveSeed(uint64_t seed, uint64_t epoch, uint64_t index) {
  return Mix(Mix(Mix(seed) ^ epoch) ^ (index + 0x5851f42d4c957f2dULL));
}

torch::Tensor Gather(const torch::Tensor& tensor, const torch::Tensor& rows,
                     bool pin) {
  if (!tensor.defined()) return tensor;
  torch::Tensor gathered = tensor.index_select(0, rows);
  return pin ? gathered.pin_memory() : gathered;
}

}  // namespace

std::vector<BatchSpec> PlanBatches(int64_t n, int64_t batch_size, int epochs,
                                   uint64_t seed, int* batches_per_epoch) {
  const int64_t batch = std::max<int64_t>(1, batch_size);
  const int batches = n > 0 ? static_cast<int>((n + batch - 1) / batch) : 0;
  if (batches_per_epoch != nullptr) *batches_per_epoch = batches;
  std::vector<BatchSpec> specs;
  for (int epoch = 1; epoch <= epochs && n > 0; ++epoch) {
    at::Generator generator =
        at::detail::createCPUGenerator(DeriveSeed(seed, epoch, ~0ULL));
    torch::Tensor order = torch::randperm(n, generator, torch::kInt64);
    for (int b = 0; b < batches; ++b) {
      torch::Tensor rows =
          order.slice(0, b * batch, std::min(n, (b + 1) * batch));
      if (rows.size(0) < 2) continue;
      specs.push_back(BatchSpec{epoch, b, rows, DeriveSeed(seed, epoch, b)});
    }
  }
  return specs;
}

// Horizontal flips (probe orientation), rotation within 10 degrees and
// scale within 10%, gamma and gain jitter (time-gain compensation and
// display settings differ between scanners). Intensities are handled
// relative to each image's black level and range, so this works under every
// normalisation. STRONG adds a 5% shift, multiplicative speckle-like noise
// and border replication.
torch::Tensor AugmentImages(torch::Tensor images, Plan::Augmentation kind,
                            at::Generator generator) {
  const bool strong = kind == Plan::STRONG;
  const int64_t n = images.size(0);
  auto uniform = [&](torch::IntArrayRef sizes) {
    return torch::rand(sizes, generator, images.options());
  };
  torch::Tensor flip = uniform({n}) < 0.5;
  images = torch::where(flip.view({-1, 1, 1, 1}), images.flip({3}), images);
  torch::Tensor angle = (uniform({n}) - 0.5) * 2 * (10 * M_PI / 180);
  torch::Tensor scale = 1 + (uniform({n}) - 0.5) * 0.2;
  torch::Tensor shift =
      strong ? (uniform({n, 2}) - 0.5) * 0.1 : torch::zeros({n, 2});
  torch::Tensor cos = torch::cos(angle) / scale,
                sin = torch::sin(angle) / scale;
  torch::Tensor theta =
      torch::stack({torch::stack({cos, -sin, shift.select(1, 0)}, 1),
                    torch::stack({sin, cos, shift.select(1, 1)}, 1)},
                   1);
  namespace F = torch::nn::functional;
  torch::Tensor grid = F::affine_grid(theta, images.sizes(), false);
  if (strong) {
    images = F::grid_sample(images, grid,
                            F::GridSampleFuncOptions()
                                .mode(torch::kBilinear)
                                .padding_mode(torch::kBorder)
                                .align_corners(false));
  } else {
    // What rotates in from outside the sector is black, as it would be.
    torch::Tensor black = images.amin({1, 2, 3}, true);
    images = F::grid_sample(images - black, grid,
                            F::GridSampleFuncOptions()
                                .mode(torch::kBilinear)
                                .padding_mode(torch::kZeros)
                                .align_corners(false)) +
             black;
  }
  torch::Tensor low = images.amin({1, 2, 3}, true);
  torch::Tensor high = images.amax({1, 2, 3}, true);
  torch::Tensor range = (high - low).clamp_min(1e-6);
  torch::Tensor unit = (images - low) / range;
  torch::Tensor gamma = torch::exp((uniform({n, 1, 1, 1}) - 0.5) * 0.4);
  unit = unit.clamp_min(0).pow(gamma);
  if (strong) {
    torch::Tensor noise = torch::randn(unit.sizes(), generator, unit.options());
    unit = unit * (1 + 0.1 * noise).clamp_min(0);
  }
  torch::Tensor gain = 1 + (strong ? 0.2 : 0.3) * (uniform({n, 1, 1, 1}) - 0.5);
  return (unit * range + low) * gain;
}

absl::StatusOr<TrainBatch> AssembleBatch(const ImageSet& data,
                                         const BatchSpec& spec,
                                         const BatchAssembly& assembly) {
  try {
    // Autograd has nothing to record here (and grad mode is per thread).
    torch::NoGradGuard no_grad;
    TrainBatch batch;
    batch.epoch = spec.epoch;
    batch.index = spec.index;
    torch::Tensor images = data.images.index_select(0, spec.rows);
    if (assembly.augment) {
      images = AugmentImages(images, assembly.augmentation,
                             at::detail::createCPUGenerator(spec.seed));
    }
    batch.images = assembly.pin_memory ? images.pin_memory() : images;
    const bool pin = assembly.pin_memory;
    batch.labels = Gather(data.labels, spec.rows, pin);
    batch.clinical = Gather(data.clinical, spec.rows, pin);
    batch.survival_months = Gather(data.survival_months, spec.rows, pin);
    batch.survival_event = Gather(data.survival_event, spec.rows, pin);
    for (const auto& [head, targets] : data.binary_targets) {
      batch.binary_targets[head] = Gather(targets, spec.rows, pin);
    }
    return batch;
  } catch (const c10::Error& error) {
    return absl::InternalError(
        absl::StrCat("assembling training batch ", spec.index + 1, " of epoch ",
                     spec.epoch, ": ", error.what_without_backtrace()));
  }
}

BatchPipeline::BatchPipeline(std::vector<BatchSpec> specs, MakeBatch make,
                             const BatchPipelineOptions& options)
    : specs_(std::move(specs)),
      make_(std::move(make)),
      depth_(std::max(1, options.depth)),
      inline_(options.workers <= 0) {
  for (int w = 0; w < options.workers; ++w) {
    workers_.emplace_back([this] { Work(); });
  }
}

BatchPipeline::~BatchPipeline() { Stop(); }

void BatchPipeline::Stop() {
  {
    absl::MutexLock lock(&mutex_);
    stopped_ = true;
  }
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

absl::StatusOr<TrainBatch> BatchPipeline::MakeGuarded(const BatchSpec& spec) {
  // An exception must not escape a worker thread (std::terminate).
  try {
    return make_(spec);
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("assembling training batch ",
                                            spec.index + 1, " of epoch ",
                                            spec.epoch, ": ", error.what()));
  }
}

bool BatchPipeline::CanClaim() const {
  return stopped_ || failed_ || next_claim_ >= specs_.size() ||
         next_claim_ < next_take_ + depth_;
}

bool BatchPipeline::CanTake() const {
  return stopped_ || next_take_ >= specs_.size() || ready_.count(next_take_);
}

void BatchPipeline::Work() {
  for (;;) {
    size_t claimed = 0;
    {
      absl::MutexLock lock(&mutex_);
      mutex_.Await(absl::Condition(this, &BatchPipeline::CanClaim));
      if (stopped_ || failed_ || next_claim_ >= specs_.size()) return;
      claimed = next_claim_++;
    }
    absl::StatusOr<TrainBatch> batch = MakeGuarded(specs_[claimed]);
    absl::MutexLock lock(&mutex_);
    if (!batch.ok()) failed_ = true;
    ready_.emplace(claimed, std::move(batch));
  }
}

absl::StatusOr<std::optional<TrainBatch>> BatchPipeline::Next() {
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::optional<TrainBatch>> result = Take();
  wait_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return result;
}

absl::StatusOr<std::optional<TrainBatch>> BatchPipeline::Take() {
  size_t index = 0;
  absl::StatusOr<TrainBatch> batch;
  if (inline_) {
    {
      absl::MutexLock lock(&mutex_);
      if (stopped_) return absl::CancelledError("batch pipeline stopped");
      if (next_take_ >= specs_.size()) return std::nullopt;
      index = next_take_++;
    }
    batch = MakeGuarded(specs_[index]);
  } else {
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(this, &BatchPipeline::CanTake));
    if (stopped_) return absl::CancelledError("batch pipeline stopped");
    auto ready = ready_.find(next_take_);
    if (ready == ready_.end()) return std::nullopt;
    batch = std::move(ready->second);
    ready_.erase(ready);
    ++next_take_;
  }
  if (!batch.ok()) {
    // After an error nothing more is handed out.
    absl::MutexLock lock(&mutex_);
    stopped_ = true;
    return batch.status();
  }
  return std::optional<TrainBatch>(std::move(*batch));
}

}  // namespace echofed
