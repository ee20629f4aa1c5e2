#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace echofed {
namespace {

// No real study comes near this many images; bounding every count keeps the
// sums of validated reports far from int64 overflow.
constexpr int64_t kMaxCount = int64_t{1} << 40;

constexpr int kReliabilityBins = 10;
constexpr int kDecisionThresholds = 99;  // 0.01, 0.02, ..., 0.99

// Probabilities of one image must sum to 1 this closely: a looser sum means
// logits or a wrong column order were passed.
constexpr double kProbabilitySumTolerance = 1e-6;

int64_t Cell(const EvalAggregate& a, int truth, int predicted) {
  return a.confusion(truth * a.class_count() + predicted);
}

int64_t RowSum(const EvalAggregate& a, int truth) {
  int64_t sum = 0;
  for (int p = 0; p < a.class_count(); ++p) sum += Cell(a, truth, p);
  return sum;
}

int64_t ColumnSum(const EvalAggregate& a, int predicted) {
  int64_t sum = 0;
  for (int t = 0; t < a.class_count(); ++t) sum += Cell(a, t, predicted);
  return sum;
}

double Ratio(double numerator, double denominator) {
  return denominator == 0 ? kNaN : numerator / denominator;
}

double ZeroIfNaN(double value) { return std::isnan(value) ? 0 : value; }

bool HasScores(const EvalAggregate& a) { return a.histogram_bins() > 0; }

// Whether the score fields fit class_count, so that indexing them is safe
// even on a report nobody validated.
bool ScoreLayoutOk(const EvalAggregate& a) {
  const int64_t k = a.class_count();
  return a.histogram_bins() > 0 && k > 0 &&
         a.score_histogram_size() == k * k * a.histogram_bins() &&
         a.brier_sum_size() == k;
}

int HistogramIndex(const EvalAggregate& a, int truth, int score, int bin) {
  return (truth * a.class_count() + score) * a.histogram_bins() + bin;
}

int64_t Histogram(const EvalAggregate& a, int truth, int score, int bin) {
  return a.score_histogram(HistogramIndex(a, truth, score, bin));
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

// Score of class `score` for images of class `score` (positives) against
// those of the classes in `negative_classes`.
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

Interval NormalInterval(double estimate, double standard_error) {
  if (!std::isfinite(estimate) || !std::isfinite(standard_error)) return {};
  return {std::max(0.0, estimate - kZ95 * standard_error),
          std::min(1.0, estimate + kZ95 * standard_error)};
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

double BinMidpoint(int bin, int bins) { return (bin + 0.5) / bins; }

double Logit(double p) { return std::log(p / (1 - p)); }

// log(1 + exp(z)) without overflow.
double Softplus(double z) {
  return std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z)));
}

double Sigmoid(double z) {
  return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z));
}

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

void FillScoreMetrics(const EvalAggregate& a, MetricsSummary* summary) {
  const int k = a.class_count();
  const int bins = a.histogram_bins();
  const double n = static_cast<double>(summary->num_images);
  summary->has_scores = true;
  double brier_total = 0;
  BinnedScores pooled(bins);  // every one-vs-rest pair, for the micro AUC
  double auc_sum = 0, standard_error_sum = 0, weighted_sum = 0, weight = 0;
  int auc_count = 0;
  bool every_variance = true;
  for (int c = 0; c < k; ++c) {
    ClassMetrics& metrics = summary->classes[c];
    std::vector<int> rest;
    for (int t = 0; t < k; ++t) {
      if (t != c) rest.push_back(t);
    }
    BinnedScores scores = Bins(a, c, rest);
    for (int b = 0; b < bins; ++b) {
      pooled.positives[b] += scores.positives[b];
      pooled.negatives[b] += scores.negatives[b];
    }
    AucEstimate estimate = AucFromBins(scores);
    metrics.auc = estimate.auc;
    metrics.auc_variance = estimate.variance;
    metrics.auc_ci = NormalInterval(estimate.auc, std::sqrt(estimate.variance));
    metrics.roc = RocCurve(scores);
    metrics.brier = Ratio(a.brier_sum(c), n);
    brier_total += a.brier_sum(c);
    metrics.reliability = Reliability(scores);
    double calibration_error = 0;
    for (const ReliabilityBin& bin : metrics.reliability) {
      if (bin.count > 0) {
        calibration_error +=
            bin.count * std::abs(bin.observed_fraction - bin.mean_predicted);
      }
    }
    metrics.expected_calibration_error = Ratio(calibration_error, n);
    metrics.calibration_intercept =
        FitLogistic(scores, /*fix_slope=*/true).intercept;
    metrics.calibration_slope = FitLogistic(scores, /*fix_slope=*/false).slope;
    metrics.decision_curve = DecisionCurve(scores);
    if (!std::isnan(estimate.auc)) {
      auc_sum += estimate.auc;
      standard_error_sum += std::sqrt(estimate.variance);
      every_variance = every_variance && !std::isnan(estimate.variance);
      ++auc_count;
      weighted_sum += metrics.support * estimate.auc;
      weight += metrics.support;
    }
  }
  summary->brier = Ratio(brier_total, n);
  if (auc_count > 0) {
    summary->macro_auc = auc_sum / auc_count;
    if (every_variance) {
      summary->macro_auc_ci =
          NormalInterval(summary->macro_auc, standard_error_sum / auc_count);
    }
  }
  summary->weighted_auc = Ratio(weighted_sum, weight);
  summary->micro_auc = AucFromBins(pooled).auc;

  double pair_sum = 0;
  int pairs = 0;
  for (int i = 0; i < k; ++i) {
    for (int j = i + 1; j < k; ++j) {
      double i_over_j = AucFromBins(Bins(a, i, {j})).auc;
      double j_over_i = AucFromBins(Bins(a, j, {i})).auc;
      if (std::isnan(i_over_j) || std::isnan(j_over_i)) continue;
      pair_sum += (i_over_j + j_over_i) / 2;
      ++pairs;
    }
  }
  if (pairs > 0) summary->hand_till_auc = pair_sum / pairs;
}

}  // namespace

void InitAggregate(int class_count, EvalAggregate* aggregate) {
  aggregate->set_class_count(class_count);
  aggregate->clear_confusion();
  aggregate->mutable_confusion()->Resize(class_count * class_count, 0);
  aggregate->set_histogram_bins(kScoreHistogramBins);
  aggregate->clear_score_histogram();
  aggregate->mutable_score_histogram()->Resize(
      class_count * class_count * kScoreHistogramBins, 0);
  aggregate->clear_brier_sum();
  aggregate->mutable_brier_sum()->Resize(class_count, 0);
}

absl::Status AddCase(EvalAggregate* aggregate, int truth,
                     const std::vector<double>& probabilities) {
  if (aggregate->class_count() == 0 && aggregate->confusion_size() == 0) {
    if (probabilities.empty()) {
      return absl::InvalidArgumentError("no probabilities");
    }
    InitAggregate(static_cast<int>(probabilities.size()), aggregate);
  }
  const int k = aggregate->class_count();
  if (static_cast<int>(probabilities.size()) != k) {
    return absl::InvalidArgumentError(absl::StrCat(
        probabilities.size(), " probabilities for ", k, " classes"));
  }
  if (truth < 0 || truth >= k) {
    return absl::InvalidArgumentError(
        absl::StrCat("true class ", truth, " outside 0..", k - 1));
  }
  if (aggregate->confusion_size() != k * k ||
      aggregate->histogram_bins() != kScoreHistogramBins ||
      !ScoreLayoutOk(*aggregate)) {
    return absl::FailedPreconditionError(
        "aggregate lacks the score histogram layout (InitAggregate it)");
  }
  double sum = 0;
  int predicted = 0;
  for (int c = 0; c < k; ++c) {
    double p = probabilities[c];
    if (!std::isfinite(p) || p < 0 || p > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("probability ", p, " is not in [0, 1]"));
    }
    sum += p;
    if (p > probabilities[predicted]) predicted = c;
  }
  if (std::abs(sum - 1) > kProbabilitySumTolerance) {
    return absl::InvalidArgumentError(
        absl::StrCat("probabilities sum to ", sum, ", not 1"));
  }
  const int bins = aggregate->histogram_bins();
  int cell = truth * k + predicted;
  aggregate->set_confusion(cell, aggregate->confusion(cell) + 1);
  for (int c = 0; c < k; ++c) {
    int bin = std::min(bins - 1,
                       static_cast<int>(std::floor(probabilities[c] * bins)));
    int index = HistogramIndex(*aggregate, truth, c, bin);
    aggregate->set_score_histogram(index,
                                   aggregate->score_histogram(index) + 1);
    double error = probabilities[c] - (c == truth ? 1.0 : 0.0);
    aggregate->set_brier_sum(c, aggregate->brier_sum(c) + error * error);
  }
  aggregate->set_num_images(aggregate->num_images() + 1);
  return absl::OkStatus();
}

absl::Status AddAggregate(const EvalAggregate& add, EvalAggregate* total) {
  if (total->class_count() == 0 && total->confusion_size() == 0) {
    total->set_class_count(add.class_count());
    total->mutable_confusion()->Resize(add.confusion_size(), 0);
  }
  if (add.class_count() != total->class_count() ||
      add.confusion_size() != total->confusion_size()) {
    return absl::InvalidArgumentError("aggregates of different class counts");
  }
  const bool total_scores = HasScores(*total);
  const bool add_scores = HasScores(add);
  if (add_scores && !ScoreLayoutOk(add)) {
    return absl::InvalidArgumentError("score histograms of the wrong size");
  }
  if (total_scores && add_scores &&
      (add.histogram_bins() != total->histogram_bins() ||
       add.score_histogram_size() != total->score_histogram_size() ||
       add.brier_sum_size() != total->brier_sum_size())) {
    return absl::InvalidArgumentError("score histograms of different binning");
  }
  // Checked everything; from here on `total` changes.
  if (total_scores && add_scores) {
    for (int i = 0; i < add.score_histogram_size(); ++i) {
      total->set_score_histogram(
          i, total->score_histogram(i) + add.score_histogram(i));
    }
    for (int c = 0; c < add.brier_sum_size(); ++c) {
      total->set_brier_sum(c, total->brier_sum(c) + add.brier_sum(c));
    }
  } else if (add_scores && total->num_images() == 0) {
    total->set_histogram_bins(add.histogram_bins());
    *total->mutable_score_histogram() = add.score_histogram();
    *total->mutable_brier_sum() = add.brier_sum();
  } else if (total_scores && add.num_images() > 0) {
    // Scores for only part of the pooled images would give a pooled AUC of
    // a subset that nobody chose.
    total->set_histogram_bins(0);
    total->clear_score_histogram();
    total->clear_brier_sum();
  }
  for (int i = 0; i < add.confusion_size(); ++i) {
    total->set_confusion(i, total->confusion(i) + add.confusion(i));
  }
  total->set_num_images(total->num_images() + add.num_images());
  total->set_num_patients(total->num_patients() + add.num_patients());
  total->set_loss_sum(total->loss_sum() + add.loss_sum());
  return absl::OkStatus();
}

absl::Status ValidateAggregate(const EvalAggregate& a, int expected_classes) {
  if (a.class_count() != expected_classes ||
      a.confusion_size() != expected_classes * expected_classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("evaluation has ", a.class_count(), " classes, the plan ",
                     expected_classes));
  }
  for (int i = 0; i < a.withheld_classes_size(); ++i) {
    const int c = a.withheld_classes(i);
    if (c < 0 || c >= expected_classes ||
        (i > 0 && c <= a.withheld_classes(i - 1))) {
      return absl::InvalidArgumentError(
          "withheld classes must be distinct classes, sorted");
    }
    for (int p = 0; p < expected_classes; ++p) {
      if (a.confusion(c * expected_classes + p) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("withheld class ", c, " still has images"));
      }
    }
  }
  if (a.suppressed()) {
    // A suppressed set says nothing, not even which classes it had.
    bool empty = a.num_images() == 0 && a.num_patients() == 0 &&
                 a.loss_sum() == 0 && a.score_histogram_size() == 0 &&
                 a.brier_sum_size() == 0 && a.withheld_classes_size() == 0;
    for (int64_t count : a.confusion()) empty = empty && count == 0;
    if (!empty) {
      return absl::InvalidArgumentError(
          "a suppressed evaluation must not carry counts");
    }
    return absl::OkStatus();
  }
  // Before the counts: a model with non-finite outputs also leaves its
  // counts unfinished, and this is the message that explains both.
  if (!std::isfinite(a.loss_sum()) || a.loss_sum() < 0) {
    return absl::InvalidArgumentError("evaluation loss is not finite");
  }
  int64_t total = 0;
  for (int64_t count : a.confusion()) {
    if (count < 0) return absl::InvalidArgumentError("negative count");
    if (count > kMaxCount) return absl::InvalidArgumentError("count too large");
    total += count;
  }
  if (total != a.num_images() || a.num_patients() < 0 ||
      a.num_patients() > a.num_images()) {
    return absl::InvalidArgumentError("evaluation counts are inconsistent");
  }
  if (!HasScores(a)) {
    if (a.histogram_bins() < 0 || a.score_histogram_size() > 0 ||
        a.brier_sum_size() > 0) {
      return absl::InvalidArgumentError("score histograms without a binning");
    }
    return absl::OkStatus();
  }
  if (a.histogram_bins() != kScoreHistogramBins) {
    return absl::InvalidArgumentError(
        absl::StrCat("score histograms of ", a.histogram_bins(),
                     " bins; every site must use ", kScoreHistogramBins));
  }
  if (!ScoreLayoutOk(a)) {
    return absl::InvalidArgumentError("score histograms of the wrong size");
  }
  for (int t = 0; t < expected_classes; ++t) {
    const int64_t row = RowSum(a, t);
    for (int c = 0; c < expected_classes; ++c) {
      int64_t sum = 0;
      for (int b = 0; b < a.histogram_bins(); ++b) {
        int64_t count = Histogram(a, t, c, b);
        if (count < 0) return absl::InvalidArgumentError("negative count");
        if (count > kMaxCount) {
          return absl::InvalidArgumentError("count too large");
        }
        sum += count;
      }
      if (sum != row) {
        return absl::InvalidArgumentError(absl::StrCat(
            "score histogram of class ", c, " for true class ", t, " holds ",
            sum, " images, the confusion matrix ", row));
      }
    }
  }
  // (p_c - y_c)^2 <= 1 for each class and sum_c (p_c - y_c)^2 <= 2.
  const double slack = 1e-9 * (1 + a.num_images());
  double brier_total = 0;
  for (double sum : a.brier_sum()) {
    if (!std::isfinite(sum) || sum < 0 || sum > a.num_images() + slack) {
      return absl::InvalidArgumentError("Brier sum out of range");
    }
    brier_total += sum;
  }
  if (brier_total > 2.0 * a.num_images() + slack) {
    return absl::InvalidArgumentError("Brier sum out of range");
  }
  return absl::OkStatus();
}

std::vector<bool> WithheldCells(const DisclosureTable& table,
                                int64_t min_cell_count) {
  const int n = static_cast<int>(table.counts.size());
  auto is_public = [&](int i) {
    return i < static_cast<int>(table.public_cells.size()) &&
           table.public_cells[i];
  };
  auto valid = [&](int i) { return i >= 0 && i < n; };
  std::vector<bool> withheld(n, false);
  for (int i = 0; i < n; ++i) {
    withheld[i] = !is_public(i) && table.counts[i] > 0 &&
                  table.counts[i] < min_cell_count;
  }
  // The smallest non-zero part that may still be withheld, or -1.
  auto smallest_other = [&](const std::vector<int>& parts) {
    int best = -1;
    for (int part : parts) {
      if (!valid(part) || withheld[part] || is_public(part) ||
          table.counts[part] == 0) {
        continue;
      }
      if (best < 0 || table.counts[part] < table.counts[best]) best = part;
    }
    return best;
  };
  // Each pass only adds withheld cells, so this ends within n passes.
  for (bool changed = true; changed;) {
    changed = false;
    for (const DisclosureTable::Partition& partition : table.partitions) {
      if (!valid(partition.total)) continue;
      int hidden = 0;
      int64_t hidden_sum = 0;
      bool any_nonzero = false;
      for (int part : partition.parts) {
        if (!valid(part)) continue;
        any_nonzero = any_nonzero || table.counts[part] > 0;
        if (withheld[part]) {
          ++hidden;
          hidden_sum += table.counts[part];
        }
      }
      if (!withheld[partition.total]) {
        if (hidden == 0 || (hidden > 1 && hidden_sum >= min_cell_count)) {
          continue;
        }
        int next = smallest_other(partition.parts);
        if (next >= 0) {
          withheld[next] = true;
          changed = true;
        } else if (!is_public(partition.total) &&
                   table.counts[partition.total] > 0) {
          withheld[partition.total] = true;
          changed = true;
        }
      } else if (hidden == 0 && any_nonzero) {
        int next = smallest_other(partition.parts);
        if (next >= 0) {
          withheld[next] = true;
          changed = true;
        }
      }
    }
  }
  return withheld;
}

double Accuracy(const EvalAggregate& a) {
  if (a.num_images() == 0) return kNaN;
  int64_t correct = 0;
  for (int c = 0; c < a.class_count(); ++c) correct += Cell(a, c, c);
  return static_cast<double>(correct) / a.num_images();
}

double MeanLoss(const EvalAggregate& a) {
  return a.num_images() == 0 ? kNaN : a.loss_sum() / a.num_images();
}

double Sensitivity(const EvalAggregate& a, int c) {
  int64_t positives = RowSum(a, c);
  return positives == 0 ? kNaN : static_cast<double>(Cell(a, c, c)) / positives;
}

double Specificity(const EvalAggregate& a, int c) {
  int64_t negatives = a.num_images() - RowSum(a, c);
  if (negatives == 0) return kNaN;
  int64_t false_positives = ColumnSum(a, c) - Cell(a, c, c);
  return static_cast<double>(negatives - false_positives) / negatives;
}

double MacroF1(const EvalAggregate& a) {
  double sum = 0;
  int counted = 0;
  for (int c = 0; c < a.class_count(); ++c) {
    int64_t tp = Cell(a, c, c);
    int64_t support = RowSum(a, c);
    int64_t predicted = ColumnSum(a, c);
    if (support == 0 && predicted == 0) continue;
    sum += 2.0 * tp / (support + predicted);
    ++counted;
  }
  return counted == 0 ? kNaN : sum / counted;
}

Interval WilsonInterval(int64_t successes, int64_t trials, double z) {
  if (trials <= 0 || successes < 0 || successes > trials) return {};
  const double n = static_cast<double>(trials);
  const double k = static_cast<double>(successes);
  const double z2 = z * z;
  const double center = (k + z2 / 2) / (n + z2);
  const double half = z / (n + z2) * std::sqrt(k * (n - k) / n + z2 / 4);
  return {std::max(0.0, center - half), std::min(1.0, center + half)};
}

MetricsSummary Summarize(const EvalAggregate& a) {
  MetricsSummary summary;
  const int k = a.class_count();
  summary.class_count = k;
  summary.num_patients = a.num_patients();
  if (k <= 0 || k > 1000 || a.confusion_size() != k * k) {
    summary.num_images = a.num_images();
    return summary;
  }
  int64_t n = 0;
  for (int64_t count : a.confusion()) n += count;
  summary.num_images = n;
  summary.mean_loss = Ratio(a.loss_sum(), static_cast<double>(n));
  summary.classes.resize(k);

  int64_t correct = 0;
  double expected_agreement = 0;  // sum_c support_c * predicted_c
  for (int c = 0; c < k; ++c) {
    ClassMetrics& m = summary.classes[c];
    const int64_t predicted = ColumnSum(a, c);
    m.support = RowSum(a, c);
    m.true_positives = Cell(a, c, c);
    m.false_positives = predicted - m.true_positives;
    m.false_negatives = m.support - m.true_positives;
    m.true_negatives = n - m.support - m.false_positives;
    const double tp = m.true_positives, fp = m.false_positives,
                 fn = m.false_negatives, tn = m.true_negatives;
    m.precision = Ratio(tp, tp + fp);
    m.sensitivity = Ratio(tp, tp + fn);
    m.specificity = Ratio(tn, tn + fp);
    m.npv = Ratio(tn, tn + fn);
    m.f1 = Ratio(2 * tp, 2 * tp + fp + fn);
    m.precision_ci = WilsonInterval(m.true_positives, predicted);
    m.sensitivity_ci = WilsonInterval(m.true_positives, m.support);
    m.specificity_ci =
        WilsonInterval(m.true_negatives, m.true_negatives + m.false_positives);
    m.npv_ci =
        WilsonInterval(m.true_negatives, m.true_negatives + m.false_negatives);
    correct += m.true_positives;
    expected_agreement += static_cast<double>(m.support) * predicted;
  }
  summary.accuracy = Ratio(correct, n);
  summary.accuracy_ci = WilsonInterval(correct, n);
  // Cohen's kappa, (p_o - p_e) / (1 - p_e), with both terms scaled by n^2 so
  // that integer counts stay exact.
  const double n2 = static_cast<double>(n) * n;
  summary.cohen_kappa =
      Ratio(static_cast<double>(n) * correct - expected_agreement,
            n2 - expected_agreement);

  double recall_sum = 0;
  int with_cases = 0;
  double macro[5] = {0, 0, 0, 0, 0}, weighted[5] = {0, 0, 0, 0, 0};
  double tp_sum = 0, fp_sum = 0, fn_sum = 0, tn_sum = 0, support_sum = 0;
  int counted = 0;
  for (const ClassMetrics& m : summary.classes) {
    if (m.support > 0) {
      recall_sum += m.sensitivity;
      ++with_cases;
    }
    // Classes neither present nor predicted take no part in the averages.
    if (m.support == 0 && m.true_positives + m.false_positives == 0) continue;
    ++counted;
    const double values[5] = {m.precision, m.sensitivity, m.specificity, m.f1,
                              m.npv};
    for (int i = 0; i < 5; ++i) {
      macro[i] += ZeroIfNaN(values[i]);
      weighted[i] += m.support * ZeroIfNaN(values[i]);
    }
    tp_sum += m.true_positives;
    fp_sum += m.false_positives;
    fn_sum += m.false_negatives;
    tn_sum += m.true_negatives;
    support_sum += m.support;
  }
  summary.balanced_accuracy = Ratio(recall_sum, with_cases);
  auto averaged = [](const double* sums, double divisor) {
    return AveragedMetrics{Ratio(sums[0], divisor), Ratio(sums[1], divisor),
                           Ratio(sums[2], divisor), Ratio(sums[3], divisor),
                           Ratio(sums[4], divisor)};
  };
  summary.macro = averaged(macro, counted);
  summary.weighted = averaged(weighted, support_sum);
  summary.micro = AveragedMetrics{
      Ratio(tp_sum, tp_sum + fp_sum), Ratio(tp_sum, tp_sum + fn_sum),
      Ratio(tn_sum, tn_sum + fp_sum),
      Ratio(2 * tp_sum, 2 * tp_sum + fp_sum + fn_sum),
      Ratio(tn_sum, tn_sum + fn_sum)};

  if (ScoreLayoutOk(a) && a.histogram_bins() <= 100000) {
    FillScoreMetrics(a, &summary);
  }
  return summary;
}

}  // namespace echofed

// ---------------------------------------------------------------------------
// Meta-analysis.

namespace echofed {
namespace {

// Q(a, x) = Gamma(a, x) / Gamma(a), the regularized upper incomplete gamma
// function: the series below x = a + 1, the continued fraction (modified
// Lentz) above, as in Numerical Recipes (2nd ed.) section 6.2.
double UpperGammaRatio(double a, double x) {
  if (!(x > 0)) return 1;
  const double log_prefix = a * std::log(x) - x - std::lgamma(a);
  constexpr int kMaxTerms = 1000;
  constexpr double kEpsilon = 1e-15;
  if (x < a + 1) {
    double term = 1 / a, sum = term;
    for (int n = 1; n < kMaxTerms && std::abs(term) > kEpsilon * sum; ++n) {
      term *= x / (a + n);
      sum += term;
    }
    return std::max(0.0, 1 - sum * std::exp(log_prefix));
  }
  constexpr double kTiny = 1e-300;
  double b = x + 1 - a, c = 1 / kTiny, d = 1 / b, fraction = d;
  for (int n = 1; n < kMaxTerms; ++n) {
    const double an = -n * (n - a);
    b += 2;
    d = an * d + b;
    if (std::abs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    fraction *= d * c;
    if (std::abs(d * c - 1) < kEpsilon) break;
  }
  return std::exp(log_prefix) * fraction;
}

double ChiSquareUpperTail(double statistic, int degrees_of_freedom) {
  return UpperGammaRatio(degrees_of_freedom / 2.0, statistic / 2);
}

Heterogeneity ClassifyI2(double i2) {
  if (std::isnan(i2)) return Heterogeneity::kUndefined;
  if (i2 < 30) return Heterogeneity::kLow;
  if (i2 < 50) return Heterogeneity::kModerate;
  if (i2 < 75) return Heterogeneity::kSubstantial;
  return Heterogeneity::kConsiderable;
}

absl::Status CheckStudy(const StudyEstimate& study) {
  if (std::isfinite(study.estimate) && std::isfinite(study.variance) &&
      study.variance > 0) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "study \"", study.label, "\": estimate ", study.estimate, ", variance ",
      study.variance, " (need finite values and a positive variance)"));
}

// Whether a site's report can be asked about class `class_index`: a missing
// or malformed report, or a class it does not have, is an error (a
// suppressed report is only excluded, by the callers).
absl::Status CheckSite(const SiteAggregate& site, int class_index) {
  if (site.aggregate == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("site \"", site.label, "\" has no report"));
  }
  const EvalAggregate& a = *site.aggregate;
  const int k = a.class_count();
  if (k <= 0 || k > 1000 || a.confusion_size() != k * k) {
    return absl::InvalidArgumentError(
        absl::StrCat("site \"", site.label, "\": malformed confusion matrix"));
  }
  if (class_index < 0 || class_index >= k) {
    return absl::InvalidArgumentError(
        absl::StrCat("site \"", site.label, "\" has ", k,
                     " classes, not class ", class_index));
  }
  return absl::OkStatus();
}

std::string Excluded(const SiteAggregate& site, absl::string_view reason) {
  return absl::StrCat(site.label, ": ", reason);
}

int64_t ConfusionTotal(const EvalAggregate& a) {
  int64_t n = 0;
  for (int64_t count : a.confusion()) n += count;
  return n;
}

// Which proportion of the one-vs-rest confusion counts a study is built of.
enum class Proportion { kSensitivity, kSpecificity };

absl::StatusOr<SiteStudies> ProportionStudies(
    const std::vector<SiteAggregate>& sites, int c, Proportion proportion) {
  SiteStudies result;
  for (const SiteAggregate& site : sites) {
    if (absl::Status status = CheckSite(site, c); !status.ok()) return status;
    const EvalAggregate& a = *site.aggregate;
    if (a.suppressed()) {
      result.excluded.push_back(Excluded(site, "suppressed"));
      continue;
    }
    const int64_t positives = RowSum(a, c);
    const int64_t true_positives = Cell(a, c, c);
    int64_t successes = true_positives, trials = positives;
    if (proportion == Proportion::kSpecificity) {
      trials = ConfusionTotal(a) - positives;
      successes = trials - (ColumnSum(a, c) - true_positives);
    }
    if (trials <= 0) {
      result.excluded.push_back(
          Excluded(site, proportion == Proportion::kSensitivity
                             ? "no cases of the class"
                             : "no cases outside the class"));
      continue;
    }
    result.studies.push_back(
        LogitProportionStudy(successes, trials, site.label));
  }
  return result;
}

absl::StatusOr<PooledSiteMetric> Pool(absl::StatusOr<SiteStudies> sites,
                                      bool logit_scale) {
  if (!sites.ok()) return sites.status();
  if (sites->studies.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no site to pool (",
        sites->excluded.empty() ? "no sites"
                                : absl::StrJoin(sites->excluded, "; "),
        ")"));
  }
  absl::StatusOr<MetaAnalysis> analysis = MetaAnalyze(sites->studies);
  if (!analysis.ok()) return analysis.status();
  PooledSiteMetric pooled;
  pooled.analysis = *std::move(analysis);
  pooled.excluded = std::move(sites->excluded);
  const MetaAnalysis& m = pooled.analysis;
  if (logit_scale) {
    pooled.estimate = Sigmoid(m.estimate);
    pooled.ci = {Sigmoid(m.ci.lower), Sigmoid(m.ci.upper)};
  } else {
    pooled.estimate = m.estimate;
    pooled.ci = {std::max(0.0, m.ci.lower), std::min(1.0, m.ci.upper)};
  }
  return pooled;
}

}  // namespace

absl::string_view HeterogeneityName(Heterogeneity heterogeneity) {
  switch (heterogeneity) {
    case Heterogeneity::kLow:
      return "low";
    case Heterogeneity::kModerate:
      return "moderate";
    case Heterogeneity::kSubstantial:
      return "substantial";
    case Heterogeneity::kConsiderable:
      return "considerable";
    case Heterogeneity::kUndefined:
      break;
  }
  return "undefined";
}

absl::StatusOr<MetaAnalysis> MetaAnalyze(
    const std::vector<StudyEstimate>& studies) {
  if (studies.empty()) {
    return absl::InvalidArgumentError("no studies to meta-analyse");
  }
  for (const StudyEstimate& study : studies) {
    if (absl::Status status = CheckStudy(study); !status.ok()) return status;
  }
  MetaAnalysis m;
  const int k = static_cast<int>(studies.size());
  m.study_count = k;
  m.degrees_of_freedom = k - 1;
  double weight_sum = 0, weight_square_sum = 0, weighted_sum = 0;
  for (const StudyEstimate& study : studies) {
    const double w = 1 / study.variance;
    weight_sum += w;
    weight_square_sum += w * w;
    weighted_sum += w * study.estimate;
  }
  m.fixed_estimate = weighted_sum / weight_sum;
  m.fixed_standard_error = std::sqrt(1 / weight_sum);
  m.q = 0;
  for (const StudyEstimate& study : studies) {
    const double residual = study.estimate - m.fixed_estimate;
    m.q += residual * residual / study.variance;
  }
  // Positive for k >= 2: the cross terms of (sum w)^2.
  const double scale = weight_sum - weight_square_sum / weight_sum;
  m.tau2 = k > 1 ? std::max(0.0, (m.q - m.degrees_of_freedom) / scale) : 0.0;
  if (k > 1) {
    m.q_p_value = ChiSquareUpperTail(m.q, m.degrees_of_freedom);
    m.i2 =
        m.q > 0 ? 100 * std::max(0.0, (m.q - m.degrees_of_freedom) / m.q) : 0.0;
  }
  m.heterogeneity = ClassifyI2(m.i2);
  double random_sum = 0, random_weighted_sum = 0;
  for (const StudyEstimate& study : studies) {
    const double w = 1 / (study.variance + m.tau2);
    random_sum += w;
    random_weighted_sum += w * study.estimate;
  }
  m.estimate = random_weighted_sum / random_sum;
  m.standard_error = std::sqrt(1 / random_sum);
  m.ci = {m.estimate - kZ95 * m.standard_error,
          m.estimate + kZ95 * m.standard_error};
  for (const StudyEstimate& study : studies) {
    m.weights.push_back(
        {study.label, 100 / (study.variance + m.tau2) / random_sum});
  }
  return m;
}

StudyEstimate LogitProportionStudy(int64_t successes, int64_t trials,
                                   std::string label) {
  StudyEstimate study;
  study.label = std::move(label);
  if (trials <= 0 || successes < 0 || successes > trials) return study;
  double s = static_cast<double>(successes);
  double f = static_cast<double>(trials - successes);
  if (s == 0 || f == 0) {
    s += 0.5;
    f += 0.5;
  }
  study.estimate = std::log(s / f);
  study.variance = 1 / s + 1 / f;
  return study;
}

absl::StatusOr<SiteStudies> AucStudies(const std::vector<SiteAggregate>& sites,
                                       int c) {
  SiteStudies result;
  for (const SiteAggregate& site : sites) {
    if (absl::Status status = CheckSite(site, c); !status.ok()) return status;
    const EvalAggregate& a = *site.aggregate;
    if (a.suppressed()) {
      result.excluded.push_back(Excluded(site, "suppressed"));
      continue;
    }
    if (!ScoreLayoutOk(a) || a.histogram_bins() > 100000) {
      result.excluded.push_back(Excluded(site, "no score histograms"));
      continue;
    }
    std::vector<int> rest;
    for (int t = 0; t < a.class_count(); ++t) {
      if (t != c) rest.push_back(t);
    }
    const AucEstimate auc = AucFromBins(Bins(a, c, rest));
    if (std::isnan(auc.auc)) {
      result.excluded.push_back(
          Excluded(site, "no cases of the class or none outside it"));
    } else if (std::isnan(auc.variance)) {
      result.excluded.push_back(
          Excluded(site, "fewer than two cases of the class or outside it"));
    } else if (!(auc.variance > 0)) {
      result.excluded.push_back(Excluded(
          site, absl::StrCat("AUC ", auc.auc, " with DeLong variance 0")));
    } else {
      result.studies.push_back({auc.auc, auc.variance, site.label});
    }
  }
  return result;
}

absl::StatusOr<SiteStudies> SensitivityStudies(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return ProportionStudies(sites, class_index, Proportion::kSensitivity);
}

absl::StatusOr<SiteStudies> SpecificityStudies(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return ProportionStudies(sites, class_index, Proportion::kSpecificity);
}

absl::StatusOr<PooledSiteMetric> MetaAnalyzeAuc(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return Pool(AucStudies(sites, class_index), /*logit_scale=*/false);
}

absl::StatusOr<PooledSiteMetric> MetaAnalyzeSensitivity(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return Pool(SensitivityStudies(sites, class_index), /*logit_scale=*/true);
}

absl::StatusOr<PooledSiteMetric> MetaAnalyzeSpecificity(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return Pool(SpecificityStudies(sites, class_index), /*logit_scale=*/true);
}

}  // namespace echofed

// ---------------------------------------------------------------------------
// Harrell's C-index from binned survival aggregates.

namespace echofed {
namespace {

// CIndex multiplies counts of patients; below 2^31 patients every pair count
// fits int64.
constexpr int64_t kMaxSurvivalPatients = (int64_t{1} << 31) - 1;

bool HasSurvivalBinning(const SurvivalAggregate& a) {
  return a.time_bins() == kSurvivalTimeBins &&
         a.time_bin_months() == kSurvivalTimeBinMonths &&
         a.score_bins() == kSurvivalScoreBins;
}

bool CellBefore(const SurvivalCell& x, const SurvivalCell& y) {
  return x.time_bin() != y.time_bin() ? x.time_bin() < y.time_bin()
                                      : x.score_bin() < y.score_bin();
}

// Binning, cells (in range, sorted, unique, non-empty, counts bounded) and
// their total against num_patients; not the suppression rule.
absl::Status CheckSurvivalCells(const SurvivalAggregate& a) {
  if (!HasSurvivalBinning(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "survival binning ", a.time_bins(), " x ", a.time_bin_months(),
        " months, ", a.score_bins(), " score bins; every site must use ",
        kSurvivalTimeBins, " x ", kSurvivalTimeBinMonths, " months, ",
        kSurvivalScoreBins, " score bins"));
  }
  int64_t total = 0;
  for (int i = 0; i < a.cells_size(); ++i) {
    const SurvivalCell& cell = a.cells(i);
    if (cell.time_bin() < 0 || cell.time_bin() >= kSurvivalTimeBins ||
        cell.score_bin() < 0 || cell.score_bin() >= kSurvivalScoreBins) {
      return absl::InvalidArgumentError("survival cell outside the binning");
    }
    if (i > 0 && !CellBefore(a.cells(i - 1), cell)) {
      return absl::InvalidArgumentError(
          "survival cells not sorted by (time bin, score bin) or repeated");
    }
    if (cell.events() < 0 || cell.censored() < 0 ||
        cell.events() + cell.censored() == 0) {
      return absl::InvalidArgumentError("survival cell with no patients");
    }
    if (cell.events() > kMaxCount || cell.censored() > kMaxCount) {
      return absl::InvalidArgumentError("count too large");
    }
    total += cell.events() + cell.censored();
    if (total > kMaxCount) return absl::InvalidArgumentError("count too large");
  }
  if (total != a.num_patients()) {
    return absl::InvalidArgumentError(
        absl::StrCat("survival cells hold ", total, " patients, num_patients ",
                     a.num_patients()));
  }
  return absl::OkStatus();
}

// Counts per score bin with prefix sums in O(log bins) (a Fenwick tree).
class ScoreCounts {
 public:
  explicit ScoreCounts(int bins) : tree_(bins + 1, 0) {}

  void Add(int bin, int64_t count) {
    total_ += count;
    for (int i = bin + 1; i < static_cast<int>(tree_.size()); i += i & -i) {
      tree_[i] += count;
    }
  }
  // Patients in bins below `bin`.
  int64_t Below(int bin) const {
    int64_t sum = 0;
    for (int i = bin; i > 0; i -= i & -i) sum += tree_[i];
    return sum;
  }
  int64_t At(int bin) const { return Below(bin + 1) - Below(bin); }
  int64_t Total() const { return total_; }

 private:
  std::vector<int64_t> tree_;
  int64_t total_ = 0;
};

// The pairs of one cell's patients with the patients of other time bins:
// r comparable pairs per patient, of which w more concordant than
// discordant. Event patients are compared with everyone followed longer and
// with the earlier events; censored ones only with the earlier events.
struct CellPairs {
  int64_t event_pairs = 0;     // r of an event patient
  int64_t event_balance = 0;   // w of an event patient
  int64_t censored_pairs = 0;  // r of a censored patient
  int64_t censored_balance = 0;
};

// [first, last) of each time bin's run of cells.
std::vector<std::pair<int, int>> TimeBinRuns(const SurvivalAggregate& a) {
  std::vector<std::pair<int, int>> runs;
  for (int i = 0; i < a.cells_size(); ++i) {
    if (i == 0 || a.cells(i).time_bin() != a.cells(i - 1).time_bin()) {
      runs.push_back({i, i});
    }
    runs.back().second = i + 1;
  }
  return runs;
}

}  // namespace

int SurvivalTimeBin(double time_months) {
  if (!(time_months >= 0)) return 0;
  if (time_months >= kSurvivalTimeBins * kSurvivalTimeBinMonths) {
    return kSurvivalTimeBins - 1;
  }
  return std::min(kSurvivalTimeBins - 1,
                  static_cast<int>(time_months / kSurvivalTimeBinMonths));
}

int SurvivalScoreBin(double risk_score) {
  if (std::isnan(risk_score)) return 0;
  return std::min(kSurvivalScoreBins - 1,
                  static_cast<int>(Sigmoid(risk_score) * kSurvivalScoreBins));
}

void InitSurvivalAggregate(SurvivalAggregate* aggregate) {
  aggregate->set_num_patients(0);
  aggregate->set_time_bins(kSurvivalTimeBins);
  aggregate->set_time_bin_months(kSurvivalTimeBinMonths);
  aggregate->set_score_bins(kSurvivalScoreBins);
  aggregate->clear_cells();
}

absl::Status AddSurvivalCase(SurvivalAggregate* aggregate, double time_months,
                             bool event, double risk_score) {
  if (!std::isfinite(time_months) || time_months < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "follow-up time ", time_months, " months is not finite and >= 0"));
  }
  if (!std::isfinite(risk_score)) {
    return absl::InvalidArgumentError(
        absl::StrCat("risk score ", risk_score, " is not finite"));
  }
  if (aggregate->time_bins() == 0 && aggregate->cells_size() == 0 &&
      aggregate->num_patients() == 0) {
    InitSurvivalAggregate(aggregate);
  }
  if (!HasSurvivalBinning(*aggregate)) {
    return absl::FailedPreconditionError(
        "survival aggregate lacks the fixed binning (InitSurvivalAggregate "
        "it)");
  }
  SurvivalCell key;
  key.set_time_bin(SurvivalTimeBin(time_months));
  key.set_score_bin(SurvivalScoreBin(risk_score));
  auto* cells = aggregate->mutable_cells();
  auto position =
      std::lower_bound(cells->begin(), cells->end(), key, CellBefore);
  int index = static_cast<int>(position - cells->begin());
  if (position == cells->end() || CellBefore(key, *position)) {
    *cells->Add() = key;
    // Into place; linear, like any insertion into a sorted array, which a
    // site's few thousand patients afford.
    for (int i = cells->size() - 1; i > index; --i) {
      cells->SwapElements(i, i - 1);
    }
  }
  SurvivalCell& cell = *cells->Mutable(index);
  if (event) {
    cell.set_events(cell.events() + 1);
  } else {
    cell.set_censored(cell.censored() + 1);
  }
  aggregate->set_num_patients(aggregate->num_patients() + 1);
  return absl::OkStatus();
}

absl::Status ValidateSurvivalAggregate(const SurvivalAggregate& aggregate) {
  if (aggregate.suppressed() &&
      (aggregate.num_patients() != 0 || aggregate.cells_size() != 0)) {
    return absl::InvalidArgumentError(
        "a suppressed survival report must not carry counts");
  }
  return CheckSurvivalCells(aggregate);
}

absl::Status AddSurvivalAggregate(const SurvivalAggregate& add,
                                  SurvivalAggregate* total) {
  if (absl::Status status = ValidateSurvivalAggregate(add); !status.ok()) {
    return status;
  }
  const bool fresh = total->time_bins() == 0 && total->cells_size() == 0 &&
                     total->num_patients() == 0;
  if (!fresh) {
    if (absl::Status status = CheckSurvivalCells(*total); !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the total: ", status.message()));
    }
  }
  // Checked everything; from here on `total` changes.
  if (fresh) InitSurvivalAggregate(total);
  google::protobuf::RepeatedPtrField<SurvivalCell> merged;
  merged.Reserve(total->cells_size() + add.cells_size());
  int i = 0, j = 0;
  while (i < total->cells_size() || j < add.cells_size()) {
    if (j == add.cells_size() || (i < total->cells_size() &&
                                  CellBefore(total->cells(i), add.cells(j)))) {
      *merged.Add() = total->cells(i++);
    } else if (i == total->cells_size() ||
               CellBefore(add.cells(j), total->cells(i))) {
      *merged.Add() = add.cells(j++);
    } else {
      SurvivalCell* cell = merged.Add();
      *cell = total->cells(i++);
      cell->set_events(cell->events() + add.cells(j).events());
      cell->set_censored(cell->censored() + add.cells(j++).censored());
    }
  }
  total->mutable_cells()->Swap(&merged);
  total->set_num_patients(total->num_patients() + add.num_patients());
  return absl::OkStatus();
}

ConcordanceIndex CIndex(const SurvivalAggregate& a) {
  ConcordanceIndex result;
  if (!CheckSurvivalCells(a).ok() || a.num_patients() > kMaxSurvivalPatients) {
    return result;
  }
  const std::vector<std::pair<int, int>> runs = TimeBinRuns(a);
  std::vector<CellPairs> pairs(a.cells_size());
  // Latest time bins first: each event against the patients followed
  // longer, that is in later time bins.
  ScoreCounts later(kSurvivalScoreBins);
  for (auto run = runs.rbegin(); run != runs.rend(); ++run) {
    for (int i = run->first; i < run->second; ++i) {
      const SurvivalCell& cell = a.cells(i);
      const int64_t lower = later.Below(cell.score_bin());
      const int64_t tied = later.At(cell.score_bin());
      const int64_t higher = later.Total() - lower - tied;
      result.concordant += cell.events() * lower;
      result.discordant += cell.events() * higher;
      result.tied += cell.events() * tied;
      pairs[i].event_pairs = later.Total();
      pairs[i].event_balance = lower - higher;
    }
    for (int i = run->first; i < run->second; ++i) {
      later.Add(a.cells(i).score_bin(),
                a.cells(i).events() + a.cells(i).censored());
    }
  }
  // Earliest first: every patient against the events of earlier time bins,
  // concordant when the earlier event had the higher score.
  ScoreCounts earlier_events(kSurvivalScoreBins);
  for (const auto& [first, last] : runs) {
    for (int i = first; i < last; ++i) {
      const SurvivalCell& cell = a.cells(i);
      const int64_t lower = earlier_events.Below(cell.score_bin());
      const int64_t tied = earlier_events.At(cell.score_bin());
      const int64_t higher = earlier_events.Total() - lower - tied;
      pairs[i].event_pairs += earlier_events.Total();
      pairs[i].event_balance += higher - lower;
      pairs[i].censored_pairs = earlier_events.Total();
      pairs[i].censored_balance = higher - lower;
    }
    for (int i = first; i < last; ++i) {
      earlier_events.Add(a.cells(i).score_bin(), a.cells(i).events());
    }
  }
  result.comparable_pairs = result.concordant + result.discordant + result.tied;
  if (result.comparable_pairs == 0) return result;
  const double n = static_cast<double>(result.comparable_pairs);
  result.c_index = (result.concordant + 0.5 * result.tied) / n;
  // Somers' Dxy = 2C - 1, and the sum over patients of (w_i - Dxy r_i)^2.
  const double dxy = (result.concordant - result.discordant) / n;
  double sum_squares = 0;
  for (int i = 0; i < a.cells_size(); ++i) {
    const double event_residual =
        pairs[i].event_balance - dxy * pairs[i].event_pairs;
    const double censored_residual =
        pairs[i].censored_balance - dxy * pairs[i].censored_pairs;
    sum_squares +=
        a.cells(i).events() * event_residual * event_residual +
        a.cells(i).censored() * censored_residual * censored_residual;
  }
  // Each comparable pair counts once for each of its two patients.
  result.standard_error = std::sqrt(sum_squares) / (2 * n);
  result.ci = NormalInterval(result.c_index, result.standard_error);
  return result;
}

}  // namespace echofed
