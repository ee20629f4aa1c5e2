#ifndef ECHOFED_SITE_AGENT_PACS_DICOMWEB_JSON_H_
#define ECHOFED_SITE_AGENT_PACS_DICOMWEB_JSON_H_

// The DICOM JSON model (PS3.18 F.2) as QIDO-RS and STOW-RS answer with it:
//   [{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, ...}, ...]
// Parsed with protobuf's JSON reader into google.protobuf.Struct rather
// than by hand: the answers come from the network.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"

namespace echofed {

// The objects of a QIDO-RS answer (a JSON array of objects). An empty body
// is an empty list (some servers answer 204 that way). DATA_LOSS when the
// text is not such an array.
absl::StatusOr<std::vector<google::protobuf::Struct>> ParseDicomJsonArray(
    absl::string_view json);

// The first value of attribute `tag` ("0020000D") as text: strings as they
// are, numbers (IS, US, ...) as integers when integral, person names by
// their alphabetic group. "" when the attribute or its value is absent.
std::string DicomJsonString(const google::protobuf::Struct& object,
                            absl::string_view tag);

// The items of sequence attribute `tag`; empty when absent.
std::vector<google::protobuf::Struct> DicomJsonItems(
    const google::protobuf::Struct& object, absl::string_view tag);

// One object a STOW-RS answer lists in its Failed SOP Sequence (0008,1198).
struct StowFailure {
  std::string sop_instance_uid;  // Referenced SOP Instance UID (0008,1155)
  int reason = -1;               // Failure Reason (0008,1197); -1: not given
};

// The failures of a STOW-RS answer (a DICOM JSON object, or an array of
// one). An empty body lists none. DATA_LOSS when it is not DICOM JSON.
absl::StatusOr<std::vector<StowFailure>> ParseStowFailures(
    absl::string_view json);

// "0xA700 (out of resources)": the code and its meaning (PS3.4 Annex B and
// PS3.18 Table 10.5.3-1) where known.
std::string DescribeStowFailureReason(int reason);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_DICOMWEB_JSON_H_
