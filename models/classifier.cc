#include "models/classifier.h"

#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "proto/plan.pb.h"

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

ResNetClassifierImpl::ResNetClassifierImpl(const ResNetOptions& options,
                                           int num_classes) {
  encoder_ = register_module("encoder", ResNetEncoder(options));
  dropout_ = register_module("dropout", torch::nn::Dropout(0.2));
  head_ = register_module(
      "head", torch::nn::Linear(encoder_->out_features(), num_classes));
}

torch::Tensor ResNetClassifierImpl::forward(torch::Tensor images) {
  return head_->forward(dropout_->forward(encoder_->forward(images)));
}

std::pair<torch::Tensor, ModelOutputs>
ResNetClassifierImpl::PredictWithFeatureMap(torch::Tensor images,
                                            torch::Tensor) {
  torch::Tensor map = encoder_->FeatureMap(images);
  torch::Tensor pooled = torch::adaptive_avg_pool2d(map, {1, 1}).flatten(1);
  return {map, {head_->forward(dropout_->forward(pooled)), {}}};
}

ClinicalEncoderImpl::ClinicalEncoderImpl(int features, int embedding)
    : embedding_(embedding) {
  auto zeros = [features] { return torch::zeros({features}, torch::kFloat64); };
  stat_count_ = register_buffer("stat_count", zeros());
  stat_sum_ = register_buffer("stat_sum", zeros());
  stat_sum_squares_ = register_buffer("stat_sum_squares", zeros());
  mlp_ = register_module(
      "mlp",
      torch::nn::Sequential(torch::nn::Linear(2 * features, 64),
                            torch::nn::ReLU(torch::nn::ReLUOptions(true)),
                            torch::nn::Linear(64, embedding),
                            torch::nn::ReLU(torch::nn::ReLUOptions(true))));
}

torch::Tensor ClinicalEncoderImpl::forward(torch::Tensor clinical) {
  torch::Tensor count = stat_count_;
  torch::Tensor known = count > 0;
  torch::Tensor mean =
      torch::where(known, stat_sum_ / count.clamp_min(1e-12), 0.0);
  torch::Tensor variance =
      stat_sum_squares_ / count.clamp_min(1e-12) - mean * mean;
  torch::Tensor std = torch::where(known & (variance > 1e-12),
                                   variance.clamp_min(1e-12).sqrt(), 1.0);
  torch::Tensor missing = torch::isnan(clinical);
  torch::Tensor z =
      (clinical - mean.to(clinical.dtype())) / std.to(clinical.dtype());
  // Missing values sit at the mean; extreme values are clipped so that one
  // implausible laboratory value cannot dominate.
  z = torch::where(missing, torch::zeros_like(z), z).clamp(-6, 6);
  return mlp_->forward(torch::cat({z, missing.to(z.dtype())}, 1));
}

void ClinicalEncoderImpl::SetLocalStatistics(torch::Tensor clinical,
                                             double weight) {
  torch::NoGradGuard no_grad;
  torch::Tensor values = clinical.to(torch::kCPU, torch::kFloat64);
  torch::Tensor present = (~torch::isnan(values)).to(torch::kFloat64);
  torch::Tensor filled = torch::nan_to_num(values, 0.0);
  stat_count_.copy_(present.sum(0) / weight);
  stat_sum_.copy_(filled.sum(0) / weight);
  stat_sum_squares_.copy_((filled * filled).sum(0) / weight);
}

namespace {

std::string HeadModuleName(int head) {
  return absl::StrCat(
      "head_",
      absl::AsciiStrToLower(Plan::Head_Name(static_cast<Plan::Head>(head))));
}

constexpr int kClinicalEmbedding = 32;
constexpr int kGatedWidth = 128;

}  // namespace

FusionModelImpl::FusionModelImpl(const ResNetOptions& image,
                                 int clinical_features, int num_classes,
                                 const std::vector<int>& heads, Fusion fusion)
    : fusion_(fusion), clinical_features_(clinical_features) {
  encoder_ = register_module("encoder", ResNetEncoder(image));
  clinical_ = register_module(
      "clinical", ClinicalEncoder(clinical_features, kClinicalEmbedding));
  const int image_width = encoder_->out_features();
  int fused = image_width + kClinicalEmbedding;
  if (fusion_ == Fusion::kGated) {
    image_projection_ = register_module(
        "image_projection", torch::nn::Linear(image_width, kGatedWidth));
    clinical_projection_ =
        register_module("clinical_projection",
                        torch::nn::Linear(kClinicalEmbedding, kGatedWidth));
    gate_ = register_module("gate", torch::nn::Linear(fused, kGatedWidth));
    fused = kGatedWidth;
  }
  dropout_ = register_module("dropout", torch::nn::Dropout(0.2));
  subtype_ = register_module("subtype", torch::nn::Linear(fused, num_classes));
  for (int head : heads) {
    if (head == Plan::SUBTYPE) continue;
    // A Cox model has no intercept: it would cancel in the partial
    // likelihood.
    heads_.emplace_back(
        head, register_module(
                  HeadModuleName(head),
                  torch::nn::Linear(torch::nn::LinearOptions(fused, 1).bias(
                      head != Plan::PROGNOSIS))));
  }
}

ModelOutputs FusionModelImpl::Heads(torch::Tensor image_embedding,
                                    torch::Tensor clinical) {
  torch::Tensor clinical_embedding = clinical_->forward(clinical);
  torch::Tensor fused = torch::cat({image_embedding, clinical_embedding}, 1);
  if (fusion_ == Fusion::kGated) {
    torch::Tensor gate = torch::sigmoid(gate_->forward(fused));
    fused = gate * image_projection_->forward(image_embedding) +
            (1 - gate) * clinical_projection_->forward(clinical_embedding);
  }
  fused = dropout_->forward(fused);
  ModelOutputs outputs;
  outputs.subtype = subtype_->forward(fused);
  for (auto& [head, linear] : heads_) {
    outputs.heads[head] = linear->forward(fused).squeeze(1);
  }
  return outputs;
}

ModelOutputs FusionModelImpl::Predict(torch::Tensor images,
                                      torch::Tensor clinical) {
  return Heads(encoder_->forward(images), clinical);
}

std::pair<torch::Tensor, ModelOutputs> FusionModelImpl::PredictWithFeatureMap(
    torch::Tensor images, torch::Tensor clinical) {
  torch::Tensor map = encoder_->FeatureMap(images);
  return {map,
          Heads(torch::adaptive_avg_pool2d(map, {1, 1}).flatten(1), clinical)};
}

torch::Tensor FusionModelImpl::forward(torch::Tensor images) {
  torch::Tensor unknown =
      torch::full({images.size(0), clinical_features_},
                  std::numeric_limits<float>::quiet_NaN(), images.options());
  return Predict(images, unknown).subtype;
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

namespace {

ResNetOptions ResNet18() { return ResNetOptions(); }

ResNetOptions ResNetSmall() {
  ResNetOptions options;
  options.blocks = {1, 1, 1, 1};
  options.widths = {32, 64, 128, 256};
  options.imagenet_stem = false;
  return options;
}

// ResNet-18's depth and stem at half its width (2.8M parameters): the
// resolution drops by 4 in the stem, which makes it cheaper than
// resnet_small at 128 pixels and deeper.
ResNetOptions ResNet18Narrow() {
  ResNetOptions options;
  options.widths = {32, 64, 128, 256};
  return options;
}

bool EncoderByName(absl::string_view name, ResNetOptions* options) {
  if (name == "resnet18") {
    *options = ResNet18();
    return true;
  }
  if (name == "resnet18_narrow") {
    *options = ResNet18Narrow();
    return true;
  }
  if (name == "resnet_small") {
    *options = ResNetSmall();
    return true;
  }
  return false;
}

}  // namespace

std::vector<std::string> RegisteredModels() {
  return {"small_cnn",
          "resnet18",
          "resnet18_narrow",
          "resnet_small",
          "resnet18_fusion",
          "resnet18_narrow_fusion",
          "resnet_small_fusion",
          "resnet18_gated_fusion",
          "resnet18_narrow_gated_fusion",
          "resnet_small_gated_fusion",
          "bench_blob_<parameters>"};
}

bool IsFusionModel(const std::string& name) {
  return absl::EndsWith(name, "_fusion");
}

absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> CreateClassifier(
    const ModelOptions& options) {
  if (options.num_classes < 2) {
    return absl::InvalidArgumentError("a classifier needs at least 2 classes");
  }
  if (!IsFusionModel(options.name)) {
    for (int head : options.heads) {
      if (head != Plan::SUBTYPE) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model '", options.name,
            "' predicts the subtype only; other heads need a *_fusion model"));
      }
    }
  }
  absl::string_view name = options.name;
  auto share = [](auto module) {
    return std::static_pointer_cast<ImageClassifierImpl>(module.ptr());
  };
  if (name == "small_cnn") return share(SmallCnn(options.num_classes));
  ResNetOptions encoder;
  if (EncoderByName(name, &encoder)) {
    return share(ResNetClassifier(encoder, options.num_classes));
  }
  for (auto [suffix, fusion] :
       {std::make_pair("_gated_fusion", FusionModelImpl::Fusion::kGated),
        std::make_pair("_fusion", FusionModelImpl::Fusion::kConcat)}) {
    absl::string_view base = name;
    if (absl::ConsumeSuffix(&base, suffix) && EncoderByName(base, &encoder)) {
      if (options.clinical_features < 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "model '", name, "' needs clinical features (clinical.csv)"));
      }
      return share(FusionModel(encoder, options.clinical_features,
                               options.num_classes, options.heads, fusion));
    }
  }
  int64_t parameters = 0;
  if (absl::ConsumePrefix(&name, "bench_blob_") &&
      absl::SimpleAtoi(name, &parameters) && parameters > 0 &&
      parameters <= (int64_t{1} << 32)) {
    return share(Blob(parameters, options.num_classes));
  }
  return absl::NotFoundError(absl::StrCat(
      "unknown model '", options.name,
      "'; known models: ", absl::StrJoin(RegisteredModels(), ", ")));
}

}  // namespace echofed
