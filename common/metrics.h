#ifndef ECHOFED_COMMON_METRICS_H_
#define ECHOFED_COMMON_METRICS_H_

// Metrics from additive aggregates. Pooling adds the aggregates first, so a
// pooled number is the one the pooled cases would give: counts exactly, and
// score-based metrics (AUC, calibration, decision curves) up to the fixed
// binning of the score histograms, which is the same at every site.
//
// Undefined values (no cases of a class, no scores in the report, a model
// fit that does not converge) are NaN, never a crash.

#include <cstdint>
#include <limits>
#include <vector>

#include "absl/status/status.h"
#include "proto/metrics.pb.h"

namespace echofed {

// The fixed binning of EvalAggregate.score_histogram: bin b holds
// probabilities in [b / 1000, (b + 1) / 1000), and p = 1 the last bin. Every
// site must use the same binning or their histograms cannot be added; 1000
// bins keep the binned AUC within about 1e-3 of the exact one.
inline constexpr int kScoreHistogramBins = 1000;

// What every undefined metric is.
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Gives `aggregate` the layout of `class_count` classes with score
// histograms: zeroed confusion matrix, histograms and Brier sums. Leaves
// split, num_patients, num_images and loss_sum alone.
void InitAggregate(int class_count, EvalAggregate* aggregate);

// Adds one image: its true class and the model's predicted probability of
// every class (finite, in [0, 1], summing to 1 within 1e-6). The predicted
// class is the first most probable one. Counts num_images, the confusion
// matrix, the score histograms and the Brier sums; num_patients and loss_sum
// stay with the caller (the loss is better computed from logits). An
// aggregate with class_count 0 is initialised first. On error nothing is
// changed.
absl::Status AddCase(EvalAggregate* aggregate, int truth,
                     const std::vector<double>& probabilities);

// Adds `add` into `total` (same class count; splits may differ). An empty
// `total` (class_count 0) takes the layout of `add`. When only one side
// carries score histograms and both hold images, the pooled histograms would
// describe only part of the cases: they are dropped (histogram_bins 0), so
// pooled score metrics are NaN rather than wrong.
absl::Status AddAggregate(const EvalAggregate& add, EvalAggregate* total);

// Counts consistent: square confusion matrix of non-negative counts summing
// to num_images, a finite loss; when scores are present, the fixed binning,
// a histogram per (true class, score class) whose total equals that true
// class's row of the confusion matrix, and finite Brier sums in range.
absl::Status ValidateAggregate(const EvalAggregate& aggregate,
                               int expected_classes);

double Accuracy(const EvalAggregate& aggregate);
double MeanLoss(const EvalAggregate& aggregate);
// Macro-averaged F1 over classes present in the truth or the predictions.
double MacroF1(const EvalAggregate& aggregate);
// Sensitivity (recall) of one class, NaN when it has no cases.
double Sensitivity(const EvalAggregate& aggregate, int class_index);
// Specificity of one class (one-vs-rest), NaN when every case is that class.
double Specificity(const EvalAggregate& aggregate, int class_index);

// A two-sided confidence interval; NaN bounds when undefined.
struct Interval {
  double lower = kNaN;
  double upper = kNaN;
};

// 1.96: the two-sided 95% normal quantile used by every interval here.
inline constexpr double kZ95 = 1.959963984540054;

// Wilson score interval of the proportion successes / trials (NaN bounds
// when trials is 0). Unlike the Wald interval it stays inside [0, 1] and
// keeps its coverage for the small counts of a single hospital.
Interval WilsonInterval(int64_t successes, int64_t trials, double z = kZ95);

// One point of a one-vs-rest ROC curve: images with p_c >= threshold are
// called positive. The first point (0, 0) has threshold +infinity.
struct RocPoint {
  double threshold = kNaN;
  double false_positive_rate = kNaN;
  double true_positive_rate = kNaN;
};

// One reliability (calibration) bin [lower, upper) of p_c.
struct ReliabilityBin {
  double lower = kNaN;
  double upper = kNaN;
  int64_t count;
  double mean_predicted = kNaN;     // from histogram bin midpoints
  double observed_fraction = kNaN;  // fraction of images whose true class is c
};

// Net benefit of calling class c when p_c >= threshold (decision-curve
// analysis): TP/n - FP/n * t/(1 - t); treat_all calls every image positive.
struct DecisionPoint {
  double threshold = kNaN;
  double net_benefit = kNaN;
  double treat_all = kNaN;
};

// One class against the rest.
struct ClassMetrics {
  int64_t support = 0;  // images whose true class is this one
  int64_t true_positives = 0;
  int64_t false_positives = 0;
  int64_t false_negatives = 0;
  int64_t true_negatives = 0;
  double precision = kNaN;    // positive predictive value
  double sensitivity = kNaN;  // recall
  double specificity = kNaN;
  double f1 = kNaN;
  double npv = kNaN;      // negative predictive value
  Interval precision_ci;  // Wilson
  Interval sensitivity_ci;
  Interval specificity_ci;
  Interval npv_ci;

  // From the score histograms; NaN (empty curves) without scores.
  // AUC of p_c separating this class from the rest, ties within a bin
  // counting one half (the trapezoid over bins).
  double auc = kNaN;
  // DeLong's variance of that AUC and the normal 95% interval clipped to
  // [0, 1]. The structural components are computed per bin, so this is
  // DeLong on the binned scores. DeLong's test between two models is not
  // possible from aggregates: it needs the covariance of the two models'
  // components on the same images, which separate marginal histograms lose.
  double auc_variance = kNaN;
  Interval auc_ci;
  std::vector<RocPoint> roc;
  double brier = kNaN;  // mean (p_c - y_c)^2, exact (from brier_sum)
  std::vector<ReliabilityBin> reliability;  // 10 equal-width bins
  // Mean |observed - predicted| over the reliability bins, weighted by count.
  double expected_calibration_error = kNaN;
  // Logistic recalibration of y_c on logit(p_c), fitted by Newton's method
  // on the histogram bins (each bin at its midpoint, weighted by its counts),
  // so it approximates the fit on individual images: the intercept with the
  // slope fixed at 1 (calibration in the large, 0 is ideal) and the slope of
  // the two-parameter fit (1 is ideal). NaN when the fit has no finite
  // optimum (a class absent, or perfectly separated).
  double calibration_intercept = kNaN;
  double calibration_slope = kNaN;
  // Thresholds 0.01, 0.02, ..., 0.99.
  std::vector<DecisionPoint> decision_curve;
};

// Averages of the one-vs-rest metrics over the classes present in the truth
// or the predictions. Macro: plain mean; weighted: weighted by support
// (prevalence); a class whose value is undefined counts as 0 in both, as
// scikit-learn's default does, so never predicting a class is not rewarded.
// Micro: the metric of the summed TP / FP / FN / TN counts.
struct AveragedMetrics {
  double precision = kNaN;
  double sensitivity = kNaN;
  double specificity = kNaN;
  double f1 = kNaN;
  double npv = kNaN;
};

struct MetricsSummary {
  int class_count = 0;
  int64_t num_images = 0;
  int64_t num_patients = 0;
  double accuracy = kNaN;
  Interval accuracy_ci;  // Wilson
  // Mean sensitivity over the classes that have cases.
  double balanced_accuracy = kNaN;
  double cohen_kappa = kNaN;
  double mean_loss = kNaN;
  std::vector<ClassMetrics> classes;
  AveragedMetrics macro;
  AveragedMetrics micro;
  AveragedMetrics weighted;

  // Whether the aggregate carries score histograms; the rest is NaN if not.
  bool has_scores = false;
  // Mean of the one-vs-rest AUCs of the classes that have both positives and
  // negatives (scikit-learn refuses the others).
  double macro_auc = kNaN;
  // 95% interval of the macro AUC from the classes' DeLong variances. The
  // covariances between classes would need each image's scores of all
  // classes jointly, which the marginal histograms do not keep, so the
  // standard error is bounded by the mean of the classes' standard errors
  // (perfect correlation): conservative, never too narrow.
  Interval macro_auc_ci;
  // AUC of all one-vs-rest pairs pooled (every image counted once per class).
  double micro_auc = kNaN;
  // One-vs-rest AUCs weighted by support.
  double weighted_auc = kNaN;
  // Hand & Till's M: the mean over class pairs (i, j) of the AUC of p_i
  // separating class i from class j and of p_j separating j from i, using
  // the images of those two classes only. Pairs with an absent class are
  // left out.
  double hand_till_auc = kNaN;
  // Multi-class Brier score: mean over images of sum_c (p_c - y_c)^2, in
  // [0, 2].
  double brier = kNaN;
};

// Every metric of one aggregate (a site's or a pool's). A malformed
// aggregate gives NaNs, never a crash; validate reports first.
MetricsSummary Summarize(const EvalAggregate& aggregate);

}  // namespace echofed

#endif  // ECHOFED_COMMON_METRICS_H_
