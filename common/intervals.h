#ifndef ECHOFED_COMMON_INTERVALS_H_
#define ECHOFED_COMMON_INTERVALS_H_

// What an undefined metric is (kNaN) and two-sided confidence intervals of
// proportions: the base of every metrics header (common/metrics.h).

#include <cstdint>
#include <limits>

namespace echofed {

// What every undefined metric is.
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A two-sided confidence interval; NaN bounds when undefined.
struct Interval {
  double lower = kNaN;
  double upper = kNaN;
};

// 1.96: the two-sided 95% normal quantile used by every interval here.
inline constexpr double kZ95 = 1.959963984540054;

// Wilson score interval of the proportion successes / trials (NaN bounds
// when trials is 0). Unlike the Wald interval it stays inside [0, 1] and
// keeps its coverage for the small counts of a single hospital. The lower
// bound is exactly 0 when successes is 0, the upper exactly 1 when successes
// is trials.
Interval WilsonInterval(int64_t successes, int64_t trials, double z = kZ95);

}  // namespace echofed

#endif  // ECHOFED_COMMON_INTERVALS_H_
