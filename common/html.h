#ifndef ECHOFED_COMMON_HTML_H_
#define ECHOFED_COMMON_HTML_H_

#include <string>

#include "absl/strings/string_view.h"

namespace echofed {

// `text` with & < > " ' replaced by entities: safe in element content and in
// quoted attribute values. Other bytes (UTF-8) pass through.
std::string HtmlEscape(absl::string_view text);

}  // namespace echofed

#endif  // ECHOFED_COMMON_HTML_H_
