#ifndef ECHOFED_COORDINATOR_CLI_REPORT_FORMAT_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_FORMAT_H_

// Numbers as the report's documents print them. Undefined values (NaN)
// print as "n/a", except in Shortest, whose callers decide.

#include <string>

#include "common/metrics.h"

namespace echofed {
namespace report_internal {

// Shortest text that reads back as the same double: files compare exactly
// with a recomputation, and stay short where a value is short.
std::string Shortest(double value);

std::string Fixed(double value, int digits = 3);
std::string Percent(double value);
// "0.812 (0.750–0.874)"; the estimate alone when the interval is undefined.
std::string WithInterval(double value, const Interval& ci, int digits = 3);
// "81.2% (75.0–87.4)".
std::string PercentWithInterval(double value, const Interval& ci);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_FORMAT_H_
