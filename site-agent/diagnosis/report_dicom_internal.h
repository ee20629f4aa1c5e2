#ifndef ECHOFED_SITE_AGENT_DIAGNOSIS_REPORT_DICOM_INTERNAL_H_
#define ECHOFED_SITE_AGENT_DIAGNOSIS_REPORT_DICOM_INTERNAL_H_

// Helpers shared by report_dicom.cc (study context, Secondary Capture,
// files) and report_dicom_sr.cc (the SR document). Not part of the API.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "site-agent/diagnosis/diagnostic_report.h"
#include "site-agent/diagnosis/report_dicom.h"

namespace echofed::report_dicom_internal {

// Silences DCMTK's logger once per process: its messages can quote element
// values (a patient's name), and every failure we need ends up in a status.
void QuietDcmtk();

// The whole file (preamble, meta header, dataset) in explicit VR little
// endian, the transfer syntax every PACS accepts.
absl::StatusOr<std::string> SerialiseExplicitLittle(DcmFileFormat& file,
                                                    const std::string& what);

// Content Date (YYYYMMDD) and Time (HHMMSS) in the site's local time, as
// DICOM dates without a Timezone Offset From UTC are: from the report's
// ISO 8601 UTC generated_at, or now when that does not parse.
void ContentDateTime(const std::string& generated_at_utc, std::string* date,
                     std::string* time);

// FAILED_PRECONDITION when `options_require` and the report's patient is
// not the context's; INVALID_ARGUMENT for an inconsistent report.
absl::Status CheckReportAgainstContext(const DiagnosticReport& report,
                                       const DicomStudyContext& context,
                                       bool options_require);

// What a PACS viewer lists for the two series, and the manufacturer of both.
inline constexpr char kGradCamSeriesDescription[] = "echofed Grad-CAM";
inline constexpr char kSrSeriesDescription[] = "echofed decision support";
inline constexpr char kManufacturer[] = "echofed";

}  // namespace echofed::report_dicom_internal

#endif  // ECHOFED_SITE_AGENT_DIAGNOSIS_REPORT_DICOM_INTERNAL_H_
