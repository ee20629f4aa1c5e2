#include "site-agent/trainer.h"

#include <cmath>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"

namespace echofed {

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
  torch::manual_seed(options.seed);
  model.to(options.device);
  model.train();

  // Inverse-frequency class weights; classes absent here get weight 0 so
  // they neither help nor hurt.
  torch::Tensor counts =
      torch::bincount(data.labels, /*weights=*/{}, options.class_count)
          .to(torch::kFloat32);
  torch::Tensor weights = torch::where(
      counts > 0, counts.sum() / (counts.clamp_min(1) * (counts > 0).sum()),
      torch::zeros_like(counts));
  weights = weights.to(options.device);

  std::unique_ptr<torch::optim::Optimizer> optimizer;
  if (options.trainer == Plan::ADAM) {
    optimizer = std::make_unique<torch::optim::Adam>(
        model.parameters(),
        torch::optim::AdamOptions(options.learning_rate).weight_decay(1e-4));
  } else {
    optimizer = std::make_unique<torch::optim::SGD>(
        model.parameters(), torch::optim::SGDOptions(options.learning_rate)
                                .momentum(0.9)
                                .weight_decay(1e-4));
  }

  const int64_t n = data.size();
  const int64_t batch = std::max<int64_t>(1, options.batch_size);
  const int batches = static_cast<int>((n + batch - 1) / batch);
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    torch::Tensor order = torch::randperm(n, torch::kInt64);
    double loss_sum = 0;
    int64_t seen = 0;
    for (int b = 0; b < batches; ++b) {
      torch::Tensor index =
          order.slice(0, b * batch, std::min(n, (b + 1) * batch));
      // BatchNorm needs two samples; a lone trailing image is skipped.
      if (index.size(0) < 2) continue;
      torch::Tensor images = data.images.index_select(0, index);
      torch::Tensor labels = data.labels.index_select(0, index);
      if (options.augment) {
        torch::Tensor flip = torch::rand({images.size(0)}) < 0.5;
        images =
            torch::where(flip.view({-1, 1, 1, 1}), images.flip({3}), images);
        torch::Tensor gain =
            1.0 + 0.2 * (torch::rand({images.size(0), 1, 1, 1}) - 0.5);
        images = images * gain +
                 0.05 * torch::randn_like(images);  // speckle-like noise
      }
      images = images.to(options.device);
      labels = labels.to(options.device);
      optimizer->zero_grad();
      torch::Tensor logits = model.forward(images);
      torch::Tensor loss = torch::nn::functional::cross_entropy(
          logits, labels,
          torch::nn::functional::CrossEntropyFuncOptions().weight(weights));
      loss.backward();
      optimizer->step();
      double value = loss.item<double>();
      if (!std::isfinite(value)) {
        return absl::InternalError(
            "training diverged (loss is not finite); lower the learning rate");
      }
      loss_sum += value * images.size(0);
      seen += images.size(0);
      if (options.on_progress) {
        options.on_progress(TrainProgress{epoch, options.epochs, b + 1, batches,
                                          loss_sum / seen});
      }
    }
    result.mean_loss = seen > 0 ? loss_sum / seen : 0;
  }
  model.to(torch::kCPU);
  return result;
}

EvalAggregate EvaluateLocal(ImageClassifierImpl& model, const ImageSet& data,
                            int class_count, EvalSplit split,
                            torch::Device device) {
  EvalAggregate aggregate;
  aggregate.set_split(split);
  InitAggregate(class_count, &aggregate);
  aggregate.set_num_patients(data.patients);
  if (data.size() == 0) return aggregate;
  torch::NoGradGuard no_grad;
  model.to(device);
  model.eval();
  double loss_sum = 0;
  const int64_t batch = 64;
  for (int64_t start = 0; start < data.size(); start += batch) {
    int64_t end = std::min(data.size(), start + batch);
    torch::Tensor images = data.images.slice(0, start, end).to(device);
    torch::Tensor labels = data.labels.slice(0, start, end).to(device);
    torch::Tensor logits = model.forward(images);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, labels,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(
                        torch::kSum))
                    .item<double>();
    // Softmax in double so that each image's probabilities sum to 1 well
    // within AddCase's tolerance and the argmax matches the logits'.
    torch::Tensor probabilities =
        torch::softmax(logits.to(torch::kFloat64), 1).to(torch::kCPU);
    torch::Tensor truth = labels.to(torch::kCPU);
    auto p = probabilities.accessor<double, 2>();
    auto t = truth.accessor<int64_t, 1>();
    std::vector<double> row(class_count);
    for (int64_t i = 0; i < p.size(0); ++i) {
      for (int c = 0; c < class_count; ++c) row[c] = p[i][c];
      if (!AddCase(&aggregate, static_cast<int>(t[i]), row).ok()) {
        // Only non-finite model outputs get here. Their loss is not finite
        // either, which is how the coordinator tells the site why it
        // refuses the report.
        loss_sum = std::numeric_limits<double>::quiet_NaN();
      }
    }
  }
  model.to(torch::kCPU);
  aggregate.set_loss_sum(loss_sum);
  return aggregate;
}

}  // namespace echofed
