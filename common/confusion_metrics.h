#ifndef ECHOFED_COMMON_CONFUSION_METRICS_H_
#define ECHOFED_COMMON_CONFUSION_METRICS_H_

// Single metrics of an aggregate's confusion matrix (and its loss). Every
// metric of the matrix at once, with Wilson intervals and averages over the
// classes, is Summarize's (common/metrics.h).

#include "proto/metrics.pb.h"

namespace echofed {

double Accuracy(const EvalAggregate& aggregate);
double MeanLoss(const EvalAggregate& aggregate);
// Macro-averaged F1 over classes present in the truth or the predictions.
double MacroF1(const EvalAggregate& aggregate);
// Sensitivity (recall) of one class, NaN when it has no cases.
double Sensitivity(const EvalAggregate& aggregate, int class_index);
// Specificity of one class (one-vs-rest), NaN when every case is that class.
double Specificity(const EvalAggregate& aggregate, int class_index);

}  // namespace echofed

#endif  // ECHOFED_COMMON_CONFUSION_METRICS_H_
