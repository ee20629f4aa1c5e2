// AUC with DeLong's variance, and the ROC curve, of binned scores.

#include "common/roc.h"

#include <limits>
#include <vector>

#include "common/metrics_internal.h"

namespace echofed {
namespace metrics_internal {

BinnedScores Bins(const EvalAggregate& a, int score,
                  const std::vector<int>& negative_classes) {
  BinnedScores bins(a.histogram_bins());
  for (int b = 0; b < a.histogram_bins(); ++b) {
    bins.positives[b] = Histogram(a, score, score, b);
    for (int t : negative_classes)
      bins.negatives[b] += Histogram(a, t, score, b);
  }
  return bins;
}

AucEstimate AucFromBins(const BinnedScores& scores) {
  AucEstimate estimate;
  const double n_positive = scores.TotalPositives();
  const double n_negative = scores.TotalNegatives();
  if (n_positive == 0 || n_negative == 0) return estimate;
  const int bins = static_cast<int>(scores.positives.size());
  std::vector<double> v10(bins), v01(bins);
  double below = 0;
  for (int b = 0; b < bins; ++b) {
    v10[b] = (below + 0.5 * scores.negatives[b]) / n_negative;
    below += scores.negatives[b];
  }
  double above = 0;
  for (int b = bins - 1; b >= 0; --b) {
    v01[b] = (above + 0.5 * scores.positives[b]) / n_positive;
    above += scores.positives[b];
  }
  double sum = 0;
  for (int b = 0; b < bins; ++b) sum += scores.positives[b] * v10[b];
  estimate.auc = sum / n_positive;
  if (n_positive < 2 || n_negative < 2) return estimate;
  double s10 = 0, s01 = 0;
  for (int b = 0; b < bins; ++b) {
    s10 +=
        scores.positives[b] * (v10[b] - estimate.auc) * (v10[b] - estimate.auc);
    s01 +=
        scores.negatives[b] * (v01[b] - estimate.auc) * (v01[b] - estimate.auc);
  }
  s10 /= n_positive - 1;
  s01 /= n_negative - 1;
  estimate.variance = s10 / n_positive + s01 / n_negative;
  return estimate;
}

std::vector<RocPoint> RocCurve(const BinnedScores& scores) {
  const double n_positive = scores.TotalPositives();
  const double n_negative = scores.TotalNegatives();
  if (n_positive == 0 || n_negative == 0) return {};
  const int bins = static_cast<int>(scores.positives.size());
  std::vector<RocPoint> curve = {
      {std::numeric_limits<double>::infinity(), 0, 0}};
  double true_positives = 0, false_positives = 0;
  for (int b = bins - 1; b >= 0; --b) {
    if (scores.positives[b] == 0 && scores.negatives[b] == 0) continue;
    true_positives += scores.positives[b];
    false_positives += scores.negatives[b];
    curve.push_back({static_cast<double>(b) / bins,
                     false_positives / n_negative,
                     true_positives / n_positive});
  }
  return curve;
}

}  // namespace metrics_internal
}  // namespace echofed
