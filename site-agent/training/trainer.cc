#include "site-agent/training/trainer.h"

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "common/plan_util.h"
#include "models/torch_compat.h"
#include "site-agent/training/batch_pipeline.h"

namespace echofed {

void ReleaseGradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (torch::Tensor& parameter : group.params()) {
      parameter.mutable_grad().reset();
    }
  }
}

absl::StatusOr<torch::Device> ResolveDevice(const std::string& requested) {
  if (requested.empty() || requested == "auto") {
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA)
                                       : torch::Device(torch::kCPU);
  }
  if (requested == "cpu") return torch::Device(torch::kCPU);
  if (requested.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          "device 'cuda' requested, but this LibTorch build has no CUDA or no "
          "GPU is visible (build against a CUDA LibTorch; see README)");
    }
    try {
      return torch::Device(requested);
    } catch (const c10::Error& error) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad device '", requested, "'"));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "device must be auto, cpu or cuda[:N], not '", requested, "'"));
}

double ScheduledLearningRate(const Plan& plan, int round) {
  if (plan.schedule() != Plan::COSINE || plan.rounds() <= 1) {
    return plan.learning_rate();
  }
  // From learning_rate at round 1 down to learning_rate / 20 at the last.
  const double progress = std::clamp(
      (round - 1) / static_cast<double>(plan.rounds() - 1), 0.0, 1.0);
  const double floor = plan.learning_rate() / 20;
  return floor + (plan.learning_rate() - floor) * 0.5 *
                     (1 + std::cos(3.14159265358979323846 * progress));
}

TrainOptions TrainOptionsFromPlan(const Plan& plan, int round) {
  TrainOptions options;
  options.trainer = plan.trainer();
  options.class_count = plan.class_names_size();
  options.epochs = plan.local_epochs();
  options.batch_size = plan.batch_size();
  options.learning_rate = ScheduledLearningRate(plan, round);
  options.weight_decay = plan.has_weight_decay()
                             ? plan.weight_decay()
                             : DefaultWeightDecay(plan.trainer());
  options.augment = !plan.has_augment() || plan.augment();
  options.augmentation =
      plan.augmentation() == Plan::MILD ? Plan::MILD : Plan::STRONG;
  options.loss = plan.loss();
  options.focal_gamma = plan.has_focal_gamma() ? plan.focal_gamma() : 2.0;
  options.mixup_alpha = plan.mixup_alpha();
  options.proximal_mu =
      plan.strategy() == Plan::FEDPROX ? plan.proximal_mu() : 0.0;
  options.seed = plan.seed() * 1000003 + static_cast<uint64_t>(round);
  options.deterministic = plan.deterministic();
  if (plan.schedule() == Plan::COSINE_OVER_RUN && plan.rounds() > 0) {
    options.cosine_over_run = true;
    options.run_progress_begin =
        std::clamp((round - 1) / static_cast<double>(plan.rounds()), 0.0, 1.0);
    options.run_progress_end =
        std::clamp(round / static_cast<double>(plan.rounds()), 0.0, 1.0);
  }
  return options;
}

torch::Tensor CoxLoss(torch::Tensor risk, torch::Tensor months,
                      torch::Tensor event) {
  torch::Tensor events = event.sum();
  if (events.item<double>() == 0) return risk.sum() * 0;
  // Latest times first: the risk set of each patient is everyone before it
  // in this order (follow-up at least as long).
  torch::Tensor order = torch::argsort(months, /*dim=*/0, /*descending=*/true);
  torch::Tensor sorted_risk = risk.index_select(0, order);
  torch::Tensor sorted_event = event.index_select(0, order);
  torch::Tensor log_risk_set = torch::logcumsumexp(sorted_risk, 0);
  return -((sorted_risk - log_risk_set) * sorted_event).sum() / events;
}

namespace {

// The optimiser of the plan, with the given rate and weight decay.
std::unique_ptr<torch::optim::Optimizer> NewOptimizer(
    ImageClassifierImpl& model, const TrainOptions& options) {
  if (options.trainer == Plan::ADAM) {
    return std::make_unique<torch::optim::Adam>(
        model.parameters(), torch::optim::AdamOptions(options.learning_rate)
                                .weight_decay(options.weight_decay));
  }
  if (options.trainer == Plan::ADAMW) {
    return std::make_unique<torch::optim::AdamW>(
        model.parameters(), torch::optim::AdamWOptions(options.learning_rate)
                                .weight_decay(options.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(
      model.parameters(), torch::optim::SGDOptions(options.learning_rate)
                              .momentum(0.9)
                              .weight_decay(options.weight_decay));
}

void SetLearningRate(torch::optim::Optimizer& optimizer, double rate) {
  for (torch::optim::OptimizerParamGroup& group : optimizer.param_groups()) {
    group.options().set_lr(rate);
  }
}

absl::Status RestoreOptimizerState(const std::string& state,
                                   torch::Device device,
                                   torch::optim::Optimizer& optimizer) {
  // LibTorch restores only the per-parameter state (moments, step counts),
  // not the parameter groups' options: this round's rate and decay, which
  // the optimiser was built with, stay (KeptOptimizerStateTakesThisRoundsRate).
  try {
    std::istringstream in(state);
    torch::serialize::InputArchive archive;
    archive.load_from(in, device);
    optimizer.load(archive);
  } catch (const c10::Error& error) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the optimiser state kept from the previous round does not fit this "
        "model: ",
        error.what_without_backtrace()));
  }
  return absl::OkStatus();
}

std::string SaveOptimizerState(torch::optim::Optimizer& optimizer) {
  torch::serialize::OutputArchive archive;
  optimizer.save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

// Cross-entropy, or focal loss (Lin et al. 2017), with per-class weights;
// both normalised by the weights of the batch, as torch's weighted mean.
torch::Tensor SubtypeLoss(torch::Tensor logits, torch::Tensor labels,
                          torch::Tensor weights, Plan::Loss loss, double gamma,
                          double label_smoothing = 0) {
  if (loss != Plan::FOCAL) {
    return torch::nn::functional::cross_entropy(
        logits, labels,
        torch::nn::functional::CrossEntropyFuncOptions()
            .weight(weights)
            .label_smoothing(label_smoothing));
  }
  torch::Tensor log_p =
      torch::log_softmax(logits, 1).gather(1, labels.unsqueeze(1)).squeeze(1);
  torch::Tensor w = weights.index_select(0, labels);
  torch::Tensor focal = torch::pow(1 - log_p.exp(), gamma) * -log_p;
  return (w * focal).sum() / w.sum().clamp_min(1e-12);
}

// Binary cross-entropy over the known labels (NaN = unknown).
torch::Tensor MaskedBinaryLoss(torch::Tensor logits, torch::Tensor targets) {
  torch::Tensor known = ~torch::isnan(targets);
  if (!known.any().item<bool>()) return logits.sum() * 0;
  return torch::nn::functional::binary_cross_entropy_with_logits(
      logits.index({known}), targets.index({known}));
}

// On CUDA, bfloat16 autocast for the forward pass; restored on exit.
class AutocastScope {
 public:
  explicit AutocastScope(bool enable) : enabled_(enable) {
    if (!enabled_) return;
    previous_ = torch_compat::IsCudaAutocastEnabled();
    torch_compat::SetCudaAutocastDtype(at::kBFloat16);
    torch_compat::SetCudaAutocastEnabled(true);
  }
  ~AutocastScope() {
    if (!enabled_) return;
    torch_compat::SetCudaAutocastEnabled(previous_);
    torch_compat::ClearAutocastCache();
  }

 private:
  bool enabled_;
  bool previous_ = false;
};

}  // namespace

void SetConvMemoryFormat(ImageClassifierImpl& model,
                         torch::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  auto convert = [format](torch::Tensor tensor) {
    if (tensor.defined() && tensor.dim() == 4 && tensor.is_floating_point() &&
        !tensor.is_contiguous(format)) {
      tensor.set_data(tensor.contiguous(format));
    }
  };
  for (torch::Tensor& parameter : model.parameters()) convert(parameter);
  for (torch::Tensor& buffer : model.buffers()) convert(buffer);
}

namespace {

// Training's memory format for the duration of TrainLocal; the default
// (contiguous) format again on every exit, as the exchanged state expects.
class MemoryFormatScope {
 public:
  MemoryFormatScope(ImageClassifierImpl& model, bool channels_last)
      : model_(model), channels_last_(channels_last) {
    if (channels_last_) {
      SetConvMemoryFormat(model_, torch::MemoryFormat::ChannelsLast);
    }
  }
  ~MemoryFormatScope() {
    if (channels_last_) {
      SetConvMemoryFormat(model_, torch::MemoryFormat::Contiguous);
    }
  }

 private:
  ImageClassifierImpl& model_;
  bool channels_last_;
};

// The determinism switches for one call; the previous ones on exit. The
// CPU path without `deterministic` leaves them alone.
class DeterminismScope {
 public:
  DeterminismScope(bool deterministic, torch::Device device)
      : active_(deterministic || device.is_cuda()),
        previous_(torch_compat::CurrentDeterminism()) {
    if (!active_) return;
    if (deterministic && device.is_cuda()) {
      // cuBLAS reads it when it makes a handle; a handle made earlier in
      // the process keeps its workspace (README, "GPU and performance").
      ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    }
    torch_compat::SetDeterminism(deterministic
                                     ? torch_compat::DeterministicTraining()
                                     : torch_compat::FastTraining());
  }
  ~DeterminismScope() {
    if (active_) torch_compat::SetDeterminism(previous_);
  }

 private:
  bool active_;
  torch_compat::DeterminismState previous_;
};

}  // namespace

absl::StatusOr<TrainResult> TrainLocal(ImageClassifierImpl& model,
                                       const ImageSet& data,
                                       const TrainOptions& options) {
  TrainResult result;
  result.num_samples = data.size();
  if (data.size() == 0) {
    return absl::FailedPreconditionError("no training images at this site");
  }
  if (options.trainer == Plan::NOOP) {
    torch::NoGradGuard no_grad;
    for (torch::Tensor& parameter : model.parameters()) parameter.add_(1e-6);
    return result;
  }
  if (model.uses_clinical() && !data.clinical.defined()) {
    return absl::FailedPreconditionError(
        "the plan's model reads clinical data, and none was loaded");
  }
  // The model's own randomness (dropout) draws from the global generator on
  // this thread; the batches draw from their own (batch_pipeline.h).
  torch::manual_seed(options.seed);
  DeterminismScope determinism(options.deterministic, options.device);
  model.to(options.device);
  model.train();
  const bool channels_last =
      options.channels_last.value_or(options.device.is_cuda());
  MemoryFormatScope memory_format(model, channels_last);

  // Inverse-frequency class weights; classes absent here get weight 0 so
  // they neither help nor hurt.
  torch::Tensor counts =
      torch::bincount(data.labels, /*weights=*/{}, options.class_count)
          .to(torch::kFloat32);
  torch::Tensor weights = torch::where(
      counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()),
      torch::zeros_like(counts));
  weights = weights.to(options.device);

  std::unique_ptr<torch::optim::Optimizer> optimizer =
      NewOptimizer(model, options);
  if (options.optimizer_state != nullptr && !options.optimizer_state->empty()) {
    if (absl::Status status = RestoreOptimizerState(*options.optimizer_state,
                                                    options.device, *optimizer);
        !status.ok()) {
      model.to(torch::kCPU);
      return status;
    }
  }
  std::vector<torch::Tensor> start;
  if (options.proximal_mu > 0) {
    for (const torch::Tensor& parameter : model.parameters()) {
      start.push_back(parameter.detach().clone());
    }
  }
  const bool autocast = options.mixed_precision && options.device.is_cuda();

  int batches = 0;
  std::vector<BatchSpec> specs = PlanBatches(
      data.size(), options.batch_size, options.epochs, options.seed, &batches);
  BatchAssembly assembly;
  assembly.augment = options.augment;
  assembly.augmentation = options.augmentation;
  assembly.pin_memory = options.device.is_cuda();
  BatchPipelineOptions pipeline_options;
  pipeline_options.workers = options.loader_workers;
  pipeline_options.depth = options.loader_depth;
  BatchPipeline pipeline(
      std::move(specs),
      [&data, assembly](const BatchSpec& spec) {
        return AssembleBatch(data, spec, assembly);
      },
      pipeline_options);

  // A step's loss is read (a device synchronisation on CUDA) only after
  // the next step has been queued, so that the device always has work.
  struct PendingLoss {
    torch::Tensor loss;
    int epoch = 0;
    int index = 0;
    int64_t size = 0;
  };
  std::optional<PendingLoss> pending;
  int accounted_epoch = 0;
  double loss_sum = 0;
  int64_t seen = 0;
  auto account = [&](const PendingLoss& step) -> absl::Status {
    const double value = step.loss.item<double>();
    if (!std::isfinite(value)) {
      return absl::InternalError(
          "training diverged (loss is not finite); lower the learning rate");
    }
    if (step.epoch != accounted_epoch) {
      accounted_epoch = step.epoch;
      loss_sum = 0;
      seen = 0;
    }
    loss_sum += value * step.size;
    seen += step.size;
    result.mean_loss = loss_sum / seen;
    if (options.on_progress) {
      options.on_progress(TrainProgress{step.epoch, options.epochs,
                                        step.index + 1, batches,
                                        loss_sum / seen, seen});
    }
    return absl::OkStatus();
  };
  auto to_device = [&](const torch::Tensor& tensor) {
    return tensor.defined() ? tensor.to(options.device, /*non_blocking=*/true)
                            : tensor;
  };

  // Mixup's pairs and weights from their own stream: turning it on leaves
  // torch's generator, and so the batches and their augmentation, as they
  // were.
  std::mt19937_64 mixup_random(options.seed * 0x9E3779B97F4A7C15ull + 1);
  const auto loop_start = std::chrono::steady_clock::now();
  for (;;) {
    absl::StatusOr<std::optional<TrainBatch>> next = pipeline.Next();
    if (!next.ok()) {
      model.to(torch::kCPU);
      return next.status();
    }
    if (!next->has_value()) break;
    TrainBatch& batch = **next;
    if (options.cosine_over_run) {
      const double within = ((batch.epoch - 1) * batches + batch.index) /
                            static_cast<double>(options.epochs * batches);
      const double progress = std::clamp(
          options.run_progress_begin +
              (options.run_progress_end - options.run_progress_begin) * within,
          0.0, 1.0);
      SetLearningRate(*optimizer,
                      0.5 * options.learning_rate *
                          (1 + std::cos(3.14159265358979323846 * progress)));
    }
    torch::Tensor images = to_device(batch.images);
    if (channels_last) {
      images = images.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    torch::Tensor labels = to_device(batch.labels);
    torch::Tensor clinical = to_device(batch.clinical);
    double mix = 1;
    torch::Tensor mixed_labels;
    // Only the subtype's labels are mixed: batches with clinical inputs or
    // extra heads' targets train unmixed.
    const bool image_model_batch = !clinical.defined() &&
                                   batch.binary_targets.empty() &&
                                   !batch.survival_months.defined();
    if (options.mixup_alpha > 0 && image_model_batch && images.size(0) > 1) {
      std::gamma_distribution<double> gamma(options.mixup_alpha, 1.0);
      const double x = gamma(mixup_random), y = gamma(mixup_random);
      mix = x + y > 0 ? x / (x + y) : 1.0;
      std::vector<int64_t> order(images.size(0));
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), mixup_random);
      torch::Tensor permutation =
          torch::tensor(order, torch::kLong).to(images.device());
      images = mix * images + (1 - mix) * images.index_select(0, permutation);
      mixed_labels = labels.index_select(0, permutation);
    }
    ReleaseGradients(*optimizer);
    ModelOutputs outputs;
    {
      AutocastScope scope(autocast);
      outputs = model.Predict(images, clinical);
    }
    const torch::Tensor logits = outputs.subtype.to(torch::kFloat32);
    auto subtype_loss = [&](const torch::Tensor& targets) {
      return SubtypeLoss(logits, targets, weights, options.loss,
                         options.focal_gamma, options.label_smoothing);
    };
    torch::Tensor loss = subtype_loss(labels);
    if (mixed_labels.defined()) {
      loss = mix * loss + (1 - mix) * subtype_loss(mixed_labels);
    }
    for (const auto& [head, output] : outputs.heads) {
      torch::Tensor prediction = output.to(torch::kFloat32);
      if (head == Plan::PROGNOSIS) {
        torch::Tensor months = to_device(batch.survival_months);
        torch::Tensor event = to_device(batch.survival_event);
        torch::Tensor known = ~torch::isnan(months) & ~torch::isnan(event);
        loss = loss + CoxLoss(prediction.index({known}), months.index({known}),
                              event.index({known}));
      } else {
        auto targets = batch.binary_targets.find(head);
        if (targets == batch.binary_targets.end()) continue;
        loss = loss + MaskedBinaryLoss(prediction, to_device(targets->second));
      }
    }
    if (!start.empty()) {
      torch::Tensor proximal = torch::zeros({}, loss.options());
      std::vector<torch::Tensor> parameters = model.parameters();
      for (size_t p = 0; p < parameters.size(); ++p) {
        proximal = proximal + (parameters[p] - start[p]).pow(2).sum();
      }
      loss = loss + 0.5 * options.proximal_mu * proximal;
    }
    loss.backward();
    optimizer->step();
    ++result.steps;
    if (pending) {
      if (absl::Status status = account(*pending); !status.ok()) {
        model.to(torch::kCPU);
        return status;
      }
    }
    pending =
        PendingLoss{loss.detach(), batch.epoch, batch.index, batch.size()};
  }
  if (pending) {
    if (absl::Status status = account(*pending); !status.ok()) {
      model.to(torch::kCPU);
      return status;
    }
  }
  result.train_seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - loop_start)
                             .count();
  result.data_wait_seconds = pipeline.wait_seconds();
  if (options.optimizer_state != nullptr) {
    *options.optimizer_state = SaveOptimizerState(*optimizer);
  }
  model.to(torch::kCPU);
  return result;
}

EvalAggregate EvaluateLocal(ImageClassifierImpl& model, const ImageSet& data,
                            int class_count, EvalSplit split,
                            torch::Device device) {
  EvaluationOptions options;
  options.class_count = class_count;
  options.split = split;
  options.device = device;
  return EvaluateModel(model, data, options).subtype;
}

namespace {

// Disclosure control's rule for one count: some patients, but fewer than
// the minimum.
bool IsSmallCell(int64_t count, int min_cell_count) {
  return count > 0 && count < min_cell_count;
}

// What a suppressed set releases: its layout and the fact, no counts and no
// score histograms (ValidateAggregate refuses a suppressed aggregate that
// carries either).
EvalAggregate SuppressedAggregate(int class_count, EvalSplit split) {
  EvalAggregate aggregate;
  aggregate.set_split(split);
  aggregate.set_class_count(class_count);
  aggregate.mutable_confusion()->Resize(class_count * class_count, 0);
  aggregate.set_suppressed(true);
  return aggregate;
}

}  // namespace

ModelOutputs AverageWithMirror(ImageClassifierImpl& model,
                               const ModelOutputs& direct,
                               const torch::Tensor& images,
                               const torch::Tensor& clinical) {
  torch::NoGradGuard no_grad;
  ModelOutputs mirrored = model.Predict(images.flip({3}), clinical);
  ModelOutputs mean;
  // Log-sum-exp, so that a probability below double's range in both views
  // stays finite.
  mean.subtype =
      torch::logsumexp(
          torch::stack(
              {torch::log_softmax(direct.subtype.detach().to(torch::kFloat64),
                                  1),
               torch::log_softmax(mirrored.subtype.to(torch::kFloat64), 1)}),
          0) -
      std::log(2.0);
  for (const auto& [head, output] : direct.heads) {
    mean.heads[head] = (output.detach().to(torch::kFloat64) +
                        mirrored.heads.at(head).to(torch::kFloat64)) /
                       2;
  }
  return mean;
}

LocalEvaluation EvaluateModel(ImageClassifierImpl& model, const ImageSet& data,
                              const EvaluationOptions& options) {
  LocalEvaluation evaluation;
  EvalAggregate& aggregate = evaluation.subtype;
  const int class_count = options.class_count;
  aggregate.set_split(options.split);
  InitAggregate(class_count, &aggregate);
  evaluation.patient_subtype.set_split(options.split);
  InitAggregate(class_count, &evaluation.patient_subtype);
  std::vector<double> row(class_count);
  // Disclosure control by true class: a class of a few patients would have
  // its patients' predictions and scores released almost one by one (its
  // confusion row and score histograms), so such a class is withheld, and
  // its patients are left out of everything this set releases (the heads
  // too: their patient counts would otherwise tell how many were left out).
  auto patient_of = [&](int64_t i) {
    // Callers without patient ids (tests, benchmarks): one image, one
    // patient.
    return static_cast<size_t>(data.size()) == data.patient_ids.size()
               ? data.patient_ids[i]
               : absl::StrCat("image ", i);
  };
  std::vector<bool> released(data.size(), true);
  int64_t total_patients = 0;
  if (data.size() > 0) {
    torch::Tensor labels = data.labels.to(torch::kCPU);
    auto truth = labels.accessor<int64_t, 1>();
    std::vector<std::set<std::string>> patients_of_class(class_count);
    for (int64_t i = 0; i < data.size(); ++i) {
      if (truth[i] >= 0 && truth[i] < class_count) {
        patients_of_class[truth[i]].insert(patient_of(i));
      }
    }
    std::set<int> withheld;
    for (int c = 0; c < class_count; ++c) {
      const int64_t n = static_cast<int64_t>(patients_of_class[c].size());
      if (n > 0 && n < options.min_cell_count) {
        withheld.insert(c);
        aggregate.add_withheld_classes(c);
      }
    }
    std::set<std::string> released_patients, withheld_patients;
    for (int64_t i = 0; i < data.size(); ++i) {
      released[i] = !withheld.count(static_cast<int>(truth[i]));
      (released[i] ? released_patients : withheld_patients)
          .insert(patient_of(i));
    }
    evaluation.withheld_patients =
        static_cast<int64_t>(withheld_patients.size());
    total_patients = static_cast<int64_t>(released_patients.size() +
                                          withheld_patients.size());
    aggregate.set_num_patients(static_cast<int64_t>(released_patients.size()));
  }
  // A set too small as a whole, or once its small classes are withheld,
  // releases nothing but the fact.
  evaluation.suppressed = total_patients < options.min_cell_count ||
                          aggregate.num_patients() < options.min_cell_count;
  if (data.size() == 0) {
    if (evaluation.suppressed) SuppressEvaluation(&evaluation);
    return evaluation;
  }
  torch::NoGradGuard no_grad;
  model.to(options.device);
  model.eval();
  double loss_sum = 0;
  // Per released patient: the sum of its images' probabilities, the image
  // count and its class.
  struct PatientScores {
    std::vector<double> probability_sum;
    int images = 0;
    int truth = 0;
  };
  std::map<std::string, PatientScores> patient_scores;
  std::map<int, std::vector<torch::Tensor>> head_outputs;
  // Batches run back to back on the device; only the outputs (a few
  // numbers per image) come back, once, at the end: no synchronisation per
  // batch.
  const int64_t batch = 64;
  std::vector<torch::Tensor> logit_pieces;
  for (int64_t start = 0; start < data.size(); start += batch) {
    int64_t end = std::min(data.size(), start + batch);
    torch::Tensor images = data.images.slice(0, start, end).to(options.device);
    torch::Tensor clinical =
        data.clinical.defined()
            ? data.clinical.slice(0, start, end).to(options.device)
            : torch::Tensor();
    ModelOutputs outputs = model.Predict(images, clinical);
    // Softmax and cross-entropy below give the flip's mean back.
    if (options.test_time_flip) {
      outputs = AverageWithMirror(model, outputs, images, clinical);
    }
    logit_pieces.push_back(outputs.subtype.to(torch::kFloat64));
    for (const auto& [head, output] : outputs.heads) {
      head_outputs[head].push_back(output.to(torch::kFloat64));
    }
  }
  torch::Tensor logits = torch::cat(logit_pieces).to(torch::kCPU);
  for (auto& [head, pieces] : head_outputs) {
    pieces = {torch::cat(pieces).to(torch::kCPU)};
  }
  torch::Tensor truth = data.labels.to(torch::kCPU);
  // Per image, so that withheld classes stay out of the loss as well.
  torch::Tensor losses =
      torch::nn::functional::cross_entropy(
          logits, truth,
          torch::nn::functional::CrossEntropyFuncOptions().reduction(
              torch::kNone))
          .to(torch::kFloat64);
  auto loss = losses.accessor<double, 1>();
  // Softmax in double so that each image's probabilities sum to 1 well
  // within AddCase's tolerance and the argmax matches the logits'.
  torch::Tensor probabilities = torch::softmax(logits.to(torch::kFloat64), 1);
  auto p = probabilities.accessor<double, 2>();
  auto t = truth.accessor<int64_t, 1>();
  for (int64_t i = 0; i < p.size(0); ++i) {
    if (!released[i]) continue;
    loss_sum += loss[i];
    for (int c = 0; c < class_count; ++c) row[c] = p[i][c];
    PatientScores& patient = patient_scores[patient_of(i)];
    if (patient.images == 0) {
      patient.probability_sum.assign(class_count, 0.0);
      patient.truth = static_cast<int>(t[i]);
    }
    for (int c = 0; c < class_count; ++c) {
      patient.probability_sum[c] += row[c];
    }
    ++patient.images;
    if (!AddCase(&aggregate, static_cast<int>(t[i]), row).ok()) {
      // Only non-finite model outputs get here. Their loss is not finite
      // either, which is how the coordinator tells the site why it refuses
      // the report.
      loss_sum = std::numeric_limits<double>::quiet_NaN();
    }
  }
  model.to(torch::kCPU);
  aggregate.set_loss_sum(loss_sum);
  EvalAggregate& patient_aggregate = evaluation.patient_subtype;
  for (const auto& [patient, scores] : patient_scores) {
    for (int c = 0; c < class_count; ++c) {
      row[c] = scores.probability_sum[c] / scores.images;
    }
    // Non-finite rows were already flagged through loss_sum above.
    AddCase(&patient_aggregate, scores.truth, row).IgnoreError();
  }
  *patient_aggregate.mutable_withheld_classes() = aggregate.withheld_classes();
  patient_aggregate.set_num_patients(
      static_cast<int64_t>(patient_scores.size()));

  for (auto& [head, pieces] : head_outputs) {
    torch::Tensor output = torch::cat(pieces);
    auto score = output.accessor<double, 1>();
    HeadAggregate head_aggregate;
    head_aggregate.set_head(head);
    std::set<std::string> labelled;
    if (head == Plan::PROGNOSIS) {
      // One case per patient: the mean risk over the patient's images.
      std::map<std::string, std::pair<double, int>> risk;
      std::map<std::string, std::pair<double, bool>> outcome;
      auto months = data.survival_months.accessor<float, 1>();
      auto event = data.survival_event.accessor<float, 1>();
      for (int64_t i = 0; i < output.size(0); ++i) {
        if (!released[i] || std::isnan(months[i]) || std::isnan(event[i])) {
          continue;
        }
        auto& [sum, count] = risk[patient_of(i)];
        sum += score[i];
        ++count;
        outcome[patient_of(i)] = {months[i], event[i] > 0.5f};
      }
      SurvivalAggregate* survival = head_aggregate.mutable_survival();
      survival->set_split(options.split);
      InitSurvivalAggregate(survival);
      int64_t events = 0, censored = 0;
      for (const auto& [patient, sum_count] : risk) {
        const auto& [time, happened] = outcome[patient];
        double mean = sum_count.first / sum_count.second;
        if (!std::isfinite(mean) ||
            !AddSurvivalCase(survival, time, happened, mean).ok()) {
          continue;
        }
        labelled.insert(patient);
        ++(happened ? events : censored);
      }
      // A few events (relapses, deaths) among the set are as telling as a
      // small class: with their time and risk cells they are near-records.
      if (static_cast<int>(labelled.size()) < options.min_cell_count ||
          IsSmallCell(events, options.min_cell_count) ||
          IsSmallCell(censored, options.min_cell_count)) {
        survival->Clear();
        survival->set_split(options.split);
        InitSurvivalAggregate(survival);
        survival->set_suppressed(true);
      }
    } else {
      std::set<std::string> positives, negatives;
      auto targets = data.binary_targets.find(head);
      EvalAggregate* binary = head_aggregate.mutable_binary();
      binary->set_split(options.split);
      InitAggregate(2, binary);
      if (targets != data.binary_targets.end()) {
        auto target = targets->second.accessor<float, 1>();
        for (int64_t i = 0; i < output.size(0); ++i) {
          if (!released[i] || std::isnan(target[i])) continue;
          double positive = 1 / (1 + std::exp(-score[i]));
          const int truth = target[i] > 0.5f ? 1 : 0;
          if (AddCase(binary, truth, {1 - positive, positive}).ok()) {
            labelled.insert(patient_of(i));
            (truth == 1 ? positives : negatives).insert(patient_of(i));
          }
        }
      }
      binary->set_num_patients(static_cast<int64_t>(labelled.size()));
      // Either side with a few patients would release their scores almost
      // one by one; the head has no meaning without both sides, so it goes
      // as a whole rather than as a withheld class.
      if (static_cast<int>(labelled.size()) < options.min_cell_count ||
          IsSmallCell(static_cast<int64_t>(positives.size()),
                      options.min_cell_count) ||
          IsSmallCell(static_cast<int64_t>(negatives.size()),
                      options.min_cell_count)) {
        *binary = SuppressedAggregate(2, options.split);
      }
    }
    evaluation.heads.push_back(std::move(head_aggregate));
  }
  if (evaluation.suppressed) SuppressEvaluation(&evaluation);
  return evaluation;
}

void SuppressEvaluation(LocalEvaluation* evaluation) {
  evaluation->suppressed = true;
  const EvalSplit split = evaluation->subtype.split();
  evaluation->subtype =
      SuppressedAggregate(evaluation->subtype.class_count(), split);
  evaluation->patient_subtype =
      SuppressedAggregate(evaluation->subtype.class_count(), split);
  for (HeadAggregate& head : evaluation->heads) {
    if (head.has_binary()) {
      *head.mutable_binary() = SuppressedAggregate(2, split);
    }
    if (head.has_survival()) {
      SurvivalAggregate survival;
      survival.set_split(split);
      InitSurvivalAggregate(&survival);
      survival.set_suppressed(true);
      *head.mutable_survival() = survival;
    }
  }
}

}  // namespace echofed
