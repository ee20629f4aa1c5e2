// Wilson's score interval, and the clipped normal interval that the AUC and
// C-index intervals use.

#include "common/intervals.h"

#include <algorithm>
#include <cmath>

#include "common/metrics_internal.h"

namespace echofed {
namespace metrics_internal {

Interval NormalInterval(double estimate, double standard_error) {
  if (!std::isfinite(estimate) || !std::isfinite(standard_error)) return {};
  return {std::max(0.0, estimate - kZ95 * standard_error),
          std::min(1.0, estimate + kZ95 * standard_error)};
}

}  // namespace metrics_internal

Interval WilsonInterval(int64_t successes, int64_t trials, double z) {
  if (trials <= 0 || successes < 0 || successes > trials) return {};
  const double n = static_cast<double>(trials);
  const double k = static_cast<double>(successes);
  const double z2 = z * z;
  const double center = (k + z2 / 2) / (n + z2);
  const double half = z / (n + z2) * std::sqrt(k * (n - k) / n + z2 / 4);
  // center - half is exactly 0 when successes is 0, and center + half exactly
  // 1 when successes is trials, but computed they can miss by rounding
  // (6.9e-18 for 0 / 30, 1 - 1.1e-16 for 30 / 30): set those bounds.
  return {successes == 0 ? 0.0 : std::max(0.0, center - half),
          successes == trials ? 1.0 : std::min(1.0, center + half)};
}

}  // namespace echofed
