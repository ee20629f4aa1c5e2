#ifndef ECHOFED_COMMON_METRICS_H_
#define ECHOFED_COMMON_METRICS_H_

// Metrics from additive aggregates. Pooling adds the aggregates first, so a
// pooled number is the one the pooled cases would give.

#include <vector>

#include "absl/status/status.h"
#include "proto/metrics.pb.h"

namespace echofed {

// Adds `add` into `total` (same class count; splits may differ).
absl::Status AddAggregate(const EvalAggregate& add, EvalAggregate* total);

// Counts consistent: square confusion matrix of non-negative counts summing
// to num_images.
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

}  // namespace echofed

#endif  // ECHOFED_COMMON_METRICS_H_
