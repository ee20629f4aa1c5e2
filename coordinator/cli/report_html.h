#ifndef ECHOFED_COORDINATOR_CLI_REPORT_HTML_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_HTML_H_

// report.html, written from the report's model. Internal to echofed_cli;
// callers use report.h.

#include <string>

#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {

// report.html: one self-contained page (inline style and SVG, no script).
std::string RenderHtml(const Report& report);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_HTML_H_
