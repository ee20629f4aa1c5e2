// Summarize (common/metrics.h) and what it starts from: the confusion
// metrics (common/confusion_metrics.h) and Wilson intervals
// (common/intervals.h).

#include "common/metrics.h"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/common/metrics_test_util.h"

namespace echofed {
namespace {

using ::echofed::testing::BinaryExample;
using ::echofed::testing::Case;
using ::echofed::testing::FromCases;
using ::echofed::testing::Make;

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
