// AUCs, their DeLong variances and ROC curves from the score histograms
// (common/roc.h), as Summarize reports them; with the binary example's Brier
// score and decision curve.

#include "common/roc.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/metrics.h"
#include "gtest/gtest.h"
#include "tests/common/metrics_test_util.h"

namespace echofed {
namespace {

using ::echofed::testing::BinaryExample;
using ::echofed::testing::Case;
using ::echofed::testing::ExactAuc;
using ::echofed::testing::FromCases;

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

}  // namespace
}  // namespace echofed
