#include "site-agent/diagnosis/baseline_hazard.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "site-agent/data/csv.h"

namespace echofed {
namespace {

bool IsHexDigest(absl::string_view text) {
  return text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
           return absl::ascii_isdigit(c) || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

absl::StatusOr<BaselineHazard> EstimateBreslowBaseline(
    const std::vector<SurvivalCase>& cases, const std::string& model_digest_hex,
    const std::string& source) {
  int events = 0;
  double score_sum = 0;
  for (const SurvivalCase& c : cases) {
    if (!std::isfinite(c.risk_score) || !std::isfinite(c.months) ||
        c.months < 0) {
      return absl::InvalidArgumentError(
          "baseline hazard: risk scores and follow-up times must be finite "
          "and follow-up not negative");
    }
    events += c.event ? 1 : 0;
    score_sum += c.risk_score;
  }
  if (events < kMinBaselineEvents) {
    return absl::FailedPreconditionError(absl::StrCat(
        "baseline hazard: ", events, " events among ", cases.size(),
        " patients with known event-free survival; at least ",
        kMinBaselineEvents, " are needed"));
  }
  BaselineHazard baseline;
  baseline.reference_score = score_sum / static_cast<double>(cases.size());
  baseline.patients = static_cast<int>(cases.size());
  baseline.events = events;
  baseline.model_digest_hex = model_digest_hex;
  baseline.source = source;
  std::vector<SurvivalCase> sorted = cases;
  std::sort(sorted.begin(), sorted.end(),
            [](const SurvivalCase& a, const SurvivalCase& b) {
              return a.months < b.months;
            });
  // at_risk[i]: sum of exp(r - reference) over cases i.. (follow-up at
  // least sorted[i].months).
  std::vector<double> at_risk(sorted.size() + 1, 0.0);
  for (size_t i = sorted.size(); i-- > 0;) {
    at_risk[i] = at_risk[i + 1] +
                 std::exp(sorted[i].risk_score - baseline.reference_score);
  }
  double hazard = 0;
  for (size_t i = 0; i < sorted.size();) {
    size_t end = i;
    int deaths = 0;
    while (end < sorted.size() && sorted[end].months == sorted[i].months) {
      deaths += sorted[end].event ? 1 : 0;
      ++end;
    }
    if (deaths > 0) {
      hazard += deaths / at_risk[i];
      baseline.months.push_back(sorted[i].months);
      baseline.cumulative_hazard.push_back(hazard);
    }
    i = end;
  }
  baseline.max_follow_up_months = sorted.back().months;
  return baseline;
}

std::vector<SurvivalPoint> SurvivalCurve(const BaselineHazard& baseline,
                                         double risk_score) {
  const double scale = std::exp(risk_score - baseline.reference_score);
  std::vector<SurvivalPoint> curve = {{0, 1}};
  for (size_t i = 0; i < baseline.months.size(); ++i) {
    curve.push_back(
        {baseline.months[i], std::exp(-baseline.cumulative_hazard[i] * scale)});
  }
  if (baseline.max_follow_up_months > curve.back().months) {
    curve.push_back({baseline.max_follow_up_months, curve.back().survival});
  }
  return curve;
}

std::optional<double> SurvivalAt(const BaselineHazard& baseline,
                                 double risk_score, double months) {
  if (months > baseline.max_follow_up_months || months < 0) {
    return std::nullopt;
  }
  auto after =
      std::upper_bound(baseline.months.begin(), baseline.months.end(), months);
  if (after == baseline.months.begin()) return 1.0;
  double hazard =
      baseline.cumulative_hazard[after - baseline.months.begin() - 1];
  return std::exp(-hazard * std::exp(risk_score - baseline.reference_score));
}

namespace {
constexpr char kBaselineMagic[] = "# echofed baseline hazard v1";
}  // namespace

std::string FormatBaselineHazard(const BaselineHazard& baseline) {
  std::string text = absl::StrCat(kBaselineMagic, "\n");
  absl::StrAppend(&text, "# source: ",
                  absl::StrReplaceAll(baseline.source, {{"\n", " "}}), "\n");
  absl::StrAppend(&text, "# model_digest: ", baseline.model_digest_hex, "\n");
  absl::StrAppendFormat(&text, "# reference_score: %.17g\n",
                        baseline.reference_score);
  absl::StrAppendFormat(&text, "# max_follow_up_months: %.17g\n",
                        baseline.max_follow_up_months);
  absl::StrAppend(&text, "# patients: ", baseline.patients, "\n");
  absl::StrAppend(&text, "# events: ", baseline.events, "\n");
  text += "months,cumulative_hazard\n";
  for (size_t i = 0; i < baseline.months.size(); ++i) {
    absl::StrAppendFormat(&text, "%.17g,%.17g\n", baseline.months[i],
                          baseline.cumulative_hazard[i]);
  }
  return text;
}

absl::StatusOr<BaselineHazard> ParseBaselineHazard(const std::string& text,
                                                   const std::string& origin) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": not a baseline hazard file: ", why));
  };
  std::vector<std::string> lines = CsvLines(text);
  if (lines.empty() || absl::StripAsciiWhitespace(lines[0]) != kBaselineMagic) {
    return bad(absl::StrCat("the first line must be '", kBaselineMagic, "'"));
  }
  BaselineHazard baseline;
  bool header_seen = false;
  bool has_reference = false, has_follow_up = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = absl::StripAsciiWhitespace(lines[i]);
    if (line.empty()) continue;
    if (absl::ConsumePrefix(&line, "#")) {
      std::pair<std::string, std::string> kv =
          absl::StrSplit(line, absl::MaxSplits(':', 1));
      std::string key(absl::StripAsciiWhitespace(kv.first));
      std::string value(absl::StripAsciiWhitespace(kv.second));
      if (key == "source") {
        baseline.source = value;
      } else if (key == "model_digest") {
        baseline.model_digest_hex = absl::AsciiStrToLower(value);
      } else if (key == "reference_score") {
        has_reference = absl::SimpleAtod(value, &baseline.reference_score);
      } else if (key == "max_follow_up_months") {
        has_follow_up = absl::SimpleAtod(value, &baseline.max_follow_up_months);
      } else if (key == "patients") {
        (void)absl::SimpleAtoi(value, &baseline.patients);
      } else if (key == "events") {
        (void)absl::SimpleAtoi(value, &baseline.events);
      }
      continue;
    }
    if (!header_seen) {
      if (line != "months,cumulative_hazard") {
        return bad("missing the header 'months,cumulative_hazard'");
      }
      header_seen = true;
      continue;
    }
    std::vector<std::string> fields = SplitCsvLine(std::string(line));
    double months = 0, hazard = 0;
    if (fields.size() != 2 || !absl::SimpleAtod(fields[0], &months) ||
        !absl::SimpleAtod(fields[1], &hazard) || !std::isfinite(months) ||
        !std::isfinite(hazard) || months < 0 || hazard < 0) {
      return bad(absl::StrCat("line ", i + 1, " is not two finite values"));
    }
    if (!baseline.months.empty() &&
        (months <= baseline.months.back() ||
         hazard < baseline.cumulative_hazard.back())) {
      return bad(absl::StrCat("line ", i + 1,
                              ": times must increase and the hazard may "
                              "not decrease"));
    }
    baseline.months.push_back(months);
    baseline.cumulative_hazard.push_back(hazard);
  }
  if (!IsHexDigest(baseline.model_digest_hex)) {
    return bad("'# model_digest:' must be 64 hex digits");
  }
  if (!has_reference || !has_follow_up ||
      !std::isfinite(baseline.reference_score)) {
    return bad("'# reference_score:' and '# max_follow_up_months:' are needed");
  }
  if (baseline.months.empty()) return bad("no event times");
  if (baseline.max_follow_up_months < baseline.months.back()) {
    return bad("max_follow_up_months is before the last event time");
  }
  return baseline;
}

}  // namespace echofed
