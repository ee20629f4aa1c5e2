#ifndef ECHOFED_COORDINATOR_CLI_REPORT_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_H_

// The statistician's report of one evaluated round: JSON (everything), a
// tidy CSV (one row per set x metric) and a self-contained HTML page with
// inline SVG plots. A pure function of a RunStatus, so it is tested without
// a coordinator and gives the same files for the same status.
//
// What goes in: the per-site additive aggregates the coordinator already
// holds. What comes out: metrics, curves and counts derived from them, never
// the raw score histograms. Per-site ROC curves carry no thresholds and
// decision curves are pooled only, because for a small site those would come
// close to listing its cases' scores (see README, "Trust").

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "proto/admin.pb.h"

namespace echofed {

struct ReportOptions {
  // The round to report; negative: the last round with evaluations.
  int round = -1;
  // When the report was made, printed in it; 0 leaves it out so that the
  // same status gives byte-identical files.
  int64_t generated_unix_ms = 0;
};

// The three documents, in memory.
struct ReportDocuments {
  int round = 0;  // the round reported
  std::string json;
  std::string csv;
  std::string html;
};

// The CSV's header; every row has these columns. `set` is a site name,
// "pooled_internal" / "pooled_external" (aggregates summed over the sites,
// so the metrics of the pooled cases) or "meta_internal" / "meta_external" /
// "meta_all" (DerSimonian-Laird random-effects meta-analysis of the sites'
// own estimates), or "audit_log" (set_type "round": the coordinator's
// audit log when the round was committed, metric audit_log_records, the
// head hash in `note`). `n` is the estimate's denominator: images for most
// metrics, the class's cases for sensitivity, predicted positives for
// precision, patients for the C-index, sites pooled for a meta-analysis.
// Undefined values and suppressed sets are "NA", with the reason in `note`.
// `unit` is the unit of analysis of the row's estimate: "image" (subtype
// metrics, binary heads, meta-analyses), "patient" (the subtype's
// "patient_level_*" metrics, one case per patient scored with the mean of
// its images' probabilities, with n in patients; the prognosis head; the
// patient flow), or empty (privacy). Patient-level rows of a set whose
// sites sent none are "NA" with "not reported" in `note`.
inline constexpr char kReportCsvHeader[] =
    "run_id,round,set,set_type,split,head,metric,class,estimate,ci_lower,"
    "ci_upper,n,note,unit";

// Errors: NOT_FOUND when the run has no evaluated round (or not the one
// asked for); INVALID_ARGUMENT when a site's aggregate is malformed or its
// class count is not the plan's.
absl::StatusOr<ReportDocuments> RenderReport(const RunStatus& status,
                                             const ReportOptions& options);

// Where WriteReport put the files.
struct ReportPaths {
  int round = 0;
  std::string json;  // <out_dir>/report.json
  std::string csv;   // <out_dir>/metrics.csv
  std::string html;  // <out_dir>/report.html
};

// RenderReport, then writes the three files into `out_dir` (created if
// absent), each atomically. Errors as RenderReport's, or the filesystem's.
absl::StatusOr<ReportPaths> WriteReport(const RunStatus& status,
                                        const ReportOptions& options,
                                        const std::string& out_dir);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_H_
