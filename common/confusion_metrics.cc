// Accuracy, mean loss, macro F1, sensitivity and specificity of a confusion
// matrix.

#include "common/confusion_metrics.h"

#include <cstdint>

#include "common/intervals.h"
#include "common/metrics_internal.h"

namespace echofed {

using metrics_internal::Cell;
using metrics_internal::ColumnSum;
using metrics_internal::RowSum;

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

}  // namespace echofed
