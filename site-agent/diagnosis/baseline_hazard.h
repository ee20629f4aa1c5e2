#ifndef ECHOFED_SITE_AGENT_DIAGNOSIS_BASELINE_HAZARD_H_
#define ECHOFED_SITE_AGENT_DIAGNOSIS_BASELINE_HAZARD_H_

// The Breslow baseline hazard that turns a Cox model's risk score into an
// event-free survival curve for one patient's report, and its file format.
// No LibTorch here. Pure functions and plain structs; thread-compatible.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace echofed {

// Breslow's estimate of the cumulative baseline hazard of a Cox model, a
// step function at the distinct event times. Risk scores are centred on
// `reference_score` (exp of large scores would overflow otherwise), so a
// patient with score r has S(t) = exp(-H0(t) * exp(r - reference_score)).
// It belongs to one model (its digest): scores of another model are on
// another scale.
struct BaselineHazard {
  std::vector<double> months;             // increasing event times
  std::vector<double> cumulative_hazard;  // H0 at each of them
  double reference_score = 0;
  // The curve is not extrapolated past the longest follow-up.
  double max_follow_up_months = 0;
  int patients = 0;
  int events = 0;
  std::string model_digest_hex;
  // How it was estimated, shown verbatim in reports.
  std::string source;
};

// One patient of the cohort a baseline is estimated from.
struct SurvivalCase {
  double risk_score = 0;
  double months = 0;
  bool event = false;
};

// Fewer events than this give no baseline (the estimate would be noise).
inline constexpr int kMinBaselineEvents = 5;

// Breslow estimate (ties: all d events at a time share one step,
// d / sum over the risk set of exp(r - reference)). FAILED_PRECONDITION
// with too few events; INVALID_ARGUMENT for negative or non-finite values.
absl::StatusOr<BaselineHazard> EstimateBreslowBaseline(
    const std::vector<SurvivalCase>& cases, const std::string& model_digest_hex,
    const std::string& source);

struct SurvivalPoint {
  double months = 0;
  double survival = 1;
};
// The patient's estimated event-free survival step function, from month 0
// to the baseline's longest follow-up.
std::vector<SurvivalPoint> SurvivalCurve(const BaselineHazard& baseline,
                                         double risk_score);
// S(months), or nullopt past the longest follow-up.
std::optional<double> SurvivalAt(const BaselineHazard& baseline,
                                 double risk_score, double months);

// A small CSV with '#' comment lines for the metadata. Readers refuse a
// file that is not one, or whose values are not increasing and finite.
std::string FormatBaselineHazard(const BaselineHazard& baseline);
absl::StatusOr<BaselineHazard> ParseBaselineHazard(const std::string& text,
                                                   const std::string& origin);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DIAGNOSIS_BASELINE_HAZARD_H_
