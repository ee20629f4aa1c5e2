#include "common/dp_accountant.h"

#include <cmath>
#include <ostream>

#include "gtest/gtest.h"

namespace echofed {
namespace {

double Phi(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

// The exact privacy curve of the Gaussian mechanism (Balle & Wang 2018,
// analytic Gaussian mechanism, Theorem 8): sensitivity D, std s,
// delta(eps) = Phi(D/(2s) - eps s/D) - e^eps Phi(-D/(2s) - eps s/D).
// k compositions of it are one Gaussian mechanism with std s / sqrt(k).
double ExactDelta(double epsilon, double sensitivity, double noise_std) {
  const double a = sensitivity / (2 * noise_std);
  const double b = epsilon * noise_std / sensitivity;
  return Phi(a - b) - std::exp(epsilon) * Phi(-a - b);
}

// The smallest epsilon with ExactDelta <= delta (delta(eps) decreases).
double ExactEpsilon(double sensitivity, double noise_std, int k, double delta) {
  const double std_k = noise_std / std::sqrt(static_cast<double>(k));
  double low = 0, high = 1000;
  for (int i = 0; i < 200; ++i) {
    const double mid = (low + high) / 2;
    (ExactDelta(mid, sensitivity, std_k) > delta ? low : high) = mid;
  }
  return high;
}

struct Case {
  double noise_multiplier;
  int releases;
  double delta;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "z " << c.noise_multiplier << ", " << c.releases << " releases, delta "
      << c.delta;
}

class SiteLevelEpsilonTest : public testing::TestWithParam<Case> {};

// The accountant is an upper bound of the exact epsilon of the site's
// mechanism (sensitivity 2C, std zC, composed over the releases), and a
// tight one: a wrong RDP formula (sensitivity C, say, or a missing factor
// of the composition) falls out of this band.
TEST_P(SiteLevelEpsilonTest, BoundsTheExactGaussianCurveTightly) {
  const Case& c = GetParam();
  absl::StatusOr<PrivacySpent> spent =
      SiteLevelEpsilon(c.noise_multiplier, c.releases, c.delta);
  ASSERT_TRUE(spent.ok()) << spent.status();
  // C cancels out; any C gives the same curve.
  const double clip_norm = 3.7;
  const double exact = ExactEpsilon(
      2 * clip_norm, c.noise_multiplier * clip_norm, c.releases, c.delta);
  EXPECT_GE(spent->epsilon, exact) << "not an upper bound";
  EXPECT_LE(spent->epsilon, 1.25 * exact) << "exact " << exact;
  EXPECT_EQ(spent->delta, c.delta);
  EXPECT_GT(spent->order, 1);
}

INSTANTIATE_TEST_SUITE_P(
    Settings, SiteLevelEpsilonTest,
    testing::Values(Case{1.0, 10, 1e-5}, Case{1.0, 1, 1e-5}, Case{0.8, 1, 1e-5},
                    Case{2.0, 50, 1e-6}, Case{5.0, 100, 1e-5},
                    Case{1.0, 1, 1e-3}, Case{10.0, 1, 1e-5},
                    Case{20.0, 1, 1e-5}, Case{3.0, 20, 1e-5},
                    Case{1.1, 100, 1e-5}, Case{4.0, 10, 1e-5}));

TEST(SiteLevelEpsilonValuesTest, KnownValue) {
  // The README quotes this: z = 1, 10 rounds, delta 1e-5 (the exact curve
  // gives 46.21).
  absl::StatusOr<PrivacySpent> spent = SiteLevelEpsilon(1.0, 10, 1e-5);
  ASSERT_TRUE(spent.ok());
  EXPECT_NEAR(spent->epsilon, 48.75, 0.01);
}

TEST(SiteLevelEpsilonValuesTest, GrowsWithReleasesAndShrinksWithNoise) {
  double previous = 0;
  for (int k = 1; k <= 20; ++k) {
    const double epsilon = SiteLevelEpsilon(2.0, k, 1e-5)->epsilon;
    EXPECT_GT(epsilon, previous);
    previous = epsilon;
  }
  EXPECT_LT(SiteLevelEpsilon(4.0, 10, 1e-5)->epsilon,
            SiteLevelEpsilon(2.0, 10, 1e-5)->epsilon);
  EXPECT_EQ(SiteLevelEpsilon(2.0, 0, 1e-5)->epsilon, 0);
}

TEST(RdpAccountantTest, CompositionAdds) {
  RdpAccountant once, three_times, one_by_one;
  ASSERT_TRUE(once.AddGaussian(2.0, 1.5, 1).ok());
  ASSERT_TRUE(three_times.AddGaussian(2.0, 1.5, 3).ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(one_by_one.AddGaussian(2, 1.5, 1).ok());
  const std::vector<double>& orders = RdpAccountant::Orders();
  for (size_t i = 0; i < orders.size(); i += 97) {
    EXPECT_DOUBLE_EQ(once.rdp()[i], orders[i] * 4 / (2 * 1.5 * 1.5));
    EXPECT_NEAR(three_times.rdp()[i], 3 * once.rdp()[i],
                1e-12 * three_times.rdp()[i]);
    EXPECT_NEAR(one_by_one.rdp()[i], three_times.rdp()[i],
                1e-12 * three_times.rdp()[i]);
  }
}

TEST(RdpAccountantTest, OrdersAreSortedAndAboveOne) {
  const std::vector<double>& orders = RdpAccountant::Orders();
  ASSERT_GT(orders.size(), 1000u);
  EXPECT_GT(orders.front(), 1);
  EXPECT_LT(orders.front(), 1.02);
  EXPECT_GE(orders.back(), 5e4);
  for (size_t i = 1; i < orders.size(); ++i)
    EXPECT_LT(orders[i - 1], orders[i]);
}

TEST(RdpAccountantTest, RefusesBadArguments) {
  RdpAccountant accountant;
  EXPECT_FALSE(accountant.AddGaussian(0, 1, 1).ok());
  EXPECT_FALSE(accountant.AddGaussian(1, 0, 1).ok());
  EXPECT_FALSE(accountant.AddGaussian(1, 1, -1).ok());
  EXPECT_FALSE(accountant.GetEpsilon(0).ok());
  EXPECT_FALSE(accountant.GetEpsilon(1).ok());
  EXPECT_FALSE(SiteLevelEpsilon(0, 3, 1e-5).ok());
}

TEST(ProjectedRunEpsilonTest, UsesRoundsAndDefaultDelta) {
  Plan plan;
  plan.set_rounds(10);
  EXPECT_FALSE(ProjectedRunEpsilon(plan).ok());
  plan.mutable_differential_privacy()->set_clip_norm(1);
  plan.mutable_differential_privacy()->set_noise_multiplier(1);
  absl::StatusOr<PrivacySpent> spent = ProjectedRunEpsilon(plan);
  ASSERT_TRUE(spent.ok());
  EXPECT_EQ(spent->delta, kDefaultPrivacyDelta);
  EXPECT_DOUBLE_EQ(spent->epsilon, SiteLevelEpsilon(1, 10, 1e-5)->epsilon);
}

}  // namespace
}  // namespace echofed
