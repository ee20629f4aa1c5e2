#include "common/dp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace echofed {

const std::vector<double>& RdpAccountant::Orders() {
  static const std::vector<double>* const orders = [] {
    auto* grid = new std::vector<double>;
    // Integer step counts, so the grid points are exact and do not drift.
    for (int i = 101; i <= 1000; ++i) grid->push_back(i / 100.0);
    for (int i = 101; i <= 2560; ++i) grid->push_back(i / 10.0);
    for (double order = 256 * 1.02; order <= 1e5; order *= 1.02) {
      grid->push_back(order);
    }
    return grid;
  }();
  return *orders;
}

RdpAccountant::RdpAccountant() : rdp_(Orders().size(), 0.0) {}

absl::Status RdpAccountant::AddGaussian(double sensitivity, double noise_std,
                                        int count) {
  if (!(sensitivity > 0) || !std::isfinite(sensitivity)) {
    return absl::InvalidArgumentError("sensitivity must be a positive number");
  }
  if (!(noise_std > 0) || !std::isfinite(noise_std)) {
    return absl::InvalidArgumentError("noise_std must be a positive number");
  }
  if (count < 0) {
    return absl::InvalidArgumentError("count must not be negative");
  }
  const double per_order =
      count * sensitivity * sensitivity / (2 * noise_std * noise_std);
  const std::vector<double>& orders = Orders();
  for (size_t i = 0; i < orders.size(); ++i) rdp_[i] += orders[i] * per_order;
  return absl::OkStatus();
}

absl::StatusOr<PrivacySpent> RdpAccountant::GetEpsilon(double delta) const {
  if (!(delta > 0 && delta < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("delta must be in (0, 1), not ", delta));
  }
  const std::vector<double>& orders = Orders();
  PrivacySpent best;
  best.delta = delta;
  best.epsilon = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < orders.size(); ++i) {
    const double a = orders[i];
    const double epsilon = rdp_[i] + std::log((a - 1) / a) -
                           (std::log(delta) + std::log(a)) / (a - 1);
    if (epsilon < best.epsilon) {
      best.epsilon = epsilon;
      best.order = a;
    }
  }
  // The conversion can dip below 0 for tiny RDP and large delta; epsilon 0
  // is the floor of every guarantee.
  if (best.epsilon < 0) best.epsilon = 0;
  return best;
}

absl::StatusOr<PrivacySpent> SiteLevelEpsilon(double noise_multiplier,
                                              int releases, double delta) {
  if (releases == 0 && delta > 0 && delta < 1) {
    // Nothing released: no privacy spent, whatever the conversion says.
    return PrivacySpent{0, delta, 0};
  }
  RdpAccountant accountant;
  // C cancels: sensitivity 2C over std zC is 2 / z.
  if (absl::Status status = accountant.AddGaussian(/*sensitivity=*/2.0,
                                                   noise_multiplier, releases);
      !status.ok()) {
    return status;
  }
  return accountant.GetEpsilon(delta);
}

double PlanPrivacyDelta(const DifferentialPrivacy& dp) {
  return dp.delta() == 0 ? kDefaultPrivacyDelta : dp.delta();
}

absl::StatusOr<PrivacySpent> ProjectedRunEpsilon(const Plan& plan) {
  if (!plan.has_differential_privacy()) {
    return absl::FailedPreconditionError(
        "the plan has no differential_privacy");
  }
  return SiteLevelEpsilon(plan.differential_privacy().noise_multiplier(),
                          plan.rounds(),
                          PlanPrivacyDelta(plan.differential_privacy()));
}

std::vector<SitePrivacySpent> LatestSitePrivacy(const RunStatus& status,
                                                int up_to_round) {
  std::vector<SitePrivacySpent> latest;
  for (const RoundRecord& record : status.rounds()) {
    if (record.round() > up_to_round) continue;
    for (const SitePrivacy& privacy : record.privacy()) {
      auto it = std::find_if(latest.begin(), latest.end(),
                             [&](const SitePrivacySpent& entry) {
                               return entry.site == privacy.site();
                             });
      if (it == latest.end()) {
        latest.push_back({privacy.site(), 0, 0, 0});
        it = latest.end() - 1;
      }
      // Cumulative, so the newest round's figure is the site's total.
      if (record.round() >= it->round) {
        it->epsilon = privacy.epsilon();
        it->delta = privacy.delta();
        it->round = record.round();
      }
    }
  }
  return latest;
}

}  // namespace echofed
