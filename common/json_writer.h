#ifndef ECHOFED_COMMON_JSON_WRITER_H_
#define ECHOFED_COMMON_JSON_WRITER_H_

// A streaming JSON writer for the reports. The documents are built field by
// field, so a writer that tracks commas and indentation is simpler than
// building a tree first; it writes NaN and infinities as null (JSON has
// neither).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/metrics.h"

namespace echofed {

// `text` as a JSON string literal, quotes included. Escapes the quote, the
// backslash and control characters; other bytes (UTF-8) pass through.
std::string JsonQuote(absl::string_view text);

// Writes indented JSON (two spaces a level) value by value; callers only say
// what comes next and the writer puts the commas and line breaks.
//
//   JsonWriter json;
//   json.BeginObject();
//   json.Field("name", "site-1");
//   json.EndObject();
//   std::string text = json.Take();  // "{\n  \"name\": \"site-1\"\n}\n"
class JsonWriter {
 public:
  // How finite doubles are written.
  enum class NumberFormat {
    kShortest,              // shortest text that reads back as the same double
    kSixSignificantDigits,  // printf's %.6g
  };

  explicit JsonWriter(NumberFormat number_format = NumberFormat::kShortest)
      : number_format_(number_format) {}

  void BeginObject() { Open('{'); }
  void EndObject() { Close('}'); }
  // An inline array stays on one line, and so does everything inside it.
  void BeginArray(bool inline_array = false) { Open('[', inline_array); }
  void EndArray() { Close(']'); }
  void Key(absl::string_view key);
  void String(absl::string_view value);
  // Non-finite values are written as null.
  void Number(double value);
  void Int(int64_t value);
  void Bool(bool value);
  void Null();

  // Shorthands for "key": value.
  void Field(absl::string_view key, absl::string_view value) {
    Key(key);
    String(value);
  }
  void Field(absl::string_view key, const char* value) {
    Key(key);
    String(value);
  }
  void Field(absl::string_view key, const std::string& value) {
    Key(key);
    String(value);
  }
  void Field(absl::string_view key, double value) {
    Key(key);
    Number(value);
  }
  void Field(absl::string_view key, int64_t value) {
    Key(key);
    Int(value);
  }
  void Field(absl::string_view key, int value) {
    Key(key);
    Int(value);
  }
  void Field(absl::string_view key, bool value) {
    Key(key);
    Bool(value);
  }
  // "key": [lower, upper] on one line.
  void FieldInterval(absl::string_view key, const Interval& ci);

  // The document, with a final line break; the writer is spent.
  std::string Take();

 private:
  struct Level {
    bool first = true;
    bool inline_level = false;
  };

  bool Inline() const;
  void Newline();
  // Before a value or key: a comma after a sibling, then a line break.
  void Separate();
  void Open(char bracket, bool inline_level = false);
  void Close(char bracket);

  NumberFormat number_format_;
  std::string out_;
  std::vector<Level> levels_;
  bool after_key_ = false;
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_JSON_WRITER_H_
