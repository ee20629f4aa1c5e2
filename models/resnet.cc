#include "models/resnet.h"

#include "absl/strings/str_cat.h"

namespace echofed {
namespace {

torch::nn::Conv2d Conv(int in, int out, int kernel, int stride) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                               .stride(stride)
                               .padding(kernel / 2)
                               .bias(false));
}

}  // namespace

BasicBlockImpl::BasicBlockImpl(int in, int out, int stride) {
  conv1_ = register_module("conv1", Conv(in, out, 3, stride));
  bn1_ = register_module("bn1", torch::nn::BatchNorm2d(out));
  conv2_ = register_module("conv2", Conv(out, out, 3, 1));
  bn2_ = register_module("bn2", torch::nn::BatchNorm2d(out));
  shortcut_ = register_module("shortcut", torch::nn::Sequential());
  if (stride != 1 || in != out) {
    shortcut_->push_back(Conv(in, out, 1, stride));
    shortcut_->push_back(torch::nn::BatchNorm2d(out));
  }
  // Zero-init of each block's last BN scale: blocks start as identities,
  // which trains deep stacks from scratch more stably (Goyal et al. 2017).
  torch::NoGradGuard no_grad;
  bn2_->weight.zero_();
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  torch::Tensor out = torch::relu(bn1_->forward(conv1_->forward(x)));
  out = bn2_->forward(conv2_->forward(out));
  torch::Tensor identity = shortcut_->is_empty() ? x : shortcut_->forward(x);
  return torch::relu(out + identity);
}

ResNetEncoderImpl::ResNetEncoderImpl(const ResNetOptions& options) {
  const int first = options.widths.front();
  torch::nn::Sequential stem;
  if (options.imagenet_stem) {
    stem->push_back(Conv(1, first, 7, 2));
    stem->push_back(torch::nn::BatchNorm2d(first));
    stem->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
    stem->push_back(torch::nn::MaxPool2d(
        torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  } else {
    stem->push_back(Conv(1, first, 3, 2));
    stem->push_back(torch::nn::BatchNorm2d(first));
    stem->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
  }
  stem_ = register_module("stem", stem);
  torch::nn::ModuleList stages;
  int in = first;
  for (size_t stage = 0; stage < options.widths.size(); ++stage) {
    torch::nn::Sequential blocks;
    const int out = options.widths[stage];
    for (int block = 0; block < options.blocks[stage]; ++block) {
      const int stride = (stage > 0 && block == 0) ? 2 : 1;
      blocks->push_back(BasicBlock(in, out, stride));
      in = out;
    }
    stages->push_back(blocks);
  }
  stages_ = register_module("stages", stages);
  out_features_ = in;
  // Kaiming initialisation for the ReLU convolutions.
  torch::NoGradGuard no_grad;
  for (auto& module : modules(/*include_self=*/false)) {
    if (auto* conv = module->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut,
                                       torch::kReLU);
    }
  }
}

torch::Tensor ResNetEncoderImpl::FeatureMap(torch::Tensor images) {
  torch::Tensor x = stem_->forward(images);
  for (const auto& stage : *stages_) {
    x = stage->as<torch::nn::Sequential>()->forward(x);
  }
  return x;
}

torch::Tensor ResNetEncoderImpl::forward(torch::Tensor images) {
  return torch::adaptive_avg_pool2d(FeatureMap(images), {1, 1}).flatten(1);
}

}  // namespace echofed
