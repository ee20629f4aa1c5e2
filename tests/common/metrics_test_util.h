#ifndef ECHOFED_TESTS_COMMON_METRICS_TEST_UTIL_H_
#define ECHOFED_TESTS_COMMON_METRICS_TEST_UTIL_H_

// Aggregates built by hand for the tests of common/metrics.h and the
// headers it gathers (common_metrics_test): from a confusion matrix, or
// from per-case predictions, and the exact AUC of raw scores to hold the
// binned one against.

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "common/eval_aggregate.h"
#include "gtest/gtest.h"
#include "proto/metrics.pb.h"

namespace echofed::testing {

// A counts-only aggregate (no score histograms) of the row-major
// `confusion` matrix: true class rows, predicted class columns.
inline EvalAggregate Make(std::vector<int64_t> confusion, int classes) {
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

// One image: its true class and the predicted probabilities.
struct Case {
  int truth;
  std::vector<double> probabilities;
};

// The aggregate of `cases`, with scores, one patient per image.
inline EvalAggregate FromCases(const std::vector<Case>& cases) {
  EvalAggregate a;
  for (const Case& c : cases) {
    absl::Status status = AddCase(&a, c.truth, c.probabilities);
    EXPECT_TRUE(status.ok()) << status;
  }
  a.set_num_patients(a.num_images());
  return a;
}

// The binary example used by several tests: class 1 has scores 0.9, 0.8,
// 0.4; class 0 has 0.7, 0.4, 0.3, 0.2 (one tie across the classes at 0.4).
inline std::vector<Case> BinaryExample() {
  std::vector<Case> cases;
  for (double p : {0.9, 0.8, 0.4}) cases.push_back({1, {1 - p, p}});
  for (double p : {0.7, 0.4, 0.3, 0.2}) cases.push_back({0, {1 - p, p}});
  return cases;
}

// Exact AUC on raw scores: every (positive, negative) pair, ties one half.
inline double ExactAuc(const std::vector<double>& positives,
                       const std::vector<double>& negatives) {
  double wins = 0;
  for (double p : positives) {
    for (double n : negatives) wins += p > n ? 1.0 : p == n ? 0.5 : 0.0;
  }
  return wins / (static_cast<double>(positives.size()) * negatives.size());
}

// One-vs-rest exact AUC of class c, or of class c against class `only`.
inline double ExactAuc(const std::vector<Case>& cases, int c, int only = -1) {
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

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_COMMON_METRICS_TEST_UTIL_H_
