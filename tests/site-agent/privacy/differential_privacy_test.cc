#include "site-agent/privacy/differential_privacy.h"

#include <cmath>

#include "gtest/gtest.h"
#include "models/state_exchange.h"
#include "torch/torch.h"

namespace echofed {
namespace {

// Parameters, float buffers (batch-norm statistics) and an integer buffer
// (num_batches_tracked), as the real models have.
struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    linear = register_module("linear", torch::nn::Linear(100, 200));
    norm = register_module("norm", torch::nn::BatchNorm1d(200));
    // Odd sizes (21 and 3): the noise comes in pairs.
    odd = register_module("odd", torch::nn::Linear(7, 3));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::Linear odd{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};
TORCH_MODULE(TinyNet);

// The joint L2 norm of (module - global) over the floating-point tensors.
double UpdateNorm(const NamedTensors& global, const torch::nn::Module& now) {
  NamedTensors current = SnapshotFloatState(now);
  EXPECT_EQ(current.size(), global.size());
  double squares = 0;
  for (size_t i = 0; i < current.size(); ++i) {
    EXPECT_EQ(current[i].first, global[i].first);
    squares +=
        (current[i].second - global[i].second).pow(2).sum().item<double>();
  }
  return std::sqrt(squares);
}

// Every floating-point exchange tensor moves by `step` (a "training" step),
// the integer buffer too.
void Train(TinyNet& net, double step) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->parameters()) p.add_(step);
  net->norm->running_mean.add_(step);
  net->norm->running_var.add_(step);
  net->norm->num_batches_tracked.add_(7);
}

int64_t FloatCoordinates(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& [name, tensor] : SnapshotFloatState(module)) {
    n += tensor.numel();
  }
  return n;
}

TEST(DifferentialPrivacyTest, SnapshotHoldsEveryFloatTensorAndNoInteger) {
  torch::manual_seed(1);
  TinyNet net;
  NamedTensors snapshot = SnapshotFloatState(*net);
  std::vector<std::string> names;
  for (const auto& [name, tensor] : snapshot) {
    names.push_back(name);
    EXPECT_EQ(tensor.scalar_type(), torch::kFloat64);
  }
  EXPECT_EQ(names, (std::vector<std::string>{
                       "linear.weight", "linear.bias", "norm.weight",
                       "norm.bias", "odd.weight", "odd.bias",
                       "norm.running_mean", "norm.running_var"}));
}

TEST(DifferentialPrivacyTest, LargeUpdateIsClippedToTheNorm) {
  torch::manual_seed(2);
  TinyNet net;
  NamedTensors global = SnapshotFloatState(*net);
  Train(net, 0.5);
  ASSERT_GT(UpdateNorm(global, *net), 50);
  absl::StatusOr<PrivatizedUpdate> result =
      ClipAndAddNoise(global, *net, /*clip_norm=*/0.75, /*noise_std=*/0);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_GT(result->norm, 50);
  EXPECT_NEAR(result->scale, 0.75 / result->norm, 1e-12);
  // Stored back as float32: the norm to float precision.
  EXPECT_NEAR(UpdateNorm(global, *net), 0.75, 1e-4);
  // The direction is kept: every coordinate moved by the same amount.
  const double step =
      0.75 / std::sqrt(static_cast<double>(result->coordinates));
  EXPECT_NEAR((net->linear->weight - global[0].second).mean().item<double>(),
              step, 1e-5);
}

TEST(DifferentialPrivacyTest, SmallUpdateIsLeftAsItIs) {
  torch::manual_seed(3);
  TinyNet net;
  NamedTensors global = SnapshotFloatState(*net);
  Train(net, 1e-4);
  NamedTensors trained = SnapshotFloatState(*net);
  const double norm = UpdateNorm(global, *net);
  ASSERT_LT(norm, 1.0);
  absl::StatusOr<PrivatizedUpdate> result =
      ClipAndAddNoise(global, *net, /*clip_norm=*/1.0, /*noise_std=*/0);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->scale, 1.0);
  NamedTensors after = SnapshotFloatState(*net);
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(torch::equal(after[i].second, trained[i].second))
        << after[i].first;
  }
}

TEST(DifferentialPrivacyTest, NoiseHasStandardDeviationZTimesC) {
  torch::manual_seed(4);
  TinyNet net;
  NamedTensors global = SnapshotFloatState(*net);
  // No training: the released change is the noise alone.
  const double clip_norm = 0.5, multiplier = 1.7;
  absl::StatusOr<PrivatizedUpdate> result =
      PrivatizeUpdate(global, *net, clip_norm, multiplier);
  ASSERT_TRUE(result.ok()) << result.status();
  const int64_t n = FloatCoordinates(*net);
  EXPECT_EQ(result->coordinates, n);
  ASSERT_GT(n, 20000);
  NamedTensors after = SnapshotFloatState(*net);
  std::vector<torch::Tensor> noise;
  for (size_t i = 0; i < after.size(); ++i) {
    noise.push_back((after[i].second - global[i].second).flatten());
  }
  torch::Tensor all = torch::cat(noise);
  const double sigma = multiplier * clip_norm;
  // Sum of squares / sigma^2 is chi-square with n degrees of freedom: mean
  // n, sd sqrt(2n). Six sd either way (float32 rounding is far smaller).
  const double chi2 = all.pow(2).sum().item<double>() / (sigma * sigma);
  EXPECT_NEAR(chi2, static_cast<double>(n), 6 * std::sqrt(2.0 * n));
  // Mean 0 within six standard errors.
  EXPECT_NEAR(all.mean().item<double>(), 0, 6 * sigma / std::sqrt(n));
  // Gaussian, not merely of the right variance: the shares within one and
  // two standard deviations (binomial, six standard errors).
  for (const auto& [k, share] : {std::pair<double, double>{1, 0.682689},
                                 std::pair<double, double>{2, 0.954500}}) {
    const double within =
        (all.abs() < k * sigma).to(torch::kFloat64).mean().item<double>();
    EXPECT_NEAR(within, share, 6 * std::sqrt(share * (1 - share) / n)) << k;
  }
  // Independent coordinates: no correlation between neighbours.
  torch::Tensor x = all.slice(0, 0, n - 1), y = all.slice(0, 1, n);
  EXPECT_NEAR((x * y).mean().item<double>() / (sigma * sigma), 0,
              6 / std::sqrt(n));
  // Every tensor is noised, buffers included (the 3 of odd.bias too).
  for (size_t i = 0; i < noise.size(); ++i) {
    EXPECT_TRUE(torch::all(noise[i] != 0).item<bool>()) << after[i].first;
    if (noise[i].numel() < 100) continue;
    const double std = noise[i].std().item<double>();
    EXPECT_GT(std, 0.5 * sigma) << after[i].first;
    EXPECT_LT(std, 1.5 * sigma) << after[i].first;
  }
}

// The noise must not follow from anything the coordinator knows, such as
// the plan's seed, which the agent passes to torch::manual_seed.
TEST(DifferentialPrivacyTest, NoiseIsFreshOnEveryCallWhateverTorchSeed) {
  torch::manual_seed(5);
  TinyNet net;
  NamedTensors global = SnapshotFloatState(*net);
  std::vector<torch::Tensor> released;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(RestoreNamedTensors(global, *net).ok());
    torch::manual_seed(42);  // the same "plan seed" both times
    ASSERT_TRUE(PrivatizeUpdate(global, *net, 1.0, 1.0).ok());
    released.push_back(net->linear->weight.detach().clone());
  }
  EXPECT_FALSE(torch::allclose(released[0], released[1]));
  // And not torch's global generator's next numbers either.
  torch::manual_seed(42);
  torch::Tensor predictable = global[0].second.to(torch::kFloat32) +
                              torch::randn(global[0].second.sizes());
  EXPECT_FALSE(torch::allclose(released[0], predictable));
}

TEST(DifferentialPrivacyTest, IntegerBuffersAreNotTouched) {
  torch::manual_seed(6);
  TinyNet net;
  NamedTensors global = SnapshotFloatState(*net);
  Train(net, 0.1);
  ASSERT_EQ(net->norm->num_batches_tracked.item<int64_t>(), 7);
  ASSERT_TRUE(PrivatizeUpdate(global, *net, 1.0, 3.0).ok());
  EXPECT_EQ(net->norm->num_batches_tracked.item<int64_t>(), 7);
  EXPECT_EQ(net->norm->num_batches_tracked.scalar_type(), torch::kLong);
}

TEST(DifferentialPrivacyTest, RefusesBadSettingsAndMismatchedSnapshots) {
  torch::manual_seed(7);
  TinyNet net;
  NamedTensors global = SnapshotFloatState(*net);
  EXPECT_FALSE(PrivatizeUpdate(global, *net, 0, 1).ok());
  EXPECT_FALSE(PrivatizeUpdate(global, *net, 1, 0).ok());
  EXPECT_FALSE(PrivatizeUpdate(global, *net, std::nan(""), 1).ok());
  EXPECT_FALSE(ClipAndAddNoise(global, *net, 1, -1).ok());
  NamedTensors missing(global.begin(), global.end() - 1);
  EXPECT_FALSE(PrivatizeUpdate(missing, *net, 1, 1).ok());
  NamedTensors wrong_shape = global;
  wrong_shape[0].second = torch::zeros({3}, torch::kFloat64);
  EXPECT_FALSE(PrivatizeUpdate(wrong_shape, *net, 1, 1).ok());
  // A non-finite update cannot be clipped: refused rather than sent.
  {
    torch::NoGradGuard no_grad;
    net->linear->bias[0] = std::nanf("");
  }
  EXPECT_FALSE(PrivatizeUpdate(global, *net, 1, 1).ok());
}

}  // namespace
}  // namespace echofed
