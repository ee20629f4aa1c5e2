#ifndef ECHOFED_COORDINATOR_CLI_REPORT_JSON_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_JSON_H_

// report.json, written from the report's model. Internal to echofed_cli;
// callers use report.h.

#include <string>

#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {

// report.json: everything the report holds, schema "echofed.report.v1".
std::string RenderJson(const Report& report);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_JSON_H_
