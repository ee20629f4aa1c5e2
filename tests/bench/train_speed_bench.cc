// Training-step throughput of echofed's models against plain PyTorch.
//
// One training step is what site-agent/training/trainer.cc does per batch:
// forward, cross-entropy, backward, SGD (lr 0.01, momentum 0.9, weight decay
// 1e-4). Batches come from a synthetic data pipeline on a background thread:
// 8-bit "decoded" images 15% larger than the model input (decoding itself
// is decode_bench's business) are resized bilinearly, standardised per
// image and stacked, two batches ahead of the trainer. "data wait" is the
// time the trainer spent blocked on that queue (~0 when loading keeps up;
// --prefetch=false loads inline and shows what prefetching hides).
//
// The PyTorch reference, tests/bench/train_speed_reference.py, builds the
// same architecture (checked by parameter count here and by loading an
// echofed checkpoint in tests/models/checkpoint_reference_test.py), runs
// the same pipeline and step with the same number of intra-op threads, and
// is run by this program with Debian's python3-torch. Without it the
// comparison is skipped with a message (exit 0).
//
//   ./build/bin/train_speed_bench [--model resnet18] [--size 224]
//       [--batch 16] [--steps 8] [--warmup 2] [--threads 0] [--rounds 1]
//       [--prefetch true] [--python /usr/bin/python3] [--reference PATH]
//       [--device cpu|cuda|cuda:N|auto] [--amp] [--channels-last auto]
//       [--trainer]
//
// --rounds N alternates the two sides N times and reports medians, for a
// machine shared with other work (the load then hits both alike).
// images/s is batch * steps / wall time of the timed steps (data wait
// included); step ms is the median compute time of one step, and fwd / bwd
// / opt ms the medians of its phases (forward + loss, backward, optimizer).
// Exit status: 0, or 1 when a side fails or the thread counts differ.
//
// --device cuda[:N] runs both sides on that GPU (the reference with the
// --python given: the GPU machine's own PyTorch), as the trainer does:
// batches pinned by the loader thread and copied with non_blocking, the
// model in channels_last (--channels-last auto: on CUDA only), cuDNN
// benchmarking on, and with --amp bfloat16 autocast (ignored on CPU). The
// device is synchronised only at the ends of the timed steps, so on CUDA
// images/s is the measure and step ms is wall time / steps; the phases
// would need a synchronisation each and show "-".
//
// --trainer times site-agent's TrainLocal itself (augmentation STRONG, the
// batch pipeline of batch_pipeline.h) over --steps batches with its
// pipeline on (--loader-workers threads, two batches ahead) and off
// (batches assembled on the training thread; --pipeline picks): per step
// the time the step waited for its batch and the rest. The images are
// random, at most 16 batches of them, repeated as epochs. No reference.

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "models/classifier.h"
#include "models/torch_compat.h"
#include "site-agent/training/host_allocator.h"
#include "site-agent/training/trainer.h"
#include "torch/torch.h"

#ifndef ECHOFED_SOURCE_DIR
#define ECHOFED_SOURCE_DIR "."
#endif

namespace {

constexpr int kClasses = 3;

struct Options {
  std::string model = "resnet18";
  int size = 224;
  int batch = 16;
  int steps = 8;
  int warmup = 2;
  int threads = 0;  // 0: LibTorch's default
  int rounds = 1;
  bool prefetch = true;
  std::string device = "cpu";
  bool amp = false;
  std::string channels_last = "auto";
  bool trainer = false;
  std::string pipeline = "both";
  int loader_workers = 1;
  // echofed's side with the agent's allocator settings (host_allocator.h).
  bool tune_allocator = true;
  std::string python = "/usr/bin/python3";
  std::string reference =
      ECHOFED_SOURCE_DIR "/tests/bench/train_speed_reference.py";
};

struct Result {
  std::string implementation;
  int threads = 0;
  double images_per_s = 0;
  double step_ms_median = 0;
  double data_wait_s = 0;
  // Medians of the step's phases: forward + loss, backward, optimizer.
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
};

struct Batch {
  torch::Tensor images;  // [B, 1, S, S] float32
  torch::Tensor labels;  // [B] int64
};

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

// Synthetic decode + preprocess, in plain C++ on the calling thread (no
// intra-op parallelism, so a loader thread never competes with the step's
// thread pool for more than its own core share). The Python reference does
// the same arithmetic with numpy.
class BatchMaker {
 public:
  BatchMaker(int size, int batch, bool pin = false)
      : pin_(pin),
        size_(size),
        batch_(batch),
        source_(static_cast<int>(std::lround(size * 1.15))) {
    std::mt19937 rng(1);
    std::uniform_int_distribution<int> byte(0, 255);
    pool_.resize(8, std::vector<uint8_t>(size_t(source_) * source_));
    for (auto& image : pool_) {
      for (uint8_t& pixel : image) pixel = static_cast<uint8_t>(byte(rng));
    }
    // Bilinear with half-pixel centres (align_corners=false), clamped.
    const double scale = static_cast<double>(source_) / size_;
    for (int i = 0; i < size_; ++i) {
      double centre = std::clamp((i + 0.5) * scale - 0.5, 0.0,
                                 static_cast<double>(source_ - 1));
      int i0 = static_cast<int>(std::floor(centre));
      i0_.push_back(i0);
      i1_.push_back(std::min(i0 + 1, source_ - 1));
      w_.push_back(static_cast<float>(centre - i0));
    }
  }

  Batch Make() {
    Batch batch{torch::empty({batch_, 1, size_, size_}),
                torch::empty({batch_}, torch::kInt64)};
    std::vector<float> rows(size_t(size_) * source_);
    for (int b = 0; b < batch_; ++b) {
      const std::vector<uint8_t>& image = pool_[next_ % pool_.size()];
      batch.labels.data_ptr<int64_t>()[b] = next_ % kClasses;
      ++next_;
      // Rows first: [size, source], then columns.
      for (int y = 0; y < size_; ++y) {
        const uint8_t* r0 = &image[size_t(i0_[y]) * source_];
        const uint8_t* r1 = &image[size_t(i1_[y]) * source_];
        float* out = &rows[size_t(y) * source_];
        for (int x = 0; x < source_; ++x) {
          out[x] = r0[x] * (1 - w_[y]) + r1[x] * w_[y];
        }
      }
      float* out = batch.images[b].data_ptr<float>();
      double sum = 0, sum_squares = 0;
      for (int y = 0; y < size_; ++y) {
        const float* row = &rows[size_t(y) * source_];
        for (int x = 0; x < size_; ++x) {
          float value =
              (row[i0_[x]] * (1 - w_[x]) + row[i1_[x]] * w_[x]) / 255.0f;
          out[size_t(y) * size_ + x] = value;
          sum += value;
          sum_squares += double(value) * value;
        }
      }
      const double n = double(size_) * size_;
      const double mean = sum / n;
      const double std =
          std::sqrt(std::max(0.0, sum_squares / n - mean * mean));
      const float inverse = static_cast<float>(1 / std::max(std, 1e-6));
      for (int64_t i = 0; i < int64_t(size_) * size_; ++i) {
        out[i] = (out[i] - static_cast<float>(mean)) * inverse;
      }
    }
    // For an asynchronous copy to the GPU (a CPU-only LibTorch has no
    // pinned memory; pin_ is only set with a CUDA device).
    if (pin_) {
      batch.images = batch.images.pin_memory();
      batch.labels = batch.labels.pin_memory();
    }
    return batch;
  }

 private:
  bool pin_;
  int size_, batch_, source_;
  std::vector<std::vector<uint8_t>> pool_;
  std::vector<int> i0_, i1_;
  std::vector<float> w_;
  int64_t next_ = 0;
};

// A bounded queue filled by one producer thread: `count` batches, at most
// `depth` ahead. Thread-safe; the destructor joins the producer.
class Prefetcher {
 public:
  Prefetcher(BatchMaker* maker, int count, int depth) : depth_(depth) {
    producer_ = std::thread([this, maker, count] {
      for (int i = 0; i < count; ++i) {
        Batch batch = maker->Make();
        absl::MutexLock lock(&mutex_);
        mutex_.Await(absl::Condition(
            +[](Prefetcher* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mutex_) {
              return self->stop_ ||
                     static_cast<int>(self->ready_.size()) < self->depth_;
            },
            this));
        if (stop_) return;
        ready_.push_back(std::move(batch));
      }
    });
  }
  ~Prefetcher() {
    {
      absl::MutexLock lock(&mutex_);
      stop_ = true;
    }
    producer_.join();
  }

  Batch Next() {
    absl::MutexLock lock(&mutex_);
    mutex_.Await(absl::Condition(
        +[](std::deque<Batch>* ready) { return !ready->empty(); }, &ready_));
    Batch batch = std::move(ready_.front());
    ready_.pop_front();
    return batch;
  }

 private:
  const int depth_;
  absl::Mutex mutex_;
  std::deque<Batch> ready_ ABSL_GUARDED_BY(mutex_);
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread producer_;
};

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

// bfloat16 autocast on CUDA for its scope (as trainer.cc's AutocastScope).
class CudaAutocast {
 public:
  explicit CudaAutocast(bool enable) : enabled_(enable) {
    if (!enabled_) return;
    echofed::torch_compat::SetCudaAutocastDtype(at::kBFloat16);
    echofed::torch_compat::SetCudaAutocastEnabled(true);
  }
  ~CudaAutocast() {
    if (!enabled_) return;
    echofed::torch_compat::SetCudaAutocastEnabled(false);
    echofed::torch_compat::ClearAutocastCache();
  }

 private:
  bool enabled_;
};

bool UseChannelsLast(const Options& options, const torch::Device& device) {
  return options.channels_last == "auto" ? device.is_cuda()
                                         : options.channels_last == "true";
}

std::optional<Result> RunEchofed(const Options& options,
                                 const torch::Device& device,
                                 int64_t* parameters) {
  torch::manual_seed(1);
  absl::StatusOr<std::shared_ptr<echofed::ImageClassifierImpl>> created =
      echofed::CreateClassifier({options.model, kClasses});
  if (!created.ok()) {
    std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
    return std::nullopt;
  }
  echofed::ImageClassifierImpl& model = **created;
  *parameters = 0;
  for (const torch::Tensor& parameter : model.parameters()) {
    *parameters += parameter.numel();
  }
  const bool cuda = device.is_cuda();
  const bool channels_last = UseChannelsLast(options, device);
  model.to(device);
  if (channels_last) {
    echofed::SetConvMemoryFormat(model, torch::MemoryFormat::ChannelsLast);
  }
  model.train();
  torch::optim::SGD optimizer(
      model.parameters(),
      torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4));
  BatchMaker maker(options.size, options.batch, /*pin=*/cuda);
  const int total = options.warmup + options.steps;
  std::optional<Prefetcher> prefetcher;
  if (options.prefetch) prefetcher.emplace(&maker, total, /*depth=*/2);

  std::vector<double> step_seconds, forward_seconds, backward_seconds,
      optimizer_seconds;
  double data_wait = 0;
  Clock::time_point timed_start;
  for (int step = 0; step < total; ++step) {
    if (step == options.warmup) {
      if (cuda) torch::cuda::synchronize();
      timed_start = Clock::now();
    }
    const Clock::time_point start = Clock::now();
    Batch batch = prefetcher ? prefetcher->Next() : maker.Make();
    const Clock::time_point fetched = Clock::now();
    torch::Tensor images = batch.images.to(device, /*non_blocking=*/true);
    if (channels_last) {
      images = images.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    torch::Tensor labels = batch.labels.to(device, /*non_blocking=*/true);
    echofed::ReleaseGradients(optimizer);
    torch::Tensor logits;
    {
      CudaAutocast autocast(cuda && options.amp);
      logits = model.forward(images);
    }
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits.to(torch::kFloat32), labels);
    const Clock::time_point forwarded = Clock::now();
    loss.backward();
    const Clock::time_point backwarded = Clock::now();
    optimizer.step();
    const Clock::time_point done = Clock::now();
    if (step >= options.warmup) {
      data_wait += Seconds(fetched - start);
      step_seconds.push_back(Seconds(done - fetched));
      forward_seconds.push_back(Seconds(forwarded - fetched));
      backward_seconds.push_back(Seconds(backwarded - forwarded));
      optimizer_seconds.push_back(Seconds(done - backwarded));
    }
  }
  if (cuda) torch::cuda::synchronize();
  const double wall = Seconds(Clock::now() - timed_start);
  Result result;
  result.implementation = "echofed (LibTorch " TORCH_VERSION ")";
  result.threads = at::get_num_threads();
  result.images_per_s = double(options.batch) * options.steps / wall;
  result.step_ms_median = 1000 * Median(step_seconds);
  result.data_wait_s = data_wait;
  result.forward_ms = 1000 * Median(forward_seconds);
  result.backward_ms = 1000 * Median(backward_seconds);
  result.optimizer_ms = 1000 * Median(optimizer_seconds);
  if (cuda) {
    // Without a synchronisation per phase these would be launch times.
    result.step_ms_median = 1000 * wall / options.steps;
    result.forward_ms = result.backward_ms = result.optimizer_ms = 0;
  }
  return result;
}

// A number field of the reference's one-line JSON result (flat, no
// nesting, so a full JSON parser is not needed).
std::optional<double> JsonNumber(const std::string& json,
                                 const std::string& key) {
  const std::string quoted = absl::StrCat("\"", key, "\": ");
  size_t at = json.find(quoted);
  if (at == std::string::npos) return std::nullopt;
  at += quoted.size();
  size_t end = json.find_first_of(",}", at);
  double value = 0;
  if (!absl::SimpleAtod(json.substr(at, end - at), &value)) {
    return std::nullopt;
  }
  return value;
}

// A string field without escapes.
std::string JsonString(const std::string& json, const std::string& key) {
  const std::string quoted = absl::StrCat("\"", key, "\": \"");
  size_t at = json.find(quoted);
  if (at == std::string::npos) return "PyTorch";
  at += quoted.size();
  return json.substr(at, json.find('"', at) - at);
}

enum class ReferenceOutcome { kRan, kSkipped, kFailed };

ReferenceOutcome RunReference(const Options& options,
                              const torch::Device& device, int threads,
                              int64_t parameters, Result* result) {
  if (::access(options.python.c_str(), X_OK) != 0) {
    std::printf("PyTorch reference skipped: no %s\n", options.python.c_str());
    return ReferenceOutcome::kSkipped;
  }
  char log_template[] = "/tmp/train_speed_reference.XXXXXX";
  const int fd = ::mkstemp(log_template);
  if (fd < 0) {
    std::perror("mkstemp");
    return ReferenceOutcome::kFailed;
  }
  ::close(fd);
  const std::string log = log_template;
  std::vector<std::string> argv = {
      options.python,    options.reference,
      "--model",         options.model,
      "--size",          std::to_string(options.size),
      "--batch",         std::to_string(options.batch),
      "--steps",         std::to_string(options.steps),
      "--warmup",        std::to_string(options.warmup),
      "--threads",       std::to_string(threads),
      "--expect-params", std::to_string(parameters)};
  if (!options.prefetch) argv.push_back("--no-prefetch");
  argv.insert(argv.end(),
              {"--device", device.str(), "--channels-last",
               UseChannelsLast(options, device) ? "true" : "false"});
  if (options.amp && device.is_cuda()) argv.push_back("--amp");
  absl::StatusOr<echofed::Subprocess> child =
      echofed::Subprocess::Start(argv, log);
  std::optional<int> exit_code;
  if (child.ok()) exit_code = child->Wait(absl::Hours(1));
  absl::StatusOr<std::string> output = echofed::ReadFileToString(log);
  ::unlink(log.c_str());
  if (!child.ok() || !exit_code || !output.ok()) {
    std::fprintf(stderr, "PyTorch reference did not run: %s\n",
                 !child.ok() ? child.status().ToString().c_str() : "timeout");
    return ReferenceOutcome::kFailed;
  }
  if (*exit_code == 77) {
    std::printf("PyTorch reference skipped: %s\n",
                std::string(absl::StripSuffix(*output, "\n")).c_str());
    return ReferenceOutcome::kSkipped;
  }
  std::string json;
  for (absl::string_view line : absl::StrSplit(*output, '\n')) {
    if (absl::ConsumePrefix(&line, "RESULT ")) json = std::string(line);
  }
  auto number = [&json](const char* key) { return JsonNumber(json, key); };
  if (*exit_code != 0 || json.empty() || !number("images_per_s") ||
      !number("step_ms_median") || !number("data_wait_s") ||
      !number("threads")) {
    std::fprintf(stderr, "PyTorch reference failed (exit %d):\n%s\n",
                 *exit_code, output->c_str());
    return ReferenceOutcome::kFailed;
  }
  result->implementation = JsonString(json, "implementation");
  result->threads = static_cast<int>(*number("threads"));
  result->images_per_s = *number("images_per_s");
  result->step_ms_median = *number("step_ms_median");
  result->data_wait_s = *number("data_wait_s");
  result->forward_ms = number("forward_ms").value_or(0);
  result->backward_ms = number("backward_ms").value_or(0);
  result->optimizer_ms = number("optimizer_ms").value_or(0);
  return ReferenceOutcome::kRan;
}

// Field by field medians of several runs of one side.
Result MedianResult(const std::vector<Result>& runs) {
  auto median = [&runs](double Result::*field) {
    std::vector<double> values;
    for (const Result& run : runs) values.push_back(run.*field);
    return Median(values);
  };
  Result result = runs.front();
  result.images_per_s = median(&Result::images_per_s);
  result.step_ms_median = median(&Result::step_ms_median);
  result.data_wait_s = median(&Result::data_wait_s);
  result.forward_ms = median(&Result::forward_ms);
  result.backward_ms = median(&Result::backward_ms);
  result.optimizer_ms = median(&Result::optimizer_ms);
  return result;
}

void PrintRow(const Result& result, const std::string& ratio) {
  auto phase = [&result](double ms) {
    return result.forward_ms + result.backward_ms + result.optimizer_ms > 0
               ? absl::StrFormat("%7.1f", ms)
               : absl::StrFormat("%7s", "-");
  };
  std::printf("%-30s %8d %10.1f %14.1f %14.3f %8s   %s %s %s\n",
              result.implementation.c_str(), result.threads,
              result.images_per_s, result.step_ms_median, result.data_wait_s,
              ratio.c_str(), phase(result.forward_ms).c_str(),
              phase(result.backward_ms).c_str(),
              phase(result.optimizer_ms).c_str());
}

// TrainLocal on `steps` batches of random images, with the batch pipeline
// on (one loader thread) and off; --rounds alternates them.
int RunTrainer(const Options& options, const torch::Device& device) {
  torch::manual_seed(1);
  echofed::ImageSet data;
  // At most 16 batches of images (memory), repeated over epochs.
  const int per_epoch = std::min(options.steps, 16);
  const int64_t n = int64_t(options.batch) * per_epoch;
  data.images = torch::randn({n, 1, options.size, options.size});
  data.labels = torch::arange(n, torch::kInt64).remainder(kClasses);
  echofed::TrainOptions train;
  train.class_count = kClasses;
  train.batch_size = options.batch;
  train.epochs = (options.steps + per_epoch - 1) / per_epoch;
  train.device = device;
  train.mixed_precision = options.amp;
  train.channels_last = UseChannelsLast(options, device);
  std::printf("\n%-24s %6s %10s %16s %16s %12s\n", "TrainLocal pipeline",
              "steps", "images/s", "wait ms/step", "compute ms/step",
              "wait share");
  for (int round = 0; round < options.rounds; ++round) {
    std::vector<int> settings;
    if (options.pipeline != "off") settings.push_back(options.loader_workers);
    if (options.pipeline != "on") settings.push_back(0);
    for (int workers : settings) {
      torch::manual_seed(1);
      absl::StatusOr<std::shared_ptr<echofed::ImageClassifierImpl>> model =
          echofed::CreateClassifier({options.model, kClasses});
      if (!model.ok()) {
        std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
        return 1;
      }
      train.loader_workers = workers;
      // The first batches (allocator, cuDNN's search) on a small warm-up.
      echofed::ImageSet warmup;
      const int64_t w = std::min<int64_t>(n, int64_t(options.batch) * 2);
      warmup.images = data.images.slice(0, 0, w);
      warmup.labels = data.labels.slice(0, 0, w);
      echofed::TrainOptions first = train;
      first.epochs = 1;
      absl::StatusOr<echofed::TrainResult> result =
          echofed::TrainLocal(**model, warmup, first);
      if (result.ok()) result = echofed::TrainLocal(**model, data, train);
      if (!result.ok()) {
        std::fprintf(stderr, "%s\n", result.status().ToString().c_str());
        return 1;
      }
      const double steps = std::max<int64_t>(1, result->steps);
      const double wait = result->data_wait_seconds;
      std::printf("%-24s %6lld %10.1f %16.1f %16.1f %11.0f%%\n",
                  workers > 0 ? absl::StrFormat("on (%d loader thread%s)",
                                                workers, workers > 1 ? "s" : "")
                                    .c_str()
                              : "off (inline)",
                  static_cast<long long>(result->steps),
                  result->steps * options.batch / result->train_seconds,
                  1000 * wait / steps,
                  1000 * (result->train_seconds - wait) / steps,
                  100 * wait / result->train_seconds);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{"Training-step throughput: echofed (LibTorch C++) vs PyTorch"};
  app.add_option("--model", options.model, "registry name")
      ->capture_default_str();
  app.add_option("--size", options.size, "image side in pixels")
      ->capture_default_str()
      ->check(CLI::Range(16, 4096));
  app.add_option("--batch", options.batch, "images per step")
      ->capture_default_str()
      ->check(CLI::Range(2, 4096));
  app.add_option("--steps", options.steps, "timed steps")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--warmup", options.warmup, "untimed steps first")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--threads", options.threads,
                 "intra-op threads for both sides (0: LibTorch's default)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--rounds", options.rounds,
                 "alternate the two sides this many times; medians")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_option("--prefetch", options.prefetch,
                 "prepare batches on a background thread")
      ->capture_default_str();
  app.add_option("--device", options.device, "cpu, cuda, cuda:N or auto")
      ->capture_default_str();
  app.add_flag("--amp", options.amp,
               "bfloat16 autocast on CUDA (ignored on CPU)");
  app.add_option("--channels-last", options.channels_last,
                 "channels_last model and images (auto: on CUDA only)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "true", "false"}));
  app.add_flag("--trainer", options.trainer,
               "time TrainLocal with its batch pipeline on and off");
  app.add_option("--pipeline", options.pipeline,
                 "with --trainer: on, off or both")
      ->capture_default_str()
      ->check(CLI::IsMember({"both", "on", "off"}));
  app.add_option("--loader-workers", options.loader_workers,
                 "with --trainer: loader threads when the pipeline is on")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--tune-allocator", options.tune_allocator,
                 "echofed's side with the agent's glibc allocator settings "
                 "(1/0; the PyTorch side keeps Python's)")
      ->capture_default_str();
  app.add_option("--python", options.python,
                 "interpreter with torch (Debian's python3-torch)")
      ->capture_default_str();
  app.add_option("--reference", options.reference, "train_speed_reference.py")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  // As the agent does at start; the reference runs in its own process.
  const bool tuned =
      options.tune_allocator && echofed::TuneHostAllocatorForTraining();
  if (options.threads > 0) at::set_num_threads(options.threads);
  const int threads = at::get_num_threads();
  absl::StatusOr<torch::Device> device = echofed::ResolveDevice(options.device);
  if (!device.ok()) {
    std::fprintf(stderr, "%s\n", device.status().ToString().c_str());
    return 1;
  }
  if (device->is_cuda()) {
    echofed::torch_compat::SetDeterminism(
        echofed::torch_compat::FastTraining());
  }
  std::printf(
      "model %s, %dx%d, 1 channel, batch %d, %d warm-up + %d timed steps, "
      "%d intra-op thread(s), data %s\n"
      "device %s, %s, channels_last %s, echofed allocator %s\n",
      options.model.c_str(), options.size, options.size, options.batch,
      options.warmup, options.steps, threads,
      options.prefetch ? "prefetched on a background thread" : "inline",
      device->str().c_str(),
      device->is_cuda()
          ? (options.amp ? "bfloat16 autocast" : "float32")
          : (options.amp ? "float32 (--amp is ignored on CPU)" : "float32"),
      UseChannelsLast(options, *device) ? "on" : "off",
      tuned ? "tuned (host_allocator.h)" : "glibc defaults");
  std::fflush(stdout);
  if (options.trainer) return RunTrainer(options, *device);

  // Sides alternate, so that a load that comes and goes on a shared machine
  // hits both alike; each figure is the median over the rounds.
  std::vector<Result> echofed_runs, reference_runs;
  int64_t parameters = 0;
  ReferenceOutcome outcome = ReferenceOutcome::kRan;
  for (int round = 0; round < options.rounds; ++round) {
    std::optional<Result> result = RunEchofed(options, *device, &parameters);
    if (!result) return 1;
    echofed_runs.push_back(*result);
    if (outcome != ReferenceOutcome::kRan) continue;
    Result reference;
    outcome = RunReference(options, *device, threads, parameters, &reference);
    if (outcome == ReferenceOutcome::kFailed) return 1;
    if (outcome == ReferenceOutcome::kRan) reference_runs.push_back(reference);
  }
  const Result echofed_result = MedianResult(echofed_runs);
  Result reference;
  if (outcome == ReferenceOutcome::kRan) {
    reference = MedianResult(reference_runs);
  }

  std::printf("\n%-30s %8s %10s %14s %14s %8s   %7s %7s %7s\n",
              "implementation", "threads", "images/s", "step ms (med)",
              "data wait s", "ratio", "fwd ms", "bwd ms", "opt ms");
  if (outcome == ReferenceOutcome::kRan) {
    PrintRow(echofed_result,
             absl::StrFormat(
                 "%.2f", echofed_result.images_per_s / reference.images_per_s));
    PrintRow(reference, "1.00");
    std::printf(
        "ratio: echofed images/s / PyTorch images/s (> 1: echofed "
        "faster); %s parameters; medians of %d round(s)\n",
        absl::StrCat(parameters).c_str(), options.rounds);
    if (reference.threads != threads) {
      std::fprintf(stderr,
                   "intra-op threads differ: echofed %d, PyTorch %d; the "
                   "comparison is void\n",
                   threads, reference.threads);
      return 1;
    }
  } else {
    PrintRow(echofed_result, "-");
  }
  return 0;
}
