// libFuzzer target for the clinical table parser (site-agent/data/clinical.h).
// Malformed tables and rows are expected and reported as values; a crash,
// a sanitizer report or a broken invariant is a bug.
//
// Beyond "does not crash", the target checks the round trip that the cohort
// rules depend on: cohort.cc decides whether a required field is present by
// formatting a record with ClinicalCsvLine and splitting it again, so every
// record the parser accepts must come back from its own CSV line as the
// same record.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "site-agent/data/clinical.h"

namespace {

void Fail(const std::string& why) {
  std::fprintf(stderr, "clinical_csv_fuzz: %s\n", why.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<echofed::ClinicalTable> table =
      echofed::ParseClinicalCsv(text, "clinical.csv");
  if (!table.ok()) return 0;

  std::string again = absl::StrJoin(echofed::ClinicalColumns(), ",");
  for (const auto& [id, record] : table->records) {
    if (id.empty() || id != record.patient_id) {
      Fail(absl::StrCat("record filed under '", id, "' has id '",
                        record.patient_id, "'"));
    }
    absl::StrAppend(&again, "\n", echofed::ClinicalCsvLine(record));
  }
  absl::StatusOr<echofed::ClinicalTable> reparsed =
      echofed::ParseClinicalCsv(again, "round trip");
  if (!reparsed.ok()) {
    Fail(absl::StrCat("own CSV rejected: ", reparsed.status().ToString()));
  }
  if (!reparsed->errors.empty()) {
    const echofed::ClinicalRowError& error = reparsed->errors.front();
    Fail(absl::StrCat("own CSV line ", error.line, " (", error.patient_id,
                      ") rejected: ", error.message));
  }
  if (reparsed->records.size() != table->records.size()) {
    Fail(absl::StrCat(table->records.size(), " records came back as ",
                      reparsed->records.size()));
  }
  // Numbers are written with six significant digits, so a record is
  // compared through its CSV form, which is stable after one round trip.
  for (const auto& [id, record] : table->records) {
    auto it = reparsed->records.find(id);
    if (it == reparsed->records.end()) Fail("a patient id did not come back");
    const std::string before = echofed::ClinicalCsvLine(record);
    const std::string after = echofed::ClinicalCsvLine(it->second);
    if (before != after) {
      Fail(
          absl::StrCat("round trip changed '", before, "' into '", after, "'"));
    }
  }
  return 0;
}
