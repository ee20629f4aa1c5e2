#ifndef ECHOFED_COMMON_META_ANALYSIS_H_
#define ECHOFED_COMMON_META_ANALYSIS_H_

// Random-effects meta-analysis across sites.
//
// Pooling aggregates (common/eval_aggregate.h) answers "how does the model do
// on all patients"; a meta-analysis of the sites' own estimates answers "how
// much does it vary between hospitals", which external validation must report
// too (Riley et al., BMJ 2016;353:i3140). DerSimonian & Laird (Control Clin
// Trials 1986;7:177-188): inverse-variance weights w_i = 1 / v_i, Cochran's Q =
// sum w_i (y_i - y_fixed)^2 on k - 1 degrees of freedom, the moment estimate
// tau^2 = max(0, (Q - (k - 1)) / (sum w_i - sum w_i^2 / sum w_i)), then weights
// 1 / (v_i + tau^2) for the pooled estimate, whose 95% interval is the normal
// one. Identical to R metafor's rma(yi, vi, method = "DL").

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/intervals.h"
#include "proto/metrics.pb.h"

namespace echofed {

// One study (site): its estimate and the estimate's sampling variance.
struct StudyEstimate {
  double estimate = kNaN;
  double variance = kNaN;
  std::string label;
};

// I^2 in words, after the Cochrane Handbook (section 10.10.2), whose bands
// overlap (0-40% might not be important, 30-60% moderate, 50-90%
// substantial, 75-100% considerable); here each band starts where the
// Handbook's next one does: below 30% low, 30-50% moderate, 50-75%
// substantial, 75% and more considerable. Undefined with fewer than two
// studies. With few studies I^2 is imprecise; read it with Q's p-value.
enum class Heterogeneity {
  kUndefined,
  kLow,
  kModerate,
  kSubstantial,
  kConsiderable
};

// "undefined", "low", "moderate", "substantial", "considerable".
absl::string_view HeterogeneityName(Heterogeneity heterogeneity);

// A study's share of the random-effects weight, in percent (they sum to 100).
struct StudyWeight {
  std::string label;
  double percent = kNaN;
};

struct MetaAnalysis {
  int study_count = 0;
  // Random-effects (DerSimonian-Laird) pooled estimate, its standard error
  // and normal 95% interval (not clipped to any range).
  double estimate = kNaN;
  double standard_error = kNaN;
  Interval ci;
  // Fixed-effect (inverse-variance) pooled estimate, for comparison.
  double fixed_estimate = kNaN;
  double fixed_standard_error = kNaN;
  double tau2 = kNaN;  // between-study variance, on the estimates' scale
  double q = kNaN;     // Cochran's Q
  int degrees_of_freedom = 0;  // k - 1
  // P(chi^2 on k - 1 degrees of freedom >= Q); NaN with one study.
  double q_p_value = kNaN;
  // 100 * max(0, (Q - df) / Q), in percent; 0 when Q is 0, NaN with one
  // study.
  double i2 = kNaN;
  Heterogeneity heterogeneity = Heterogeneity::kUndefined;
  std::vector<StudyWeight> weights;  // in the order of the studies
};

// The DerSimonian-Laird random-effects meta-analysis of `studies`. Every
// estimate must be finite and every variance finite and positive (a zero
// variance would take all the weight); an empty list is an error. One study
// gives its own estimate, tau^2 = Q = 0 and undefined I^2.
absl::StatusOr<MetaAnalysis> MetaAnalyze(
    const std::vector<StudyEstimate>& studies);

// One site's report, by name, for the helpers below.
struct SiteAggregate {
  std::string label;
  const EvalAggregate* aggregate = nullptr;  // not owned
};

// The studies built from sites' reports, and the sites left out, each as
// "label: reason" (suppressed, no cases of the class, an undefined or zero
// variance).
struct SiteStudies {
  std::vector<StudyEstimate> studies;
  std::vector<std::string> excluded;
};

// A proportion successes / trials as a study on the logit scale:
// log(successes / failures) with variance 1 / successes + 1 / failures,
// adding 0.5 to both when either is 0 (the usual continuity correction, as
// metafor's escalc(measure = "PLO") does). NaN estimate when trials is 0.
StudyEstimate LogitProportionStudy(int64_t successes, int64_t trials,
                                   std::string label);

// Per-site one-vs-rest AUC of `class_index` with its DeLong variance (from
// the site's score histograms, as ClassMetrics.auc / auc_variance). Sites
// without scores, without two positives and two negatives, or with variance
// 0 (every positive above every negative: AUC 1 with no spread to weigh)
// are excluded. An error when a site's report does not have the class or
// the layout (validate reports first).
absl::StatusOr<SiteStudies> AucStudies(const std::vector<SiteAggregate>& sites,
                                       int class_index);
// Per-site sensitivity / specificity of `class_index` (one-vs-rest) as
// LogitProportionStudy of the confusion counts; sites without positives
// (sensitivity) or negatives (specificity) are excluded.
absl::StatusOr<SiteStudies> SensitivityStudies(
    const std::vector<SiteAggregate>& sites, int class_index);
absl::StatusOr<SiteStudies> SpecificityStudies(
    const std::vector<SiteAggregate>& sites, int class_index);

// A meta-analysis of sites, back on the metric's scale.
struct PooledSiteMetric {
  MetaAnalysis analysis;   // on the analysis scale (AUC, or logit)
  double estimate = kNaN;  // AUC, sensitivity or specificity
  Interval ci;
  std::vector<std::string> excluded;  // as SiteStudies.excluded
};

// AUC: pooled on the AUC scale, interval clipped to [0, 1]. Sensitivity and
// specificity: pooled on the logit scale, estimate and interval back through
// the logistic function. An error when no site is left to pool.
absl::StatusOr<PooledSiteMetric> MetaAnalyzeAuc(
    const std::vector<SiteAggregate>& sites, int class_index);
absl::StatusOr<PooledSiteMetric> MetaAnalyzeSensitivity(
    const std::vector<SiteAggregate>& sites, int class_index);
absl::StatusOr<PooledSiteMetric> MetaAnalyzeSpecificity(
    const std::vector<SiteAggregate>& sites, int class_index);

}  // namespace echofed

#endif  // ECHOFED_COMMON_META_ANALYSIS_H_
