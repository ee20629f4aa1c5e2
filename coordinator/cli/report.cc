// The report's entry points: build the model (report_model.h), write it
// three ways (report_json.cc, report_csv.cc, report_html.cc), and save the
// files.

#include "coordinator/cli/report.h"

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/files.h"
#include "coordinator/cli/report_csv.h"
#include "coordinator/cli/report_html.h"
#include "coordinator/cli/report_json.h"
#include "coordinator/cli/report_model.h"

namespace echofed {

absl::StatusOr<ReportDocuments> RenderReport(const RunStatus& status,
                                             const ReportOptions& options) {
  absl::StatusOr<report_internal::Report> report =
      report_internal::BuildReport(status, options);
  if (!report.ok()) return report.status();
  ReportDocuments documents;
  documents.round = report->round->round();
  documents.json = report_internal::RenderJson(*report);
  documents.csv = report_internal::RenderCsv(*report);
  documents.html = report_internal::RenderHtml(*report);
  return documents;
}

absl::StatusOr<ReportPaths> WriteReport(const RunStatus& status,
                                        const ReportOptions& options,
                                        const std::string& out_dir) {
  absl::StatusOr<ReportDocuments> documents = RenderReport(status, options);
  if (!documents.ok()) return documents.status();
  if (absl::Status made = MakeDirectories(out_dir); !made.ok()) return made;
  ReportPaths paths;
  paths.round = documents->round;
  paths.json = out_dir + "/report.json";
  paths.csv = out_dir + "/metrics.csv";
  paths.html = out_dir + "/report.html";
  const std::pair<const std::string*, const std::string*> files[] = {
      {&paths.json, &documents->json},
      {&paths.csv, &documents->csv},
      {&paths.html, &documents->html}};
  for (const auto& [path, content] : files) {
    if (absl::Status written = WriteFileAtomically(*path, *content);
        !written.ok()) {
      return written;
    }
  }
  return paths;
}

}  // namespace echofed
