#include "common/metrics.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace echofed {
namespace {

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

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

absl::Status AddAggregate(const EvalAggregate& add, EvalAggregate* total) {
  if (total->class_count() == 0 && total->confusion_size() == 0) {
    total->set_class_count(add.class_count());
    total->mutable_confusion()->Resize(add.confusion_size(), 0);
  }
  if (add.class_count() != total->class_count() ||
      add.confusion_size() != total->confusion_size()) {
    return absl::InvalidArgumentError("aggregates of different class counts");
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
    return absl::InvalidArgumentError(absl::StrCat(
        "evaluation has ", a.class_count(), " classes, the plan ",
        expected_classes));
  }
  int64_t total = 0;
  for (int64_t count : a.confusion()) {
    if (count < 0) return absl::InvalidArgumentError("negative count");
    total += count;
  }
  if (total != a.num_images() || a.num_patients() < 0 ||
      a.num_patients() > a.num_images()) {
    return absl::InvalidArgumentError("evaluation counts are inconsistent");
  }
  if (!std::isfinite(a.loss_sum()) || a.loss_sum() < 0) {
    return absl::InvalidArgumentError("evaluation loss is not finite");
  }
  return absl::OkStatus();
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
  return positives == 0 ? kNaN
                        : static_cast<double>(Cell(a, c, c)) / positives;
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
