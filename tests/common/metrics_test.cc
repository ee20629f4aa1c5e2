#include "common/metrics.h"

#include <cmath>

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

TEST(MetricsTest, PoolingAddsCounts) {
  EvalAggregate total;
  ASSERT_TRUE(AddAggregate(Make({1, 0, 0, 1}, 2), &total).ok());
  ASSERT_TRUE(AddAggregate(Make({0, 2, 3, 0}, 2), &total).ok());
  EXPECT_EQ(total.num_images(), 7);
  EXPECT_NEAR(Accuracy(total), 2.0 / 7, 1e-12);
  EXPECT_FALSE(AddAggregate(Make({1, 0, 0, 0, 0, 0, 0, 0, 0}, 3), &total).ok());
}

TEST(MetricsTest, InconsistentAggregatesAreRefused) {
  EvalAggregate a = Make({1, 2, 3, 4}, 2);
  EXPECT_TRUE(ValidateAggregate(a, 2).ok());
  EXPECT_FALSE(ValidateAggregate(a, 3).ok());
  a.set_num_images(99);
  EXPECT_FALSE(ValidateAggregate(a, 2).ok());
  EvalAggregate negative = Make({1, -1, 0, 0}, 2);
  EXPECT_FALSE(ValidateAggregate(negative, 2).ok());
}

TEST(MetricsTest, EmptyClassGivesNaNNotCrash) {
  EvalAggregate a = Make({3, 0, 0, 0}, 2);
  EXPECT_TRUE(std::isnan(Sensitivity(a, 1)));
  EXPECT_TRUE(std::isnan(Specificity(a, 0)));
}

}  // namespace
}  // namespace echofed
