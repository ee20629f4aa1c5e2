#ifndef ECHOFED_COMMON_METRICS_INTERNAL_H_
#define ECHOFED_COMMON_METRICS_INTERNAL_H_

// Helpers shared by the sources behind common/metrics.h: the layout of an
// EvalAggregate, binned scores and what is computed from them. Not an API:
// include common/metrics.h (or one of the headers it gathers) instead.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/calibration.h"
#include "common/intervals.h"
#include "common/roc.h"
#include "proto/metrics.pb.h"

namespace echofed {
namespace metrics_internal {

// No real study comes near this many images; bounding every count keeps the
// sums of validated reports far from int64 overflow.
constexpr int64_t kMaxCount = int64_t{1} << 40;

inline int64_t Cell(const EvalAggregate& a, int truth, int predicted) {
  return a.confusion(truth * a.class_count() + predicted);
}

inline int64_t RowSum(const EvalAggregate& a, int truth) {
  int64_t sum = 0;
  for (int p = 0; p < a.class_count(); ++p) sum += Cell(a, truth, p);
  return sum;
}

inline int64_t ColumnSum(const EvalAggregate& a, int predicted) {
  int64_t sum = 0;
  for (int t = 0; t < a.class_count(); ++t) sum += Cell(a, t, predicted);
  return sum;
}

inline double Ratio(double numerator, double denominator) {
  return denominator == 0 ? kNaN : numerator / denominator;
}

inline bool HasScores(const EvalAggregate& a) { return a.histogram_bins() > 0; }

// Whether the score fields fit class_count, so that indexing them is safe
// even on a report nobody validated.
inline bool ScoreLayoutOk(const EvalAggregate& a) {
  const int64_t k = a.class_count();
  return a.histogram_bins() > 0 && k > 0 &&
         a.score_histogram_size() == k * k * a.histogram_bins() &&
         a.brier_sum_size() == k;
}

inline int HistogramIndex(const EvalAggregate& a, int truth, int score,
                          int bin) {
  return (truth * a.class_count() + score) * a.histogram_bins() + bin;
}

inline int64_t Histogram(const EvalAggregate& a, int truth, int score,
                         int bin) {
  return a.score_histogram(HistogramIndex(a, truth, score, bin));
}

inline double Sigmoid(double z) {
  return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z));
}

// Positives and negatives of one score, per bin. Doubles: the sums below
// mix counts with fractions, and counts stay far below 2^53.
struct BinnedScores {
  std::vector<double> positives;
  std::vector<double> negatives;

  explicit BinnedScores(int bins) : positives(bins, 0), negatives(bins, 0) {}
  double TotalPositives() const {
    double sum = 0;
    for (double count : positives) sum += count;
    return sum;
  }
  double TotalNegatives() const {
    double sum = 0;
    for (double count : negatives) sum += count;
    return sum;
  }
};

// Defined in roc.cc.

// Score of class `score` for images of class `score` (positives) against
// those of the classes in `negative_classes`.
BinnedScores Bins(const EvalAggregate& a, int score,
                  const std::vector<int>& negative_classes);

struct AucEstimate {
  double auc = kNaN;
  double variance = kNaN;
};

// AUC and DeLong variance from binned scores. A positive in bin b beats the
// negatives in lower bins and ties (one half) those in its own bin: its
// structural component V10 is that fraction of the negatives; a negative's
// V01 is the mirror fraction of the positives. The AUC is the mean of either
// and DeLong's variance is var(V10)/m + var(V01)/n, every image of a bin
// sharing its bin's component.
AucEstimate AucFromBins(const BinnedScores& scores);

// The ROC curve of `scores`, from (0, 0) down through the non-empty bins;
// empty without positives or negatives.
std::vector<RocPoint> RocCurve(const BinnedScores& scores);

// Defined in intervals.cc.

// [estimate - kZ95 * standard_error, estimate + kZ95 * standard_error]
// clipped to [0, 1]; NaN bounds when either is not finite.
Interval NormalInterval(double estimate, double standard_error);

// Defined in calibration.cc.

struct LogisticFit {
  double intercept = kNaN;
  double slope = kNaN;
};

// Maximum-likelihood logistic regression of the outcome on x = logit of each
// bin's midpoint, the bins weighted by their positive and negative counts.
// Newton's method with step halving from the identity (intercept 0, slope
// 1); with `fix_slope` only the intercept moves. The log-likelihood is
// concave, so Newton converges in a few steps whenever an optimum exists;
// when none does (separated classes) the estimates run off and the fit
// reports NaN instead of a number that depends on the iteration count.
LogisticFit FitLogistic(const BinnedScores& scores, bool fix_slope);

// The 10 equal-width reliability bins of `scores`.
std::vector<ReliabilityBin> Reliability(const BinnedScores& scores);

// Net benefit at the thresholds 0.01, ..., 0.99, each moved to the nearest
// bin edge; empty without images.
std::vector<DecisionPoint> DecisionCurve(const BinnedScores& scores);

}  // namespace metrics_internal
}  // namespace echofed

#endif  // ECHOFED_COMMON_METRICS_INTERNAL_H_
