// Logistic recalibration fit, reliability bins and decision curves of
// binned scores.

#include "common/calibration.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/metrics_internal.h"

namespace echofed {
namespace metrics_internal {
namespace {

constexpr int kReliabilityBins = 10;
constexpr int kDecisionThresholds = 99;  // 0.01, 0.02, ..., 0.99

double BinMidpoint(int bin, int bins) { return (bin + 0.5) / bins; }

double Logit(double p) { return std::log(p / (1 - p)); }

// log(1 + exp(z)) without overflow.
double Softplus(double z) {
  return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z)));
}

}  // namespace

LogisticFit FitLogistic(const BinnedScores& scores, bool fix_slope) {
  const int bins = static_cast<int>(scores.positives.size());
  if (scores.TotalPositives() == 0 || scores.TotalNegatives() == 0) return {};
  std::vector<double> x(bins);
  for (int b = 0; b < bins; ++b) x[b] = Logit(BinMidpoint(b, bins));
  auto log_likelihood = [&](double intercept, double slope) {
    double sum = 0;
    for (int b = 0; b < bins; ++b) {
      double eta = intercept + slope * x[b];
      sum -= scores.positives[b] * Softplus(-eta) +
             scores.negatives[b] * Softplus(eta);
    }
    return sum;
  };
  double intercept = 0, slope = 1;
  double current = log_likelihood(intercept, slope);
  constexpr int kMaxIterations = 100;
  constexpr double kLimit = 1e6;
  for (int iteration = 0; iteration < kMaxIterations; ++iteration) {
    double g0 = 0, g1 = 0, h00 = 0, h01 = 0, h11 = 0;
    for (int b = 0; b < bins; ++b) {
      double n = scores.positives[b] + scores.negatives[b];
      if (n == 0) continue;
      double mu = Sigmoid(intercept + slope * x[b]);
      double residual = scores.positives[b] - n * mu;
      double weight = n * mu * (1 - mu);
      g0 += residual;
      g1 += residual * x[b];
      h00 += weight;
      h01 += weight * x[b];
      h11 += weight * x[b] * x[b];
    }
    double step0, step1;
    if (fix_slope) {
      if (!(h00 > 0)) return {};
      step0 = g0 / h00;
      step1 = 0;
    } else {
      double determinant = h00 * h11 - h01 * h01;
      // All images in one bin (or weights underflowing) leave the slope
      // unidentified.
      if (!(determinant > 1e-12 * h00 * h11)) return {};
      step0 = (h11 * g0 - h01 * g1) / determinant;
      step1 = (h00 * g1 - h01 * g0) / determinant;
    }
    const double step_size = std::max(std::abs(step0), std::abs(step1));
    if (!std::isfinite(step_size)) return {};
    // Rounding in the gradient's sums leaves steps near 1e-10 that never
    // shrink further; 1e-8 is far below any difference that matters.
    if (step_size < 1e-8) return {intercept + step0, slope + step1};
    double scale = 1;
    double next = log_likelihood(intercept + step0, slope + step1);
    for (int halving = 0; halving < 40 && !(next >= current); ++halving) {
      scale /= 2;
      next = log_likelihood(intercept + scale * step0, slope + scale * step1);
    }
    if (!(next >= current)) {
      // At the optimum rounding can make every step look downhill.
      if (step_size < 1e-6) return {intercept, slope};
      return {};
    }
    intercept += scale * step0;
    slope += scale * step1;
    current = next;
    if (!std::isfinite(intercept) || !std::isfinite(slope) ||
        std::abs(intercept) > kLimit || std::abs(slope) > kLimit) {
      return {};
    }
  }
  return {};
}

std::vector<ReliabilityBin> Reliability(const BinnedScores& scores) {
  const int bins = static_cast<int>(scores.positives.size());
  std::vector<ReliabilityBin> reliability(kReliabilityBins);
  std::vector<double> predicted_sum(kReliabilityBins, 0),
      positive_sum(kReliabilityBins, 0);
  for (int g = 0; g < kReliabilityBins; ++g) {
    reliability[g].lower = static_cast<double>(g) / kReliabilityBins;
    reliability[g].upper = static_cast<double>(g + 1) / kReliabilityBins;
  }
  for (int b = 0; b < bins; ++b) {
    int group =
        static_cast<int>(static_cast<int64_t>(b) * kReliabilityBins / bins);
    double n = scores.positives[b] + scores.negatives[b];
    reliability[group].count += static_cast<int64_t>(n);
    predicted_sum[group] += n * BinMidpoint(b, bins);
    positive_sum[group] += scores.positives[b];
  }
  for (int g = 0; g < kReliabilityBins; ++g) {
    reliability[g].mean_predicted =
        Ratio(predicted_sum[g], static_cast<double>(reliability[g].count));
    reliability[g].observed_fraction =
        Ratio(positive_sum[g], static_cast<double>(reliability[g].count));
  }
  return reliability;
}

std::vector<DecisionPoint> DecisionCurve(const BinnedScores& scores) {
  const int bins = static_cast<int>(scores.positives.size());
  const double n_positive = scores.TotalPositives();
  const double n = n_positive + scores.TotalNegatives();
  if (n == 0 || bins < 2) return {};
  // Suffix sums: images with p_c in bin k or above are called positive.
  std::vector<double> positives_above(bins + 1, 0),
      negatives_above(bins + 1, 0);
  for (int b = bins - 1; b >= 0; --b) {
    positives_above[b] = positives_above[b + 1] + scores.positives[b];
    negatives_above[b] = negatives_above[b + 1] + scores.negatives[b];
  }
  std::vector<DecisionPoint> curve;
  for (int i = 1; i <= kDecisionThresholds; ++i) {
    // The threshold is moved to the nearest bin edge, where the binned
    // counts are exact.
    int k = static_cast<int>(
        std::lround(static_cast<double>(i) / (kDecisionThresholds + 1) * bins));
    k = std::clamp(k, 1, bins - 1);
    double threshold = static_cast<double>(k) / bins;
    double odds = threshold / (1 - threshold);
    curve.push_back({threshold,
                     positives_above[k] / n - negatives_above[k] / n * odds,
                     n_positive / n - (n - n_positive) / n * odds});
  }
  return curve;
}

}  // namespace metrics_internal
}  // namespace echofed
