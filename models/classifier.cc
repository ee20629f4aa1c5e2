#include "models/classifier.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace echofed {
namespace {

// conv3x3 - BN - ReLU - 2x2 max pool, appended to `layers`.
void AppendConvBlock(torch::nn::Sequential& layers, int in, int out) {
  layers->push_back(torch::nn::Conv2d(
      torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)));
  layers->push_back(torch::nn::BatchNorm2d(out));
  layers->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  layers->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)));
}

}  // namespace

SmallCnnImpl::SmallCnnImpl(int num_classes, int width) {
  torch::nn::Sequential layers;
  AppendConvBlock(layers, 1, width);
  AppendConvBlock(layers, width, 2 * width);
  AppendConvBlock(layers, 2 * width, 4 * width);
  layers->push_back(
      torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
  features_ = register_module("features", layers);
  dropout_ = register_module("dropout", torch::nn::Dropout(0.2));
  head_ = register_module("head", torch::nn::Linear(4 * width, num_classes));
}

torch::Tensor SmallCnnImpl::forward(torch::Tensor images) {
  torch::Tensor x = features_->forward(images).flatten(1);
  return head_->forward(dropout_->forward(x));
}

BlobImpl::BlobImpl(int64_t parameters, int num_classes) {
  head_ = register_module("head", torch::nn::Linear(16, num_classes));
  int64_t left =
      std::max<int64_t>(0, parameters - 16 * num_classes - num_classes);
  constexpr int64_t kPerTensor = int64_t{4} << 20;
  for (int index = 0; left > 0; ++index) {
    int64_t size = std::min(left, kPerTensor);
    blobs_.push_back(register_parameter(absl::StrCat("blob", index),
                                        torch::randn({size}) * 0.01));
    left -= size;
  }
}

torch::Tensor BlobImpl::forward(torch::Tensor images) {
  torch::Tensor pooled = torch::adaptive_avg_pool2d(images, {4, 4}).flatten(1);
  return head_->forward(pooled);
}

std::vector<std::string> RegisteredModels() {
  return {"small_cnn", "bench_blob_<parameters>"};
}

absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> CreateClassifier(
    const ModelOptions& options) {
  if (options.num_classes < 2) {
    return absl::InvalidArgumentError("a classifier needs at least 2 classes");
  }
  absl::string_view name = options.name;
  if (name == "small_cnn") {
    return std::static_pointer_cast<ImageClassifierImpl>(
        std::make_shared<SmallCnnImpl>(options.num_classes));
  }
  int64_t parameters = 0;
  if (absl::ConsumePrefix(&name, "bench_blob_") &&
      absl::SimpleAtoi(name, &parameters) && parameters > 0 &&
      parameters <= (int64_t{1} << 32)) {
    return std::static_pointer_cast<ImageClassifierImpl>(
        std::make_shared<BlobImpl>(parameters, options.num_classes));
  }
  return absl::NotFoundError(absl::StrCat(
      "unknown model '", options.name,
      "'; known models: ", absl::StrJoin(RegisteredModels(), ", ")));
}

}  // namespace echofed
