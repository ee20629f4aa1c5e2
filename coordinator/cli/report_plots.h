#ifndef ECHOFED_COORDINATOR_CLI_REPORT_PLOTS_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_PLOTS_H_

// The HTML report's figures, each one self-contained inline <svg> element.

#include <string>

#include "absl/strings/string_view.h"
#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {

// One-vs-rest ROC curves of every class of one set, `size` pixels square.
std::string RocSvg(const Report& report, const SetResult& set, double size);

// Reliability diagram of every class of one set: observed fraction against
// mean predicted probability per tenth, dots sized by the bin's images.
std::string CalibrationSvg(const Report& report, const SetResult& set);

// Forest plot of the sites' AUCs of one class, then the pooled-cases AUC of
// each split and the DerSimonian-Laird estimate of each group.
// `head` indexes Report::heads, or is -1 for the subtype; `class_index` is
// the subtype's class, or 1 for a binary head's positive class.
std::string ForestSvg(const Report& report, int head, int class_index,
                      absl::string_view title);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_PLOTS_H_
