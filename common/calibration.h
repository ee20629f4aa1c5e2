#ifndef ECHOFED_COMMON_CALIBRATION_H_
#define ECHOFED_COMMON_CALIBRATION_H_

// Calibration and clinical utility of one class's binned scores: the
// reliability bins and the decision curve. Brier scores, the expected
// calibration error and the logistic recalibration fit are reported in
// ClassMetrics (common/metrics.h).

#include <cstdint>

#include "common/intervals.h"

namespace echofed {

// One reliability (calibration) bin [lower, upper) of p_c.
struct ReliabilityBin {
  double lower = kNaN;
  double upper = kNaN;
  int64_t count;
  double mean_predicted = kNaN;     // from histogram bin midpoints
  double observed_fraction = kNaN;  // fraction of images whose true class is c
};

// Net benefit of calling class c when p_c >= threshold (decision-curve
// analysis): TP/n - FP/n * t/(1 - t); treat_all calls every image positive.
struct DecisionPoint {
  double threshold = kNaN;
  double net_benefit = kNaN;
  double treat_all = kNaN;
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_CALIBRATION_H_
