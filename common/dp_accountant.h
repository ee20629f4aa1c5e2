#ifndef ECHOFED_COMMON_DP_ACCOUNTANT_H_
#define ECHOFED_COMMON_DP_ACCOUNTANT_H_

// Differential privacy accounting by Rényi differential privacy (RDP;
// Mironov 2017): pure arithmetic, shared by the site (which reports what it
// spent) and the coordinator and reports (which project it for a plan).

#include <limits>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "proto/admin.pb.h"
#include "proto/plan.pb.h"

namespace echofed {

// An (epsilon, delta) guarantee and the RDP order it was read at.
struct PrivacySpent {
  double epsilon = 0;
  double delta = 0;
  double order = 0;
};

// The delta used when a plan's differential_privacy.delta is 0.
inline constexpr double kDefaultPrivacyDelta = 1e-5;

// Sums the RDP curve of the releases made so far over a fixed grid of
// orders and converts it to (epsilon, delta). Not thread-safe; cheap to
// copy.
class RdpAccountant {
 public:
  // The grid: 1.01 to 10 in steps of 0.01 (small orders matter for large
  // epsilon), 10.1 to 256 in steps of 0.1, then geometric up to 10^5 (large
  // orders matter for strong noise). Sorted, all above 1.
  static const std::vector<double>& Orders();

  RdpAccountant();

  // `count` releases of a Gaussian mechanism with L2 sensitivity
  // `sensitivity` and noise standard deviation `noise_std` per coordinate:
  // RDP alpha * sensitivity^2 / (2 noise_std^2) at order alpha each, and
  // RDP composes by addition. Both must be > 0, count >= 0.
  absl::Status AddGaussian(double sensitivity, double noise_std, int count);

  // The smallest epsilon over the grid at `delta` in (0, 1), by the
  // improved conversion of Balle et al. 2020 (Hypothesis testing
  // interpretations and Rényi DP, Theorem 21; as Opacus does):
  // eps = rdp(a) + log((a-1)/a) - (log(delta) + log(a)) / (a-1).
  absl::StatusOr<PrivacySpent> GetEpsilon(double delta) const;

  // RDP at each of Orders(), for tests.
  const std::vector<double>& rdp() const { return rdp_; }

 private:
  std::vector<double> rdp_;
};

// The site's mechanism (site-agent/privacy/differential_privacy.h): each
// release is the update clipped to L2 norm C plus N(0, (z C)^2) noise per
// coordinate. Two clipped updates differ by at most 2C (replace-one adjacency,
// at the level of the whole site), so each release is a Gaussian mechanism of
// sensitivity 2C and std zC, RDP 2 alpha / z^2, independent of C. No
// amplification by subsampling is claimed. `releases` >= 0 (0: epsilon 0).
absl::StatusOr<PrivacySpent> SiteLevelEpsilon(double noise_multiplier,
                                              int releases, double delta);

// The plan's delta (its default when 0).
double PlanPrivacyDelta(const DifferentialPrivacy& dp);

// What a training site spends over the whole run (plan.rounds() releases);
// the plan must have differential_privacy.
absl::StatusOr<PrivacySpent> ProjectedRunEpsilon(const Plan& plan);

// A site's latest privacy spent in a run, as the committed round records
// hold it (RoundRecord.privacy).
struct SitePrivacySpent {
  std::string site;
  double epsilon = 0;
  double delta = 0;
  // The round of the record it comes from.
  int round = 0;
};
// One entry per site that reported, in the order of their first report;
// only rounds up to `up_to_round` count (a report of an earlier round).
std::vector<SitePrivacySpent> LatestSitePrivacy(
    const RunStatus& status, int up_to_round = std::numeric_limits<int>::max());

}  // namespace echofed

#endif  // ECHOFED_COMMON_DP_ACCOUNTANT_H_
