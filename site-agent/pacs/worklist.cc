#include "site-agent/pacs/worklist.h"

#include <algorithm>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/csv.h"

namespace echofed {
namespace {

bool IsClinicalColumn(const std::string& name) {
  const std::vector<std::string>& columns = ClinicalColumns();
  return name != "patient_id" &&
         std::find(columns.begin(), columns.end(), name) != columns.end();
}

// Both rows of a duplicated identifier go: which one is right is for site
// IT to decide, not for the pull.
void DropDuplicates(Worklist& worklist) {
  // Keyed by what the row names; the message names only the kind of
  // identifier, so that PatientIDs stay out of logs.
  std::map<std::pair<std::string, std::string>, std::vector<int>> lines_of_key;
  for (const WorklistEntry& entry : worklist.entries) {
    lines_of_key[entry.patient_id.empty()
                     ? std::make_pair(std::string("accession_number"),
                                      entry.accession_number)
                     : std::make_pair(std::string("patient_id"),
                                      entry.patient_id)]
        .push_back(entry.line);
  }
  std::set<int> dropped;
  for (const auto& [key, lines] : lines_of_key) {
    if (lines.size() < 2) continue;
    for (int line : lines) {
      dropped.insert(line);
      worklist.errors.push_back(
          {line,
           absl::StrCat("the same ", key.first, " on lines ",
                        absl::StrJoin(lines, ", "), "; one row per patient")});
    }
  }
  worklist.entries.erase(
      std::remove_if(worklist.entries.begin(), worklist.entries.end(),
                     [&](const WorklistEntry& entry) {
                       return dropped.count(entry.line) > 0;
                     }),
      worklist.entries.end());
}

}  // namespace

absl::StatusOr<Worklist> ParseWorklist(const std::string& text,
                                       const std::string& origin) {
  std::vector<std::string> lines = CsvLines(text);
  if (lines.empty() || SplitCsvLine(lines[0]).empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin,
                     ": empty; the header names patient_id and/or "
                     "accession_number, label and any clinical columns"));
  }
  Worklist worklist;
  worklist.origin = origin;
  std::vector<std::string> header = SplitCsvLine(lines[0]);
  int patient_col = -1, accession_col = -1, label_col = -1;
  std::set<std::string> seen;
  for (int i = 0; i < static_cast<int>(header.size()); ++i) {
    const std::string& name = header[i];
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": column '", name, "' appears twice"));
    }
    if (name == "patient_id") {
      patient_col = i;
    } else if (name == "accession_number") {
      accession_col = i;
    } else if (name == "label") {
      label_col = i;
    } else if (IsClinicalColumn(name)) {
      worklist.clinical_columns.push_back(name);
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": unknown column '", name,
          "' (columns: patient_id, accession_number, label and the clinical "
          "columns of site-agent/data/CLINICAL_SCHEMA.md)"));
    }
  }
  if (patient_col < 0 && accession_col < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": the header must name patient_id or accession_number"));
  }
  if (label_col < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": the header must name label"));
  }
  for (size_t index = 1; index < lines.size(); ++index) {
    int line = static_cast<int>(index) + 1;
    if (lines[index].find_first_not_of(" \t\r") == std::string::npos) continue;
    std::vector<std::string> fields = SplitCsvLine(lines[index]);
    if (fields.size() != header.size()) {
      worklist.errors.push_back(
          {line, absl::StrCat(fields.size(), " fields where the header has ",
                              header.size())});
      continue;
    }
    WorklistEntry entry;
    entry.line = line;
    if (patient_col >= 0) entry.patient_id = fields[patient_col];
    if (accession_col >= 0) entry.accession_number = fields[accession_col];
    entry.label = fields[label_col];
    if (entry.patient_id.empty() == entry.accession_number.empty()) {
      worklist.errors.push_back(
          {line, entry.patient_id.empty()
                     ? "neither patient_id nor accession_number"
                     : "both patient_id and accession_number; give one"});
      continue;
    }
    // A backslash would split a DICOM multi-valued query key, and '*' or '?'
    // would turn an exact lookup into a wildcard match over other patients.
    const std::string& key =
        entry.patient_id.empty() ? entry.accession_number : entry.patient_id;
    if (key.find_first_of("\\*?") != std::string::npos) {
      worklist.errors.push_back(
          {line,
           "an identifier with '\\', '*' or '?' (a DICOM query would "
           "read it as several values or a wildcard)"});
      continue;
    }
    if (entry.label.empty()) {
      worklist.errors.push_back({line, "no label"});
      continue;
    }
    for (int i = 0; i < static_cast<int>(header.size()); ++i) {
      if (IsClinicalColumn(header[i])) entry.clinical[header[i]] = fields[i];
    }
    worklist.entries.push_back(std::move(entry));
  }
  DropDuplicates(worklist);
  std::sort(worklist.errors.begin(), worklist.errors.end(),
            [](const WorklistRowError& a, const WorklistRowError& b) {
              return a.line < b.line;
            });
  return worklist;
}

absl::StatusOr<Worklist> LoadWorklist(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseWorklist(*text, path);
}

}  // namespace echofed
