#ifndef ECHOFED_SITE_AGENT_DATA_CSV_H_
#define ECHOFED_SITE_AGENT_DATA_CSV_H_

#include <string>
#include <vector>

namespace echofed {

// One line of RFC 4180-style CSV: fields split on commas, double-quoted
// fields may hold commas and "" for a quote. Fields are trimmed. A trailing
// carriage return is ignored.
std::vector<std::string> SplitCsvLine(const std::string& line);

// Quotes a field when it needs it.
std::string CsvField(const std::string& value);

// Splits text into lines, dropping a UTF-8 byte-order mark at the start.
std::vector<std::string> CsvLines(const std::string& text);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_CSV_H_
