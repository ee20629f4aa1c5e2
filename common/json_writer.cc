#include "common/json_writer.h"

#include <charconv>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace echofed {

std::string JsonQuote(absl::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += "\"";
  return out;
}

void JsonWriter::Key(absl::string_view key) {
  Separate();
  absl::StrAppend(&out_, JsonQuote(key), ": ");
  after_key_ = true;
}

void JsonWriter::String(absl::string_view value) {
  Separate();
  out_ += JsonQuote(value);
}

void JsonWriter::Number(double value) {
  Separate();
  if (!std::isfinite(value)) {
    out_ += "null";
    return;
  }
  switch (number_format_) {
    case NumberFormat::kShortest: {
      char buffer[32];
      const std::to_chars_result result =
          std::to_chars(buffer, buffer + sizeof(buffer), value);
      out_.append(buffer, result.ptr);
      break;
    }
    case NumberFormat::kSixSignificantDigits:
      absl::StrAppendFormat(&out_, "%.6g", value);
      break;
  }
}

void JsonWriter::Int(int64_t value) {
  Separate();
  absl::StrAppend(&out_, value);
}

void JsonWriter::Bool(bool value) {
  Separate();
  out_ += value ? "true" : "false";
}

void JsonWriter::Null() {
  Separate();
  out_ += "null";
}

void JsonWriter::FieldInterval(absl::string_view key, const Interval& ci) {
  Key(key);
  BeginArray(/*inline_array=*/true);
  Number(ci.lower);
  Number(ci.upper);
  EndArray();
}

std::string JsonWriter::Take() {
  out_ += "\n";
  return std::move(out_);
}

bool JsonWriter::Inline() const {
  return !levels_.empty() && levels_.back().inline_level;
}

void JsonWriter::Newline() {
  out_ += "\n";
  out_.append(2 * levels_.size(), ' ');
}

void JsonWriter::Separate() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (levels_.empty()) return;
  if (!levels_.back().first) out_ += Inline() ? ", " : ",";
  levels_.back().first = false;
  if (!Inline()) Newline();
}

void JsonWriter::Open(char bracket, bool inline_level) {
  Separate();
  out_ += bracket;
  levels_.push_back({true, inline_level || Inline()});
}

void JsonWriter::Close(char bracket) {
  const bool empty = levels_.back().first;
  const bool was_inline = levels_.back().inline_level;
  levels_.pop_back();
  if (!empty && !was_inline) Newline();
  out_ += bracket;
}

}  // namespace echofed
