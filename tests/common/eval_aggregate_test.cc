// Building, pooling and validating evaluation aggregates
// (common/eval_aggregate.h).

#include "common/eval_aggregate.h"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/confusion_metrics.h"
#include "common/metrics.h"
#include "gtest/gtest.h"
#include "tests/common/metrics_test_util.h"

namespace echofed {
namespace {

using ::echofed::testing::BinaryExample;
using ::echofed::testing::Case;
using ::echofed::testing::ExactAuc;
using ::echofed::testing::FromCases;
using ::echofed::testing::Make;

int64_t HistogramAt(const EvalAggregate& a, int truth, int score, int bin) {
  return a.score_histogram(
      (truth * a.class_count() + score) * a.histogram_bins() + bin);
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

}  // namespace
}  // namespace echofed
