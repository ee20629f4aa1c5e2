// Survival aggregates (binning, accumulation, pooling, validation) and
// Harrell's C-index with its standard error.

#include "common/survival_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/metrics_internal.h"

namespace echofed {

using metrics_internal::kMaxCount;
using metrics_internal::NormalInterval;
using metrics_internal::Sigmoid;

namespace {

// CIndex multiplies counts of patients; below 2^31 patients every pair count
// fits int64.
constexpr int64_t kMaxSurvivalPatients = (int64_t{1} << 31) - 1;

bool HasSurvivalBinning(const SurvivalAggregate& a) {
  return a.time_bins() == kSurvivalTimeBins &&
         a.time_bin_months() == kSurvivalTimeBinMonths &&
         a.score_bins() == kSurvivalScoreBins;
}

bool CellBefore(const SurvivalCell& x, const SurvivalCell& y) {
  return x.time_bin() != y.time_bin() ? x.time_bin() < y.time_bin()
                                      : x.score_bin() < y.score_bin();
}

// Binning, cells (in range, sorted, unique, non-empty, counts bounded) and
// their total against num_patients; not the suppression rule.
absl::Status CheckSurvivalCells(const SurvivalAggregate& a) {
  if (!HasSurvivalBinning(a)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "survival binning ", a.time_bins(), " x ", a.time_bin_months(),
        " months, ", a.score_bins(), " score bins; every site must use ",
        kSurvivalTimeBins, " x ", kSurvivalTimeBinMonths, " months, ",
        kSurvivalScoreBins, " score bins"));
  }
  int64_t total = 0;
  for (int i = 0; i < a.cells_size(); ++i) {
    const SurvivalCell& cell = a.cells(i);
    if (cell.time_bin() < 0 || cell.time_bin() >= kSurvivalTimeBins ||
        cell.score_bin() < 0 || cell.score_bin() >= kSurvivalScoreBins) {
      return absl::InvalidArgumentError("survival cell outside the binning");
    }
    if (i > 0 && !CellBefore(a.cells(i - 1), cell)) {
      return absl::InvalidArgumentError(
          "survival cells not sorted by (time bin, score bin) or repeated");
    }
    if (cell.events() < 0 || cell.censored() < 0 ||
        cell.events() + cell.censored() == 0) {
      return absl::InvalidArgumentError("survival cell with no patients");
    }
    if (cell.events() > kMaxCount || cell.censored() > kMaxCount) {
      return absl::InvalidArgumentError("count too large");
    }
    total += cell.events() + cell.censored();
    if (total > kMaxCount) return absl::InvalidArgumentError("count too large");
  }
  if (total != a.num_patients()) {
    return absl::InvalidArgumentError(
        absl::StrCat("survival cells hold ", total, " patients, num_patients ",
                     a.num_patients()));
  }
  return absl::OkStatus();
}

// Counts per score bin with prefix sums in O(log bins) (a Fenwick tree).
class ScoreCounts {
 public:
  explicit ScoreCounts(int bins) : tree_(bins + 1, 0) {}

  void Add(int bin, int64_t count) {
    total_ += count;
    for (int i = bin + 1; i < static_cast<int>(tree_.size()); i += i & -i) {
      tree_[i] += count;
    }
  }
  // Patients in bins below `bin`.
  int64_t Below(int bin) const {
    int64_t sum = 0;
    for (int i = bin; i > 0; i -= i & -i) sum += tree_[i];
    return sum;
  }
  int64_t At(int bin) const { return Below(bin + 1) - Below(bin); }
  int64_t Total() const { return total_; }

 private:
  std::vector<int64_t> tree_;
  int64_t total_ = 0;
};

// The pairs of one cell's patients with the patients of other time bins:
// r comparable pairs per patient, of which w more concordant than
// discordant. Event patients are compared with everyone followed longer and
// with the earlier events; censored ones only with the earlier events.
struct CellPairs {
  int64_t event_pairs = 0;     // r of an event patient
  int64_t event_balance = 0;   // w of an event patient
  int64_t censored_pairs = 0;  // r of a censored patient
  int64_t censored_balance = 0;
};

// [first, last) of each time bin's run of cells.
std::vector<std::pair<int, int>> TimeBinRuns(const SurvivalAggregate& a) {
  std::vector<std::pair<int, int>> runs;
  for (int i = 0; i < a.cells_size(); ++i) {
    if (i == 0 || a.cells(i).time_bin() != a.cells(i - 1).time_bin()) {
      runs.push_back({i, i});
    }
    runs.back().second = i + 1;
  }
  return runs;
}

}  // namespace

int SurvivalTimeBin(double time_months) {
  if (!(time_months >= 0)) return 0;
  if (time_months >= kSurvivalTimeBins * kSurvivalTimeBinMonths) {
    return kSurvivalTimeBins - 1;
  }
  return std::min(kSurvivalTimeBins - 1,
                  static_cast<int>(time_months / kSurvivalTimeBinMonths));
}

int SurvivalScoreBin(double risk_score) {
  if (std::isnan(risk_score)) return 0;
  return std::min(kSurvivalScoreBins - 1,
                  static_cast<int>(Sigmoid(risk_score) * kSurvivalScoreBins));
}

void InitSurvivalAggregate(SurvivalAggregate* aggregate) {
  aggregate->set_num_patients(0);
  aggregate->set_time_bins(kSurvivalTimeBins);
  aggregate->set_time_bin_months(kSurvivalTimeBinMonths);
  aggregate->set_score_bins(kSurvivalScoreBins);
  aggregate->clear_cells();
}

absl::Status AddSurvivalCase(SurvivalAggregate* aggregate, double time_months,
                             bool event, double risk_score) {
  if (!std::isfinite(time_months) || time_months < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "follow-up time ", time_months, " months is not finite and >= 0"));
  }
  if (!std::isfinite(risk_score)) {
    return absl::InvalidArgumentError(
        absl::StrCat("risk score ", risk_score, " is not finite"));
  }
  if (aggregate->time_bins() == 0 && aggregate->cells_size() == 0 &&
      aggregate->num_patients() == 0) {
    InitSurvivalAggregate(aggregate);
  }
  if (!HasSurvivalBinning(*aggregate)) {
    return absl::FailedPreconditionError(
        "survival aggregate lacks the fixed binning (InitSurvivalAggregate "
        "it)");
  }
  SurvivalCell key;
  key.set_time_bin(SurvivalTimeBin(time_months));
  key.set_score_bin(SurvivalScoreBin(risk_score));
  auto* cells = aggregate->mutable_cells();
  auto position =
      std::lower_bound(cells->begin(), cells->end(), key, CellBefore);
  int index = static_cast<int>(position - cells->begin());
  if (position == cells->end() || CellBefore(key, *position)) {
    *cells->Add() = key;
    // Into place; linear, like any insertion into a sorted array, which a
    // site's few thousand patients afford.
    for (int i = cells->size() - 1; i > index; --i) {
      cells->SwapElements(i, i - 1);
    }
  }
  SurvivalCell& cell = *cells->Mutable(index);
  if (event) {
    cell.set_events(cell.events() + 1);
  } else {
    cell.set_censored(cell.censored() + 1);
  }
  aggregate->set_num_patients(aggregate->num_patients() + 1);
  return absl::OkStatus();
}

absl::Status ValidateSurvivalAggregate(const SurvivalAggregate& aggregate) {
  if (aggregate.suppressed() &&
      (aggregate.num_patients() != 0 || aggregate.cells_size() != 0)) {
    return absl::InvalidArgumentError(
        "a suppressed survival report must not carry counts");
  }
  return CheckSurvivalCells(aggregate);
}

absl::Status AddSurvivalAggregate(const SurvivalAggregate& add,
                                  SurvivalAggregate* total) {
  if (absl::Status status = ValidateSurvivalAggregate(add); !status.ok()) {
    return status;
  }
  const bool fresh = total->time_bins() == 0 && total->cells_size() == 0 &&
                     total->num_patients() == 0;
  if (!fresh) {
    if (absl::Status status = CheckSurvivalCells(*total); !status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the total: ", status.message()));
    }
  }
  // Checked everything; from here on `total` changes.
  if (fresh) InitSurvivalAggregate(total);
  google::protobuf::RepeatedPtrField<SurvivalCell> merged;
  merged.Reserve(total->cells_size() + add.cells_size());
  int i = 0, j = 0;
  while (i < total->cells_size() || j < add.cells_size()) {
    if (j == add.cells_size() || (i < total->cells_size() &&
                                  CellBefore(total->cells(i), add.cells(j)))) {
      *merged.Add() = total->cells(i++);
    } else if (i == total->cells_size() ||
               CellBefore(add.cells(j), total->cells(i))) {
      *merged.Add() = add.cells(j++);
    } else {
      SurvivalCell* cell = merged.Add();
      *cell = total->cells(i++);
      cell->set_events(cell->events() + add.cells(j).events());
      cell->set_censored(cell->censored() + add.cells(j++).censored());
    }
  }
  total->mutable_cells()->Swap(&merged);
  total->set_num_patients(total->num_patients() + add.num_patients());
  return absl::OkStatus();
}

ConcordanceIndex CIndex(const SurvivalAggregate& a) {
  ConcordanceIndex result;
  if (!CheckSurvivalCells(a).ok() || a.num_patients() > kMaxSurvivalPatients) {
    return result;
  }
  const std::vector<std::pair<int, int>> runs = TimeBinRuns(a);
  std::vector<CellPairs> pairs(a.cells_size());
  // Latest time bins first: each event against the patients followed
  // longer, that is in later time bins.
  ScoreCounts later(kSurvivalScoreBins);
  for (auto run = runs.rbegin(); run != runs.rend(); ++run) {
    for (int i = run->first; i < run->second; ++i) {
      const SurvivalCell& cell = a.cells(i);
      const int64_t lower = later.Below(cell.score_bin());
      const int64_t tied = later.At(cell.score_bin());
      const int64_t higher = later.Total() - lower - tied;
      result.concordant += cell.events() * lower;
      result.discordant += cell.events() * higher;
      result.tied += cell.events() * tied;
      pairs[i].event_pairs = later.Total();
      pairs[i].event_balance = lower - higher;
    }
    for (int i = run->first; i < run->second; ++i) {
      later.Add(a.cells(i).score_bin(),
                a.cells(i).events() + a.cells(i).censored());
    }
  }
  // Earliest first: every patient against the events of earlier time bins,
  // concordant when the earlier event had the higher score.
  ScoreCounts earlier_events(kSurvivalScoreBins);
  for (const auto& [first, last] : runs) {
    for (int i = first; i < last; ++i) {
      const SurvivalCell& cell = a.cells(i);
      const int64_t lower = earlier_events.Below(cell.score_bin());
      const int64_t tied = earlier_events.At(cell.score_bin());
      const int64_t higher = earlier_events.Total() - lower - tied;
      pairs[i].event_pairs += earlier_events.Total();
      pairs[i].event_balance += higher - lower;
      pairs[i].censored_pairs = earlier_events.Total();
      pairs[i].censored_balance = higher - lower;
    }
    for (int i = first; i < last; ++i) {
      earlier_events.Add(a.cells(i).score_bin(), a.cells(i).events());
    }
  }
  result.comparable_pairs = result.concordant + result.discordant + result.tied;
  if (result.comparable_pairs == 0) return result;
  const double n = static_cast<double>(result.comparable_pairs);
  result.c_index = (result.concordant + 0.5 * result.tied) / n;
  // Somers' Dxy = 2C - 1, and the sum over patients of (w_i - Dxy r_i)^2.
  const double dxy = (result.concordant - result.discordant) / n;
  double sum_squares = 0;
  for (int i = 0; i < a.cells_size(); ++i) {
    const double event_residual =
        pairs[i].event_balance - dxy * pairs[i].event_pairs;
    const double censored_residual =
        pairs[i].censored_balance - dxy * pairs[i].censored_pairs;
    sum_squares +=
        a.cells(i).events() * event_residual * event_residual +
        a.cells(i).censored() * censored_residual * censored_residual;
  }
  // Each comparable pair counts once for each of its two patients.
  result.standard_error = std::sqrt(sum_squares) / (2 * n);
  result.ci = NormalInterval(result.c_index, result.standard_error);
  return result;
}

}  // namespace echofed
