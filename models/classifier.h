#ifndef ECHOFED_MODELS_CLASSIFIER_H_
#define ECHOFED_MODELS_CLASSIFIER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "torch/torch.h"

namespace echofed {

// An image classifier: [N, 1, H, W] grayscale in, [N, classes] logits out.
class ImageClassifierImpl : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor images) = 0;
};

// A small CNN (three conv-BN-ReLU-pool blocks, about 25k parameters) for
// tests and CPU demos.
class SmallCnnImpl : public ImageClassifierImpl {
 public:
  explicit SmallCnnImpl(int num_classes, int width = 16);
  torch::Tensor forward(torch::Tensor images) override;

 private:
  torch::nn::Sequential features_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(SmallCnn);

// Benchmark model: `parameters` float32 weights in tensors of at most 4M
// values that play no part in the prediction, plus a tiny head so that it
// still classifies. Measures federation overhead for a given model size
// ("bench_blob_<parameters>" in plans).
class BlobImpl : public ImageClassifierImpl {
 public:
  BlobImpl(int64_t parameters, int num_classes);
  torch::Tensor forward(torch::Tensor images) override;

 private:
  std::vector<torch::Tensor> blobs_;
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(Blob);

struct ModelOptions {
  std::string name;
  int num_classes = 3;
};

// The model registry: plans name models ("small_cnn"). Parameters are
// initialised from torch's global generator, so seed it first for a
// reproducible start.
absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> CreateClassifier(
    const ModelOptions& options);
std::vector<std::string> RegisteredModels();

}  // namespace echofed

#endif  // ECHOFED_MODELS_CLASSIFIER_H_
