#include "coordinator/strategy.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/half.h"
#include "common/plan_util.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

// A small federated problem with a known answer: least squares
// y = X w* + noise at four sites whose features are shifted differently
// (non-IID). Each site runs local gradient steps from the global weights;
// the strategy under test builds the next global model from the updates,
// through model files exactly as the coordinator does.
constexpr int kDims = 6;
constexpr int kSites = 4;
constexpr int kPerSite = 60;

struct Site {
  std::vector<std::vector<double>> x;
  std::vector<double> y;
};

class Problem {
 public:
  Problem() {
    std::mt19937 random(7);
    std::normal_distribution<double> normal(0, 1);
    for (int d = 0; d < kDims; ++d) truth_.push_back(normal(random));
    for (int s = 0; s < kSites; ++s) {
      Site site;
      for (int i = 0; i < kPerSite; ++i) {
        std::vector<double> row(kDims);
        for (int d = 0; d < kDims; ++d) {
          row[d] = normal(random) + 0.5 * s * (d % 2 == 0 ? 1 : -1);
        }
        double y = 0;
        for (int d = 0; d < kDims; ++d) y += row[d] * truth_[d];
        site.x.push_back(row);
        site.y.push_back(y + 0.1 * normal(random));
      }
      sites_.push_back(site);
    }
  }

  // Mean squared error over all sites' data.
  double Loss(const std::vector<float>& w) const {
    double sum = 0;
    int count = 0;
    for (const Site& site : sites_) {
      for (size_t i = 0; i < site.y.size(); ++i) {
        double residual = -site.y[i];
        for (int d = 0; d < kDims; ++d) residual += site.x[i][d] * w[d];
        sum += residual * residual;
        ++count;
      }
    }
    return sum / count;
  }

  // `steps` of full-batch gradient descent on one site's data.
  std::vector<float> LocalTrain(int s, std::vector<float> w, int steps) const {
    const Site& site = sites_[s];
    for (int step = 0; step < steps; ++step) {
      std::vector<double> gradient(kDims, 0);
      for (size_t i = 0; i < site.y.size(); ++i) {
        double residual = -site.y[i];
        for (int d = 0; d < kDims; ++d) residual += site.x[i][d] * w[d];
        for (int d = 0; d < kDims; ++d) {
          gradient[d] += 2 * residual * site.x[i][d] / site.y.size();
        }
      }
      for (int d = 0; d < kDims; ++d) w[d] -= 0.05 * gradient[d];
    }
    return w;
  }

  double OptimalLoss() const {
    // Many rounds of exact pooled gradient descent.
    std::vector<float> w(kDims, 0);
    for (int step = 0; step < 3000; ++step) {
      std::vector<float> next(kDims, 0);
      for (int s = 0; s < kSites; ++s) {
        std::vector<float> local = LocalTrain(s, w, 1);
        for (int d = 0; d < kDims; ++d) next[d] += local[d] / kSites;
      }
      w = next;
    }
    return Loss(w);
  }

 private:
  std::vector<double> truth_;
  std::vector<Site> sites_;
};

// The model as the wire sees it: the weights, plus an integer buffer (a
// batch-norm step counter) that strategies must carry along.
TensorBundle ModelOf(const std::vector<float>& w, int64_t counter) {
  TensorBundle bundle;
  bundle.manifest.set_model_name("least_squares");
  TensorSpec* weights = bundle.manifest.add_tensors();
  weights->set_name("w");
  weights->set_dtype(FLOAT32);
  weights->add_shape(kDims);
  TensorSpec* steps = bundle.manifest.add_tensors();
  steps->set_name("steps");
  steps->set_dtype(INT64);
  steps->set_buffer(true);
  bundle.data.emplace_back(reinterpret_cast<const char*>(w.data()),
                           w.size() * sizeof(float));
  bundle.data.emplace_back(reinterpret_cast<const char*>(&counter), 8);
  EXPECT_TRUE(SealBundle(&bundle).ok());
  return bundle;
}

std::vector<float> WeightsOf(const TensorBundle& bundle) {
  std::vector<float> w(kDims);
  std::memcpy(w.data(), bundle.data[0].data(), kDims * sizeof(float));
  return w;
}

int64_t CounterOf(const TensorBundle& bundle) {
  int64_t value;
  std::memcpy(&value, bundle.data[1].data(), 8);
  return value;
}

struct RunResult {
  double loss = 0;
  int64_t counter = 0;
  // Per round, the contributions norm bounding left out.
  std::vector<std::vector<int>> excluded;
};

// Runs `rounds` federated rounds of `strategy` from w = 0. With `garbage`,
// site 0 sends huge values instead of its update.
RunResult RunFederation(Plan::Strategy strategy, int rounds,
                        bool garbage = false, double server_lr = 0.1,
                        double outlier_factor = 0) {
  static const Problem problem;
  Plan plan;
  plan.set_strategy(strategy);
  plan.set_server_learning_rate(server_lr);
  plan.set_update_norm_outlier_factor(outlier_factor);
  ApplyPlanDefaults(&plan);
  std::vector<std::vector<int>> excluded;
  TempDir dir;
  std::vector<float> w(kDims, 0);
  std::string previous = dir.Join("model_0.efm");
  EXPECT_TRUE(WriteModelFile(previous, ModelOf(w, 0)).ok());
  int64_t counter = 0;
  for (int round = 1; round <= rounds; ++round) {
    RoundContext context;
    context.layout = ModelOf(w, 0).manifest;
    context.round = round;
    context.previous_model_path = previous;
    context.state_dir = dir.path();
    std::unique_ptr<RoundAggregator> aggregator =
        CreateRoundAggregator(plan, context);
    for (int s = 0; s < kSites; ++s) {
      std::vector<float> local = problem.LocalTrain(s, w, 5);
      if (garbage && s == 0) local.assign(kDims, 1e6f);
      TensorBundle update = ModelOf(local, counter + 5);
      BundleSource source(&update);
      EXPECT_TRUE(aggregator->Add(source, kPerSite + s).ok());
    }
    std::string path = dir.Join(absl::StrCat("model_", round, ".efm"));
    absl::StatusOr<std::string> digest = aggregator->WriteModel(path);
    EXPECT_TRUE(digest.ok()) << digest.status();
    excluded.push_back(aggregator->Excluded());
    TensorBundle next = *(*ModelFileReader::Open(path))->ReadAll();
    EXPECT_EQ((*ModelFileReader::Open(path))->digest(), *digest);
    w = WeightsOf(next);
    counter = CounterOf(next);
    previous = path;
  }
  return {problem.Loss(w), counter, excluded};
}

double Optimal() {
  static const double optimal = Problem().OptimalLoss();
  return optimal;
}

class StrategyConvergenceTest
    : public ::testing::TestWithParam<Plan::Strategy> {};

TEST_P(StrategyConvergenceTest, ReachesNearTheOptimumOnNonIidSites) {
  const double start = RunFederation(GetParam(), 0).loss;
  RunResult result = RunFederation(GetParam(), 60);
  // Median and trimmed mean are biased on non-IID sites, but still close.
  const double tolerance =
      GetParam() == Plan::MEDIAN || GetParam() == Plan::TRIMMED_MEAN ? 0.25
                                                                     : 0.02;
  EXPECT_LT(result.loss, Optimal() + tolerance * (start - Optimal()))
      << Plan::Strategy_Name(GetParam()) << ": start " << start << ", optimum "
      << Optimal();
  // The integer buffer took the combined value every round, never an
  // optimiser step.
  EXPECT_EQ(result.counter, 60 * 5);
}

INSTANTIATE_TEST_SUITE_P(
    AllStrategies, StrategyConvergenceTest,
    ::testing::Values(Plan::FEDAVG, Plan::FEDPROX, Plan::FEDBN, Plan::FEDADAM,
                      Plan::FEDYOGI, Plan::MEDIAN, Plan::TRIMMED_MEAN),
    [](const auto& info) { return Plan::Strategy_Name(info.param); });

TEST(RobustStrategyTest, OneGarbageSiteBreaksFedAvgButNotMedianOrTrimmedMean) {
  const double start = RunFederation(Plan::FEDAVG, 0).loss;
  EXPECT_GT(RunFederation(Plan::FEDAVG, 30, /*garbage=*/true).loss,
            1000 * start);
  for (Plan::Strategy robust : {Plan::MEDIAN, Plan::TRIMMED_MEAN}) {
    double loss = RunFederation(robust, 60, /*garbage=*/true).loss;
    EXPECT_LT(loss, Optimal() + 0.3 * (start - Optimal()))
        << Plan::Strategy_Name(robust);
  }
}

TEST(NormBoundTest, OutlierFactorLeavesTheGarbageSiteOutEveryRound) {
  const double start = RunFederation(Plan::FEDAVG, 0).loss;
  for (Plan::Strategy strategy : {Plan::FEDAVG, Plan::FEDADAM}) {
    RunResult result = RunFederation(strategy, 60, /*garbage=*/true,
                                     /*server_lr=*/0.1, /*outlier_factor=*/10);
    EXPECT_LT(result.loss, Optimal() + 0.05 * (start - Optimal()))
        << Plan::Strategy_Name(strategy);
    ASSERT_EQ(result.excluded.size(), 60u);
    for (const std::vector<int>& round : result.excluded) {
      EXPECT_EQ(round, std::vector<int>{0});
    }
  }
  // Honest non-IID sites are never left out.
  RunResult honest = RunFederation(Plan::FEDAVG, 20, /*garbage=*/false,
                                   /*server_lr=*/0.1, /*outlier_factor=*/10);
  for (const std::vector<int>& round : honest.excluded) {
    EXPECT_TRUE(round.empty());
  }
}

TEST(NormBoundTest, UpdateNormCountsTrainedFloatsOnly) {
  TensorBundle previous = ModelOf(std::vector<float>(kDims, 1.0f), 0);
  std::vector<float> moved(kDims, 1.0f);
  moved[0] = 4.0f;                             // +3
  moved[1] = -3.0f;                            // -4
  TensorBundle update = ModelOf(moved, 1000);  // the counter does not count
  BundleSource update_source(&update);
  BundleSource previous_source(&previous);
  absl::StatusOr<double> norm = UpdateNorm(update_source, previous_source);
  ASSERT_TRUE(norm.ok()) << norm.status();
  EXPECT_DOUBLE_EQ(*norm, 5.0);
}

// Adds `updates` (weights) to a FedAvg round with `plan`'s norm bounding over
// a previous model of zeros; returns each Add's status and the model written.
struct BoundedRound {
  std::vector<absl::Status> added;
  std::vector<float> model;
  std::vector<int> excluded;
};
BoundedRound RunBoundedRound(const Plan& plan,
                             const std::vector<std::vector<float>>& updates,
                             bool write_twice = false) {
  TempDir dir;
  std::string previous = dir.Join("model_0.efm");
  TensorBundle zeros = ModelOf(std::vector<float>(kDims, 0.0f), 0);
  EXPECT_TRUE(WriteModelFile(previous, zeros).ok());
  RoundContext context;
  context.layout = zeros.manifest;
  context.previous_model_path = previous;
  context.state_dir = dir.path();
  std::unique_ptr<RoundAggregator> aggregator =
      CreateRoundAggregator(plan, context);
  BoundedRound result;
  for (const std::vector<float>& w : updates) {
    TensorBundle update = ModelOf(w, 0);
    BundleSource source(&update);
    result.added.push_back(aggregator->Add(source, 1.0));
  }
  std::string path = dir.Join("model_1.efm");
  absl::StatusOr<std::string> digest = aggregator->WriteModel(path);
  if (write_twice && digest.ok()) digest = aggregator->WriteModel(path);
  EXPECT_TRUE(digest.ok()) << digest.status();
  if (digest.ok()) {
    result.model = WeightsOf(*(*ModelFileReader::Open(path))->ReadAll());
  }
  result.excluded = aggregator->Excluded();
  return result;
}

TEST(NormBoundTest, UpdateAboveTheAbsoluteBoundIsRefusedOnArrival) {
  Plan plan;
  ApplyPlanDefaults(&plan);
  plan.set_max_update_norm(10);
  BoundedRound round = RunBoundedRound(
      plan, {std::vector<float>(kDims, 1.0f), std::vector<float>(kDims, 100.0f),
             std::vector<float>(kDims, 3.0f)});
  EXPECT_TRUE(round.added[0].ok());
  EXPECT_EQ(round.added[1].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(round.added[1].message().find("max_update_norm"), std::string::npos)
      << round.added[1];
  EXPECT_TRUE(round.added[2].ok());
  // The model is the mean of the two accepted updates.
  EXPECT_EQ(round.model, std::vector<float>(kDims, 2.0f));
}

TEST(NormBoundTest, OutlierNeedsThreeUpdatesAndARetryDoesNotCountTwice) {
  Plan plan;
  ApplyPlanDefaults(&plan);
  plan.set_update_norm_outlier_factor(5);
  // Two updates: no median to speak of, nothing is left out.
  BoundedRound two = RunBoundedRound(plan, {std::vector<float>(kDims, 1.0f),
                                            std::vector<float>(kDims, 99.0f)});
  EXPECT_TRUE(two.excluded.empty());
  EXPECT_EQ(two.model, std::vector<float>(kDims, 50.0f));
  // Three: the far one goes; writing again gives the same model.
  BoundedRound three = RunBoundedRound(
      plan,
      {std::vector<float>(kDims, 1.0f), std::vector<float>(kDims, 3.0f),
       std::vector<float>(kDims, 99.0f)},
      /*write_twice=*/true);
  EXPECT_EQ(three.excluded, std::vector<int>{2});
  EXPECT_EQ(three.model, std::vector<float>(kDims, 2.0f));
}

TEST(NormBoundTest, PlanValuesAreChecked) {
  Plan plan;
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  ApplyPlanDefaults(&plan);
  plan.set_update_norm_outlier_factor(0.5);
  EXPECT_NE(ValidatePlan(plan).message().find("update_norm_outlier_factor"),
            std::string::npos);
  plan.set_update_norm_outlier_factor(0);
  plan.set_max_update_norm(-1);
  EXPECT_NE(ValidatePlan(plan).message().find("max_update_norm"),
            std::string::npos);
}

TEST(FedOptTest, MomentsPersistBesideTheModelsAndDriveLaterRounds) {
  // Two runs of three rounds; in the second the moments of round 2 are
  // deleted, so round 3 starts them afresh and lands elsewhere: proof that
  // round 3 read them from disk.
  Plan plan;
  plan.set_strategy(Plan::FEDADAM);
  ApplyPlanDefaults(&plan);
  std::vector<float> results[2];
  for (int variant = 0; variant < 2; ++variant) {
    TempDir dir;
    std::vector<float> w(kDims, 0);
    ASSERT_TRUE(WriteModelFile(dir.Join("model_0.efm"), ModelOf(w, 0)).ok());
    for (int round = 1; round <= 3; ++round) {
      if (variant == 1 && round == 3) {
        ASSERT_TRUE(std::filesystem::remove(dir.Join("server_m_2.efm")));
      }
      RoundContext context{ModelOf(w, 0).manifest, round,
                           dir.Join(absl::StrCat("model_", round - 1, ".efm")),
                           dir.path()};
      std::unique_ptr<RoundAggregator> aggregator =
          CreateRoundAggregator(plan, context);
      std::vector<float> moved(kDims, 1.0f);
      TensorBundle update = ModelOf(moved, 0);
      BundleSource source(&update);
      ASSERT_TRUE(aggregator->Add(source, 1).ok());
      std::string path = dir.Join(absl::StrCat("model_", round, ".efm"));
      ASSERT_TRUE(aggregator->WriteModel(path).ok());
      // Writing again (a retried commit) gives the same model.
      std::string first = (*ModelFileReader::Open(path))->digest();
      ASSERT_TRUE(aggregator->WriteModel(path).ok());
      EXPECT_EQ((*ModelFileReader::Open(path))->digest(), first);
      w = WeightsOf(*(*ModelFileReader::Open(path))->ReadAll());
    }
    results[variant] = w;
  }
  EXPECT_NE(results[0][0], results[1][0]);
}

TEST(FedOptTest, HalfPrecisionModelsMoveLikeFloatOnes) {
  // The same round in float32 and in float16: the server step is computed
  // in float32 either way and only rounded on writing.
  Plan plan;
  plan.set_strategy(Plan::FEDYOGI);
  ApplyPlanDefaults(&plan);
  std::vector<float> results[2];
  for (int half = 0; half < 2; ++half) {
    TempDir dir;
    auto model = [&](float value) {
      TensorBundle bundle = ModelOf(std::vector<float>(kDims, value), 0);
      if (half) {
        TensorSpec* spec = bundle.manifest.mutable_tensors(0);
        spec->set_dtype(FLOAT16);
        std::string bytes(kDims * 2, '\0');
        for (int d = 0; d < kDims; ++d) {
          uint16_t bits = FloatToHalf(value);
          std::memcpy(&bytes[2 * d], &bits, 2);
        }
        bundle.data[0] = bytes;
        EXPECT_TRUE(SealBundle(&bundle).ok());
      }
      return bundle;
    };
    ASSERT_TRUE(WriteModelFile(dir.Join("model_0.efm"), model(0.5f)).ok());
    RoundContext context{model(0).manifest, 1, dir.Join("model_0.efm"),
                         dir.path()};
    std::unique_ptr<RoundAggregator> aggregator =
        CreateRoundAggregator(plan, context);
    TensorBundle update = model(1.5f);
    BundleSource source(&update);
    ASSERT_TRUE(aggregator->Add(source, 1).ok());
    ASSERT_TRUE(aggregator->WriteModel(dir.Join("model_1.efm")).ok());
    TensorBundle next =
        *(*ModelFileReader::Open(dir.Join("model_1.efm")))->ReadAll();
    EXPECT_EQ(next.manifest.tensors(0).dtype(), half ? FLOAT16 : FLOAT32);
    for (int d = 0; d < kDims; ++d) {
      if (half) {
        uint16_t bits;
        std::memcpy(&bits, next.data[0].data() + 2 * d, 2);
        results[half].push_back(HalfToFloat(bits));
      } else {
        results[half].push_back(WeightsOf(next)[d]);
      }
    }
  }
  // Moved by about the server learning rate (0.01) from 0.5, in both.
  EXPECT_GT(results[0][0], 0.505f);
  EXPECT_NEAR(results[1][0], results[0][0], 1e-3);
}

TEST(RobustStrategyTest, RefusesAnUpdateOfAnotherLayout) {
  Plan plan;
  plan.set_strategy(Plan::MEDIAN);
  ApplyPlanDefaults(&plan);
  TempDir dir;
  std::vector<float> w(kDims, 0);
  RoundContext context{ModelOf(w, 0).manifest, 1, dir.Join("none.efm"),
                       dir.path()};
  std::unique_ptr<RoundAggregator> aggregator =
      CreateRoundAggregator(plan, context);
  TensorBundle other = testing::MakeBundle("m", 1.0f);
  BundleSource source(&other);
  EXPECT_EQ(aggregator->Add(source, 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(aggregator->WriteModel(dir.Join("out.efm")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace echofed
