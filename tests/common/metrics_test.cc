#include "common/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

EvalAggregate Make(std::vector<int64_t> confusion, int classes) {
  EvalAggregate a;
  a.set_class_count(classes);
  int64_t total = 0;
  for (int64_t c : confusion) {
    a.add_confusion(c);
    total += c;
  }
  a.set_num_images(total);
  a.set_num_patients(total);
  return a;
}

struct Case {
  int truth;
  std::vector<double> probabilities;
};

EvalAggregate FromCases(const std::vector<Case>& cases) {
  EvalAggregate a;
  for (const Case& c : cases) {
    absl::Status status = AddCase(&a, c.truth, c.probabilities);
    EXPECT_TRUE(status.ok()) << status;
  }
  a.set_num_patients(a.num_images());
  return a;
}

int64_t HistogramAt(const EvalAggregate& a, int truth, int score, int bin) {
  return a.score_histogram(
      (truth * a.class_count() + score) * a.histogram_bins() + bin);
}

// The binary example used by several tests: class 1 has scores 0.9, 0.8,
// 0.4; class 0 has 0.7, 0.4, 0.3, 0.2 (one tie across the classes at 0.4).
std::vector<Case> BinaryExample() {
  std::vector<Case> cases;
  for (double p : {0.9, 0.8, 0.4}) cases.push_back({1, {1 - p, p}});
  for (double p : {0.7, 0.4, 0.3, 0.2}) cases.push_back({0, {1 - p, p}});
  return cases;
}

// Exact AUC on raw scores: every (positive, negative) pair, ties one half.
double ExactAuc(const std::vector<double>& positives,
                const std::vector<double>& negatives) {
  double wins = 0;
  for (double p : positives) {
    for (double n : negatives) wins += p > n ? 1.0 : p == n ? 0.5 : 0.0;
  }
  return wins / (static_cast<double>(positives.size()) * negatives.size());
}

// One-vs-rest exact AUC of class c, or of class c against class `only`.
double ExactAuc(const std::vector<Case>& cases, int c, int only = -1) {
  std::vector<double> positives, negatives;
  for (const Case& x : cases) {
    if (x.truth == c) {
      positives.push_back(x.probabilities[c]);
    } else if (only < 0 || x.truth == only) {
      negatives.push_back(x.probabilities[c]);
    }
  }
  return ExactAuc(positives, negatives);
}

TEST(MetricsTest, HandComputedThreeClassValues) {
  // truth rows, predicted columns
  EvalAggregate a = Make({5, 1, 0,   //
                          2, 3, 1,   //
                          0, 0, 4},  //
                         3);
  EXPECT_NEAR(Accuracy(a), 12.0 / 16, 1e-12);
  EXPECT_NEAR(Sensitivity(a, 1), 3.0 / 6, 1e-12);
  // Class 0: negatives 10, false positives 2.
  EXPECT_NEAR(Specificity(a, 0), 8.0 / 10, 1e-12);
  double f1_0 = 2.0 * 5 / (6 + 7), f1_1 = 2.0 * 3 / (6 + 4),
         f1_2 = 2.0 * 4 / (4 + 5);
  EXPECT_NEAR(MacroF1(a), (f1_0 + f1_1 + f1_2) / 3, 1e-12);
}

TEST(MetricsTest, SummaryOfConfusionMatrixByHand) {
  EvalAggregate a = Make({5, 1, 0,   //
                          2, 3, 1,   //
                          0, 0, 4},  //
                         3);
  MetricsSummary s = Summarize(a);
  ASSERT_EQ(s.classes.size(), 3u);
  EXPECT_FALSE(s.has_scores);
  EXPECT_TRUE(std::isnan(s.macro_auc));
  EXPECT_EQ(s.num_images, 16);
  EXPECT_NEAR(s.accuracy, 0.75, 1e-12);
  // Rows 6, 6, 4; columns 7, 4, 5.
  EXPECT_NEAR(s.balanced_accuracy, (5.0 / 6 + 3.0 / 6 + 4.0 / 4) / 3, 1e-12);
  // p_e = (6*7 + 6*4 + 4*5) / 256 = 86/256; kappa = (192 - 86) / (256 - 86).
  EXPECT_NEAR(s.cohen_kappa, 106.0 / 170, 1e-12);

  const ClassMetrics& c0 = s.classes[0];
  EXPECT_EQ(c0.support, 6);
  EXPECT_EQ(c0.true_positives, 5);
  EXPECT_EQ(c0.false_positives, 2);
  EXPECT_EQ(c0.false_negatives, 1);
  EXPECT_EQ(c0.true_negatives, 8);
  EXPECT_NEAR(c0.precision, 5.0 / 7, 1e-12);
  EXPECT_NEAR(c0.sensitivity, 5.0 / 6, 1e-12);
  EXPECT_NEAR(c0.specificity, 8.0 / 10, 1e-12);
  EXPECT_NEAR(c0.npv, 8.0 / 9, 1e-12);
  EXPECT_NEAR(c0.f1, 10.0 / 13, 1e-12);
  EXPECT_NEAR(s.classes[2].npv, 1.0, 1e-12);
  EXPECT_NEAR(s.classes[2].specificity, 11.0 / 12, 1e-12);

  EXPECT_NEAR(s.macro.precision, (5.0 / 7 + 3.0 / 4 + 4.0 / 5) / 3, 1e-12);
  EXPECT_NEAR(s.macro.specificity, (8.0 / 10 + 9.0 / 10 + 11.0 / 12) / 3,
              1e-12);
  EXPECT_NEAR(s.macro.npv, (8.0 / 9 + 9.0 / 12 + 1.0) / 3, 1e-12);
  EXPECT_NEAR(s.macro.f1, MacroF1(a), 1e-12);
  // Single-label: micro precision = micro recall = micro F1 = accuracy.
  EXPECT_NEAR(s.micro.precision, 0.75, 1e-12);
  EXPECT_NEAR(s.micro.sensitivity, 0.75, 1e-12);
  EXPECT_NEAR(s.micro.f1, 0.75, 1e-12);
  EXPECT_NEAR(s.micro.specificity, 28.0 / 32, 1e-12);
  EXPECT_NEAR(s.weighted.sensitivity, 0.75, 1e-12);
  EXPECT_NEAR(s.weighted.precision,
              (6 * 5.0 / 7 + 6 * 3.0 / 4 + 4 * 4.0 / 5) / 16, 1e-12);
  // Wilson interval of 12/16.
  EXPECT_NEAR(s.accuracy_ci.lower, 0.505017, 1e-6);
  EXPECT_NEAR(s.accuracy_ci.upper, 0.898179, 1e-6);
}

TEST(MetricsTest, WilsonIntervalMatchesNewcombesTable) {
  // Newcombe (1998), Statistics in Medicine 17:857, method 3.
  struct Row {
    int64_t k, n;
    double lower, upper;
  };
  for (const Row& row :
       {Row{81, 263, 0.2553, 0.3662}, Row{15, 148, 0.0624, 0.1605},
        Row{0, 20, 0.0, 0.1611}, Row{1, 29, 0.0061, 0.1718}}) {
    Interval interval = WilsonInterval(row.k, row.n);
    EXPECT_NEAR(interval.lower, row.lower, 5e-5) << row.k << "/" << row.n;
    EXPECT_NEAR(interval.upper, row.upper, 5e-5) << row.k << "/" << row.n;
  }
  EXPECT_TRUE(std::isnan(WilsonInterval(0, 0).lower));
}

TEST(MetricsTest, WilsonBoundsAreExactlyZeroAndOneWhenNoneOrAllSucceed) {
  // In exact arithmetic center - half is 0 at 0 / n and center + half is 1 at
  // n / n; computed, they came out as 6.9e-18 (0 / 30) and
  // 0.99999999999999989 (30 / 30). Exact comparisons, all digits on failure.
  auto digits = [](double x) { return absl::StrFormat("%.17g", x); };
  const Interval none = WilsonInterval(0, 30), all = WilsonInterval(30, 30);
  EXPECT_EQ(none.lower, 0.0) << digits(none.lower);
  EXPECT_EQ(all.upper, 1.0) << digits(all.upper);
  // As reports show them: every image called class 0, 30 of each class.
  MetricsSummary s = Summarize(Make({30, 0, 30, 0}, 2));
  const ClassMetrics& zero = s.classes[0];
  const ClassMetrics& one = s.classes[1];
  EXPECT_EQ(zero.sensitivity_ci.upper, 1.0)  // 30 / 30
      << digits(zero.sensitivity_ci.upper);
  EXPECT_EQ(zero.specificity_ci.lower, 0.0)  // 0 / 30
      << digits(zero.specificity_ci.lower);
  EXPECT_EQ(one.sensitivity_ci.lower, 0.0)  // 0 / 30
      << digits(one.sensitivity_ci.lower);
  EXPECT_EQ(one.specificity_ci.upper, 1.0)  // 30 / 30
      << digits(one.specificity_ci.upper);
  // Every n up to 1000, at the usual quantiles.
  for (double z : {kZ95, 1.0, 2.5758293035489004}) {
    for (int64_t n = 1; n <= 1000; ++n) {
      const Interval lowest = WilsonInterval(0, n, z);
      const Interval highest = WilsonInterval(n, n, z);
      ASSERT_EQ(lowest.lower, 0.0)
          << "0/" << n << ", z " << z << ": " << digits(lowest.lower);
      ASSERT_EQ(highest.upper, 1.0)
          << n << "/" << n << ", z " << z << ": " << digits(highest.upper);
    }
  }
}

TEST(MetricsTest, AddCaseBinsEveryClassScore) {
  EvalAggregate a;
  ASSERT_TRUE(AddCase(&a, 1, {0.2, 0.5, 0.3}).ok());
  ASSERT_TRUE(AddCase(&a, 2, {0.0, 0.0, 1.0}).ok());
  EXPECT_EQ(a.class_count(), 3);
  EXPECT_EQ(a.histogram_bins(), kScoreHistogramBins);
  EXPECT_EQ(a.num_images(), 2);
  EXPECT_EQ(a.confusion(1 * 3 + 1), 1);
  EXPECT_EQ(a.confusion(2 * 3 + 2), 1);
  EXPECT_EQ(HistogramAt(a, 1, 0, 200), 1);
  EXPECT_EQ(HistogramAt(a, 1, 1, 500), 1);
  EXPECT_EQ(HistogramAt(a, 1, 2, 300), 1);
  // p = 1 falls in the last bin.
  EXPECT_EQ(HistogramAt(a, 2, 2, kScoreHistogramBins - 1), 1);
  EXPECT_EQ(HistogramAt(a, 2, 0, 0), 1);
  EXPECT_NEAR(a.brier_sum(0), 0.04, 1e-12);
  EXPECT_NEAR(a.brier_sum(1), 0.25, 1e-12);
  EXPECT_NEAR(a.brier_sum(2), 0.09, 1e-12);
  EXPECT_TRUE(ValidateAggregate(a, 3).ok());

  // Ties of the maximum go to the first class.
  ASSERT_TRUE(AddCase(&a, 0, {0.4, 0.4, 0.2}).ok());
  EXPECT_EQ(a.confusion(0), 1);

  // Refused inputs change nothing.
  EvalAggregate before = a;
  EXPECT_FALSE(AddCase(&a, 3, {0.2, 0.5, 0.3}).ok());
  EXPECT_FALSE(AddCase(&a, -1, {0.2, 0.5, 0.3}).ok());
  EXPECT_FALSE(AddCase(&a, 0, {0.5, 0.5}).ok());
  EXPECT_FALSE(AddCase(&a, 0, {2.0, 1.0, 0.5}).ok());  // logits, not p
  EXPECT_FALSE(AddCase(&a, 0, {0.6, 0.6, -0.2}).ok());
  EXPECT_FALSE(AddCase(&a, 0, {NAN, 0.5, 0.5}).ok());
  EXPECT_EQ(a.SerializeAsString(), before.SerializeAsString());

  // A confusion-only aggregate cannot take scores.
  EvalAggregate confusion_only = Make({1, 0, 0, 1}, 2);
  EXPECT_FALSE(AddCase(&confusion_only, 0, {0.5, 0.5}).ok());
}

TEST(MetricsTest, BinaryAucAndDeLongByHand) {
  MetricsSummary s = Summarize(FromCases(BinaryExample()));
  ASSERT_TRUE(s.has_scores);
  // Class 1: 0.9 and 0.8 beat all 4 negatives, 0.4 beats 2 and ties 1:
  // (4 + 4 + 2.5) / 12.
  const ClassMetrics& c1 = s.classes[1];
  EXPECT_NEAR(c1.auc, 10.5 / 12, 1e-12);
  // V10 = 1, 1, 5/8; V01 = 2/3, 5/6, 1, 1. S10 = 3/64, S01 = 11/432;
  // var = S10/3 + S01/4 = 19/864.
  EXPECT_NEAR(c1.auc_variance, 19.0 / 864, 1e-12);
  EXPECT_NEAR(c1.auc_ci.lower, 0.875 - kZ95 * std::sqrt(19.0 / 864), 1e-12);
  EXPECT_EQ(c1.auc_ci.upper, 1.0);  // clipped
  // Class 0 sees the mirrored scores: the same AUC.
  EXPECT_NEAR(s.classes[0].auc, 0.875, 1e-12);
  EXPECT_NEAR(s.macro_auc, 0.875, 1e-12);
  EXPECT_NEAR(s.weighted_auc, 0.875, 1e-12);
  EXPECT_NEAR(s.hand_till_auc, 0.875, 1e-12);

  // The ROC curve runs from (0, 0) to (1, 1) and its trapezoids are the AUC.
  ASSERT_GE(c1.roc.size(), 2u);
  EXPECT_EQ(c1.roc.front().false_positive_rate, 0);
  EXPECT_EQ(c1.roc.front().true_positive_rate, 0);
  EXPECT_EQ(c1.roc.back().false_positive_rate, 1);
  EXPECT_EQ(c1.roc.back().true_positive_rate, 1);
  double area = 0;
  for (size_t i = 1; i < c1.roc.size(); ++i) {
    area +=
        (c1.roc[i].false_positive_rate - c1.roc[i - 1].false_positive_rate) *
        (c1.roc[i].true_positive_rate + c1.roc[i - 1].true_positive_rate) / 2;
    EXPECT_LT(c1.roc[i].threshold, c1.roc[i - 1].threshold);
  }
  EXPECT_NEAR(area, c1.auc, 1e-12);

  // Brier: class 1's squared errors are 0.01 + 0.04 + 0.36 + 0.49 + 0.16 +
  // 0.09 + 0.04 = 1.19; binary multi-class Brier counts them twice.
  EXPECT_NEAR(c1.brier, 1.19 / 7, 1e-12);
  EXPECT_NEAR(s.brier, 2 * 1.19 / 7, 1e-12);

  // Decision curve at t = 0.5: TP 2, FP 1 of 7; at 0.4: TP 3, FP 2.
  ASSERT_EQ(c1.decision_curve.size(), 99u);
  const DecisionPoint& half = c1.decision_curve[49];
  EXPECT_NEAR(half.threshold, 0.5, 1e-12);
  EXPECT_NEAR(half.net_benefit, 2.0 / 7 - 1.0 / 7, 1e-12);
  EXPECT_NEAR(half.treat_all, 3.0 / 7 - 4.0 / 7, 1e-12);
  EXPECT_NEAR(c1.decision_curve[39].net_benefit, 3.0 / 7 - 2.0 / 7 * 0.4 / 0.6,
              1e-12);
}

TEST(MetricsTest, CalibrationByHand) {
  // Class 1 scores in two bins: 10 images at p = 0.2 (bin midpoint 0.2005),
  // 3 of them class 1; 10 at p = 0.7 (midpoint 0.7005), 6 of them class 1.
  std::vector<Case> cases;
  for (int i = 0; i < 10; ++i) cases.push_back({i < 3 ? 1 : 0, {0.8, 0.2}});
  for (int i = 0; i < 10; ++i) cases.push_back({i < 6 ? 1 : 0, {0.3, 0.7}});
  MetricsSummary s = Summarize(FromCases(cases));
  const ClassMetrics& c1 = s.classes[1];
  ASSERT_EQ(c1.reliability.size(), 10u);
  EXPECT_EQ(c1.reliability[2].count, 10);
  EXPECT_NEAR(c1.reliability[2].mean_predicted, 0.2005, 1e-12);
  EXPECT_NEAR(c1.reliability[2].observed_fraction, 0.3, 1e-12);
  EXPECT_NEAR(c1.reliability[7].observed_fraction, 0.6, 1e-12);
  EXPECT_EQ(c1.reliability[5].count, 0);
  EXPECT_TRUE(std::isnan(c1.reliability[5].observed_fraction));
  EXPECT_NEAR(c1.expected_calibration_error,
              (10 * (0.3 - 0.2005) + 10 * (0.7005 - 0.6)) / 20, 1e-12);
  // Two points: the fit passes through both observed fractions.
  auto logit = [](double p) { return std::log(p / (1 - p)); };
  EXPECT_NEAR(c1.calibration_slope,
              (logit(0.6) - logit(0.3)) / (logit(0.7005) - logit(0.2005)),
              1e-8);

  // One bin: the slope is not identified; the intercept moves the midpoint
  // onto the observed fraction.
  std::vector<Case> one_bin;
  for (int i = 0; i < 10; ++i) one_bin.push_back({i < 3 ? 1 : 0, {0.8, 0.2}});
  MetricsSummary single = Summarize(FromCases(one_bin));
  EXPECT_TRUE(std::isnan(single.classes[1].calibration_slope));
  EXPECT_NEAR(single.classes[1].calibration_intercept,
              logit(0.3) - logit(0.2005), 1e-8);

  // Perfect separation has no finite fit.
  std::vector<Case> separated;
  for (int i = 0; i < 5; ++i) separated.push_back({1, {0.1, 0.9}});
  for (int i = 0; i < 5; ++i) separated.push_back({0, {0.6, 0.4}});
  MetricsSummary apart = Summarize(FromCases(separated));
  EXPECT_NEAR(apart.classes[1].auc, 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(apart.classes[1].calibration_slope));
}

TEST(MetricsTest, PoolingAddsCounts) {
  EvalAggregate total;
  ASSERT_TRUE(AddAggregate(Make({1, 0, 0, 1}, 2), &total).ok());
  ASSERT_TRUE(AddAggregate(Make({0, 2, 3, 0}, 2), &total).ok());
  EXPECT_EQ(total.num_images(), 7);
  EXPECT_NEAR(Accuracy(total), 2.0 / 7, 1e-12);
  EXPECT_FALSE(AddAggregate(Make({1, 0, 0, 0, 0, 0, 0, 0, 0}, 3), &total).ok());
}

// Per-case predictions split over three sites (the third has no class 2):
// the pooled aggregate is the aggregate of the concatenated cases, and the
// pooled AUCs are within the binning's 1e-3 of the exact ones.
TEST(MetricsTest, PooledAggregateEqualsAggregateOfPooledCases) {
  std::mt19937_64 random(20261127);
  std::normal_distribution<double> noise(0, 1);
  std::discrete_distribution<int> prevalence({0.5, 0.3, 0.2});
  std::vector<Case> all;
  std::vector<std::vector<Case>> sites(3);
  for (int i = 0; i < 900; ++i) {
    Case c;
    c.truth = prevalence(random);
    double logits[3], sum = 0;
    for (int k = 0; k < 3; ++k) {
      logits[k] = noise(random) + (k == c.truth ? 1.2 : 0.0);
      sum += std::exp(logits[k]);
    }
    for (int k = 0; k < 3; ++k)
      c.probabilities.push_back(std::exp(logits[k]) / sum);
    int site = i % 3;
    if (site == 2 && c.truth == 2) site = 0;
    sites[site].push_back(c);
    all.push_back(c);
  }
  EvalAggregate pooled;
  for (const std::vector<Case>& site : sites) {
    EvalAggregate local = FromCases(site);
    ASSERT_TRUE(ValidateAggregate(local, 3).ok());
    ASSERT_TRUE(AddAggregate(local, &pooled).ok());
  }
  EvalAggregate concatenated = FromCases(all);
  ASSERT_TRUE(ValidateAggregate(pooled, 3).ok());
  EXPECT_EQ(pooled.num_images(), 900);
  ASSERT_EQ(pooled.confusion_size(), concatenated.confusion_size());
  for (int i = 0; i < pooled.confusion_size(); ++i) {
    EXPECT_EQ(pooled.confusion(i), concatenated.confusion(i));
  }
  ASSERT_EQ(pooled.score_histogram_size(), concatenated.score_histogram_size());
  for (int i = 0; i < pooled.score_histogram_size(); ++i) {
    ASSERT_EQ(pooled.score_histogram(i), concatenated.score_histogram(i)) << i;
  }
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(pooled.brier_sum(c), concatenated.brier_sum(c), 1e-9);
  }

  MetricsSummary s = Summarize(pooled);
  MetricsSummary third_site = Summarize(FromCases(sites[2]));
  EXPECT_EQ(third_site.classes[2].support, 0);
  EXPECT_TRUE(std::isnan(third_site.classes[2].auc));
  EXPECT_FALSE(std::isnan(third_site.macro_auc));  // over classes 0 and 1

  double macro = 0;
  for (int c = 0; c < 3; ++c) {
    double exact = ExactAuc(all, c);
    EXPECT_NEAR(s.classes[c].auc, exact, 1e-3) << "class " << c;
    EXPECT_EQ(s.classes[c].auc, Summarize(concatenated).classes[c].auc);
    macro += exact / 3;
  }
  EXPECT_NEAR(s.macro_auc, macro, 1e-3);
  EXPECT_LT(s.macro_auc_ci.lower, s.macro_auc);
  EXPECT_GT(s.macro_auc_ci.upper, s.macro_auc);
  double hand_till = 0;
  for (int i = 0; i < 3; ++i) {
    for (int j = i + 1; j < 3; ++j) {
      hand_till += (ExactAuc(all, i, j) + ExactAuc(all, j, i)) / 2 / 3;
    }
  }
  EXPECT_NEAR(s.hand_till_auc, hand_till, 1e-3);
  // Micro: every (image, class) pair, positive when the class is the truth.
  std::vector<double> positives, negatives;
  for (const Case& c : all) {
    for (int k = 0; k < 3; ++k) {
      (k == c.truth ? positives : negatives).push_back(c.probabilities[k]);
    }
  }
  EXPECT_NEAR(s.micro_auc, ExactAuc(positives, negatives), 1e-3);
}

TEST(MetricsTest, TiedScoresCountOneHalf) {
  // Every image gets the same probabilities: no discrimination at all.
  std::vector<Case> flat;
  for (int i = 0; i < 6; ++i) flat.push_back({i % 3, {0.25, 0.5, 0.25}});
  MetricsSummary s = Summarize(FromCases(flat));
  for (const ClassMetrics& c : s.classes) {
    EXPECT_NEAR(c.auc, 0.5, 1e-12);
    EXPECT_NEAR(c.auc_variance, 0, 1e-12);
  }
  EXPECT_NEAR(s.hand_till_auc, 0.5, 1e-12);

  // Scores from a few exact values, each in its own bin: binned and exact
  // AUC agree to rounding, ties included.
  std::mt19937_64 random(7);
  std::uniform_int_distribution<int> level(0, 4);
  std::vector<Case> cases;
  const double levels[5] = {0.0625, 0.125, 0.25, 0.5, 0.75};
  for (int i = 0; i < 200; ++i) {
    int truth = i % 2;
    double p = levels[std::min(4, level(random) + truth)];
    cases.push_back({truth, {1 - p, p}});
  }
  MetricsSummary tied = Summarize(FromCases(cases));
  EXPECT_NEAR(tied.classes[1].auc, ExactAuc(cases, 1), 1e-12);
}

TEST(MetricsTest, PoolingWithAndWithoutScores) {
  EvalAggregate scored = FromCases(BinaryExample());
  EvalAggregate counts_only = Make({1, 0, 0, 1}, 2);

  // Scores for only part of the images are dropped, not mixed.
  EvalAggregate total = scored;
  ASSERT_TRUE(AddAggregate(counts_only, &total).ok());
  EXPECT_EQ(total.num_images(), 9);
  EXPECT_EQ(total.histogram_bins(), 0);
  EXPECT_EQ(total.score_histogram_size(), 0);
  EXPECT_TRUE(ValidateAggregate(total, 2).ok());
  EXPECT_TRUE(std::isnan(Summarize(total).macro_auc));

  // An empty start takes the scores over.
  EvalAggregate fresh;
  ASSERT_TRUE(AddAggregate(scored, &fresh).ok());
  ASSERT_TRUE(AddAggregate(scored, &fresh).ok());
  EXPECT_EQ(fresh.histogram_bins(), kScoreHistogramBins);
  EXPECT_TRUE(ValidateAggregate(fresh, 2).ok());
  EXPECT_NEAR(Summarize(fresh).classes[1].auc, 0.875, 1e-12);
  EXPECT_NEAR(fresh.brier_sum(1), 2 * 1.19, 1e-12);

  // An empty report with the score layout pools like nothing.
  EvalAggregate empty;
  InitAggregate(2, &empty);
  EvalAggregate with_empty = scored;
  ASSERT_TRUE(AddAggregate(empty, &with_empty).ok());
  EXPECT_EQ(with_empty.SerializeAsString(), scored.SerializeAsString());

  // Different binnings cannot be added.
  EvalAggregate coarse = scored;
  coarse.set_histogram_bins(500);
  coarse.mutable_score_histogram()->Truncate(2 * 2 * 500);
  EvalAggregate copy = scored;
  EXPECT_FALSE(AddAggregate(coarse, &copy).ok());
  EXPECT_EQ(copy.SerializeAsString(), scored.SerializeAsString());
}

TEST(MetricsTest, InconsistentAggregatesAreRefused) {
  EvalAggregate a = Make({1, 2, 3, 4}, 2);
  EXPECT_TRUE(ValidateAggregate(a, 2).ok());
  EXPECT_FALSE(ValidateAggregate(a, 3).ok());
  a.set_num_images(99);
  EXPECT_FALSE(ValidateAggregate(a, 2).ok());
  EvalAggregate negative = Make({1, -1, 0, 0}, 2);
  EXPECT_FALSE(ValidateAggregate(negative, 2).ok());

  const EvalAggregate good = FromCases(BinaryExample());
  ASSERT_TRUE(ValidateAggregate(good, 2).ok());
  auto refused = [&](auto&& change) {
    EvalAggregate bad = good;
    change(bad);
    return !ValidateAggregate(bad, 2).ok();
  };
  // A histogram that does not add up to its true class's row.
  EXPECT_TRUE(refused([](EvalAggregate& b) {
    b.set_score_histogram(5, b.score_histogram(5) + 1);
  }));
  // Moving a count between bins keeps the totals: still consistent.
  EXPECT_FALSE(refused([](EvalAggregate& b) {
    int from = 1 * 1000 + 300;  // true 0, score 1, bin of 0.3
    ASSERT_EQ(b.score_histogram(from), 1);
    b.set_score_histogram(from, 0);
    b.set_score_histogram(from + 1, 1);
  }));
  EXPECT_TRUE(refused([](EvalAggregate& b) {
    int at = 1 * 1000 + 300;
    b.set_score_histogram(at, -1);
    b.set_score_histogram(at + 1, b.score_histogram(at + 1) + 2);
  }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.set_histogram_bins(10); }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.add_score_histogram(0); }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.add_brier_sum(0); }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.set_brier_sum(0, -0.1); }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.set_brier_sum(0, 8); }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.set_brier_sum(1, NAN); }));
  EXPECT_TRUE(refused([](EvalAggregate& b) {
    b.set_histogram_bins(0);  // histograms left behind without a binning
  }));
  EXPECT_TRUE(refused([](EvalAggregate& b) { b.set_loss_sum(NAN); }));
}

TEST(MetricsTest, EmptyClassGivesNaNNotCrash) {
  EvalAggregate a = Make({3, 0, 0, 0}, 2);
  EXPECT_TRUE(std::isnan(Sensitivity(a, 1)));
  EXPECT_TRUE(std::isnan(Specificity(a, 0)));
  MetricsSummary s = Summarize(a);
  EXPECT_TRUE(std::isnan(s.classes[1].sensitivity));
  EXPECT_TRUE(std::isnan(s.cohen_kappa));  // p_e = 1
  EXPECT_NEAR(s.balanced_accuracy, 1.0, 1e-12);

  // Only one class present, with scores.
  std::vector<Case> one_class;
  for (double p : {0.1, 0.4, 0.8}) one_class.push_back({0, {1 - p, p}});
  MetricsSummary scored = Summarize(FromCases(one_class));
  EXPECT_TRUE(scored.has_scores);
  EXPECT_TRUE(std::isnan(scored.classes[0].auc));
  EXPECT_TRUE(std::isnan(scored.classes[0].calibration_slope));
  EXPECT_TRUE(std::isnan(scored.macro_auc));
  EXPECT_TRUE(std::isnan(scored.macro_auc_ci.lower));
  EXPECT_TRUE(std::isnan(scored.hand_till_auc));
  EXPECT_TRUE(scored.classes[1].roc.empty());
  EXPECT_FALSE(std::isnan(scored.brier));

  // Nothing at all, and a malformed report nobody validated.
  EvalAggregate empty;
  InitAggregate(3, &empty);
  MetricsSummary nothing = Summarize(empty);
  EXPECT_TRUE(std::isnan(nothing.accuracy));
  EXPECT_TRUE(std::isnan(nothing.macro_auc));
  EXPECT_TRUE(std::isnan(nothing.brier));
  EXPECT_TRUE(std::isnan(Summarize(EvalAggregate()).accuracy));
  EvalAggregate malformed = FromCases(BinaryExample());
  malformed.mutable_score_histogram()->Truncate(17);
  malformed.add_confusion(1);
  EXPECT_TRUE(Summarize(malformed).classes.empty());
  malformed.mutable_confusion()->Truncate(4);
  EXPECT_FALSE(Summarize(malformed).has_scores);
}

// ---------------------------------------------------------------------------
// Meta-analysis.

// The BCG vaccine trials (Colditz et al., JAMA 1994;271:698-702; metafor's
// dat.bcg): TB positive / negative among the vaccinated, then the controls.
struct BcgTrial {
  const char* label;
  double tpos, tneg, cpos, cneg;
};
constexpr BcgTrial kBcgTrials[] = {
    {"Aronson 1948", 4, 119, 11, 128},
    {"Ferguson & Simes 1949", 6, 300, 29, 274},
    {"Rosenthal et al 1960", 3, 228, 11, 209},
    {"Hart & Sutherland 1977", 62, 13536, 248, 12619},
    {"Frimodt-Moller et al 1973", 33, 5036, 47, 5761},
    {"Stein & Aronson 1953", 180, 1361, 372, 1079},
    {"Vandiviere et al 1973", 8, 2537, 10, 619},
    {"TPT Madras 1980", 505, 87886, 499, 87892},
    {"Coetzee & Berjak 1968", 29, 7470, 45, 7232},
    {"Rosenthal et al 1961", 17, 1699, 65, 1600},
    {"Comstock et al 1974", 186, 50448, 141, 27197},
    {"Comstock & Webster 1969", 5, 2493, 3, 2338},
    {"Comstock et al 1976", 27, 16886, 29, 17825},
};

// Log risk ratios and their variances, as metafor's escalc(measure = "RR").
std::vector<StudyEstimate> BcgLogRiskRatios() {
  std::vector<StudyEstimate> studies;
  for (const BcgTrial& t : kBcgTrials) {
    double treated = t.tpos + t.tneg, control = t.cpos + t.cneg;
    studies.push_back({std::log(t.tpos / treated / (t.cpos / control)),
                       1 / t.tpos - 1 / treated + 1 / t.cpos - 1 / control,
                       t.label});
  }
  return studies;
}

TEST(MetaAnalysisTest, BcgTrialsMatchPublishedDerSimonianLaird) {
  // Published to 4 decimals in metafor's own test against Stata's metan,
  // tests/testthat/test_misc_metan_vs_rma.uni_with_dat.bcg.r:
  // rma(yi, vi, method = "DL"): estimate -0.7141 (-1.0644, -0.3638),
  // z -3.9952, tau^2 0.3088, I^2 92.1173%, exp: 0.4896 (0.3449, 0.6950);
  // method = "FE": -0.4303 (-0.5097, -0.3509), QE 152.2330.
  absl::StatusOr<MetaAnalysis> m = MetaAnalyze(BcgLogRiskRatios());
  ASSERT_TRUE(m.ok()) << m.status();
  const double tolerance = 5e-5;  // half a unit in the 4th decimal
  EXPECT_EQ(m->study_count, 13);
  EXPECT_NEAR(m->estimate, -0.7141, tolerance);
  EXPECT_NEAR(m->ci.lower, -1.0644, tolerance);
  EXPECT_NEAR(m->ci.upper, -0.3638, tolerance);
  EXPECT_NEAR(m->estimate / m->standard_error, -3.9952, tolerance);
  EXPECT_NEAR(m->tau2, 0.3088, tolerance);
  EXPECT_NEAR(m->i2, 92.1173, tolerance);
  EXPECT_NEAR(std::exp(m->estimate), 0.4896, tolerance);
  EXPECT_NEAR(std::exp(m->ci.lower), 0.3449, tolerance);
  EXPECT_NEAR(std::exp(m->ci.upper), 0.6950, tolerance);
  EXPECT_NEAR(m->fixed_estimate, -0.4303, tolerance);
  EXPECT_NEAR(m->fixed_estimate - kZ95 * m->fixed_standard_error, -0.5097,
              tolerance);
  EXPECT_NEAR(m->fixed_estimate + kZ95 * m->fixed_standard_error, -0.3509,
              tolerance);
  EXPECT_NEAR(m->q, 152.2330, tolerance);
  EXPECT_EQ(m->degrees_of_freedom, 12);
  // scipy.stats.chi2.sf(152.2330080823734, 12)
  EXPECT_NEAR(m->q_p_value / 1.9967645908458624e-26, 1, 1e-9);
  EXPECT_EQ(m->heterogeneity, Heterogeneity::kConsiderable);
  EXPECT_EQ(HeterogeneityName(m->heterogeneity), "considerable");
  ASSERT_EQ(m->weights.size(), 13u);
  double total = 0;
  for (const StudyWeight& w : m->weights) total += w.percent;
  EXPECT_NEAR(total, 100, 1e-9);
  // weights(res) in metafor: Aronson 5.04%, TPT Madras 10.22%.
  EXPECT_EQ(m->weights[0].label, "Aronson 1948");
  EXPECT_NEAR(m->weights[0].percent, 5.04, 5e-3);
  EXPECT_NEAR(m->weights[7].percent, 10.22, 5e-3);
}

TEST(MetaAnalysisTest, HeterogeneityStatistics) {
  // Four studies of variance 1 at (a, -a, 0, 0): the fixed estimate is 0 and
  // Q = 2 a^2; Q = 5 on 3 degrees of freedom is I^2 = 40%.
  auto four = [](double q) {
    double a = std::sqrt(q / 2);
    return std::vector<StudyEstimate>{
        {a, 1, "a"}, {-a, 1, "b"}, {0, 1, "c"}, {0, 1, "d"}};
  };
  absl::StatusOr<MetaAnalysis> moderate = MetaAnalyze(four(5));
  ASSERT_TRUE(moderate.ok());
  EXPECT_NEAR(moderate->q, 5, 1e-12);
  EXPECT_NEAR(moderate->i2, 40, 1e-9);
  EXPECT_EQ(moderate->heterogeneity, Heterogeneity::kModerate);
  // tau^2 = (Q - df) / (sum w - sum w^2 / sum w) = 2 / 3.
  EXPECT_NEAR(moderate->tau2, 2.0 / 3, 1e-12);
  EXPECT_NEAR(moderate->standard_error, std::sqrt((1 + 2.0 / 3) / 4), 1e-12);
  for (const StudyWeight& w : moderate->weights) {
    EXPECT_NEAR(w.percent, 25, 1e-12);
  }
  // Chi-square tails against scipy.stats.chi2.sf, both branches of the
  // incomplete gamma function.
  EXPECT_NEAR(moderate->q_p_value, 0.1717971442967335, 1e-12);
  EXPECT_NEAR(MetaAnalyze(four(0.5))->q_p_value, 0.9188914116546758, 1e-12);
  std::vector<StudyEstimate> two = {{0, 1, "a"},
                                    {std::sqrt(2 * 3.841458820694124), 1, "b"}};
  EXPECT_NEAR(MetaAnalyze(two)->q_p_value, 0.05, 1e-12);

  // Less spread than the variances explain: tau^2 = 0, I^2 = 0, and the
  // random-effects estimate is the fixed one.
  absl::StatusOr<MetaAnalysis> homogeneous =
      MetaAnalyze({{0.1, 0.04, "a"}, {0.12, 0.09, "b"}, {0.09, 0.01, "c"}});
  ASSERT_TRUE(homogeneous.ok());
  EXPECT_EQ(homogeneous->tau2, 0);
  EXPECT_EQ(homogeneous->i2, 0);
  EXPECT_EQ(homogeneous->heterogeneity, Heterogeneity::kLow);
  EXPECT_NEAR(homogeneous->estimate, homogeneous->fixed_estimate, 1e-15);

  // One study: itself, no heterogeneity to speak of.
  absl::StatusOr<MetaAnalysis> one = MetaAnalyze({{0.8, 0.0025, "only"}});
  ASSERT_TRUE(one.ok());
  EXPECT_DOUBLE_EQ(one->estimate, 0.8);
  EXPECT_NEAR(one->standard_error, 0.05, 1e-15);
  EXPECT_EQ(one->tau2, 0);
  EXPECT_EQ(one->q, 0);
  EXPECT_TRUE(std::isnan(one->i2));
  EXPECT_TRUE(std::isnan(one->q_p_value));
  EXPECT_EQ(one->heterogeneity, Heterogeneity::kUndefined);
  EXPECT_EQ(one->weights[0].percent, 100);

  EXPECT_FALSE(MetaAnalyze({}).ok());
  EXPECT_FALSE(MetaAnalyze({{0.5, 0, "zero variance"}}).ok());
  EXPECT_FALSE(MetaAnalyze({{0.5, -1, "negative"}}).ok());
  EXPECT_FALSE(MetaAnalyze({{NAN, 0.1, "nan"}, {0.5, 0.1, "fine"}}).ok());
  EXPECT_FALSE(MetaAnalyze({{0.5, INFINITY, "inf"}}).ok());
}

TEST(MetaAnalysisTest, LogitProportionWithContinuityCorrection) {
  StudyEstimate plain = LogitProportionStudy(8, 10, "plain");
  EXPECT_EQ(plain.label, "plain");
  EXPECT_NEAR(plain.estimate, std::log(4.0), 1e-15);
  EXPECT_NEAR(plain.variance, 1.0 / 8 + 1.0 / 2, 1e-15);
  StudyEstimate all = LogitProportionStudy(10, 10, "all");
  EXPECT_NEAR(all.estimate, std::log(10.5 / 0.5), 1e-15);
  EXPECT_NEAR(all.variance, 1 / 10.5 + 1 / 0.5, 1e-15);
  StudyEstimate none = LogitProportionStudy(0, 5, "none");
  EXPECT_NEAR(none.estimate, std::log(0.5 / 5.5), 1e-15);
  EXPECT_TRUE(std::isnan(LogitProportionStudy(0, 0, "empty").estimate));
  EXPECT_TRUE(std::isnan(LogitProportionStudy(3, 2, "bad").estimate));
}

TEST(MetaAnalysisTest, SensitivityAndSpecificityAcrossSites) {
  // Binary sites, class 1 the positive class (rows: truth, columns:
  // predicted). C is perfect (both corrected); E has no class-1 cases; D is
  // suppressed.
  EvalAggregate a = Make({40, 10, 5, 45}, 2);
  EvalAggregate b = Make({30, 2, 8, 20}, 2);
  EvalAggregate c = Make({25, 0, 0, 15}, 2);
  EvalAggregate d = Make({0, 0, 0, 0}, 2);
  d.set_suppressed(true);
  EvalAggregate e = Make({10, 2, 0, 0}, 2);
  std::vector<SiteAggregate> sites = {
      {"A", &a}, {"B", &b}, {"C", &c}, {"D", &d}, {"E", &e}};

  absl::StatusOr<SiteStudies> sensitivity = SensitivityStudies(sites, 1);
  ASSERT_TRUE(sensitivity.ok()) << sensitivity.status();
  ASSERT_EQ(sensitivity->studies.size(), 3u);
  EXPECT_NEAR(sensitivity->studies[0].estimate, std::log(45.0 / 5), 1e-15);
  EXPECT_NEAR(sensitivity->studies[2].estimate, std::log(15.5 / 0.5), 1e-15);
  EXPECT_EQ(
      sensitivity->excluded,
      (std::vector<std::string>{"D: suppressed", "E: no cases of the class"}));

  // Expected values: DerSimonian-Laird on the same logits in numpy (the
  // implementation that reproduces the BCG numbers above).
  absl::StatusOr<PooledSiteMetric> pooled = MetaAnalyzeSensitivity(sites, 1);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  EXPECT_NEAR(pooled->analysis.estimate, 1.8006960335601876, 1e-12);
  EXPECT_NEAR(pooled->analysis.tau2, 0.6795639845732298, 1e-12);
  EXPECT_NEAR(pooled->analysis.q, 5.895193271057865, 1e-12);
  EXPECT_NEAR(pooled->analysis.q_p_value, 0.05246564862058471, 1e-12);
  EXPECT_NEAR(pooled->analysis.i2, 66.07405545431575, 1e-10);
  EXPECT_EQ(pooled->analysis.heterogeneity, Heterogeneity::kSubstantial);
  EXPECT_NEAR(pooled->analysis.weights[2].percent, 13.78544708, 1e-8);
  EXPECT_NEAR(pooled->estimate, 0.8582336416862222, 1e-12);
  EXPECT_NEAR(pooled->ci.lower, 0.6445630187168884, 1e-12);
  EXPECT_NEAR(pooled->ci.upper, 0.9528519745635265, 1e-12);
  EXPECT_EQ(pooled->excluded.size(), 2u);

  absl::StatusOr<PooledSiteMetric> specificity =
      MetaAnalyzeSpecificity(sites, 1);
  ASSERT_TRUE(specificity.ok()) << specificity.status();
  EXPECT_EQ(specificity->analysis.study_count, 4);  // E has negatives
  EXPECT_NEAR(specificity->analysis.estimate, 1.979069260156809, 1e-12);
  EXPECT_NEAR(specificity->analysis.tau2, 0.346874199411199, 1e-12);
  EXPECT_NEAR(specificity->analysis.i2, 41.63621786792665, 1e-10);
  EXPECT_EQ(specificity->analysis.heterogeneity, Heterogeneity::kModerate);
  EXPECT_NEAR(specificity->estimate, 0.878581909728812, 1e-12);
  EXPECT_NEAR(specificity->ci.lower, 0.7461011337357994, 1e-12);
  EXPECT_NEAR(specificity->ci.upper, 0.9468596013965093, 1e-12);
  // Class 0's specificity is class 1's sensitivity in a binary problem.
  EXPECT_NEAR(MetaAnalyzeSpecificity(sites, 0)->estimate, pooled->estimate,
              1e-15);

  EXPECT_FALSE(SensitivityStudies(sites, 2).ok());  // no such class
  EXPECT_FALSE(SensitivityStudies({{"null", nullptr}}, 0).ok());
  absl::StatusOr<PooledSiteMetric> nothing =
      MetaAnalyzeSensitivity({{"D", &d}, {"E", &e}}, 1);
  EXPECT_EQ(nothing.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(MetaAnalysisTest, AucAcrossSitesUsesEachSitesDeLongVariance) {
  std::mt19937_64 random(7);
  std::normal_distribution<double> noise(0, 1);
  auto site = [&](int n, double separation) {
    std::vector<Case> cases;
    for (int i = 0; i < n; ++i) {
      int truth = i % 3 == 0 ? 1 : 0;
      double logit = noise(random) + (truth ? separation : 0.0);
      double p = 1 / (1 + std::exp(-logit));
      cases.push_back({truth, {1 - p, p}});
    }
    return FromCases(cases);
  };
  EvalAggregate a = site(120, 1.5), b = site(90, 0.8), c = site(200, 2.5);
  // Every positive above every negative: AUC 1, DeLong variance 0.
  EvalAggregate perfect = FromCases(
      {{1, {0.1, 0.9}}, {1, {0.2, 0.8}}, {0, {0.7, 0.3}}, {0, {0.9, 0.1}}});
  EvalAggregate no_scores = Make({10, 2, 3, 9}, 2);
  no_scores.set_histogram_bins(0);
  std::vector<SiteAggregate> sites = {{"a", &a},
                                      {"b", &b},
                                      {"c", &c},
                                      {"perfect", &perfect},
                                      {"no scores", &no_scores}};
  absl::StatusOr<SiteStudies> studies = AucStudies(sites, 1);
  ASSERT_TRUE(studies.ok()) << studies.status();
  ASSERT_EQ(studies->studies.size(), 3u);
  const EvalAggregate* used[] = {&a, &b, &c};
  for (int i = 0; i < 3; ++i) {
    ClassMetrics m = Summarize(*used[i]).classes[1];
    EXPECT_EQ(studies->studies[i].estimate, m.auc);
    EXPECT_EQ(studies->studies[i].variance, m.auc_variance);
  }
  ASSERT_EQ(studies->excluded.size(), 2u);
  EXPECT_EQ(studies->excluded[0], "perfect: AUC 1 with DeLong variance 0");
  EXPECT_EQ(studies->excluded[1], "no scores: no score histograms");

  absl::StatusOr<PooledSiteMetric> pooled = MetaAnalyzeAuc(sites, 1);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  absl::StatusOr<MetaAnalysis> direct = MetaAnalyze(studies->studies);
  EXPECT_EQ(pooled->estimate, direct->estimate);
  EXPECT_EQ(pooled->analysis.tau2, direct->tau2);
  EXPECT_GT(pooled->analysis.tau2, 0);  // separations 0.8 to 2.5 differ
  EXPECT_EQ(pooled->ci.lower, direct->ci.lower);
  EXPECT_EQ(pooled->ci.upper, std::min(1.0, direct->ci.upper));
  EXPECT_EQ(pooled->analysis.weights[1].label, "b");
  // Class 0's one-vs-rest AUC of p_0 is the same separation.
  EXPECT_NEAR(MetaAnalyzeAuc(sites, 0)->estimate, pooled->estimate, 1e-12);
}

// ---------------------------------------------------------------------------
// C-index.

struct Patient {
  double time_months;
  bool event;
  double risk;
};

struct ExactConcordance {
  int64_t comparable = 0, concordant = 0, discordant = 0, tied = 0;
  double c_index = NAN, standard_error = NAN;
};

// Harrell's C on every pair, O(n^2): comparable when one has the event
// strictly before the other's time; the standard error is Hmisc's
// rcorr.cens (Quade) formula, from each patient's concordant-minus-
// discordant count w_i among its r_i comparable pairs.
ExactConcordance ExactCIndex(const std::vector<Patient>& patients) {
  const size_t n = patients.size();
  std::vector<double> w(n, 0), r(n, 0);
  ExactConcordance result;
  for (size_t i = 0; i < n; ++i) {
    if (!patients[i].event) continue;
    for (size_t j = 0; j < n; ++j) {
      if (!(patients[j].time_months > patients[i].time_months)) continue;
      ++result.comparable;
      ++r[i];
      ++r[j];
      int sign = patients[i].risk > patients[j].risk   ? 1
                 : patients[i].risk < patients[j].risk ? -1
                                                       : 0;
      (sign > 0   ? result.concordant
       : sign < 0 ? result.discordant
                  : result.tied)++;
      w[i] += sign;
      w[j] += sign;
    }
  }
  if (result.comparable == 0) return result;
  const double pairs = static_cast<double>(result.comparable);
  result.c_index = (result.concordant + 0.5 * result.tied) / pairs;
  const double dxy = (result.concordant - result.discordant) / pairs;
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += (w[i] - dxy * r[i]) * (w[i] - dxy * r[i]);
  result.standard_error = std::sqrt(sum) / (2 * pairs);
  return result;
}

// The patients as the aggregate sees them: time and score replaced by bins.
std::vector<Patient> Binned(const std::vector<Patient>& patients) {
  std::vector<Patient> binned;
  for (const Patient& p : patients) {
    binned.push_back({static_cast<double>(SurvivalTimeBin(p.time_months)),
                      p.event, static_cast<double>(SurvivalScoreBin(p.risk))});
  }
  return binned;
}

SurvivalAggregate FromPatients(const std::vector<Patient>& patients) {
  SurvivalAggregate a;
  for (const Patient& p : patients) {
    absl::Status status = AddSurvivalCase(&a, p.time_months, p.event, p.risk);
    EXPECT_TRUE(status.ok()) << status;
  }
  return a;
}

TEST(CIndexTest, BinningSeparatesDays) {
  EXPECT_EQ(SurvivalTimeBin(0), 0);
  EXPECT_EQ(SurvivalTimeBin(1.0 / 32), 1);
  EXPECT_EQ(SurvivalTimeBin(12), 12 * 32);
  EXPECT_EQ(SurvivalTimeBin(1199.99), kSurvivalTimeBins - 1);
  EXPECT_EQ(SurvivalTimeBin(1200), kSurvivalTimeBins - 1);
  EXPECT_EQ(SurvivalTimeBin(1e12), kSurvivalTimeBins - 1);
  // Whole days (days / 30.4375 months) never share a bin.
  for (int day = 1; day <= 36524; ++day) {
    ASSERT_LT(SurvivalTimeBin((day - 1) / 30.4375),
              SurvivalTimeBin(day / 30.4375))
        << day;
  }
  EXPECT_EQ(SurvivalScoreBin(0), 500);
  EXPECT_EQ(SurvivalScoreBin(-800), 0);
  EXPECT_EQ(SurvivalScoreBin(800), kSurvivalScoreBins - 1);
  EXPECT_LT(SurvivalScoreBin(-0.1), SurvivalScoreBin(0.1));
}

TEST(CIndexTest, HandComputedPairs) {
  // Comparable pairs (earlier event first): 1-2, 1-3, 1-4, 1-5 concordant;
  // 2-3 discordant (1.0 < 1.5), 2-4, 2-5 concordant; 4-5 tied. 3 and 5 are
  // censored; the patient at 1 month + 6 hours shares 1's time bin, so that
  // pair is not comparable (nor in the exact index, were both times equal).
  std::vector<Patient> patients = {
      {1, true, 2.0}, {2, true, 1.0},  {3, false, 1.5},
      {4, true, 0.0}, {5, false, 0.0}, {1.0 + 0.25 / 30.4375, false, 9.0}};
  ConcordanceIndex c = CIndex(FromPatients(patients));
  EXPECT_EQ(c.comparable_pairs, 8);
  EXPECT_EQ(c.concordant, 6);
  EXPECT_EQ(c.discordant, 1);
  EXPECT_EQ(c.tied, 1);
  EXPECT_DOUBLE_EQ(c.c_index, 6.5 / 8);
  ExactConcordance exact = ExactCIndex(Binned(patients));
  EXPECT_NEAR(c.standard_error, exact.standard_error, 1e-15);
  // Hmisc's cidxcn (rcorr.cens), ported line by line to Python, on patients
  // 1-5 (the sixth is in no comparable pair): C 0.8125, SD(Dxy) / 2.
  EXPECT_NEAR(c.standard_error, 0.12645635981436443, 1e-15);
  EXPECT_GT(c.standard_error, 0);
  EXPECT_NEAR(c.ci.lower,
              std::max(0.0, c.c_index - kZ95 * exact.standard_error), 1e-15);
  EXPECT_LE(c.ci.upper, 1);

  // No comparable pair: events on the same day, or only censoring.
  EXPECT_TRUE(
      std::isnan(CIndex(FromPatients({{3, true, 1}, {3, true, 2}})).c_index));
  EXPECT_TRUE(
      std::isnan(CIndex(FromPatients({{3, false, 1}, {5, false, 2}})).c_index));
  EXPECT_TRUE(std::isnan(CIndex(SurvivalAggregate()).c_index));
}

// A hospital's cohort: risk x, hazard exp(beta x) / scale with Weibull
// shape, uniform censoring over `follow_up` months, times in whole days; the
// model's score is beta x plus noise.
std::vector<Patient> SimulatedSite(std::mt19937_64& random, int n, double beta,
                                   double scale, double shape, double follow_up,
                                   double noise_sd, bool whole_days) {
  std::normal_distribution<double> normal(0, 1);
  std::exponential_distribution<double> exponential(1);
  std::uniform_real_distribution<double> censoring(0, follow_up);
  std::vector<Patient> patients;
  for (int i = 0; i < n; ++i) {
    double x = normal(random);
    double hazard = std::exp(beta * x) / scale;
    double event_time = std::pow(exponential(random) / hazard, 1 / shape);
    double censor_time = censoring(random);
    double time = std::min(event_time, censor_time);
    if (whole_days) time = std::round(time * 30.4375) / 30.4375;
    patients.push_back({time, event_time <= censor_time,
                        beta * x + noise_sd * normal(random)});
  }
  return patients;
}

TEST(CIndexTest, PooledAggregateMatchesExactCIndexOfPooledPatients) {
  for (bool whole_days : {true, false}) {
    SCOPED_TRACE(whole_days ? "times in whole days" : "continuous times");
    std::mt19937_64 random(whole_days ? 20261127 : 42);
    // A high-risk cohort with early events, a mixed one with long
    // follow-up, and a small strongly separated one.
    std::vector<std::vector<Patient>> sites = {
        SimulatedSite(random, 150, 1.0, 18, 1.0, 120, 0.5, whole_days),
        SimulatedSite(random, 250, 1.5, 60, 0.7, 240, 0.5, whole_days),
        SimulatedSite(random, 90, 2.0, 30, 1.0, 600, 0.2, whole_days)};
    std::vector<Patient> all;
    SurvivalAggregate pooled, reversed;
    for (const std::vector<Patient>& site : sites) {
      all.insert(all.end(), site.begin(), site.end());
      SurvivalAggregate local = FromPatients(site);
      ASSERT_TRUE(ValidateSurvivalAggregate(local).ok());
      ASSERT_TRUE(AddSurvivalAggregate(local, &pooled).ok());
    }
    for (int s = 2; s >= 0; --s) {
      ASSERT_TRUE(AddSurvivalAggregate(FromPatients(sites[s]), &reversed).ok());
    }
    ASSERT_TRUE(ValidateSurvivalAggregate(pooled).ok());
    EXPECT_EQ(pooled.num_patients(), 490);
    // Pooled = aggregate of the concatenated patients, in any order.
    SurvivalAggregate concatenated = FromPatients(all);
    EXPECT_EQ(pooled.SerializeAsString(), concatenated.SerializeAsString());
    EXPECT_EQ(reversed.SerializeAsString(), concatenated.SerializeAsString());

    ConcordanceIndex c = CIndex(pooled);
    // Exactly the pair counts of the binned patients.
    ExactConcordance binned = ExactCIndex(Binned(all));
    EXPECT_EQ(c.comparable_pairs, binned.comparable);
    EXPECT_EQ(c.concordant, binned.concordant);
    EXPECT_EQ(c.discordant, binned.discordant);
    EXPECT_EQ(c.tied, binned.tied);
    EXPECT_NEAR(c.standard_error, binned.standard_error, 1e-12);
    // And within 1e-3 of the exact index of the raw patients.
    ExactConcordance exact = ExactCIndex(all);
    EXPECT_GT(exact.comparable, 40000);
    EXPECT_NEAR(c.c_index, exact.c_index, 1e-3);
    EXPECT_NEAR(c.standard_error, exact.standard_error,
                0.01 * exact.standard_error);
    EXPECT_GT(c.c_index, 0.6);
    EXPECT_LT(c.ci.lower, c.c_index);
    EXPECT_GT(c.ci.upper, c.c_index);
    std::cout << "C-index: aggregate " << c.c_index << ", exact "
              << exact.c_index << " (diff " << c.c_index - exact.c_index
              << "), SE aggregate " << c.standard_error << ", exact "
              << exact.standard_error << "\n";
  }
}

TEST(CIndexTest, InvalidInputsAndReportsAreRefused) {
  SurvivalAggregate a;
  EXPECT_FALSE(AddSurvivalCase(&a, -0.1, true, 0).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, NAN, true, 0).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, INFINITY, false, 0).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, 10, true, NAN).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, 10, true, -INFINITY).ok());
  EXPECT_EQ(a.num_patients(), 0);
  EXPECT_EQ(a.cells_size(), 0);
  ASSERT_TRUE(AddSurvivalCase(&a, 10, true, 0.3).ok());
  ASSERT_TRUE(AddSurvivalCase(&a, 10, false, 0.3).ok());
  ASSERT_TRUE(AddSurvivalCase(&a, 2, false, -1).ok());
  EXPECT_EQ(a.time_bins(), kSurvivalTimeBins);
  EXPECT_EQ(a.cells_size(), 2);
  EXPECT_EQ(a.cells(0).time_bin(), 64);
  EXPECT_EQ(a.cells(1).events(), 1);
  EXPECT_EQ(a.cells(1).censored(), 1);
  ASSERT_TRUE(ValidateSurvivalAggregate(a).ok());

  auto refused = [&](auto change) {
    SurvivalAggregate b = a;
    change(b);
    SurvivalAggregate total = a;
    const std::string before = total.SerializeAsString();
    bool refused = !ValidateSurvivalAggregate(b).ok() &&
                   !AddSurvivalAggregate(b, &total).ok();
    return refused && total.SerializeAsString() == before;
  };
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_time_bins(1200); }));
  EXPECT_TRUE(
      refused([](SurvivalAggregate& b) { b.set_time_bin_months(0.25); }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_score_bins(100); }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_num_patients(4); }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells()->SwapElements(0, 1);  // unsorted
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    *b.add_cells() = b.cells(1);  // repeated
    b.set_num_patients(5);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells(0)->set_censored(0);  // empty cell
    b.set_num_patients(2);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells(0)->set_censored(-1);
    b.mutable_cells(1)->set_events(3);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells(1)->set_time_bin(kSurvivalTimeBins);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_suppressed(true); }));
  // A malformed report gives no C, not a crash.
  SurvivalAggregate malformed = a;
  malformed.mutable_cells()->SwapElements(0, 1);
  EXPECT_TRUE(std::isnan(CIndex(malformed).c_index));

  // A suppressed report is empty and adds nothing.
  SurvivalAggregate suppressed;
  InitSurvivalAggregate(&suppressed);
  suppressed.set_suppressed(true);
  ASSERT_TRUE(ValidateSurvivalAggregate(suppressed).ok());
  SurvivalAggregate total = a;
  ASSERT_TRUE(AddSurvivalAggregate(suppressed, &total).ok());
  EXPECT_EQ(total.SerializeAsString(), a.SerializeAsString());
  // An empty total takes the binning; a total with another binning refuses.
  SurvivalAggregate fresh;
  ASSERT_TRUE(AddSurvivalAggregate(a, &fresh).ok());
  EXPECT_EQ(fresh.SerializeAsString(), a.SerializeAsString());
  SurvivalAggregate other = a;
  other.set_time_bins(10);
  EXPECT_FALSE(AddSurvivalAggregate(a, &other).ok());
  EXPECT_EQ(other.num_patients(), 3);
  SurvivalAggregate wrong;
  wrong.set_time_bins(5);
  EXPECT_EQ(AddSurvivalCase(&wrong, 1, true, 0).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Disclosure control: small cells are withheld, and so is what would give
// them away by subtraction from a released total.
TEST(WithheldCellsTest, PrimaryAndSecondarySuppression) {
  auto withheld = [](std::vector<int64_t> parts, int64_t min_cell_count,
                     bool total_public = true) {
    DisclosureTable table;
    int64_t total = 0;
    for (int64_t part : parts) total += part;
    table.counts.push_back(total);
    table.public_cells.push_back(total_public);
    DisclosureTable::Partition partition{0, {}};
    for (int64_t part : parts) {
      partition.parts.push_back(static_cast<int>(table.counts.size()));
      table.counts.push_back(part);
      table.public_cells.push_back(false);
    }
    table.partitions.push_back(partition);
    return WithheldCells(table, min_cell_count);
  };
  // Nothing small: everything released, zeros included.
  EXPECT_EQ(withheld({30, 12, 0}, 5),
            (std::vector<bool>{false, false, false, false}));
  // One small class: the next smallest goes with it, or 30 - (42 - 3 - 12)
  // would tell the 3.
  EXPECT_EQ(withheld({30, 12, 3}, 5),
            (std::vector<bool>{false, false, true, true}));
  // Two small classes holding 5 together: they hide each other.
  EXPECT_EQ(withheld({30, 2, 3}, 5),
            (std::vector<bool>{false, false, true, true}));
  // Two small classes holding fewer than 5: a third goes too.
  EXPECT_EQ(withheld({30, 1, 2, 40}, 5),
            (std::vector<bool>{false, true, true, true, false}));
  // Nothing to hide a lone small cell behind but a total that may go: it
  // goes; a public one stays (and the cell is withheld regardless).
  EXPECT_EQ(withheld({3, 0}, 5, /*total_public=*/false),
            (std::vector<bool>{true, true, false}));
  EXPECT_EQ(withheld({3, 0}, 5), (std::vector<bool>{false, true, false}));
  // A minimum of 1 withholds nothing.
  EXPECT_EQ(withheld({30, 1}, 1), (std::vector<bool>{false, false, false}));

  // Nested partitions: screened = excluded + included, included = a + b.
  // b (3) is small; a goes with it (included is released); then included
  // itself stays, so screened's partition is untouched.
  DisclosureTable table;
  table.counts = {50, 10, 40, 37, 3};
  table.partitions = {{0, {1, 2}}, {2, {3, 4}}};
  EXPECT_EQ(WithheldCells(table, 5),
            (std::vector<bool>{false, false, false, true, true}));
  // b public (released elsewhere): the other part cannot hide the small
  // one alone, so their total goes, and with it the excluded count.
  table.counts = {50, 10, 40, 3, 37};
  table.public_cells = {false, false, false, false, true};
  EXPECT_EQ(WithheldCells(table, 5),
            (std::vector<bool>{false, true, true, true, false}));
}

TEST(WithheldCellsTest, WithheldClassesAreValidated) {
  EvalAggregate a;
  InitAggregate(3, &a);
  ASSERT_TRUE(AddCase(&a, 0, {0.8, 0.1, 0.1}).ok());
  ASSERT_TRUE(AddCase(&a, 1, {0.2, 0.7, 0.1}).ok());
  a.set_num_patients(2);
  a.add_withheld_classes(2);
  EXPECT_TRUE(ValidateAggregate(a, 3).ok());
  EvalAggregate unsorted = a;
  unsorted.add_withheld_classes(0);
  EXPECT_FALSE(ValidateAggregate(unsorted, 3).ok());
  EvalAggregate with_images = a;
  with_images.set_withheld_classes(0, 1);
  EXPECT_FALSE(ValidateAggregate(with_images, 3).ok());
  EvalAggregate out_of_range = a;
  out_of_range.set_withheld_classes(0, 3);
  EXPECT_FALSE(ValidateAggregate(out_of_range, 3).ok());
  // A suppressed set does not say which classes it had.
  EvalAggregate suppressed;
  suppressed.set_class_count(3);
  suppressed.mutable_confusion()->Resize(9, 0);
  suppressed.set_suppressed(true);
  EXPECT_TRUE(ValidateAggregate(suppressed, 3).ok());
  suppressed.add_withheld_classes(2);
  EXPECT_FALSE(ValidateAggregate(suppressed, 3).ok());
}

}  // namespace
}  // namespace echofed
