#include "site-agent/trainer.h"

#include "common/metrics.h"
#include "gtest/gtest.h"
#include "site-agent/clinical_features.h"
#include "site-agent/cohort.h"
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

TEST(TrainerTest, FusionModelLearnsEveryHeadFromImagesAndClinicalData) {
  torch::set_num_threads(1);
  TempDir dir;
  SyntheticCohortOptions cohort;
  cohort.out_dir = dir.path();
  cohort.sites = 1;
  cohort.patients_per_site = 80;
  ASSERT_TRUE(WriteSyntheticCohort(cohort).ok());
  absl::StatusOr<SiteInputs> inputs = LoadSiteInputs(dir.Join("site-1"));
  ASSERT_TRUE(inputs.ok()) << inputs.status();
  ASSERT_TRUE(inputs->clinical.has_value());
  std::vector<std::string> classes = {"NB", "GNB", "GN"};
  ImageSet data = LoadImageSet(inputs->manifest.records, classes, 48);
  std::vector<int> heads = {Plan::SUBTYPE, Plan::HIGH_RISK, Plan::BONE_MARROW,
                            Plan::RESPONSE, Plan::PROGNOSIS};
  AttachClinical(&*inputs->clinical, heads, &data);
  ASSERT_EQ(data.clinical.size(0), data.size());
  EXPECT_GT((~torch::isnan(data.binary_targets.at(Plan::HIGH_RISK)))
                .sum()
                .item<int64_t>(),
            data.size() / 2);

  torch::manual_seed(5);
  ModelOptions model_options{"resnet_small_gated_fusion", 3, heads,
                             static_cast<int>(ClinicalFeatureNames().size())};
  auto model = *CreateClassifier(model_options);
  auto* fusion = dynamic_cast<FusionModelImpl*>(model.get());
  ASSERT_NE(fusion, nullptr);
  fusion->clinical_encoder()->SetLocalStatistics(data.clinical, 1.0);
  EvaluationOptions evaluation;
  evaluation.min_cell_count = 5;
  LocalEvaluation before = EvaluateModel(*model, data, evaluation);
  ASSERT_EQ(before.heads.size(), 4u);
  TrainOptions options;
  options.trainer = Plan::ADAMW;
  options.epochs = 6;
  options.batch_size = 16;
  options.learning_rate = 3e-3;
  options.loss = Plan::FOCAL;
  ASSERT_TRUE(TrainLocal(*model, data, options).ok());
  LocalEvaluation after = EvaluateModel(*model, data, evaluation);
  EXPECT_LT(after.subtype.loss_sum(), before.subtype.loss_sum());
  for (const HeadAggregate& head : after.heads) {
    if (head.head() == Plan::PROGNOSIS) {
      EXPECT_FALSE(head.survival().suppressed());
      EXPECT_GT(CIndex(head.survival()).c_index, 0.6);
    } else {
      EXPECT_FALSE(head.binary().suppressed());
      // Clinical inputs (stage, MYCN, markers) carry these labels.
      EXPECT_GT(Summarize(head.binary()).classes[1].auc, 0.7)
          << Plan::Head_Name(static_cast<Plan::Head>(head.head()));
    }
  }
}

TEST(TrainerTest, CoxLossMatchesTheHandComputedPartialLikelihood) {
  // Times 1, 2, 3 with events at 1 and 3; risks a, b, c.
  torch::Tensor risk = torch::tensor({0.5, -0.2, 1.0}, torch::kFloat64);
  torch::Tensor months = torch::tensor({1.0, 2.0, 3.0}, torch::kFloat64);
  torch::Tensor event = torch::tensor({1.0, 0.0, 1.0}, torch::kFloat64);
  // Event at t=1: risk set {all}; at t=3: {3}.
  double expected =
      -((0.5 - std::log(std::exp(0.5) + std::exp(-0.2) + std::exp(1.0))) +
        (1.0 - 1.0)) /
      2;
  EXPECT_NEAR(CoxLoss(risk, months, event).item<double>(), expected, 1e-12);
  EXPECT_EQ(CoxLoss(risk, months, torch::zeros_like(event)).item<double>(), 0);
}

TEST(TrainerTest, ProximalTermHoldsWeightsNearTheGlobalModel) {
  torch::set_num_threads(1);
  ImageSet data;
  torch::manual_seed(1);
  data.images = torch::randn({32, 1, 32, 32});
  data.labels = torch::randint(0, 3, {32}, torch::kInt64);
  auto drift = [&](double mu) {
    torch::manual_seed(2);
    auto model = *CreateClassifier({"small_cnn", 3});
    std::vector<torch::Tensor> start;
    for (auto& p : model->parameters()) start.push_back(p.detach().clone());
    TrainOptions options;
    options.epochs = 3;
    options.learning_rate = 0.05;
    options.proximal_mu = mu;
    EXPECT_TRUE(TrainLocal(*model, data, options).ok());
    double distance = 0;
    auto parameters = model->parameters();
    for (size_t i = 0; i < start.size(); ++i) {
      distance += (parameters[i] - start[i]).pow(2).sum().item<double>();
    }
    return std::sqrt(distance);
  };
  EXPECT_LT(drift(10.0), 0.5 * drift(0.0));
}

TEST(TrainerTest, CosineScheduleDecaysToOneTwentieth) {
  Plan plan;
  plan.set_learning_rate(0.1);
  plan.set_rounds(5);
  plan.set_schedule(Plan::COSINE);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(plan, 1), 0.1);
  EXPECT_NEAR(ScheduledLearningRate(plan, 3), (0.1 + 0.005) / 2, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(plan, 5), 0.005, 1e-12);
  plan.set_schedule(Plan::CONSTANT);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(plan, 5), 0.1);
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
