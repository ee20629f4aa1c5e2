#include "common/metrics.h"

#include <cmath>
#include <random>
#include <vector>

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

}  // namespace
}  // namespace echofed
