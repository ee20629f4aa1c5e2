// How the report's documents print numbers; see report_format.h.

#include "coordinator/cli/report_format.h"

#include <charconv>
#include <cmath>
#include <string>

#include "absl/strings/str_format.h"
#include "common/metrics.h"

namespace echofed {
namespace report_internal {

std::string Shortest(double value) {
  char buffer[32];
  std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string Fixed(double value, int digits) {
  if (!std::isfinite(value)) return "n/a";
  return absl::StrFormat("%.*f", digits, value);
}

std::string Percent(double value) {
  if (!std::isfinite(value)) return "n/a";
  return absl::StrFormat("%.1f%%", 100 * value);
}

std::string WithInterval(double value, const Interval& ci, int digits) {
  if (!std::isfinite(value)) return "n/a";
  if (!std::isfinite(ci.lower) || !std::isfinite(ci.upper)) {
    return Fixed(value, digits);
  }
  return absl::StrFormat("%.*f (%.*f–%.*f)", digits, value, digits, ci.lower,
                         digits, ci.upper);
}

std::string PercentWithInterval(double value, const Interval& ci) {
  if (!std::isfinite(value)) return "n/a";
  if (!std::isfinite(ci.lower)) return Percent(value);
  return absl::StrFormat("%.1f%% (%.1f–%.1f)", 100 * value, 100 * ci.lower,
                         100 * ci.upper);
}

}  // namespace report_internal
}  // namespace echofed
