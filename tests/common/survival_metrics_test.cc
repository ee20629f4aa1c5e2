// Survival aggregates and Harrell's C-index (common/survival_metrics.h).

#include "common/survival_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/intervals.h"
#include "gtest/gtest.h"
#include "proto/metrics.pb.h"

namespace echofed {
namespace {

struct Patient {
  double time_months;
  bool event;
  double risk;
};

struct ExactConcordance {
  int64_t comparable = 0, concordant = 0, discordant = 0, tied = 0;
  double c_index = NAN, standard_error = NAN;
};

// Harrell's C on every pair, O(n^2): comparable when one has the event
// strictly before the other's time; the standard error is Hmisc's
// rcorr.cens (Quade) formula, from each patient's concordant-minus-
// discordant count w_i among its r_i comparable pairs.
ExactConcordance ExactCIndex(const std::vector<Patient>& patients) {
  const size_t n = patients.size();
  std::vector<double> w(n, 0), r(n, 0);
  ExactConcordance result;
  for (size_t i = 0; i < n; ++i) {
    if (!patients[i].event) continue;
    for (size_t j = 0; j < n; ++j) {
      if (!(patients[j].time_months > patients[i].time_months)) continue;
      ++result.comparable;
      ++r[i];
      ++r[j];
      int sign = patients[i].risk > patients[j].risk   ? 1
                 : patients[i].risk < patients[j].risk ? -1
                                                       : 0;
      (sign > 0   ? result.concordant
       : sign < 0 ? result.discordant
                  : result.tied)++;
      w[i] += sign;
      w[j] += sign;
    }
  }
  if (result.comparable == 0) return result;
  const double pairs = static_cast<double>(result.comparable);
  result.c_index = (result.concordant + 0.5 * result.tied) / pairs;
  const double dxy = (result.concordant - result.discordant) / pairs;
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += (w[i] - dxy * r[i]) * (w[i] - dxy * r[i]);
  result.standard_error = std::sqrt(sum) / (2 * pairs);
  return result;
}

// The patients as the aggregate sees them: time and score replaced by bins.
std::vector<Patient> Binned(const std::vector<Patient>& patients) {
  std::vector<Patient> binned;
  for (const Patient& p : patients) {
    binned.push_back({static_cast<double>(SurvivalTimeBin(p.time_months)),
                      p.event, static_cast<double>(SurvivalScoreBin(p.risk))});
  }
  return binned;
}

SurvivalAggregate FromPatients(const std::vector<Patient>& patients) {
  SurvivalAggregate a;
  for (const Patient& p : patients) {
    absl::Status status = AddSurvivalCase(&a, p.time_months, p.event, p.risk);
    EXPECT_TRUE(status.ok()) << status;
  }
  return a;
}

TEST(CIndexTest, BinningSeparatesDays) {
  EXPECT_EQ(SurvivalTimeBin(0), 0);
  EXPECT_EQ(SurvivalTimeBin(1.0 / 32), 1);
  EXPECT_EQ(SurvivalTimeBin(12), 12 * 32);
  EXPECT_EQ(SurvivalTimeBin(1199.99), kSurvivalTimeBins - 1);
  EXPECT_EQ(SurvivalTimeBin(1200), kSurvivalTimeBins - 1);
  EXPECT_EQ(SurvivalTimeBin(1e12), kSurvivalTimeBins - 1);
  // Whole days (days / 30.4375 months) never share a bin.
  for (int day = 1; day <= 36524; ++day) {
    ASSERT_LT(SurvivalTimeBin((day - 1) / 30.4375),
              SurvivalTimeBin(day / 30.4375))
        << day;
  }
  EXPECT_EQ(SurvivalScoreBin(0), 500);
  EXPECT_EQ(SurvivalScoreBin(-800), 0);
  EXPECT_EQ(SurvivalScoreBin(800), kSurvivalScoreBins - 1);
  EXPECT_LT(SurvivalScoreBin(-0.1), SurvivalScoreBin(0.1));
}

TEST(CIndexTest, HandComputedPairs) {
  // Comparable pairs (earlier event first): 1-2, 1-3, 1-4, 1-5 concordant;
  // 2-3 discordant (1.0 < 1.5), 2-4, 2-5 concordant; 4-5 tied. 3 and 5 are
  // censored; the patient at 1 month + 6 hours shares 1's time bin, so that
  // pair is not comparable (nor in the exact index, were both times equal).
  std::vector<Patient> patients = {
      {1, true, 2.0}, {2, true, 1.0},  {3, false, 1.5},
      {4, true, 0.0}, {5, false, 0.0}, {1.0 + 0.25 / 30.4375, false, 9.0}};
  ConcordanceIndex c = CIndex(FromPatients(patients));
  EXPECT_EQ(c.comparable_pairs, 8);
  EXPECT_EQ(c.concordant, 6);
  EXPECT_EQ(c.discordant, 1);
  EXPECT_EQ(c.tied, 1);
  EXPECT_DOUBLE_EQ(c.c_index, 6.5 / 8);
  ExactConcordance exact = ExactCIndex(Binned(patients));
  EXPECT_NEAR(c.standard_error, exact.standard_error, 1e-15);
  // Hmisc's cidxcn (rcorr.cens), ported line by line to Python, on patients
  // 1-5 (the sixth is in no comparable pair): C 0.8125, SD(Dxy) / 2.
  EXPECT_NEAR(c.standard_error, 0.12645635981436443, 1e-15);
  EXPECT_GT(c.standard_error, 0);
  EXPECT_NEAR(c.ci.lower,
              std::max(0.0, c.c_index - kZ95 * exact.standard_error), 1e-15);
  EXPECT_LE(c.ci.upper, 1);

  // No comparable pair: events on the same day, or only censoring.
  EXPECT_TRUE(
      std::isnan(CIndex(FromPatients({{3, true, 1}, {3, true, 2}})).c_index));
  EXPECT_TRUE(
      std::isnan(CIndex(FromPatients({{3, false, 1}, {5, false, 2}})).c_index));
  EXPECT_TRUE(std::isnan(CIndex(SurvivalAggregate()).c_index));
}

// A hospital's cohort: risk x, hazard exp(beta x) / scale with Weibull
// shape, uniform censoring over `follow_up` months, times in whole days; the
// model's score is beta x plus noise.
std::vector<Patient> SimulatedSite(std::mt19937_64& random, int n, double beta,
                                   double scale, double shape, double follow_up,
                                   double noise_sd, bool whole_days) {
  std::normal_distribution<double> normal(0, 1);
  std::exponential_distribution<double> exponential(1);
  std::uniform_real_distribution<double> censoring(0, follow_up);
  std::vector<Patient> patients;
  for (int i = 0; i < n; ++i) {
    double x = normal(random);
    double hazard = std::exp(beta * x) / scale;
    double event_time = std::pow(exponential(random) / hazard, 1 / shape);
    double censor_time = censoring(random);
    double time = std::min(event_time, censor_time);
    if (whole_days) time = std::round(time * 30.4375) / 30.4375;
    patients.push_back({time, event_time <= censor_time,
                        beta * x + noise_sd * normal(random)});
  }
  return patients;
}

TEST(CIndexTest, PooledAggregateMatchesExactCIndexOfPooledPatients) {
  for (bool whole_days : {true, false}) {
    SCOPED_TRACE(whole_days ? "times in whole days" : "continuous times");
    std::mt19937_64 random(whole_days ? 20261127 : 42);
    // A high-risk cohort with early events, a mixed one with long
    // follow-up, and a small strongly separated one.
    std::vector<std::vector<Patient>> sites = {
        SimulatedSite(random, 150, 1.0, 18, 1.0, 120, 0.5, whole_days),
        SimulatedSite(random, 250, 1.5, 60, 0.7, 240, 0.5, whole_days),
        SimulatedSite(random, 90, 2.0, 30, 1.0, 600, 0.2, whole_days)};
    std::vector<Patient> all;
    SurvivalAggregate pooled, reversed;
    for (const std::vector<Patient>& site : sites) {
      all.insert(all.end(), site.begin(), site.end());
      SurvivalAggregate local = FromPatients(site);
      ASSERT_TRUE(ValidateSurvivalAggregate(local).ok());
      ASSERT_TRUE(AddSurvivalAggregate(local, &pooled).ok());
    }
    for (int s = 2; s >= 0; --s) {
      ASSERT_TRUE(AddSurvivalAggregate(FromPatients(sites[s]), &reversed).ok());
    }
    ASSERT_TRUE(ValidateSurvivalAggregate(pooled).ok());
    EXPECT_EQ(pooled.num_patients(), 490);
    // Pooled = aggregate of the concatenated patients, in any order.
    SurvivalAggregate concatenated = FromPatients(all);
    EXPECT_EQ(pooled.SerializeAsString(), concatenated.SerializeAsString());
    EXPECT_EQ(reversed.SerializeAsString(), concatenated.SerializeAsString());

    ConcordanceIndex c = CIndex(pooled);
    // Exactly the pair counts of the binned patients.
    ExactConcordance binned = ExactCIndex(Binned(all));
    EXPECT_EQ(c.comparable_pairs, binned.comparable);
    EXPECT_EQ(c.concordant, binned.concordant);
    EXPECT_EQ(c.discordant, binned.discordant);
    EXPECT_EQ(c.tied, binned.tied);
    EXPECT_NEAR(c.standard_error, binned.standard_error, 1e-12);
    // And within 1e-3 of the exact index of the raw patients.
    ExactConcordance exact = ExactCIndex(all);
    EXPECT_GT(exact.comparable, 40000);
    EXPECT_NEAR(c.c_index, exact.c_index, 1e-3);
    EXPECT_NEAR(c.standard_error, exact.standard_error,
                0.01 * exact.standard_error);
    EXPECT_GT(c.c_index, 0.6);
    EXPECT_LT(c.ci.lower, c.c_index);
    EXPECT_GT(c.ci.upper, c.c_index);
    std::cout << "C-index: aggregate " << c.c_index << ", exact "
              << exact.c_index << " (diff " << c.c_index - exact.c_index
              << "), SE aggregate " << c.standard_error << ", exact "
              << exact.standard_error << "\n";
  }
}

TEST(CIndexTest, InvalidInputsAndReportsAreRefused) {
  SurvivalAggregate a;
  EXPECT_FALSE(AddSurvivalCase(&a, -0.1, true, 0).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, NAN, true, 0).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, INFINITY, false, 0).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, 10, true, NAN).ok());
  EXPECT_FALSE(AddSurvivalCase(&a, 10, true, -INFINITY).ok());
  EXPECT_EQ(a.num_patients(), 0);
  EXPECT_EQ(a.cells_size(), 0);
  ASSERT_TRUE(AddSurvivalCase(&a, 10, true, 0.3).ok());
  ASSERT_TRUE(AddSurvivalCase(&a, 10, false, 0.3).ok());
  ASSERT_TRUE(AddSurvivalCase(&a, 2, false, -1).ok());
  EXPECT_EQ(a.time_bins(), kSurvivalTimeBins);
  EXPECT_EQ(a.cells_size(), 2);
  EXPECT_EQ(a.cells(0).time_bin(), 64);
  EXPECT_EQ(a.cells(1).events(), 1);
  EXPECT_EQ(a.cells(1).censored(), 1);
  ASSERT_TRUE(ValidateSurvivalAggregate(a).ok());

  auto refused = [&](auto change) {
    SurvivalAggregate b = a;
    change(b);
    SurvivalAggregate total = a;
    const std::string before = total.SerializeAsString();
    bool refused = !ValidateSurvivalAggregate(b).ok() &&
                   !AddSurvivalAggregate(b, &total).ok();
    return refused && total.SerializeAsString() == before;
  };
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_time_bins(1200); }));
  EXPECT_TRUE(
      refused([](SurvivalAggregate& b) { b.set_time_bin_months(0.25); }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_score_bins(100); }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_num_patients(4); }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells()->SwapElements(0, 1);  // unsorted
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    *b.add_cells() = b.cells(1);  // repeated
    b.set_num_patients(5);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells(0)->set_censored(0);  // empty cell
    b.set_num_patients(2);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells(0)->set_censored(-1);
    b.mutable_cells(1)->set_events(3);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) {
    b.mutable_cells(1)->set_time_bin(kSurvivalTimeBins);
  }));
  EXPECT_TRUE(refused([](SurvivalAggregate& b) { b.set_suppressed(true); }));
  // A malformed report gives no C, not a crash.
  SurvivalAggregate malformed = a;
  malformed.mutable_cells()->SwapElements(0, 1);
  EXPECT_TRUE(std::isnan(CIndex(malformed).c_index));

  // A suppressed report is empty and adds nothing.
  SurvivalAggregate suppressed;
  InitSurvivalAggregate(&suppressed);
  suppressed.set_suppressed(true);
  ASSERT_TRUE(ValidateSurvivalAggregate(suppressed).ok());
  SurvivalAggregate total = a;
  ASSERT_TRUE(AddSurvivalAggregate(suppressed, &total).ok());
  EXPECT_EQ(total.SerializeAsString(), a.SerializeAsString());
  // An empty total takes the binning; a total with another binning refuses.
  SurvivalAggregate fresh;
  ASSERT_TRUE(AddSurvivalAggregate(a, &fresh).ok());
  EXPECT_EQ(fresh.SerializeAsString(), a.SerializeAsString());
  SurvivalAggregate other = a;
  other.set_time_bins(10);
  EXPECT_FALSE(AddSurvivalAggregate(a, &other).ok());
  EXPECT_EQ(other.num_patients(), 3);
  SurvivalAggregate wrong;
  wrong.set_time_bins(5);
  EXPECT_EQ(AddSurvivalCase(&wrong, 1, true, 0).code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace echofed
