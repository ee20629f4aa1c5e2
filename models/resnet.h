#ifndef ECHOFED_MODELS_RESNET_H_
#define ECHOFED_MODELS_RESNET_H_

#include <vector>

#include "torch/torch.h"

namespace echofed {

// A ResNet (He et al. 2016) for single-channel ultrasound, trained from
// scratch: basic residual blocks in stages, each stage after the first
// halving the resolution and widening.
struct ResNetOptions {
  // Residual blocks per stage; ResNet-18 is {2, 2, 2, 2}.
  std::vector<int> blocks = {2, 2, 2, 2};
  // Channels per stage; ResNet-18 is {64, 128, 256, 512}.
  std::vector<int> widths = {64, 128, 256, 512};
  // ImageNet stem (7x7 stride-2 conv and 3x3 stride-2 max pool: input / 4)
  // for 224-pixel images; otherwise one 3x3 stride-2 conv (input / 2), which
  // keeps more detail of small images.
  bool imagenet_stem = true;
};

class BasicBlockImpl : public torch::nn::Module {
 public:
  BasicBlockImpl(int in, int out, int stride);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr};
  torch::nn::Sequential shortcut_{nullptr};  // empty: identity
};
TORCH_MODULE(BasicBlock);

class ResNetEncoderImpl : public torch::nn::Module {
 public:
  explicit ResNetEncoderImpl(const ResNetOptions& options);
  // The last stage's feature map [N, widths.back(), h, w] (Grad-CAM reads
  // it).
  torch::Tensor FeatureMap(torch::Tensor images);
  // Global average pooled features [N, out_features()].
  torch::Tensor forward(torch::Tensor images);
  int out_features() const { return out_features_; }

 private:
  torch::nn::Sequential stem_{nullptr};
  torch::nn::ModuleList stages_{nullptr};  // of Sequential blocks
  int out_features_ = 0;
};
TORCH_MODULE(ResNetEncoder);

}  // namespace echofed

#endif  // ECHOFED_MODELS_RESNET_H_
