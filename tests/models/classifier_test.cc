#include "models/classifier.h"

#include <limits>

#include "gtest/gtest.h"
#include "models/state_exchange.h"
#include "proto/plan.pb.h"

namespace echofed {
namespace {

int64_t ParameterCount(const torch::nn::Module& module) {
  int64_t count = 0;
  for (const torch::Tensor& parameter : module.parameters()) {
    count += parameter.numel();
  }
  return count;
}

TEST(ClassifierTest, ResNet18HasTheSizeOfResNet18) {
  auto model = *CreateClassifier({"resnet18", 3});
  // torchvision's resnet18 has 11,689,512 parameters with a 3-channel stem
  // and 1000 classes; one input channel (-6,272) and 3 classes (-511,461).
  EXPECT_EQ(ParameterCount(*model), 11689512 - 6272 - 511461);
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_EQ(model->forward(torch::randn({2, 1, 224, 224})).sizes(),
            torch::IntArrayRef({2, 3}));
}

TEST(ClassifierTest, EveryRegisteredModelBuildsAndPredicts) {
  for (const std::string& name :
       {"small_cnn", "resnet_small", "resnet_small_fusion",
        "resnet_small_gated_fusion", "bench_blob_1000"}) {
    ModelOptions options{name, 3};
    if (IsFusionModel(name)) {
      options.heads = {Plan::SUBTYPE, Plan::HIGH_RISK, Plan::PROGNOSIS};
      options.clinical_features = 5;
    }
    absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> model =
        CreateClassifier(options);
    ASSERT_TRUE(model.ok()) << name << ": " << model.status();
    (*model)->eval();
    torch::NoGradGuard no_grad;
    torch::Tensor images = torch::randn({4, 1, 64, 64});
    torch::Tensor clinical = torch::randn({4, 5});
    ModelOutputs outputs = (*model)->Predict(images, clinical);
    EXPECT_EQ(outputs.subtype.sizes(), torch::IntArrayRef({4, 3})) << name;
    EXPECT_EQ(outputs.heads.size(), IsFusionModel(name) ? 2u : 0u) << name;
    for (const auto& [head, output] : outputs.heads) {
      EXPECT_EQ(output.sizes(), torch::IntArrayRef({4})) << name;
    }
    EXPECT_EQ((*model)->uses_clinical(), IsFusionModel(name));
  }
}

TEST(ClassifierTest, RefusesHeadsAnImageModelCannotHaveAndFusionWithoutData) {
  ModelOptions image_only{"resnet_small", 3, {Plan::SUBTYPE, Plan::RESPONSE}};
  EXPECT_EQ(CreateClassifier(image_only).status().code(),
            absl::StatusCode::kInvalidArgument);
  ModelOptions fusion{"resnet_small_fusion", 3, {Plan::SUBTYPE}, 0};
  EXPECT_EQ(CreateClassifier(fusion).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateClassifier({"resnet34", 3}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(ClassifierTest, FusionToleratesMissingClinicalValues) {
  auto model = *CreateClassifier(
      {"resnet_small_gated_fusion", 3, {Plan::BONE_MARROW}, 4});
  model->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor clinical =
      torch::full({2, 4}, std::numeric_limits<float>::quiet_NaN());
  ModelOutputs outputs = model->Predict(torch::randn({2, 1, 64, 64}), clinical);
  EXPECT_TRUE(torch::isfinite(outputs.subtype).all().item<bool>());
  EXPECT_TRUE(
      torch::isfinite(outputs.heads.at(Plan::BONE_MARROW)).all().item<bool>());
  // The image-only entry point is the same as all-missing clinical data.
  torch::Tensor images = torch::randn({2, 1, 64, 64});
  EXPECT_TRUE(torch::allclose(model->forward(images),
                              model->Predict(images, clinical).subtype));
}

TEST(ClassifierTest, FederatedClinicalStatisticsEqualThePooledOnes) {
  // Two sites set their local statistics scaled by their FedAvg weight; the
  // weighted mean of the two exported states (what FedAvg computes) yields
  // exactly the pooled mean and variance, missing values excluded.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  torch::Tensor site_a =
      torch::tensor({{1.0f, 10.0f}, {3.0f, nan}, {5.0f, 30.0f}});
  torch::Tensor site_b = torch::tensor({{7.0f, nan}, {9.0f, 50.0f}});
  const double weight_a = 3, weight_b = 2;
  ClinicalEncoder a(2, 8), b(2, 8), pooled(2, 8);
  a->SetLocalStatistics(site_a, weight_a);
  b->SetLocalStatistics(site_b, weight_b);
  auto buffers = [](ClinicalEncoder& encoder) {
    return encoder->named_buffers();
  };
  for (const std::string name :
       {"stat_count", "stat_sum", "stat_sum_squares"}) {
    torch::Tensor average =
        (weight_a * buffers(a)[name] + weight_b * buffers(b)[name]) /
        (weight_a + weight_b);
    buffers(pooled)[name].copy_(average);
  }
  // Feature 0: values 1,3,5,7,9 (mean 5, population variance 8);
  // feature 1: 10,30,50 (mean 30, variance 266.67).
  torch::Tensor count = buffers(pooled)["stat_count"];
  torch::Tensor mean = buffers(pooled)["stat_sum"] / count;
  torch::Tensor variance =
      buffers(pooled)["stat_sum_squares"] / count - mean * mean;
  EXPECT_NEAR(mean[0].item<double>(), 5.0, 1e-12);
  EXPECT_NEAR(mean[1].item<double>(), 30.0, 1e-12);
  EXPECT_NEAR(variance[0].item<double>(), 8.0, 1e-9);
  EXPECT_NEAR(variance[1].item<double>(), 800.0 / 3, 1e-9);
}

TEST(ClassifierTest, StateExchangeMarksBuffers) {
  auto model = *CreateClassifier({"resnet_small_fusion", 3, {}, 3});
  TensorBundle state = *ExportState(*model, "resnet_small_fusion");
  int buffers = 0;
  for (const TensorSpec& spec : state.manifest.tensors()) {
    const bool statistic =
        spec.name().find("running_") != std::string::npos ||
        spec.name().find("num_batches") != std::string::npos ||
        spec.name().find("stat_") != std::string::npos;
    EXPECT_EQ(spec.buffer(), statistic) << spec.name();
    buffers += spec.buffer();
  }
  EXPECT_GT(buffers, 0);
}

}  // namespace
}  // namespace echofed
