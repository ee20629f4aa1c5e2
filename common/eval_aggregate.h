#ifndef ECHOFED_COMMON_EVAL_AGGREGATE_H_
#define ECHOFED_COMMON_EVAL_AGGREGATE_H_

// The additive evaluation aggregate (EvalAggregate) every metric is computed
// from: building it case by case, pooling it across sites, validating a
// site's report.

#include <vector>

#include "absl/status/status.h"
#include "proto/metrics.pb.h"

namespace echofed {

// The fixed binning of EvalAggregate.score_histogram: bin b holds
// probabilities in [b / 1000, (b + 1) / 1000), and p = 1 the last bin. Every
// site must use the same binning or their histograms cannot be added; 1000
// bins keep the binned AUC within about 1e-3 of the exact one.
inline constexpr int kScoreHistogramBins = 1000;

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
// to num_images, a finite loss; withheld classes sorted, each once, in range
// and with no images (none on a suppressed aggregate); when scores are
// present, the fixed binning,
// a histogram per (true class, score class) whose total equals that true
// class's row of the confusion matrix, and finite Brier sums in range.
absl::Status ValidateAggregate(const EvalAggregate& aggregate,
                               int expected_classes);

}  // namespace echofed

#endif  // ECHOFED_COMMON_EVAL_AGGREGATE_H_
