// EvalAggregate: InitAggregate, AddCase, AddAggregate, ValidateAggregate.

#include "common/eval_aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics_internal.h"

namespace echofed {

using metrics_internal::HasScores;
using metrics_internal::Histogram;
using metrics_internal::HistogramIndex;
using metrics_internal::kMaxCount;
using metrics_internal::RowSum;
using metrics_internal::ScoreLayoutOk;

namespace {

// Probabilities of one image must sum to 1 this closely: a looser sum means
// logits or a wrong column order were passed.
constexpr double kProbabilitySumTolerance = 1e-6;

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

}  // namespace echofed
