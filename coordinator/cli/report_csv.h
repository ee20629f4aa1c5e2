#ifndef ECHOFED_COORDINATOR_CLI_REPORT_CSV_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_CSV_H_

// metrics.csv, written from the report's model. Internal to echofed_cli;
// callers use report.h.

#include <string>

#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {

// metrics.csv: kReportCsvHeader, then one row per set x head x metric
// (x class).
std::string RenderCsv(const Report& report);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_CSV_H_
