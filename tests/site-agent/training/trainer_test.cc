#include "site-agent/training/trainer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/metrics.h"
#include "common/plan_util.h"
#include "gtest/gtest.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/cohort.h"
#include "site-agent/data/synthetic_cohort.h"
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
  // The rate decayed to 0 by the end: at a constant rate the last batches'
  // augmentation swings the final weights, and the loss on the plain images
  // ranged from 29 to 165 over 14 seeds (from 53 to 67 decayed).
  options.cosine_over_run = true;
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

// A set of `per_class[c]` patients of class c, one random image each.
ImageSet SmallSet(const std::vector<int>& per_class) {
  ImageSet data;
  std::vector<int64_t> labels;
  for (int c = 0; c < static_cast<int>(per_class.size()); ++c) {
    for (int i = 0; i < per_class[c]; ++i) {
      labels.push_back(c);
      data.patient_ids.push_back(absl::StrCat("p", c, "-", i));
    }
  }
  const int64_t n = static_cast<int64_t>(labels.size());
  torch::manual_seed(7);
  data.images = torch::randn({n, 1, 32, 32});
  data.labels = torch::tensor(labels, torch::kInt64);
  data.patients = n;
  return data;
}

TEST(TrainerTest, ClassesBelowTheMinimumCellCountAreWithheld) {
  torch::set_num_threads(1);
  torch::manual_seed(2);
  auto model = *CreateClassifier({"small_cnn", 3});
  EvaluationOptions options;
  options.min_cell_count = 5;
  // Class 2 has two patients: they leave every count of the set.
  LocalEvaluation evaluation =
      EvaluateModel(*model, SmallSet({9, 6, 2}), options);
  const EvalAggregate& a = evaluation.subtype;
  EXPECT_FALSE(evaluation.suppressed);
  EXPECT_FALSE(a.suppressed());
  ASSERT_TRUE(ValidateAggregate(a, 3).ok());
  EXPECT_EQ(std::vector<int>(a.withheld_classes().begin(),
                             a.withheld_classes().end()),
            std::vector<int>{2});
  EXPECT_EQ(evaluation.withheld_patients, 2);
  EXPECT_EQ(a.num_patients(), 15);
  EXPECT_EQ(a.num_images(), 15);
  for (int p = 0; p < 3; ++p) EXPECT_EQ(a.confusion(2 * 3 + p), 0);
  int64_t class_two_scores = 0;
  for (int c = 0; c < 3; ++c) {
    for (int b = 0; b < kScoreHistogramBins; ++b) {
      class_two_scores +=
          a.score_histogram((2 * 3 + c) * kScoreHistogramBins + b);
    }
  }
  EXPECT_EQ(class_two_scores, 0);
  // Without the minimum the same set releases all 17 patients.
  options.min_cell_count = 1;
  const EvalAggregate all =
      EvaluateModel(*model, SmallSet({9, 6, 2}), options).subtype;
  EXPECT_EQ(all.num_patients(), 17);
  EXPECT_EQ(all.withheld_classes_size(), 0);
  EXPECT_LT(a.loss_sum(), all.loss_sum());

  // Seven patients, but no class of five: nothing is left to release.
  options.min_cell_count = 5;
  LocalEvaluation none = EvaluateModel(*model, SmallSet({4, 3, 0}), options);
  EXPECT_TRUE(none.suppressed);
  EXPECT_TRUE(none.subtype.suppressed());
  EXPECT_EQ(none.subtype.withheld_classes_size(), 0);
  EXPECT_TRUE(ValidateAggregate(none.subtype, 3).ok());
  // A class with no patient at all is not withheld: zero names nobody.
  LocalEvaluation absent = EvaluateModel(*model, SmallSet({6, 5, 0}), options);
  EXPECT_FALSE(absent.suppressed);
  EXPECT_EQ(absent.subtype.withheld_classes_size(), 0);
  EXPECT_EQ(absent.subtype.num_patients(), 11);
}

TEST(TrainerTest, HeadsWithFewPositivesNegativesOrEventsAreSuppressed) {
  torch::set_num_threads(1);
  std::vector<int> heads = {Plan::SUBTYPE, Plan::HIGH_RISK, Plan::BONE_MARROW,
                            Plan::PROGNOSIS};
  const int features = static_cast<int>(ClinicalFeatureNames().size());
  torch::manual_seed(5);
  auto model =
      *CreateClassifier({"resnet_small_gated_fusion", 3, heads, features});
  ImageSet data = SmallSet({8, 7, 6});
  const int64_t n = data.size();
  data.clinical = torch::randn({n, features});
  auto* fusion = dynamic_cast<FusionModelImpl*>(model.get());
  ASSERT_NE(fusion, nullptr);
  fusion->clinical_encoder()->SetLocalStatistics(data.clinical, 1.0);
  // HIGH_RISK: 3 positives; BONE_MARROW: 10 and 11; PROGNOSIS: 3 events.
  torch::Tensor high_risk = torch::zeros({n});
  high_risk.slice(0, 0, 3).fill_(1);
  torch::Tensor bone_marrow = torch::zeros({n});
  bone_marrow.slice(0, 0, 10).fill_(1);
  data.binary_targets[Plan::HIGH_RISK] = high_risk;
  data.binary_targets[Plan::BONE_MARROW] = bone_marrow;
  data.survival_months = torch::arange(1, n + 1, torch::kFloat32);
  data.survival_event = torch::zeros({n});
  data.survival_event.slice(0, 0, 3).fill_(1);
  EvaluationOptions options;
  options.min_cell_count = 5;
  LocalEvaluation evaluation = EvaluateModel(*model, data, options);
  EXPECT_FALSE(evaluation.suppressed);
  ASSERT_EQ(evaluation.heads.size(), 3u);
  for (const HeadAggregate& head : evaluation.heads) {
    SCOPED_TRACE(Plan::Head_Name(static_cast<Plan::Head>(head.head())));
    if (head.head() == Plan::PROGNOSIS) {
      EXPECT_TRUE(head.survival().suppressed());
      EXPECT_EQ(head.survival().cells_size(), 0);
      EXPECT_TRUE(ValidateSurvivalAggregate(head.survival()).ok());
    } else if (head.head() == Plan::HIGH_RISK) {
      EXPECT_TRUE(head.binary().suppressed());
      EXPECT_EQ(head.binary().num_images(), 0);
      EXPECT_TRUE(ValidateAggregate(head.binary(), 2).ok());
    } else {
      EXPECT_FALSE(head.binary().suppressed());
      EXPECT_EQ(head.binary().num_patients(), n);
      EXPECT_TRUE(ValidateAggregate(head.binary(), 2).ok());
    }
  }
  // Five events are enough.
  data.survival_event.slice(0, 0, 5).fill_(1);
  for (const HeadAggregate& head : EvaluateModel(*model, data, options).heads) {
    if (head.head() == Plan::PROGNOSIS) {
      EXPECT_FALSE(head.survival().suppressed());
      EXPECT_EQ(head.survival().num_patients(), n);
    }
  }
  // A withheld subtype class leaves the heads as well: the heads' patient
  // counts would otherwise give its size away.
  ImageSet fewer = SmallSet({10, 9, 2});
  fewer.clinical = torch::randn({fewer.size(), features});
  torch::Tensor half = torch::zeros({fewer.size()});
  half.slice(0, 0, 8).fill_(1);
  fewer.binary_targets[Plan::BONE_MARROW] = half;
  fewer.survival_months = torch::full({fewer.size()}, NAN);
  fewer.survival_event = torch::full({fewer.size()}, NAN);
  LocalEvaluation withheld = EvaluateModel(*model, fewer, options);
  EXPECT_EQ(withheld.withheld_patients, 2);
  for (const HeadAggregate& head : withheld.heads) {
    if (head.head() == Plan::BONE_MARROW) {
      EXPECT_FALSE(head.binary().suppressed());
      EXPECT_EQ(head.binary().num_patients(), 19);
    }
  }
}

// A deterministic problem for optimiser tests: one full batch, no
// augmentation, a model without dropout or batch norm (a linear head).
struct LinearProblem {
  ImageSet data;
  TrainOptions options;
  LinearProblem() {
    torch::manual_seed(11);
    data.images = torch::randn({24, 1, 8, 8});
    data.labels = torch::randint(0, 3, {24}, torch::kInt64);
    options.trainer = Plan::ADAMW;
    options.batch_size = 24;
    options.learning_rate = 0.05;
    options.augment = false;
  }
  static std::shared_ptr<ImageClassifierImpl> NewModel() {
    torch::manual_seed(12);
    return *CreateClassifier({"bench_blob_16", 3});
  }
};

torch::Tensor Flat(ImageClassifierImpl& model) {
  std::vector<torch::Tensor> pieces;
  for (const torch::Tensor& p : model.parameters()) {
    pieces.push_back(p.detach().flatten());
  }
  return torch::cat(pieces);
}

TEST(TrainerTest, KeptOptimizerStateContinuesAsOneRun) {
  // Two rounds of one epoch with the optimiser state kept between them are
  // two epochs of one optimiser; started afresh, Adam's moments and bias
  // correction restart and the second round goes elsewhere.
  LinearProblem problem;
  auto whole = LinearProblem::NewModel();
  TrainOptions two_epochs = problem.options;
  two_epochs.epochs = 2;
  ASSERT_TRUE(TrainLocal(*whole, problem.data, two_epochs).ok());

  auto kept = LinearProblem::NewModel();
  std::string state;
  TrainOptions round = problem.options;
  round.optimizer_state = &state;
  ASSERT_TRUE(TrainLocal(*kept, problem.data, round).ok());
  EXPECT_FALSE(state.empty());
  ASSERT_TRUE(TrainLocal(*kept, problem.data, round).ok());

  auto fresh = LinearProblem::NewModel();
  ASSERT_TRUE(TrainLocal(*fresh, problem.data, problem.options).ok());
  ASSERT_TRUE(TrainLocal(*fresh, problem.data, problem.options).ok());

  EXPECT_TRUE(torch::allclose(Flat(*kept), Flat(*whole), 1e-5, 1e-6));
  EXPECT_GT((Flat(*fresh) - Flat(*whole)).abs().max().item<double>(), 1e-3);
}

TEST(TrainerTest, KeptOptimizerStateTakesThisRoundsRate) {
  // The archive carries the previous round's learning rate; the new
  // round's (here 0: nothing may move) is the one used.
  LinearProblem problem;
  auto model = LinearProblem::NewModel();
  std::string state;
  TrainOptions round = problem.options;
  round.optimizer_state = &state;
  ASSERT_TRUE(TrainLocal(*model, problem.data, round).ok());
  torch::Tensor after_first = Flat(*model).clone();
  round.learning_rate = 0;
  ASSERT_TRUE(TrainLocal(*model, problem.data, round).ok());
  EXPECT_TRUE(torch::equal(Flat(*model), after_first));
}

TEST(TrainerTest, OptimizerStateOfAnotherModelIsRefused) {
  LinearProblem problem;
  auto small = *CreateClassifier({"small_cnn", 3});
  std::string state;
  TrainOptions options = problem.options;
  options.optimizer_state = &state;
  ImageSet images = problem.data;
  images.images = torch::randn({24, 1, 32, 32});
  ASSERT_TRUE(TrainLocal(*small, images, options).ok());
  auto other = LinearProblem::NewModel();
  absl::StatusOr<TrainResult> result =
      TrainLocal(*other, problem.data, options);
  EXPECT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
}

TEST(TrainerTest, CosineOverTheRunReachesZeroAtTheEnd) {
  Plan plan;
  plan.set_learning_rate(0.1);
  plan.set_rounds(4);
  plan.set_schedule(Plan::COSINE_OVER_RUN);
  TrainOptions second = TrainOptionsFromPlan(plan, 2);
  EXPECT_TRUE(second.cosine_over_run);
  EXPECT_DOUBLE_EQ(second.learning_rate, 0.1);
  EXPECT_DOUBLE_EQ(second.run_progress_begin, 0.25);
  EXPECT_DOUBLE_EQ(second.run_progress_end, 0.5);
  // At the end of the run the rate is 0: training changes nothing.
  LinearProblem problem;
  auto model = LinearProblem::NewModel();
  torch::Tensor before = Flat(*model).clone();
  TrainOptions finished = problem.options;
  finished.cosine_over_run = true;
  finished.run_progress_begin = 1;
  finished.run_progress_end = 1;
  ASSERT_TRUE(TrainLocal(*model, problem.data, finished).ok());
  EXPECT_TRUE(torch::equal(Flat(*model), before));
  // Half way through, it does.
  finished.run_progress_begin = finished.run_progress_end = 0.5;
  ASSERT_TRUE(TrainLocal(*model, problem.data, finished).ok());
  EXPECT_FALSE(torch::equal(Flat(*model), before));
}

TEST(TrainerTest, PlanDefaultsGiveTheMeasuredRecipe) {
  Plan plan;
  plan.add_class_names("a");
  plan.add_class_names("b");
  plan.set_trainer(Plan::ADAMW);
  ApplyPlanDefaults(&plan);
  TrainOptions options = TrainOptionsFromPlan(plan, 1);
  EXPECT_TRUE(plan.keep_optimizer_state());
  EXPECT_EQ(options.augmentation, Plan::STRONG);
  EXPECT_DOUBLE_EQ(options.weight_decay, 1e-2);
  EXPECT_TRUE(options.augment);
  EXPECT_FALSE(options.cosine_over_run);
  // SGD's decay is L2 and smaller.
  Plan sgd;
  sgd.set_trainer(Plan::SGD);
  EXPECT_DOUBLE_EQ(TrainOptionsFromPlan(sgd, 1).weight_decay, 1e-4);
  plan.set_augmentation(Plan::MILD);
  plan.set_weight_decay(1e-4);
  options = TrainOptionsFromPlan(plan, 1);
  EXPECT_EQ(options.augmentation, Plan::MILD);
  EXPECT_DOUBLE_EQ(options.weight_decay, 1e-4);
}

TEST(TrainerTest, MixupComesFromThePlanAndIsBounded) {
  Plan plan;
  for (const char* name : {"NB", "GN"}) plan.add_class_names(name);
  plan.add_sites()->set_site("site-a");
  plan.mutable_sites(0)->set_role(Plan::TRAIN);
  ApplyPlanDefaults(&plan);
  EXPECT_DOUBLE_EQ(plan.mixup_alpha(), 0);
  EXPECT_DOUBLE_EQ(TrainOptionsFromPlan(plan, 1).mixup_alpha, 0);
  plan.set_mixup_alpha(0.2);
  EXPECT_TRUE(ValidatePlan(plan).ok()) << ValidatePlan(plan);
  EXPECT_DOUBLE_EQ(TrainOptionsFromPlan(plan, 3).mixup_alpha, 0.2);
  for (double bad : {-0.1, 11.0, std::nan("")}) {
    plan.set_mixup_alpha(bad);
    EXPECT_NE(ValidatePlan(plan).message().find("mixup_alpha"),
              std::string::npos)
        << bad;
  }
}

TEST(TrainerTest, MildAugmentationKeepsShapeAndFiniteValues) {
  for (Plan::Augmentation kind : {Plan::MILD, Plan::STRONG}) {
    LinearProblem problem;
    TrainOptions options = problem.options;
    options.augment = true;
    options.augmentation = kind;
    auto model = LinearProblem::NewModel();
    absl::StatusOr<TrainResult> result =
        TrainLocal(*model, problem.data, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(std::isfinite(result->mean_loss));
  }
}

TEST(TrainerTest, TestTimeFlipScoresTheMeanOfImageAndMirror) {
  auto model = LinearProblem::NewModel();
  ImageSet data;
  torch::manual_seed(5);
  data.images = torch::randn({6, 1, 8, 8});
  data.labels = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kInt64);
  data.patient_ids = {"a", "b", "c", "d", "e", "f"};
  EvaluationOptions options;
  options.test_time_flip = true;
  LocalEvaluation flipped = EvaluateModel(*model, data, options);
  options.test_time_flip = false;
  LocalEvaluation plain = EvaluateModel(*model, data, options);

  torch::NoGradGuard no_grad;
  model->eval();
  torch::Tensor direct = torch::softmax(model->forward(data.images), 1);
  torch::Tensor mirror =
      torch::softmax(model->forward(data.images.flip({3})), 1);
  torch::Tensor mean = ((direct + mirror) / 2).to(torch::kFloat64);
  double expected_loss = 0;
  std::vector<int64_t> expected_confusion(9, 0);
  for (int64_t i = 0; i < 6; ++i) {
    const int64_t truth = data.labels[i].item<int64_t>();
    expected_loss -= std::log(mean[i][truth].item<double>());
    ++expected_confusion[truth * 3 + mean[i].argmax().item<int64_t>()];
  }
  EXPECT_NEAR(flipped.subtype.loss_sum(), expected_loss, 1e-5);
  for (int cell = 0; cell < 9; ++cell) {
    EXPECT_EQ(flipped.subtype.confusion(cell), expected_confusion[cell])
        << cell;
  }
  // The mirror changes this model's scores (the check above is not the
  // plain evaluation again).
  EXPECT_GT(std::abs(flipped.subtype.loss_sum() - plain.subtype.loss_sum()),
            1e-4);

  // An image that is its own mirror scores as without the flip.
  data.images = (data.images + data.images.flip({3})) / 2;
  options.test_time_flip = true;
  flipped = EvaluateModel(*model, data, options);
  options.test_time_flip = false;
  plain = EvaluateModel(*model, data, options);
  EXPECT_NEAR(flipped.subtype.loss_sum(), plain.subtype.loss_sum(), 1e-5);
}

// Three classes, eight images each, told apart by which quarter of the
// image is bright: a linear model on pooled pixels separates them.
ImageSet SeparableProblem() {
  torch::manual_seed(21);
  ImageSet data;
  data.images = 0.1 * torch::randn({24, 1, 8, 8});
  data.labels = torch::arange(24, torch::kInt64).remainder(3);
  using torch::indexing::Slice;
  for (int64_t i = 0; i < 24; ++i) {
    const int64_t c = data.labels[i].item<int64_t>();
    // A view: brightens the image in place.
    data.images.index({i, 0, Slice(0, 4), Slice(c * 2, c * 2 + 4)}).add_(2.0);
  }
  return data;
}

// The mean probability the model gives each image's own class.
double MeanTrueClassProbability(ImageClassifierImpl& model,
                                const ImageSet& data) {
  torch::NoGradGuard no_grad;
  model.eval();
  torch::Tensor probabilities = torch::softmax(model.forward(data.images), 1);
  model.train();
  return probabilities.gather(1, data.labels.unsqueeze(1))
      .mean()
      .item<double>();
}

TEST(TrainerTest, LabelSmoothingKeepsPredictionsFromCertainty) {
  // Trained to convergence on separable data, plain cross-entropy drives
  // the true class's probability to 1; smoothed by 0.3 over 3 classes its
  // optimum is 1 - 0.3 + 0.1 = 0.8.
  ImageSet data = SeparableProblem();
  TrainOptions options;
  options.trainer = Plan::ADAMW;
  options.batch_size = 24;
  options.learning_rate = 0.05;
  options.weight_decay = 0;
  options.augment = false;
  options.epochs = 400;
  auto plain = LinearProblem::NewModel();
  ASSERT_TRUE(TrainLocal(*plain, data, options).ok());
  EXPECT_GT(MeanTrueClassProbability(*plain, data), 0.97);

  options.label_smoothing = 0.3;
  auto smoothed = LinearProblem::NewModel();
  ASSERT_TRUE(TrainLocal(*smoothed, data, options).ok());
  EXPECT_NEAR(MeanTrueClassProbability(*smoothed, data), 0.8, 0.03);
}

TEST(TrainerTest, MixupIsReproducibleAndStillLearns) {
  ImageSet data = SeparableProblem();
  TrainOptions options;
  options.trainer = Plan::ADAMW;
  options.batch_size = 8;
  options.learning_rate = 0.05;
  options.augment = false;
  options.epochs = 30;
  options.seed = 5;
  auto plain = LinearProblem::NewModel();
  ASSERT_TRUE(TrainLocal(*plain, data, options).ok());

  options.mixup_alpha = 0.4;
  auto mixed = LinearProblem::NewModel();
  auto again = LinearProblem::NewModel();
  const double before = MeanTrueClassProbability(*mixed, data);
  ASSERT_TRUE(TrainLocal(*mixed, data, options).ok());
  ASSERT_TRUE(TrainLocal(*again, data, options).ok());
  // The same seed mixes the same pairs with the same weights.
  EXPECT_TRUE(torch::equal(Flat(*mixed), Flat(*again)));
  // Mixing changes the steps ...
  EXPECT_FALSE(torch::allclose(Flat(*mixed), Flat(*plain)));
  // ... and the model still learns the classes.
  EXPECT_GT(MeanTrueClassProbability(*mixed, data), before + 0.3);
}

TEST(TrainerTest, ReleasedGradientsTakeTheSameStepsAsZeroedOnes) {
  // SGD with momentum and weight decay over three steps: gradients dropped
  // before each step (ReleaseGradients) or zeroed (zero_grad) give the
  // same weights, and none are kept after release.
  LinearProblem problem;
  auto zeroed = LinearProblem::NewModel();
  auto released = LinearProblem::NewModel();
  auto options =
      torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-4);
  torch::optim::SGD zeroed_optimizer(zeroed->parameters(), options);
  torch::optim::SGD released_optimizer(released->parameters(), options);
  for (int step = 0; step < 3; ++step) {
    zeroed_optimizer.zero_grad();
    torch::nn::functional::cross_entropy(zeroed->forward(problem.data.images),
                                         problem.data.labels)
        .backward();
    zeroed_optimizer.step();
    ReleaseGradients(released_optimizer);
    for (const torch::Tensor& parameter : released->parameters()) {
      EXPECT_FALSE(parameter.grad().defined());
    }
    torch::nn::functional::cross_entropy(released->forward(problem.data.images),
                                         problem.data.labels)
        .backward();
    released_optimizer.step();
  }
  EXPECT_TRUE(torch::equal(Flat(*zeroed), Flat(*released)));
}

TEST(TrainerTest, PatientLevelAggregateScoresThePatientsMeanProbability) {
  // Patient p has two images, q one: the patient-level aggregate has two
  // cases, p's with the mean of its images' probabilities.
  auto model = LinearProblem::NewModel();
  ImageSet data;
  torch::manual_seed(3);
  data.images = torch::randn({3, 1, 8, 8});
  data.labels = torch::tensor({0, 0, 1}, torch::kInt64);
  data.patient_ids = {"p", "p", "q"};
  EvaluationOptions options;
  LocalEvaluation evaluation = EvaluateModel(*model, data, options);
  EXPECT_EQ(evaluation.subtype.num_images(), 3);
  EXPECT_EQ(evaluation.patient_subtype.num_images(), 2);
  EXPECT_EQ(evaluation.patient_subtype.num_patients(), 2);
  torch::NoGradGuard no_grad;
  model->eval();
  torch::Tensor p = torch::softmax(model->forward(data.images), 1);
  const int predicted_p = p.slice(0, 0, 2).mean(0).argmax().item<int>();
  const int predicted_q = p[2].argmax().item<int>();
  // Confusion rows are true classes: p is class 0, q class 1.
  EXPECT_EQ(evaluation.patient_subtype.confusion(0 * 3 + predicted_p), 1);
  EXPECT_EQ(evaluation.patient_subtype.confusion(1 * 3 + predicted_q), 1);
  // Suppressed with the image-level set.
  options.min_cell_count = 5;
  evaluation = EvaluateModel(*model, data, options);
  EXPECT_TRUE(evaluation.patient_subtype.suppressed());
}

}  // namespace
}  // namespace echofed
