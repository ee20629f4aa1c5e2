#ifndef ECHOFED_SITE_AGENT_PACS_MULTIPART_H_
#define ECHOFED_SITE_AGENT_PACS_MULTIPART_H_

// multipart/related bodies (RFC 2387 over RFC 2046's multipart syntax), the
// envelope of WADO-RS answers and STOW-RS requests (PS3.18 8.6.1.2). The
// reader takes a body from a PACS, so it is strict: every delimiter must
// sit at a line start, the closing delimiter must be present, and nothing
// is read outside the body.

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace echofed {

struct MultipartPart {
  // Header fields in order, names lower-cased, values trimmed.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The value of the first header named `name` (lower case), or "".
  std::string Header(absl::string_view name) const;
};

// A media type split into its type/subtype (lower-cased) and parameters
// (names lower-cased, quoted values unquoted).
struct MediaType {
  std::string type;
  std::vector<std::pair<std::string, std::string>> parameters;

  // The value of the parameter `name` (lower case), or "".
  std::string Parameter(absl::string_view name) const;
};

// Parses a Content-Type value such as
//   multipart/related; type="application/dicom"; boundary="a:b"
// INVALID_ARGUMENT for a malformed value.
absl::StatusOr<MediaType> ParseMediaType(absl::string_view value);

// The parts of `body` delimited by `boundary` (1 to 70 characters, RFC
// 2046 5.1.1). A preamble before the first delimiter and an epilogue after
// the closing one are skipped. DATA_LOSS for a body without a delimiter,
// without its closing delimiter, or with a part whose header block does
// not end; INVALID_ARGUMENT for a bad boundary.
absl::StatusOr<std::vector<MultipartPart>> ParseMultipart(
    absl::string_view body, absl::string_view boundary);

// A boundary that occurs in none of `parts` (random, so that two requests
// differ).
std::string ChooseBoundary(const std::vector<std::string>& parts);

// The body of a multipart request: each of `parts` with one Content-Type
// header `part_content_type`, delimited by `boundary`.
std::string BuildMultipart(const std::vector<std::string>& parts,
                           absl::string_view part_content_type,
                           absl::string_view boundary);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_MULTIPART_H_
