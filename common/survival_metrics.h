#ifndef ECHOFED_COMMON_SURVIVAL_METRICS_H_
#define ECHOFED_COMMON_SURVIVAL_METRICS_H_

// Harrell's C-index of a survival / prognosis head from additive aggregates
// (SurvivalAggregate): patients are binned by follow-up time and risk score,
// so the pooled C is that of the pooled patients up to the binning.

#include <cstdint>

#include "absl/status/status.h"
#include "common/intervals.h"
#include "proto/metrics.pb.h"

namespace echofed {

// Time bins of 1/32 month (about 0.95 day; a binary fraction, so bins are
// computed exactly) up to 1200 months: whole-day follow-up times (days /
// 30.4375) never share a bin unless they are the same day, so binning time
// loses no pair that day-resolution data could order. Coarser bins bias C
// upward: they drop the pairs closest in time, which in our simulations
// were the least concordant (simulated cohorts with early events, times in
// days: 1/4-month bins moved C by up to 3e-3, 1/32-month bins by under
// 5e-5; continuous times: 3e-4 in the unit test). Score bins: 1000 equal
// bins of sigmoid(risk score), any real score allowed; give a log-hazard
// (linear predictor) or logit scale score so that the bins spread over the
// scores.
inline constexpr double kSurvivalTimeBinMonths = 1.0 / 32;
inline constexpr int kSurvivalTimeBins = 1200 * 32;
inline constexpr int kSurvivalScoreBins = 1000;

// The bins of one patient: time_months >= 0 and finite; later than 1200
// months goes to the last bin.
int SurvivalTimeBin(double time_months);
int SurvivalScoreBin(double risk_score);

// Gives `aggregate` the fixed binning with no cells and no patients; leaves
// split alone.
void InitSurvivalAggregate(SurvivalAggregate* aggregate);

// Adds one patient: follow-up time in months (finite, >= 0), whether it
// ended with the event, and the model's risk score (finite; higher means
// earlier events expected). An aggregate without a binning is initialised
// first. On error nothing is changed.
absl::Status AddSurvivalCase(SurvivalAggregate* aggregate, double time_months,
                             bool event, double risk_score);

// The fixed binning, cells sorted without duplicates or empty cells, counts
// in range and summing to num_patients; a suppressed report must be empty.
absl::Status ValidateSurvivalAggregate(const SurvivalAggregate& aggregate);

// Adds `add` (validated here) into `total` (same binning; splits may
// differ). A `total` without a binning takes the fixed one. On error
// nothing is changed.
absl::Status AddSurvivalAggregate(const SurvivalAggregate& add,
                                  SurvivalAggregate* total);

// Harrell's C-index: over comparable pairs, a patient with the event in an
// earlier time bin than the other's follow-up ends, the fraction in which
// the earlier one has the higher risk score, score-bin ties counting one
// half. Pairs in the same time bin are not comparable (as pairs with equal
// times are not in the exact index; an event and a censoring on the same day
// included, unlike Hmisc, which orders the event first).
struct ConcordanceIndex {
  double c_index = kNaN;  // NaN without a comparable pair
  // Standard error of Hmisc's rcorr.cens (Quade's formula for Somers' Dxy,
  // halved): the U-statistic (Noether-type) variance, with patient i's
  // component its concordant minus discordant count w_i among its r_i
  // comparable pairs, SE = sqrt(sum_i (w_i - Dxy r_i)^2) / sum_i r_i.
  // Every patient of a cell shares its components, so this too is computed
  // from the bins.
  double standard_error = kNaN;
  Interval ci;  // normal 95%, clipped to [0, 1]
  int64_t comparable_pairs = 0;
  int64_t concordant = 0;
  int64_t discordant = 0;
  int64_t tied = 0;  // comparable pairs whose scores share a bin
};

// From an aggregate: NaNs (zero counts) when it is malformed or holds more
// than 2^31 patients; validate reports first.
ConcordanceIndex CIndex(const SurvivalAggregate& aggregate);

}  // namespace echofed

#endif  // ECHOFED_COMMON_SURVIVAL_METRICS_H_
