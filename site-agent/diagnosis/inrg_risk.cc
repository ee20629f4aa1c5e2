#include "site-agent/diagnosis/inrg_risk.h"

#include <array>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace echofed {
namespace {

// The seven inputs of the table, in the order of ClinicalColumns(); each
// takes a small integer value (the enumerators' order in clinical.h).
enum Input {
  kAge,              // AgeBand
  kHistology,        // InrgHistology
  kDifferentiation,  // Differentiation
  kStage,            // InrgStage
  kMycn,             // 0 not amplified, 1 amplified
  kChr11q,           // 0 normal, 1 aberrant
  kPloidy,           // Ploidy
  kInputCount
};
constexpr std::array<const char*, kInputCount> kColumn = {
    "age_months", "histology", "differentiation", "inrg_stage",
    "mycn",       "chr11q",    "ploidy"};
constexpr std::array<int, kInputCount> kDomainSize = {3, 3, 3, 4, 2, 2, 2};

// The age cut points of the table: 12 months (stage M diploid only) and
// 18 months.
enum AgeBand { kUnder12, k12To18, k18AndOver };

using Values = std::array<int, kInputCount>;  // -1: missing
constexpr int kMissing = -1;

struct Step {
  Input input;
  std::string phrase;
};

// The cell a complete set of inputs falls in, with the inputs its path
// through the table depends on; no cell for a contradiction.
struct Outcome {
  char cell = '\0';
  std::vector<Step> steps;
  std::string contradiction;
};

const char* HistologyPhrase(InrgHistology histology) {
  switch (histology) {
    case InrgHistology::kGnMaturingOrGnbIntermixed:
      return "GN maturing or GNB intermixed";
    case InrgHistology::kGnbNodular:
      return "GNB nodular";
    case InrgHistology::kNeuroblastoma:
      return "NB";
  }
  return "?";
}

const char* DifferentiationPhrase(Differentiation grade) {
  switch (grade) {
    case Differentiation::kUndifferentiated:
      return "undifferentiated";
    case Differentiation::kPoorlyDifferentiated:
      return "poorly differentiated";
    case Differentiation::kDifferentiating:
      return "differentiating";
  }
  return "?";
}

const char* GroupPhrase(RiskGroup group) {
  switch (group) {
    case RiskGroup::kVeryLow:
      return "very low";
    case RiskGroup::kLow:
      return "low";
    case RiskGroup::kIntermediate:
      return "intermediate";
    case RiskGroup::kHigh:
      return "high";
  }
  return "?";
}

// Cohn 2009, Table 3, as a decision tree. Each path notes, in the table's
// column order, exactly the inputs its cell depends on.
Outcome Decide(const Values& v) {
  Outcome out;
  auto note = [&out](Input input, std::string phrase) {
    out.steps.push_back({input, std::move(phrase)});
  };
  const auto stage = static_cast<InrgStage>(v[kStage]);
  const auto age = static_cast<AgeBand>(v[kAge]);
  const auto histology = static_cast<InrgHistology>(v[kHistology]);
  const auto grade = static_cast<Differentiation>(v[kDifferentiation]);
  const bool amplified = v[kMycn] == 1;
  const bool aberrant = v[kChr11q] == 1;
  const auto ploidy = static_cast<Ploidy>(v[kPloidy]);
  const char* mycn = amplified ? "MYCN amplified" : "MYCN not amplified";
  const char* chr11q = aberrant ? "11q aberration" : "no 11q aberration";

  note(kStage, StageName(stage));
  switch (stage) {
    case InrgStage::kL1:
    case InrgStage::kL2:
      if (histology == InrgHistology::kGnMaturingOrGnbIntermixed) {
        note(kHistology, HistologyPhrase(histology));
        out.cell = 'A';
        return out;
      }
      if (stage == InrgStage::kL1 || amplified) {
        // K and B: L1 at any age; N: L2 at any age.
        note(kHistology, HistologyPhrase(histology));
        note(kMycn, mycn);
        out.cell = stage == InrgStage::kL2 ? 'N' : amplified ? 'K' : 'B';
        return out;
      }
      if (age != k18AndOver) {
        note(kAge, "age < 18 months");
        note(kHistology, HistologyPhrase(histology));
        note(kMycn, mycn);
        note(kChr11q, chr11q);
        out.cell = aberrant ? 'G' : 'D';
        return out;
      }
      note(kAge, "age >= 18 months");
      note(kHistology, HistologyPhrase(histology));
      note(kDifferentiation, DifferentiationPhrase(grade));
      note(kMycn, mycn);
      if (grade != Differentiation::kDifferentiating) {
        out.cell = 'H';
        return out;
      }
      note(kChr11q, chr11q);
      out.cell = aberrant ? 'H' : 'E';
      return out;
    case InrgStage::kM:
      if (age == k18AndOver) {
        note(kAge, "age >= 18 months");
        out.cell = 'P';
        return out;
      }
      if (amplified) {
        note(kAge, "age < 18 months");
        note(kMycn, mycn);
        out.cell = 'O';
        return out;
      }
      if (ploidy == Ploidy::kHyperdiploid) {
        note(kAge, "age < 18 months");
        note(kMycn, mycn);
        note(kPloidy, "hyperdiploid");
        out.cell = 'F';
        return out;
      }
      note(kAge, age == kUnder12 ? "age < 12 months" : "age 12 to < 18 months");
      note(kMycn, mycn);
      note(kPloidy, "diploid");
      out.cell = age == kUnder12 ? 'I' : 'J';
      return out;
    case InrgStage::kMS:
      if (age == k18AndOver) {
        note(kAge, "age >= 18 months");
        out.contradiction =
            "stage MS is defined only for age < 18 months (INRG staging "
            "system); check inrg_stage and age_months";
        return out;
      }
      note(kAge, "age < 18 months");
      note(kMycn, mycn);
      if (amplified) {
        out.cell = 'R';
        return out;
      }
      note(kChr11q, chr11q);
      out.cell = aberrant ? 'Q' : 'C';
      return out;
  }
  out.contradiction = "unknown stage";
  return out;
}

Values KnownValues(const ClinicalRecord& r) {
  Values v;
  v.fill(kMissing);
  if (r.age_months) {
    v[kAge] = *r.age_months < 12   ? kUnder12
              : *r.age_months < 18 ? k12To18
                                   : k18AndOver;
  }
  if (std::optional<InrgHistology> h = InrgHistologyOf(r)) {
    v[kHistology] = static_cast<int>(*h);
  }
  if (r.differentiation) {
    v[kDifferentiation] = static_cast<int>(*r.differentiation);
  }
  if (r.inrg_stage) v[kStage] = static_cast<int>(*r.inrg_stage);
  if (r.mycn_amplified) v[kMycn] = *r.mycn_amplified ? 1 : 0;
  if (r.chr11q_aberration) v[kChr11q] = *r.chr11q_aberration ? 1 : 0;
  if (r.ploidy) v[kPloidy] = static_cast<int>(*r.ploidy);
  return v;
}

int Index(const Values& v) {
  int index = 0;
  for (int i = 0; i < kInputCount; ++i) index = index * kDomainSize[i] + v[i];
  return index;
}

constexpr int kCombinations = 3 * 3 * 3 * 4 * 2 * 2 * 2;

// Every completion of the missing inputs, by Index(); empty slots are not
// completions of this record.
using Completions = std::vector<std::optional<Outcome>>;

void Complete(Values v, int input, Completions* out) {
  if (input == kInputCount) {
    (*out)[Index(v)] = Decide(v);
    return;
  }
  if (v[input] != kMissing) {
    Complete(v, input + 1, out);
    return;
  }
  for (int value = 0; value < kDomainSize[input]; ++value) {
    v[input] = value;
    Complete(v, input + 1, out);
  }
}

Values ValuesOf(int index) {
  Values v;
  for (int i = kInputCount - 1; i >= 0; --i) {
    v[i] = index % kDomainSize[i];
    index /= kDomainSize[i];
  }
  return v;
}

std::string CellPhrase(char cell) {
  std::optional<RiskGroup> group = InrgCellRiskGroup(cell);
  return absl::StrCat(std::string(1, cell), " ",
                      group ? GroupPhrase(*group) : "?");
}

}  // namespace

std::optional<InrgHistology> InrgHistologyOf(const ClinicalRecord& record) {
  if (record.inrg_histology) return record.inrg_histology;
  if (!record.histology) return std::nullopt;
  switch (*record.histology) {
    case Histology::kNB:
      return InrgHistology::kNeuroblastoma;
    case Histology::kGN:
      return InrgHistology::kGnMaturingOrGnbIntermixed;
    case Histology::kGNB:
      return std::nullopt;  // intermixed or nodular: not known
  }
  return std::nullopt;
}

std::optional<RiskGroup> InrgCellRiskGroup(char cell_letter) {
  switch (cell_letter) {
    case 'A':
    case 'B':
    case 'C':
      return RiskGroup::kVeryLow;
    case 'D':
    case 'E':
    case 'F':
      return RiskGroup::kLow;
    case 'G':
    case 'H':
    case 'I':
    case 'J':
      return RiskGroup::kIntermediate;
    case 'K':
    case 'N':
    case 'O':
    case 'P':
    case 'Q':
    case 'R':
      return RiskGroup::kHigh;
    default:
      return std::nullopt;
  }
}

// The known inputs are completed in every possible way; the record is
// classifiable when every completion that does not contradict the staging
// lands in the same cell. A missing input is reported when changing it
// alone moves some completion to another cell.
InrgClassification ClassifyInrgRisk(const ClinicalRecord& record) {
  const Values known = KnownValues(record);
  Completions completions(kCombinations);
  Complete(known, 0, &completions);

  std::set<char> cells;
  std::string contradiction;
  for (const std::optional<Outcome>& outcome : completions) {
    if (!outcome) continue;
    if (outcome->cell == '\0') {
      contradiction = outcome->contradiction;
    } else {
      cells.insert(outcome->cell);
    }
  }

  InrgClassification result;
  if (cells.empty()) {
    result.rule = absl::StrCat("not classifiable: ", contradiction);
    return result;
  }

  if (cells.size() == 1) {
    // Show the path that leans least on missing inputs.
    const Outcome* best = nullptr;
    int best_missing = 0;
    for (const std::optional<Outcome>& outcome : completions) {
      if (!outcome || outcome->cell == '\0') continue;
      int missing = 0;
      for (const Step& step : outcome->steps) {
        if (known[step.input] == kMissing) ++missing;
      }
      if (best == nullptr || missing < best_missing ||
          (missing == best_missing &&
           outcome->steps.size() > best->steps.size())) {
        best = &*outcome;
        best_missing = missing;
      }
    }
    std::vector<std::string> phrases;
    for (const Step& step : best->steps) {
      phrases.push_back(known[step.input] == kMissing
                            ? absl::StrCat(kColumn[step.input], " missing")
                            : step.phrase);
    }
    result.classifiable = true;
    result.cell_letter = best->cell;
    result.group = *InrgCellRiskGroup(best->cell);
    result.rule = absl::StrCat(absl::StrJoin(phrases, ", "), " -> ",
                               CellPhrase(best->cell));
    if (best_missing > 0) {
      absl::StrAppend(&result.rule,
                      " (the missing inputs do not change the cell)");
    }
    return result;
  }

  std::array<bool, kInputCount> decides{};
  for (int index = 0; index < kCombinations; ++index) {
    const std::optional<Outcome>& outcome = completions[index];
    if (!outcome || outcome->cell == '\0') continue;
    for (int input = 0; input < kInputCount; ++input) {
      if (known[input] != kMissing || decides[input]) continue;
      Values other = ValuesOf(index);
      for (int value = 0; value < kDomainSize[input]; ++value) {
        other[input] = value;
        const std::optional<Outcome>& neighbour = completions[Index(other)];
        if (neighbour && neighbour->cell != '\0' &&
            neighbour->cell != outcome->cell) {
          decides[input] = true;
        }
      }
    }
  }
  for (int input = 0; input < kInputCount; ++input) {
    if (decides[input]) result.missing_inputs.push_back(kColumn[input]);
  }
  if (result.missing_inputs.empty()) {
    // Not reachable for this table (no two cells are separated only by a
    // contradiction), but never answer "not classifiable" without a reason.
    for (int input = 0; input < kInputCount; ++input) {
      if (known[input] == kMissing) {
        result.missing_inputs.push_back(kColumn[input]);
      }
    }
  }
  std::vector<std::string> possible;
  for (char cell : cells) possible.push_back(CellPhrase(cell));
  result.rule = absl::StrCat(
      "not classifiable: missing ", absl::StrJoin(result.missing_inputs, ", "),
      " (possible cells: ", absl::StrJoin(possible, ", "), ")");
  return result;
}

}  // namespace echofed
