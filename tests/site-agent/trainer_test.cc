#include "site-agent/trainer.h"

#include "gtest/gtest.h"
#include "site-agent/synthetic_cohort.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

TEST(TrainerTest, LearnsTheSyntheticSubtypes) {
  torch::set_num_threads(1);
  TempDir dir;
  SyntheticCohortOptions cohort;
  cohort.out_dir = dir.path();
  cohort.sites = 1;
  cohort.patients_per_site = 60;
  ASSERT_TRUE(WriteSyntheticCohort(cohort).ok());
  SiteManifest manifest = *LoadManifest(dir.Join("site-1"));
  std::vector<std::string> classes = {"NB", "GNB", "GN"};
  ImageSet data = LoadImageSet(manifest.records, classes, 64);
  ASSERT_GT(data.size(), 60);

  torch::manual_seed(3);
  auto model = *CreateClassifier({"small_cnn", 3});
  EvalAggregate before =
      EvaluateLocal(*model, data, 3, INTERNAL_VALIDATION, torch::kCPU);
  TrainOptions options;
  options.class_count = 3;
  options.epochs = 8;
  options.batch_size = 16;
  options.learning_rate = 0.02;
  int progress_calls = 0;
  options.on_progress = [&](const TrainProgress&) { ++progress_calls; };
  absl::StatusOr<TrainResult> result = TrainLocal(*model, data, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->num_samples, data.size());
  EXPECT_GT(progress_calls, 8);
  EvalAggregate after =
      EvaluateLocal(*model, data, 3, INTERNAL_VALIDATION, torch::kCPU);
  EXPECT_EQ(after.num_images(), data.size());
  EXPECT_LT(after.loss_sum(), before.loss_sum() * 0.8);
}

TEST(TrainerTest, NoopTrainerChangesWeightsSlightly) {
  auto model = *CreateClassifier({"small_cnn", 3});
  torch::Tensor before = model->parameters()[0].clone();
  ImageSet data;
  data.images = torch::zeros({2, 1, 32, 32});
  data.labels = torch::zeros({2}, torch::kInt64);
  TrainOptions options;
  options.trainer = Plan::NOOP;
  ASSERT_TRUE(TrainLocal(*model, data, options).ok());
  EXPECT_NEAR((model->parameters()[0] - before).abs().max().item<double>(),
              1e-6, 1e-7);
}

TEST(TrainerTest, EmptyTrainingSetIsAnError) {
  auto model = *CreateClassifier({"small_cnn", 3});
  EXPECT_EQ(TrainLocal(*model, ImageSet(), TrainOptions()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(TrainerTest, DeviceSelection) {
  EXPECT_EQ(ResolveDevice("cpu")->type(), torch::kCPU);
  absl::StatusOr<torch::Device> automatic = ResolveDevice("auto");
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(automatic->is_cuda(), torch::cuda::is_available());
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(ResolveDevice("cuda").status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_FALSE(ResolveDevice("tpu").ok());
}

}  // namespace
}  // namespace echofed
