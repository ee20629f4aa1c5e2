#ifndef ECHOFED_MODELS_CLASSIFIER_H_
#define ECHOFED_MODELS_CLASSIFIER_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/resnet.h"
#include "torch/torch.h"

namespace echofed {

// What a model predicts for a batch.
struct ModelOutputs {
  // [N, classes] subtype logits.
  torch::Tensor subtype;
  // Fusion models: per extra head (Plan::Head value) [N]: a logit for the
  // binary heads, the Cox log-risk score for PROGNOSIS.
  std::map<int, torch::Tensor> heads;
};

// A diagnostic model: [N, 1, H, W] grayscale images (and, for fusion models,
// [N, F] clinical features with NaN where missing) in, predictions out.
class ImageClassifierImpl : public torch::nn::Module {
 public:
  // Subtype logits from the images alone.
  virtual torch::Tensor forward(torch::Tensor images) = 0;
  // Every head. `clinical` is ignored by image-only models.
  virtual ModelOutputs Predict(torch::Tensor images, torch::Tensor clinical) {
    return {forward(images), {}};
  }
  virtual bool uses_clinical() const { return false; }
  // The image encoder's last feature map [N, C, h, w] and the subtype
  // logits computed from it, for Grad-CAM; empty when the model has none.
  virtual std::pair<torch::Tensor, ModelOutputs> PredictWithFeatureMap(
      torch::Tensor images, torch::Tensor clinical) {
    return {torch::Tensor(), Predict(images, clinical)};
  }
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

// A ResNet encoder and a linear subtype head.
class ResNetClassifierImpl : public ImageClassifierImpl {
 public:
  ResNetClassifierImpl(const ResNetOptions& options, int num_classes);
  torch::Tensor forward(torch::Tensor images) override;
  std::pair<torch::Tensor, ModelOutputs> PredictWithFeatureMap(
      torch::Tensor images, torch::Tensor clinical) override;

 private:
  ResNetEncoder encoder_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear head_{nullptr};
};
TORCH_MODULE(ResNetClassifier);

// Clinical features -> embedding. Each feature is standardised with
// statistics held in buffers, then a missing-value indicator is appended per
// feature (a missing value itself becomes 0, the mean), and an MLP follows.
//
// The statistics are federated without any per-patient value leaving a
// site: a site exports, instead of the global statistics it received, its
// own count, sum and sum of squares per feature divided by its FedAvg
// weight; the weighted mean the coordinator forms is then the pooled sum
// over all sites divided by the total weight, and count, sum and sum of
// squares keep the same divisor, so mean and variance come out exact.
class ClinicalEncoderImpl : public torch::nn::Module {
 public:
  ClinicalEncoderImpl(int features, int embedding);
  // [N, F] with NaN for missing -> [N, embedding].
  torch::Tensor forward(torch::Tensor clinical);
  // Replaces the statistics buffers with this site's contribution (see
  // above); `weight` is the site's FedAvg weight (its sample count).
  void SetLocalStatistics(torch::Tensor clinical, double weight);
  int embedding() const { return embedding_; }

 private:
  torch::Tensor stat_count_, stat_sum_, stat_sum_squares_;  // [F] float64
  torch::nn::Sequential mlp_{nullptr};
  int embedding_;
};
TORCH_MODULE(ClinicalEncoder);

// Ultrasound + clinical fusion with a subtype head and the plan's extra
// heads. kConcat concatenates the two embeddings; kGated learns, per
// patient, how much of each to use (g * image + (1 - g) * clinical, with g
// from both), which copes better with absent clinical data.
class FusionModelImpl : public ImageClassifierImpl {
 public:
  enum class Fusion { kConcat, kGated };
  FusionModelImpl(const ResNetOptions& image, int clinical_features,
                  int num_classes, const std::vector<int>& heads,
                  Fusion fusion);
  torch::Tensor forward(torch::Tensor images) override;
  ModelOutputs Predict(torch::Tensor images, torch::Tensor clinical) override;
  std::pair<torch::Tensor, ModelOutputs> PredictWithFeatureMap(
      torch::Tensor images, torch::Tensor clinical) override;
  bool uses_clinical() const override { return true; }
  ClinicalEncoder& clinical_encoder() { return clinical_; }

 private:
  ModelOutputs Heads(torch::Tensor image_embedding, torch::Tensor clinical);

  ResNetEncoder encoder_{nullptr};
  ClinicalEncoder clinical_{nullptr};
  Fusion fusion_;
  int clinical_features_;
  torch::nn::Linear image_projection_{nullptr}, clinical_projection_{nullptr};
  torch::nn::Linear gate_{nullptr};
  torch::nn::Dropout dropout_{nullptr};
  torch::nn::Linear subtype_{nullptr};
  std::vector<std::pair<int, torch::nn::Linear>> heads_;
};
TORCH_MODULE(FusionModel);

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
  // Fusion models: the extra heads (Plan::Head values other than SUBTYPE)
  // and the clinical feature count.
  std::vector<int> heads;
  int clinical_features = 0;
};

// The model registry: plans name models. Parameters are initialised from
// torch's global generator, so seed it first for a reproducible start.
//   small_cnn                       ~25k parameters, tests and demos
//   resnet18                        ResNet-18 (11.2M), 224-pixel images
//   resnet18_narrow                 ResNet-18 at half width (2.8M), 128-224
//                                   pixel images
//   resnet_small                    ResNet-10, widths 32..256 (1.2M), 64-128
//                                   pixel images on CPUs
//   <encoder>_fusion                image + clinical, concatenated
//   <encoder>_gated_fusion          image + clinical, gated
//   bench_blob_<parameters>         federation benchmarks
absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> CreateClassifier(
    const ModelOptions& options);
std::vector<std::string> RegisteredModels();
// Whether the named model reads clinical features (a "*_fusion" model).
bool IsFusionModel(const std::string& name);

}  // namespace echofed

#endif  // ECHOFED_MODELS_CLASSIFIER_H_
