#ifndef ECHOFED_COMMON_METRICS_H_
#define ECHOFED_COMMON_METRICS_H_

// Metrics from additive aggregates. Pooling adds the aggregates first, so a
// pooled number is the one the pooled cases would give: counts exactly, and
// score-based metrics (AUC, calibration, decision curves) up to the fixed
// binning of the score histograms, which is the same at every site.
//
// Undefined values (no cases of a class, no scores in the report, a model
// fit that does not converge) are NaN, never a crash.
//
// This header gathers the metrics headers, so that one include gives them
// all, and holds Summarize, which computes every metric of one aggregate:
//   common/intervals.h           kNaN, Interval, WilsonInterval
//   common/eval_aggregate.h      building, pooling, validating aggregates
//   common/disclosure_control.h  suppression of small released counts
//   common/confusion_metrics.h   accuracy, F1, sensitivity, specificity
//   common/roc.h                 ROC curves (AUC, DeLong)
//   common/calibration.h         reliability bins, decision curves
//   common/meta_analysis.h       random-effects meta-analysis across sites
//   common/survival_metrics.h    survival aggregates, Harrell's C-index

#include <cstdint>
#include <vector>

#include "common/calibration.h"
#include "common/confusion_metrics.h"
#include "common/disclosure_control.h"
#include "common/eval_aggregate.h"
#include "common/intervals.h"
#include "common/meta_analysis.h"
#include "common/roc.h"
#include "common/survival_metrics.h"
#include "proto/metrics.pb.h"

namespace echofed {

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
