// DerSimonian-Laird random-effects meta-analysis, and the per-site AUC,
// sensitivity and specificity studies it pools.

#include "common/meta_analysis.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/metrics_internal.h"

namespace echofed {

using metrics_internal::AucEstimate;
using metrics_internal::AucFromBins;
using metrics_internal::Bins;
using metrics_internal::Cell;
using metrics_internal::ColumnSum;
using metrics_internal::RowSum;
using metrics_internal::ScoreLayoutOk;
using metrics_internal::Sigmoid;

namespace {

// Q(a, x) = Gamma(a, x) / Gamma(a), the regularized upper incomplete gamma
// function: the series below x = a + 1, the continued fraction (modified
// Lentz) above, as in Numerical Recipes (2nd ed.) section 6.2.
double UpperGammaRatio(double a, double x) {
  if (!(x > 0)) return 1;
  const double log_prefix = a * std::log(x) - x - std::lgamma(a);
  constexpr int kMaxTerms = 1000;
  constexpr double kEpsilon = 1e-15;
  if (x < a + 1) {
    double term = 1 / a, sum = term;
    for (int n = 1; n < kMaxTerms && std::abs(term) > kEpsilon * sum; ++n) {
      term *= x / (a + n);
      sum += term;
    }
    return std::max(0.0, 1 - sum * std::exp(log_prefix));
  }
  constexpr double kTiny = 1e-300;
  double b = x + 1 - a, c = 1 / kTiny, d = 1 / b, fraction = d;
  for (int n = 1; n < kMaxTerms; ++n) {
    const double an = -n * (n - a);
    b += 2;
    d = an * d + b;
    if (std::abs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    fraction *= d * c;
    if (std::abs(d * c - 1) < kEpsilon) break;
  }
  return std::exp(log_prefix) * fraction;
}

double ChiSquareUpperTail(double statistic, int degrees_of_freedom) {
  return UpperGammaRatio(degrees_of_freedom / 2.0, statistic / 2);
}

Heterogeneity ClassifyI2(double i2) {
  if (std::isnan(i2)) return Heterogeneity::kUndefined;
  if (i2 < 30) return Heterogeneity::kLow;
  if (i2 < 50) return Heterogeneity::kModerate;
  if (i2 < 75) return Heterogeneity::kSubstantial;
  return Heterogeneity::kConsiderable;
}

absl::Status CheckStudy(const StudyEstimate& study) {
  if (std::isfinite(study.estimate) && std::isfinite(study.variance) &&
      study.variance > 0) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "study \"", study.label, "\": estimate ", study.estimate, ", variance ",
      study.variance, " (need finite values and a positive variance)"));
}

// Whether a site's report can be asked about class `class_index`: a missing
// or malformed report, or a class it does not have, is an error (a
// suppressed report is only excluded, by the callers).
absl::Status CheckSite(const SiteAggregate& site, int class_index) {
  if (site.aggregate == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("site \"", site.label, "\" has no report"));
  }
  const EvalAggregate& a = *site.aggregate;
  const int k = a.class_count();
  if (k <= 0 || k > 1000 || a.confusion_size() != k * k) {
    return absl::InvalidArgumentError(
        absl::StrCat("site \"", site.label, "\": malformed confusion matrix"));
  }
  if (class_index < 0 || class_index >= k) {
    return absl::InvalidArgumentError(
        absl::StrCat("site \"", site.label, "\" has ", k,
                     " classes, not class ", class_index));
  }
  return absl::OkStatus();
}

std::string Excluded(const SiteAggregate& site, absl::string_view reason) {
  return absl::StrCat(site.label, ": ", reason);
}

int64_t ConfusionTotal(const EvalAggregate& a) {
  int64_t n = 0;
  for (int64_t count : a.confusion()) n += count;
  return n;
}

// Which proportion of the one-vs-rest confusion counts a study is built of.
enum class Proportion { kSensitivity, kSpecificity };

absl::StatusOr<SiteStudies> ProportionStudies(
    const std::vector<SiteAggregate>& sites, int c, Proportion proportion) {
  SiteStudies result;
  for (const SiteAggregate& site : sites) {
    if (absl::Status status = CheckSite(site, c); !status.ok()) return status;
    const EvalAggregate& a = *site.aggregate;
    if (a.suppressed()) {
      result.excluded.push_back(Excluded(site, "suppressed"));
      continue;
    }
    const int64_t positives = RowSum(a, c);
    const int64_t true_positives = Cell(a, c, c);
    int64_t successes = true_positives, trials = positives;
    if (proportion == Proportion::kSpecificity) {
      trials = ConfusionTotal(a) - positives;
      successes = trials - (ColumnSum(a, c) - true_positives);
    }
    if (trials <= 0) {
      result.excluded.push_back(
          Excluded(site, proportion == Proportion::kSensitivity
                             ? "no cases of the class"
                             : "no cases outside the class"));
      continue;
    }
    result.studies.push_back(
        LogitProportionStudy(successes, trials, site.label));
  }
  return result;
}

absl::StatusOr<PooledSiteMetric> Pool(absl::StatusOr<SiteStudies> sites,
                                      bool logit_scale) {
  if (!sites.ok()) return sites.status();
  if (sites->studies.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no site to pool (",
        sites->excluded.empty() ? "no sites"
                                : absl::StrJoin(sites->excluded, "; "),
        ")"));
  }
  absl::StatusOr<MetaAnalysis> analysis = MetaAnalyze(sites->studies);
  if (!analysis.ok()) return analysis.status();
  PooledSiteMetric pooled;
  pooled.analysis = *std::move(analysis);
  pooled.excluded = std::move(sites->excluded);
  const MetaAnalysis& m = pooled.analysis;
  if (logit_scale) {
    pooled.estimate = Sigmoid(m.estimate);
    pooled.ci = {Sigmoid(m.ci.lower), Sigmoid(m.ci.upper)};
  } else {
    pooled.estimate = m.estimate;
    pooled.ci = {std::max(0.0, m.ci.lower), std::min(1.0, m.ci.upper)};
  }
  return pooled;
}

}  // namespace

absl::string_view HeterogeneityName(Heterogeneity heterogeneity) {
  switch (heterogeneity) {
    case Heterogeneity::kLow:
      return "low";
    case Heterogeneity::kModerate:
      return "moderate";
    case Heterogeneity::kSubstantial:
      return "substantial";
    case Heterogeneity::kConsiderable:
      return "considerable";
    case Heterogeneity::kUndefined:
      break;
  }
  return "undefined";
}

absl::StatusOr<MetaAnalysis> MetaAnalyze(
    const std::vector<StudyEstimate>& studies) {
  if (studies.empty()) {
    return absl::InvalidArgumentError("no studies to meta-analyse");
  }
  for (const StudyEstimate& study : studies) {
    if (absl::Status status = CheckStudy(study); !status.ok()) return status;
  }
  MetaAnalysis m;
  const int k = static_cast<int>(studies.size());
  m.study_count = k;
  m.degrees_of_freedom = k - 1;
  double weight_sum = 0, weight_square_sum = 0, weighted_sum = 0;
  for (const StudyEstimate& study : studies) {
    const double w = 1 / study.variance;
    weight_sum += w;
    weight_square_sum += w * w;
    weighted_sum += w * study.estimate;
  }
  m.fixed_estimate = weighted_sum / weight_sum;
  m.fixed_standard_error = std::sqrt(1 / weight_sum);
  m.q = 0;
  for (const StudyEstimate& study : studies) {
    const double residual = study.estimate - m.fixed_estimate;
    m.q += residual * residual / study.variance;
  }
  // Positive for k >= 2: the cross terms of (sum w)^2.
  const double scale = weight_sum - weight_square_sum / weight_sum;
  m.tau2 = k > 1 ? std::max(0.0, (m.q - m.degrees_of_freedom) / scale) : 0.0;
  if (k > 1) {
    m.q_p_value = ChiSquareUpperTail(m.q, m.degrees_of_freedom);
    m.i2 =
        m.q > 0 ? 100 * std::max(0.0, (m.q - m.degrees_of_freedom) / m.q) : 0.0;
  }
  m.heterogeneity = ClassifyI2(m.i2);
  double random_sum = 0, random_weighted_sum = 0;
  for (const StudyEstimate& study : studies) {
    const double w = 1 / (study.variance + m.tau2);
    random_sum += w;
    random_weighted_sum += w * study.estimate;
  }
  m.estimate = random_weighted_sum / random_sum;
  m.standard_error = std::sqrt(1 / random_sum);
  m.ci = {m.estimate - kZ95 * m.standard_error,
          m.estimate + kZ95 * m.standard_error};
  for (const StudyEstimate& study : studies) {
    m.weights.push_back(
        {study.label, 100 / (study.variance + m.tau2) / random_sum});
  }
  return m;
}

StudyEstimate LogitProportionStudy(int64_t successes, int64_t trials,
                                   std::string label) {
  StudyEstimate study;
  study.label = std::move(label);
  if (trials <= 0 || successes < 0 || successes > trials) return study;
  double s = static_cast<double>(successes);
  double f = static_cast<double>(trials - successes);
  if (s == 0 || f == 0) {
    s += 0.5;
    f += 0.5;
  }
  study.estimate = std::log(s / f);
  study.variance = 1 / s + 1 / f;
  return study;
}

absl::StatusOr<SiteStudies> AucStudies(const std::vector<SiteAggregate>& sites,
                                       int c) {
  SiteStudies result;
  for (const SiteAggregate& site : sites) {
    if (absl::Status status = CheckSite(site, c); !status.ok()) return status;
    const EvalAggregate& a = *site.aggregate;
    if (a.suppressed()) {
      result.excluded.push_back(Excluded(site, "suppressed"));
      continue;
    }
    if (!ScoreLayoutOk(a) || a.histogram_bins() > 100000) {
      result.excluded.push_back(Excluded(site, "no score histograms"));
      continue;
    }
    std::vector<int> rest;
    for (int t = 0; t < a.class_count(); ++t) {
      if (t != c) rest.push_back(t);
    }
    const AucEstimate auc = AucFromBins(Bins(a, c, rest));
    if (std::isnan(auc.auc)) {
      result.excluded.push_back(
          Excluded(site, "no cases of the class or none outside it"));
    } else if (std::isnan(auc.variance)) {
      result.excluded.push_back(
          Excluded(site, "fewer than two cases of the class or outside it"));
    } else if (!(auc.variance > 0)) {
      result.excluded.push_back(Excluded(
          site, absl::StrCat("AUC ", auc.auc, " with DeLong variance 0")));
    } else {
      result.studies.push_back({auc.auc, auc.variance, site.label});
    }
  }
  return result;
}

absl::StatusOr<SiteStudies> SensitivityStudies(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return ProportionStudies(sites, class_index, Proportion::kSensitivity);
}

absl::StatusOr<SiteStudies> SpecificityStudies(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return ProportionStudies(sites, class_index, Proportion::kSpecificity);
}

absl::StatusOr<PooledSiteMetric> MetaAnalyzeAuc(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return Pool(AucStudies(sites, class_index), /*logit_scale=*/false);
}

absl::StatusOr<PooledSiteMetric> MetaAnalyzeSensitivity(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return Pool(SensitivityStudies(sites, class_index), /*logit_scale=*/true);
}

absl::StatusOr<PooledSiteMetric> MetaAnalyzeSpecificity(
    const std::vector<SiteAggregate>& sites, int class_index) {
  return Pool(SpecificityStudies(sites, class_index), /*logit_scale=*/true);
}

}  // namespace echofed
