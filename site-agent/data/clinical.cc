#include "site-agent/data/clinical.h"

#include <cmath>
#include <functional>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "site-agent/data/csv.h"

namespace echofed {
namespace {

// A value parser: fills the record from the text, or says why it cannot.
using Setter = std::function<absl::Status(const std::string& value,
                                          ClinicalRecord* record)>;

bool IsMissing(const std::string& value) {
  std::string lower = absl::AsciiStrToLower(value);
  return lower.empty() || lower == "na" || lower == "n/a" || lower == "nan" ||
         lower == "unknown";
}

template <typename T>
Setter Code(std::optional<T> ClinicalRecord::*field,
            std::vector<std::pair<std::string, T>> codes) {
  return [field, codes](const std::string& value,
                        ClinicalRecord* record) -> absl::Status {
    std::string lower = absl::AsciiStrToLower(value);
    for (const auto& [name, code] : codes) {
      if (lower == absl::AsciiStrToLower(name)) {
        record->*field = code;
        return absl::OkStatus();
      }
    }
    std::vector<std::string> names;
    for (const auto& entry : codes) names.push_back(entry.first);
    return absl::InvalidArgumentError(absl::StrCat(
        "'", value, "' is not one of ", absl::StrJoin(names, ", ")));
  };
}

Setter Number(std::optional<double> ClinicalRecord::*field, double min,
              double max) {
  return [field, min, max](const std::string& value,
                           ClinicalRecord* record) -> absl::Status {
    double number;
    if (!absl::SimpleAtod(value, &number) || !std::isfinite(number)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", value, "' is not a number"));
    }
    if (number < min || number > max) {
      return absl::InvalidArgumentError(absl::StrCat(
          value, " is outside the plausible range ", min, " to ", max));
    }
    record->*field = number;
    return absl::OkStatus();
  };
}

Setter YesNo(std::optional<bool> ClinicalRecord::*field) {
  return Code<bool>(field, {{"yes", true},
                            {"no", false},
                            {"1", true},
                            {"0", false},
                            {"true", true},
                            {"false", false}});
}

// One code of the `histology` column: the three-class label and, where the
// code says, the INRG histologic category.
struct HistologyCode {
  const char* name;
  Histology histology;
  std::optional<InrgHistology> inrg;
};

const std::vector<HistologyCode>& HistologyCodes() {
  // Intermixed and nodular GNB are both GNB for the label; INRG (Cohn 2009)
  // groups intermixed GNB with maturing GN and nodular GNB with NB. A plain
  // GNB leaves the INRG category unknown.
  static const auto* codes = new std::vector<HistologyCode>{
      {"NB", Histology::kNB, InrgHistology::kNeuroblastoma},
      {"GNB", Histology::kGNB, std::nullopt},
      {"GNB-intermixed", Histology::kGNB,
       InrgHistology::kGnMaturingOrGnbIntermixed},
      {"GNB-nodular", Histology::kGNB, InrgHistology::kGnbNodular},
      {"GN", Histology::kGN, InrgHistology::kGnMaturingOrGnbIntermixed},
  };
  return *codes;
}

Setter HistologySetter() {
  return [](const std::string& value, ClinicalRecord* record) -> absl::Status {
    std::string lower = absl::AsciiStrToLower(value);
    std::vector<std::string> names;
    for (const HistologyCode& code : HistologyCodes()) {
      if (lower == absl::AsciiStrToLower(code.name)) {
        record->histology = code.histology;
        record->inrg_histology = code.inrg;
        return absl::OkStatus();
      }
      names.push_back(code.name);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "'", value, "' is not one of ", absl::StrJoin(names, ", ")));
  };
}

// The code that gives back both fields (the finest one that fits).
std::string FormatHistology(const ClinicalRecord& record) {
  if (!record.histology) return "";
  for (const HistologyCode& code : HistologyCodes()) {
    if (code.histology == *record.histology &&
        code.inrg == record.inrg_histology) {
      return code.name;
    }
  }
  return HistologyName(*record.histology);
}

struct Column {
  std::string name;
  Setter setter;
};

const std::vector<Column>& Columns() {
  static const auto* columns = new std::vector<Column>{
      {"age_months", Number(&ClinicalRecord::age_months, 0, 12 * 30)},
      {"sex", Code<Sex>(&ClinicalRecord::sex,
                        {{"M", Sex::kMale}, {"F", Sex::kFemale}})},
      {"histology", HistologySetter()},
      {"differentiation",
       Code<Differentiation>(
           &ClinicalRecord::differentiation,
           {{"undifferentiated", Differentiation::kUndifferentiated},
            {"poorly_differentiated", Differentiation::kPoorlyDifferentiated},
            {"differentiating", Differentiation::kDifferentiating}})},
      {"mki",
       Code<Mki>(&ClinicalRecord::mki, {{"low", Mki::kLow},
                                        {"intermediate", Mki::kIntermediate},
                                        {"high", Mki::kHigh}})},
      {"inrg_stage",
       Code<InrgStage>(&ClinicalRecord::inrg_stage, {{"L1", InrgStage::kL1},
                                                     {"L2", InrgStage::kL2},
                                                     {"M", InrgStage::kM},
                                                     {"MS", InrgStage::kMS}})},
      {"mycn", Code<bool>(&ClinicalRecord::mycn_amplified,
                          {{"amplified", true}, {"not_amplified", false}})},
      {"chr11q", Code<bool>(&ClinicalRecord::chr11q_aberration,
                            {{"aberrant", true}, {"normal", false}})},
      {"ploidy", Code<Ploidy>(&ClinicalRecord::ploidy,
                              {{"hyperdiploid", Ploidy::kHyperdiploid},
                               {"diploid", Ploidy::kDiploid}})},
      {"ldh", Number(&ClinicalRecord::ldh, 0, 100000)},
      {"nse", Number(&ClinicalRecord::nse, 0, 100000)},
      {"ferritin", Number(&ClinicalRecord::ferritin, 0, 100000)},
      {"vma", Number(&ClinicalRecord::vma, 0, 100000)},
      {"hva", Number(&ClinicalRecord::hva, 0, 100000)},
      {"bone_marrow_metastasis",
       YesNo(&ClinicalRecord::bone_marrow_metastasis)},
      {"inrg_risk", Code<RiskGroup>(&ClinicalRecord::inrg_risk,
                                    {{"very_low", RiskGroup::kVeryLow},
                                     {"low", RiskGroup::kLow},
                                     {"intermediate", RiskGroup::kIntermediate},
                                     {"high", RiskGroup::kHigh}})},
      {"response",
       Code<Response>(&ClinicalRecord::response, {{"CR", Response::kCR},
                                                  {"PR", Response::kPR},
                                                  {"MR", Response::kMR},
                                                  {"SD", Response::kSD},
                                                  {"PD", Response::kPD}})},
      {"efs_months", Number(&ClinicalRecord::efs_months, 0, 12 * 100)},
      {"efs_event", YesNo(&ClinicalRecord::efs_event)},
      {"prior_resection_elsewhere",
       YesNo(&ClinicalRecord::prior_resection_elsewhere)},
      {"image_quality", Code<ImageQuality>(&ClinicalRecord::image_quality,
                                           {{"good", ImageQuality::kGood},
                                            {"poor", ImageQuality::kPoor}})},
  };
  return *columns;
}

template <typename T>
std::string Format(const std::optional<T>& value,
                   std::vector<std::pair<std::string, T>> codes) {
  if (!value) return "";
  for (const auto& [name, code] : codes) {
    if (code == *value) return name;
  }
  return "";
}

std::string FormatNumber(const std::optional<double>& value) {
  return value ? absl::StrCat(*value) : "";
}

std::string FormatBool(const std::optional<bool>& value, const char* yes,
                       const char* no) {
  return value ? (*value ? yes : no) : "";
}

}  // namespace

const std::vector<std::string>& ClinicalColumns() {
  static const auto* names = [] {
    auto* list = new std::vector<std::string>{"patient_id"};
    for (const Column& column : Columns()) list->push_back(column.name);
    return list;
  }();
  return *names;
}

absl::StatusOr<ClinicalTable> ParseClinicalCsv(const std::string& text,
                                               const std::string& origin) {
  std::vector<std::string> lines = CsvLines(text);
  if (lines.empty() || absl::StripAsciiWhitespace(lines[0]).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(origin, " is empty"));
  }
  std::vector<std::string> header = SplitCsvLine(lines[0]);
  int id_column = -1;
  std::vector<const Column*> setters(header.size(), nullptr);
  std::set<std::string> seen;
  for (size_t i = 0; i < header.size(); ++i) {
    std::string name = absl::AsciiStrToLower(header[i]);
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": column '", header[i], "' appears twice"));
    }
    if (name == "patient_id") {
      id_column = static_cast<int>(i);
      continue;
    }
    for (const Column& column : Columns()) {
      if (column.name == name) setters[i] = &column;
    }
    if (setters[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": unknown column '", header[i],
          "' (see site-agent/data/CLINICAL_SCHEMA.md for the column names)"));
    }
  }
  if (id_column < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": the header has no patient_id column"));
  }
  ClinicalTable table;
  std::set<std::string> duplicates;
  for (size_t n = 1; n < lines.size(); ++n) {
    int line_number = static_cast<int>(n) + 1;
    if (absl::StripAsciiWhitespace(lines[n]).empty()) continue;
    std::vector<std::string> fields = SplitCsvLine(lines[n]);
    if (fields.size() != header.size()) {
      table.errors.push_back(
          {line_number, "",
           absl::StrCat("has ", fields.size(), " fields, the header ",
                        header.size())});
      continue;
    }
    ClinicalRecord record;
    record.patient_id = fields[id_column];
    if (record.patient_id.empty()) {
      table.errors.push_back({line_number, "", "empty patient_id"});
      continue;
    }
    std::vector<std::string> problems;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (setters[i] == nullptr || IsMissing(fields[i])) continue;
      absl::Status status = setters[i]->setter(fields[i], &record);
      if (!status.ok()) {
        problems.push_back(
            absl::StrCat(setters[i]->name, ": ", status.message()));
      }
    }
    if (record.efs_event.value_or(false) && !record.efs_months) {
      problems.push_back("efs_event without efs_months");
    }
    if (!problems.empty()) {
      table.errors.push_back(
          {line_number, record.patient_id, absl::StrJoin(problems, "; ")});
      continue;
    }
    if (!table.records.emplace(record.patient_id, record).second) {
      duplicates.insert(record.patient_id);
    }
  }
  // A duplicated id is ambiguous: neither row is trusted.
  for (const std::string& id : duplicates) {
    table.records.erase(id);
    table.errors.push_back({0, id, "patient_id appears more than once"});
  }
  return table;
}

absl::StatusOr<ClinicalTable> LoadClinicalCsv(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseClinicalCsv(*text, path);
}

const char* HistologyName(Histology histology) {
  switch (histology) {
    case Histology::kNB:
      return "NB";
    case Histology::kGNB:
      return "GNB";
    case Histology::kGN:
      return "GN";
  }
  return "?";
}

const char* RiskGroupName(RiskGroup risk) {
  switch (risk) {
    case RiskGroup::kVeryLow:
      return "very_low";
    case RiskGroup::kLow:
      return "low";
    case RiskGroup::kIntermediate:
      return "intermediate";
    case RiskGroup::kHigh:
      return "high";
  }
  return "?";
}

const char* StageName(InrgStage stage) {
  switch (stage) {
    case InrgStage::kL1:
      return "L1";
    case InrgStage::kL2:
      return "L2";
    case InrgStage::kM:
      return "M";
    case InrgStage::kMS:
      return "MS";
  }
  return "?";
}

const char* ResponseName(Response response) {
  switch (response) {
    case Response::kCR:
      return "CR";
    case Response::kPR:
      return "PR";
    case Response::kMR:
      return "MR";
    case Response::kSD:
      return "SD";
    case Response::kPD:
      return "PD";
  }
  return "?";
}

std::string ClinicalCsvLine(const ClinicalRecord& r) {
  std::vector<std::string> fields = {
      CsvField(r.patient_id),
      FormatNumber(r.age_months),
      Format<Sex>(r.sex, {{"M", Sex::kMale}, {"F", Sex::kFemale}}),
      FormatHistology(r),
      Format<Differentiation>(
          r.differentiation,
          {{"undifferentiated", Differentiation::kUndifferentiated},
           {"poorly_differentiated", Differentiation::kPoorlyDifferentiated},
           {"differentiating", Differentiation::kDifferentiating}}),
      Format<Mki>(r.mki, {{"low", Mki::kLow},
                          {"intermediate", Mki::kIntermediate},
                          {"high", Mki::kHigh}}),
      r.inrg_stage ? StageName(*r.inrg_stage) : "",
      FormatBool(r.mycn_amplified, "amplified", "not_amplified"),
      FormatBool(r.chr11q_aberration, "aberrant", "normal"),
      Format<Ploidy>(r.ploidy, {{"hyperdiploid", Ploidy::kHyperdiploid},
                                {"diploid", Ploidy::kDiploid}}),
      FormatNumber(r.ldh),
      FormatNumber(r.nse),
      FormatNumber(r.ferritin),
      FormatNumber(r.vma),
      FormatNumber(r.hva),
      FormatBool(r.bone_marrow_metastasis, "yes", "no"),
      r.inrg_risk ? RiskGroupName(*r.inrg_risk) : "",
      r.response ? ResponseName(*r.response) : "",
      FormatNumber(r.efs_months),
      FormatBool(r.efs_event, "1", "0"),
      FormatBool(r.prior_resection_elsewhere, "yes", "no"),
      Format<ImageQuality>(r.image_quality, {{"good", ImageQuality::kGood},
                                             {"poor", ImageQuality::kPoor}}),
  };
  return absl::StrJoin(fields, ",");
}

}  // namespace echofed
