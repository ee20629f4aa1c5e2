#include "site-agent/pacs/multipart.h"

#include <algorithm>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace echofed {
namespace {

constexpr absl::string_view kCrlf = "\r\n";

bool IsBoundaryChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::string_view("'()+_,-./:=? ").find(c) != absl::string_view::npos;
}

absl::Status CheckBoundary(absl::string_view boundary) {
  if (boundary.empty() || boundary.size() > 70 || boundary.back() == ' ') {
    return absl::InvalidArgumentError(
        "multipart boundary must have 1 to 70 characters and not end in a "
        "space");
  }
  for (char c : boundary) {
    if (!IsBoundaryChar(c)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "multipart boundary has a character RFC 2046 does not allow "
          "(0x%02x)",
          static_cast<unsigned char>(c)));
    }
  }
  return absl::OkStatus();
}

// Header lines of one part; a line starting with a space or tab continues
// the previous one (RFC 5322 folding).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseHeaders(
    absl::string_view block, int part_number) {
  std::vector<std::pair<std::string, std::string>> headers;
  if (block.empty()) return headers;
  for (absl::string_view line : absl::StrSplit(block, kCrlf)) {
    if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      if (headers.empty()) {
        return absl::DataLossError(absl::StrCat("multipart part ", part_number,
                                                " starts with a folded line"));
      }
      std::string& value = headers.back().second;
      absl::StrAppend(&value, value.empty() ? "" : " ",
                      absl::StripAsciiWhitespace(line));
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::DataLossError(absl::StrCat(
          "multipart part ", part_number, " has a header line without a name"));
    }
    headers.emplace_back(
        absl::AsciiStrToLower(
            absl::StripAsciiWhitespace(line.substr(0, colon))),
        std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  }
  return headers;
}

}  // namespace

std::string MultipartPart::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (key == name) return value;
  }
  return "";
}

std::string MediaType::Parameter(absl::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return value;
  }
  return "";
}

absl::StatusOr<MediaType> ParseMediaType(absl::string_view value) {
  MediaType media;
  const size_t semicolon = value.find(';');
  media.type = absl::AsciiStrToLower(
      absl::StripAsciiWhitespace(value.substr(0, semicolon)));
  const size_t slash = media.type.find('/');
  if (slash == std::string::npos || slash == 0 ||
      slash + 1 == media.type.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a media type: \"", value.substr(0, 100), "\""));
  }
  size_t at = semicolon == absl::string_view::npos ? value.size() : semicolon;
  while (at < value.size()) {
    if (value[at] == ';' || absl::ascii_isspace(value[at])) {
      ++at;
      continue;
    }
    const size_t equals = value.find('=', at);
    if (equals == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("media type parameter without a value in \"",
                       value.substr(0, 100), "\""));
    }
    std::string name = absl::AsciiStrToLower(
        absl::StripAsciiWhitespace(value.substr(at, equals - at)));
    if (name.empty() || name.find(';') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "malformed media type parameter in \"", value.substr(0, 100), "\""));
    }
    at = equals + 1;
    std::string parameter;
    if (at < value.size() && value[at] == '"') {
      // RFC 7230 quoted-string: a backslash escapes the next character.
      ++at;
      bool closed = false;
      while (at < value.size()) {
        const char c = value[at++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (at == value.size()) break;
          parameter.push_back(value[at++]);
        } else {
          parameter.push_back(c);
        }
      }
      if (!closed) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unterminated quoted parameter in \"", value.substr(0, 100), "\""));
      }
    } else {
      size_t end = value.find(';', at);
      if (end == absl::string_view::npos) end = value.size();
      parameter =
          std::string(absl::StripAsciiWhitespace(value.substr(at, end - at)));
      at = end;
    }
    media.parameters.emplace_back(std::move(name), std::move(parameter));
  }
  return media;
}

absl::StatusOr<std::vector<MultipartPart>> ParseMultipart(
    absl::string_view body, absl::string_view boundary) {
  if (absl::Status valid = CheckBoundary(boundary); !valid.ok()) return valid;
  const std::string dash_boundary = absl::StrCat("--", boundary);
  const std::string delimiter = absl::StrCat(kCrlf, dash_boundary);

  // `at` points at the "--boundary" of the next delimiter line.
  size_t at;
  if (absl::StartsWith(body, dash_boundary)) {
    at = 0;
  } else {
    const size_t found = body.find(delimiter);
    if (found == absl::string_view::npos) {
      return absl::DataLossError(
          "multipart body holds no delimiter of its boundary");
    }
    at = found + kCrlf.size();
  }

  std::vector<MultipartPart> parts;
  while (true) {
    size_t next_line = at + dash_boundary.size();
    if (body.substr(next_line, 2) == "--") break;  // the closing delimiter
    // Transport padding (RFC 2046 5.1.1) may follow a delimiter.
    while (next_line < body.size() &&
           (body[next_line] == ' ' || body[next_line] == '\t')) {
      ++next_line;
    }
    if (body.substr(next_line, kCrlf.size()) != kCrlf) {
      return absl::DataLossError(absl::StrCat(
          "multipart delimiter ", parts.size() + 1,
          next_line >= body.size() ? " ends the body without its closing "
                                     "delimiter"
                                   : " is not followed by a line break"));
    }
    const size_t part_start = next_line + kCrlf.size();
    const int part_number = static_cast<int>(parts.size()) + 1;
    const size_t end = body.find(delimiter, part_start);
    if (end == absl::string_view::npos) {
      return absl::DataLossError(
          absl::StrCat("multipart body is truncated: part ", part_number,
                       " has no closing delimiter"));
    }
    // Headers end with an empty line; for a part without a body, its CRLF
    // is the one that begins the next delimiter.
    size_t content_start;
    size_t headers_end;
    if (body.substr(part_start, kCrlf.size()) == kCrlf) {
      headers_end = part_start;
      content_start = std::min(part_start + kCrlf.size(), end);
    } else {
      headers_end = body.find("\r\n\r\n", part_start);
      if (headers_end == absl::string_view::npos || headers_end > end) {
        return absl::DataLossError(absl::StrCat(
            "multipart part ", part_number, " has headers that do not end"));
      }
      content_start = std::min(headers_end + 4, end);
    }
    MultipartPart part;
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> headers =
        ParseHeaders(body.substr(part_start, headers_end - part_start),
                     part_number);
    if (!headers.ok()) return headers.status();
    part.headers = std::move(*headers);
    part.body = std::string(body.substr(content_start, end - content_start));
    parts.push_back(std::move(part));
    at = end + kCrlf.size();
  }
  if (parts.empty()) {
    return absl::DataLossError("multipart body holds no part");
  }
  return parts;
}

std::string ChooseBoundary(const std::vector<std::string>& parts) {
  std::random_device random;
  while (true) {
    std::string boundary = "echofed-";
    for (int i = 0; i < 4; ++i)
      absl::StrAppendFormat(&boundary, "%08x", random());
    bool clashes = false;
    for (const std::string& part : parts) {
      if (absl::StrContains(part, boundary)) {
        clashes = true;
        break;
      }
    }
    if (!clashes) return boundary;
  }
}

std::string BuildMultipart(const std::vector<std::string>& parts,
                           absl::string_view part_content_type,
                           absl::string_view boundary) {
  std::string body;
  for (const std::string& part : parts) {
    absl::StrAppend(&body, "--", boundary, kCrlf,
                    "Content-Type: ", part_content_type, kCrlf, kCrlf, part,
                    kCrlf);
  }
  absl::StrAppend(&body, "--", boundary, "--", kCrlf);
  return body;
}

}  // namespace echofed
