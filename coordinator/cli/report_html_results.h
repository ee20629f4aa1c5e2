#ifndef ECHOFED_COORDINATOR_CLI_REPORT_HTML_RESULTS_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_HTML_RESULTS_H_

// The HTML report's tables of results: performance per set and per class
// (image- and patient-level), confusion matrices, the clinical heads and the
// meta-analyses. report_html.cc puts them on the page.

#include <string>

#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {

// The "suppressed (< min cell count N)" of a cell, styled.
std::string SuppressedCell(const Report& report);

// Counts of one set, each with the share of its true-class row.
std::string ConfusionTable(const Report& report, const SetResult& set);

// The image-level subtype metrics of every set.
std::string PerformanceTable(const Report& report);

// Per-class metrics of one set, image-level or (patient_level) of its
// patient-level aggregate.
std::string ClassTable(const Report& report, const SetResult& set,
                       bool patient_level = false);

// The performance section's patient-level part: its table and per-class
// tables, or one line saying no site reported it.
std::string PatientLevelPerformance(const Report& report);

// The clinical heads section (AUC or C-index of every set); empty when the
// report has no head but the subtype.
std::string HeadsSection(const Report& report);

// One row per group x head x class, the three pooled metrics side by side.
std::string MetaTable(const Report& report);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_HTML_RESULTS_H_
