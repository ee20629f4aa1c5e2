// Reliability bins and the logistic recalibration fit
// (common/calibration.h), as Summarize reports them.

#include "common/calibration.h"

#include <cmath>
#include <vector>

#include "common/metrics.h"
#include "gtest/gtest.h"
#include "tests/common/metrics_test_util.h"

namespace echofed {
namespace {

using ::echofed::testing::Case;
using ::echofed::testing::FromCases;

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

}  // namespace
}  // namespace echofed
