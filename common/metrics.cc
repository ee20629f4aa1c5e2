// Summarize: every metric of one EvalAggregate, from its confusion matrix
// and, when it has them, its score histograms.

#include "common/metrics.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "common/metrics_internal.h"

namespace echofed {

using metrics_internal::AucEstimate;
using metrics_internal::AucFromBins;
using metrics_internal::BinnedScores;
using metrics_internal::Bins;
using metrics_internal::Cell;
using metrics_internal::ColumnSum;
using metrics_internal::DecisionCurve;
using metrics_internal::FitLogistic;
using metrics_internal::NormalInterval;
using metrics_internal::Ratio;
using metrics_internal::Reliability;
using metrics_internal::RocCurve;
using metrics_internal::RowSum;
using metrics_internal::ScoreLayoutOk;

namespace {

double ZeroIfNaN(double value) { return std::isnan(value) ? 0 : value; }

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
