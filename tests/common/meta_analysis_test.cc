// Random-effects meta-analysis across sites (common/meta_analysis.h).

#include "common/meta_analysis.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics.h"
#include "gtest/gtest.h"
#include "tests/common/metrics_test_util.h"

namespace echofed {
namespace {

using ::echofed::testing::Case;
using ::echofed::testing::FromCases;
using ::echofed::testing::Make;

// The BCG vaccine trials (Colditz et al., JAMA 1994;271:698-702; metafor's
// dat.bcg): TB positive / negative among the vaccinated, then the controls.
struct BcgTrial {
  const char* label;
  double tpos, tneg, cpos, cneg;
};
constexpr BcgTrial kBcgTrials[] = {
    {"Aronson 1948", 4, 119, 11, 128},
    {"Ferguson & Simes 1949", 6, 300, 29, 274},
    {"Rosenthal et al 1960", 3, 228, 11, 209},
    {"Hart & Sutherland 1977", 62, 13536, 248, 12619},
    {"Frimodt-Moller et al 1973", 33, 5036, 47, 5761},
    {"Stein & Aronson 1953", 180, 1361, 372, 1079},
    {"Vandiviere et al 1973", 8, 2537, 10, 619},
    {"TPT Madras 1980", 505, 87886, 499, 87892},
    {"Coetzee & Berjak 1968", 29, 7470, 45, 7232},
    {"Rosenthal et al 1961", 17, 1699, 65, 1600},
    {"Comstock et al 1974", 186, 50448, 141, 27197},
    {"Comstock & Webster 1969", 5, 2493, 3, 2338},
    {"Comstock et al 1976", 27, 16886, 29, 17825},
};

// Log risk ratios and their variances, as metafor's escalc(measure = "RR").
std::vector<StudyEstimate> BcgLogRiskRatios() {
  std::vector<StudyEstimate> studies;
  for (const BcgTrial& t : kBcgTrials) {
    double treated = t.tpos + t.tneg, control = t.cpos + t.cneg;
    studies.push_back({std::log(t.tpos / treated / (t.cpos / control)),
                       1 / t.tpos - 1 / treated + 1 / t.cpos - 1 / control,
                       t.label});
  }
  return studies;
}

TEST(MetaAnalysisTest, BcgTrialsMatchPublishedDerSimonianLaird) {
  // Published to 4 decimals in metafor's own test against Stata's metan,
  // tests/testthat/test_misc_metan_vs_rma.uni_with_dat.bcg.r:
  // rma(yi, vi, method = "DL"): estimate -0.7141 (-1.0644, -0.3638),
  // z -3.9952, tau^2 0.3088, I^2 92.1173%, exp: 0.4896 (0.3449, 0.6950);
  // method = "FE": -0.4303 (-0.5097, -0.3509), QE 152.2330.
  absl::StatusOr<MetaAnalysis> m = MetaAnalyze(BcgLogRiskRatios());
  ASSERT_TRUE(m.ok()) << m.status();
  const double tolerance = 5e-5;  // half a unit in the 4th decimal
  EXPECT_EQ(m->study_count, 13);
  EXPECT_NEAR(m->estimate, -0.7141, tolerance);
  EXPECT_NEAR(m->ci.lower, -1.0644, tolerance);
  EXPECT_NEAR(m->ci.upper, -0.3638, tolerance);
  EXPECT_NEAR(m->estimate / m->standard_error, -3.9952, tolerance);
  EXPECT_NEAR(m->tau2, 0.3088, tolerance);
  EXPECT_NEAR(m->i2, 92.1173, tolerance);
  EXPECT_NEAR(std::exp(m->estimate), 0.4896, tolerance);
  EXPECT_NEAR(std::exp(m->ci.lower), 0.3449, tolerance);
  EXPECT_NEAR(std::exp(m->ci.upper), 0.6950, tolerance);
  EXPECT_NEAR(m->fixed_estimate, -0.4303, tolerance);
  EXPECT_NEAR(m->fixed_estimate - kZ95 * m->fixed_standard_error, -0.5097,
              tolerance);
  EXPECT_NEAR(m->fixed_estimate + kZ95 * m->fixed_standard_error, -0.3509,
              tolerance);
  EXPECT_NEAR(m->q, 152.2330, tolerance);
  EXPECT_EQ(m->degrees_of_freedom, 12);
  // scipy.stats.chi2.sf(152.2330080823734, 12)
  EXPECT_NEAR(m->q_p_value / 1.9967645908458624e-26, 1, 1e-9);
  EXPECT_EQ(m->heterogeneity, Heterogeneity::kConsiderable);
  EXPECT_EQ(HeterogeneityName(m->heterogeneity), "considerable");
  ASSERT_EQ(m->weights.size(), 13u);
  double total = 0;
  for (const StudyWeight& w : m->weights) total += w.percent;
  EXPECT_NEAR(total, 100, 1e-9);
  // weights(res) in metafor: Aronson 5.04%, TPT Madras 10.22%.
  EXPECT_EQ(m->weights[0].label, "Aronson 1948");
  EXPECT_NEAR(m->weights[0].percent, 5.04, 5e-3);
  EXPECT_NEAR(m->weights[7].percent, 10.22, 5e-3);
}

TEST(MetaAnalysisTest, HeterogeneityStatistics) {
  // Four studies of variance 1 at (a, -a, 0, 0): the fixed estimate is 0 and
  // Q = 2 a^2; Q = 5 on 3 degrees of freedom is I^2 = 40%.
  auto four = [](double q) {
    double a = std::sqrt(q / 2);
    return std::vector<StudyEstimate>{
        {a, 1, "a"}, {-a, 1, "b"}, {0, 1, "c"}, {0, 1, "d"}};
  };
  absl::StatusOr<MetaAnalysis> moderate = MetaAnalyze(four(5));
  ASSERT_TRUE(moderate.ok());
  EXPECT_NEAR(moderate->q, 5, 1e-12);
  EXPECT_NEAR(moderate->i2, 40, 1e-9);
  EXPECT_EQ(moderate->heterogeneity, Heterogeneity::kModerate);
  // tau^2 = (Q - df) / (sum w - sum w^2 / sum w) = 2 / 3.
  EXPECT_NEAR(moderate->tau2, 2.0 / 3, 1e-12);
  EXPECT_NEAR(moderate->standard_error, std::sqrt((1 + 2.0 / 3) / 4), 1e-12);
  for (const StudyWeight& w : moderate->weights) {
    EXPECT_NEAR(w.percent, 25, 1e-12);
  }
  // Chi-square tails against scipy.stats.chi2.sf, both branches of the
  // incomplete gamma function.
  EXPECT_NEAR(moderate->q_p_value, 0.1717971442967335, 1e-12);
  EXPECT_NEAR(MetaAnalyze(four(0.5))->q_p_value, 0.9188914116546758, 1e-12);
  std::vector<StudyEstimate> two = {{0, 1, "a"},
                                    {std::sqrt(2 * 3.841458820694124), 1, "b"}};
  EXPECT_NEAR(MetaAnalyze(two)->q_p_value, 0.05, 1e-12);

  // Less spread than the variances explain: tau^2 = 0, I^2 = 0, and the
  // random-effects estimate is the fixed one.
  absl::StatusOr<MetaAnalysis> homogeneous =
      MetaAnalyze({{0.1, 0.04, "a"}, {0.12, 0.09, "b"}, {0.09, 0.01, "c"}});
  ASSERT_TRUE(homogeneous.ok());
  EXPECT_EQ(homogeneous->tau2, 0);
  EXPECT_EQ(homogeneous->i2, 0);
  EXPECT_EQ(homogeneous->heterogeneity, Heterogeneity::kLow);
  EXPECT_NEAR(homogeneous->estimate, homogeneous->fixed_estimate, 1e-15);

  // One study: itself, no heterogeneity to speak of.
  absl::StatusOr<MetaAnalysis> one = MetaAnalyze({{0.8, 0.0025, "only"}});
  ASSERT_TRUE(one.ok());
  EXPECT_DOUBLE_EQ(one->estimate, 0.8);
  EXPECT_NEAR(one->standard_error, 0.05, 1e-15);
  EXPECT_EQ(one->tau2, 0);
  EXPECT_EQ(one->q, 0);
  EXPECT_TRUE(std::isnan(one->i2));
  EXPECT_TRUE(std::isnan(one->q_p_value));
  EXPECT_EQ(one->heterogeneity, Heterogeneity::kUndefined);
  EXPECT_EQ(one->weights[0].percent, 100);

  EXPECT_FALSE(MetaAnalyze({}).ok());
  EXPECT_FALSE(MetaAnalyze({{0.5, 0, "zero variance"}}).ok());
  EXPECT_FALSE(MetaAnalyze({{0.5, -1, "negative"}}).ok());
  EXPECT_FALSE(MetaAnalyze({{NAN, 0.1, "nan"}, {0.5, 0.1, "fine"}}).ok());
  EXPECT_FALSE(MetaAnalyze({{0.5, INFINITY, "inf"}}).ok());
}

TEST(MetaAnalysisTest, LogitProportionWithContinuityCorrection) {
  StudyEstimate plain = LogitProportionStudy(8, 10, "plain");
  EXPECT_EQ(plain.label, "plain");
  EXPECT_NEAR(plain.estimate, std::log(4.0), 1e-15);
  EXPECT_NEAR(plain.variance, 1.0 / 8 + 1.0 / 2, 1e-15);
  StudyEstimate all = LogitProportionStudy(10, 10, "all");
  EXPECT_NEAR(all.estimate, std::log(10.5 / 0.5), 1e-15);
  EXPECT_NEAR(all.variance, 1 / 10.5 + 1 / 0.5, 1e-15);
  StudyEstimate none = LogitProportionStudy(0, 5, "none");
  EXPECT_NEAR(none.estimate, std::log(0.5 / 5.5), 1e-15);
  EXPECT_TRUE(std::isnan(LogitProportionStudy(0, 0, "empty").estimate));
  EXPECT_TRUE(std::isnan(LogitProportionStudy(3, 2, "bad").estimate));
}

TEST(MetaAnalysisTest, SensitivityAndSpecificityAcrossSites) {
  // Binary sites, class 1 the positive class (rows: truth, columns:
  // predicted). C is perfect (both corrected); E has no class-1 cases; D is
  // suppressed.
  EvalAggregate a = Make({40, 10, 5, 45}, 2);
  EvalAggregate b = Make({30, 2, 8, 20}, 2);
  EvalAggregate c = Make({25, 0, 0, 15}, 2);
  EvalAggregate d = Make({0, 0, 0, 0}, 2);
  d.set_suppressed(true);
  EvalAggregate e = Make({10, 2, 0, 0}, 2);
  std::vector<SiteAggregate> sites = {
      {"A", &a}, {"B", &b}, {"C", &c}, {"D", &d}, {"E", &e}};

  absl::StatusOr<SiteStudies> sensitivity = SensitivityStudies(sites, 1);
  ASSERT_TRUE(sensitivity.ok()) << sensitivity.status();
  ASSERT_EQ(sensitivity->studies.size(), 3u);
  EXPECT_NEAR(sensitivity->studies[0].estimate, std::log(45.0 / 5), 1e-15);
  EXPECT_NEAR(sensitivity->studies[2].estimate, std::log(15.5 / 0.5), 1e-15);
  EXPECT_EQ(
      sensitivity->excluded,
      (std::vector<std::string>{"D: suppressed", "E: no cases of the class"}));

  // Expected values: DerSimonian-Laird on the same logits in numpy (the
  // implementation that reproduces the BCG numbers above).
  absl::StatusOr<PooledSiteMetric> pooled = MetaAnalyzeSensitivity(sites, 1);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  EXPECT_NEAR(pooled->analysis.estimate, 1.8006960335601876, 1e-12);
  EXPECT_NEAR(pooled->analysis.tau2, 0.6795639845732298, 1e-12);
  EXPECT_NEAR(pooled->analysis.q, 5.895193271057865, 1e-12);
  EXPECT_NEAR(pooled->analysis.q_p_value, 0.05246564862058471, 1e-12);
  EXPECT_NEAR(pooled->analysis.i2, 66.07405545431575, 1e-10);
  EXPECT_EQ(pooled->analysis.heterogeneity, Heterogeneity::kSubstantial);
  EXPECT_NEAR(pooled->analysis.weights[2].percent, 13.78544708, 1e-8);
  EXPECT_NEAR(pooled->estimate, 0.8582336416862222, 1e-12);
  EXPECT_NEAR(pooled->ci.lower, 0.6445630187168884, 1e-12);
  EXPECT_NEAR(pooled->ci.upper, 0.9528519745635265, 1e-12);
  EXPECT_EQ(pooled->excluded.size(), 2u);

  absl::StatusOr<PooledSiteMetric> specificity =
      MetaAnalyzeSpecificity(sites, 1);
  ASSERT_TRUE(specificity.ok()) << specificity.status();
  EXPECT_EQ(specificity->analysis.study_count, 4);  // E has negatives
  EXPECT_NEAR(specificity->analysis.estimate, 1.979069260156809, 1e-12);
  EXPECT_NEAR(specificity->analysis.tau2, 0.346874199411199, 1e-12);
  EXPECT_NEAR(specificity->analysis.i2, 41.63621786792665, 1e-10);
  EXPECT_EQ(specificity->analysis.heterogeneity, Heterogeneity::kModerate);
  EXPECT_NEAR(specificity->estimate, 0.878581909728812, 1e-12);
  EXPECT_NEAR(specificity->ci.lower, 0.7461011337357994, 1e-12);
  EXPECT_NEAR(specificity->ci.upper, 0.9468596013965093, 1e-12);
  // Class 0's specificity is class 1's sensitivity in a binary problem.
  EXPECT_NEAR(MetaAnalyzeSpecificity(sites, 0)->estimate, pooled->estimate,
              1e-15);

  EXPECT_FALSE(SensitivityStudies(sites, 2).ok());  // no such class
  EXPECT_FALSE(SensitivityStudies({{"null", nullptr}}, 0).ok());
  absl::StatusOr<PooledSiteMetric> nothing =
      MetaAnalyzeSensitivity({{"D", &d}, {"E", &e}}, 1);
  EXPECT_EQ(nothing.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(MetaAnalysisTest, AucAcrossSitesUsesEachSitesDeLongVariance) {
  std::mt19937_64 random(7);
  std::normal_distribution<double> noise(0, 1);
  auto site = [&](int n, double separation) {
    std::vector<Case> cases;
    for (int i = 0; i < n; ++i) {
      int truth = i % 3 == 0 ? 1 : 0;
      double logit = noise(random) + (truth ? separation : 0.0);
      double p = 1 / (1 + std::exp(-logit));
      cases.push_back({truth, {1 - p, p}});
    }
    return FromCases(cases);
  };
  EvalAggregate a = site(120, 1.5), b = site(90, 0.8), c = site(200, 2.5);
  // Every positive above every negative: AUC 1, DeLong variance 0.
  EvalAggregate perfect = FromCases(
      {{1, {0.1, 0.9}}, {1, {0.2, 0.8}}, {0, {0.7, 0.3}}, {0, {0.9, 0.1}}});
  EvalAggregate no_scores = Make({10, 2, 3, 9}, 2);
  no_scores.set_histogram_bins(0);
  std::vector<SiteAggregate> sites = {{"a", &a},
                                      {"b", &b},
                                      {"c", &c},
                                      {"perfect", &perfect},
                                      {"no scores", &no_scores}};
  absl::StatusOr<SiteStudies> studies = AucStudies(sites, 1);
  ASSERT_TRUE(studies.ok()) << studies.status();
  ASSERT_EQ(studies->studies.size(), 3u);
  const EvalAggregate* used[] = {&a, &b, &c};
  for (int i = 0; i < 3; ++i) {
    ClassMetrics m = Summarize(*used[i]).classes[1];
    EXPECT_EQ(studies->studies[i].estimate, m.auc);
    EXPECT_EQ(studies->studies[i].variance, m.auc_variance);
  }
  ASSERT_EQ(studies->excluded.size(), 2u);
  EXPECT_EQ(studies->excluded[0], "perfect: AUC 1 with DeLong variance 0");
  EXPECT_EQ(studies->excluded[1], "no scores: no score histograms");

  absl::StatusOr<PooledSiteMetric> pooled = MetaAnalyzeAuc(sites, 1);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  absl::StatusOr<MetaAnalysis> direct = MetaAnalyze(studies->studies);
  EXPECT_EQ(pooled->estimate, direct->estimate);
  EXPECT_EQ(pooled->analysis.tau2, direct->tau2);
  EXPECT_GT(pooled->analysis.tau2, 0);  // separations 0.8 to 2.5 differ
  EXPECT_EQ(pooled->ci.lower, direct->ci.lower);
  EXPECT_EQ(pooled->ci.upper, std::min(1.0, direct->ci.upper));
  EXPECT_EQ(pooled->analysis.weights[1].label, "b");
  // Class 0's one-vs-rest AUC of p_0 is the same separation.
  EXPECT_NEAR(MetaAnalyzeAuc(sites, 0)->estimate, pooled->estimate, 1e-12);
}

}  // namespace
}  // namespace echofed
