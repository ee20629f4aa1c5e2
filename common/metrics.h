#ifndef ECHOFED_COMMON_METRICS_H_
#define ECHOFED_COMMON_METRICS_H_

// Metrics from additive aggregates. Pooling adds the aggregates first, so a
// pooled number is the one the pooled cases would give: counts exactly, and
// score-based metrics (AUC, calibration, decision curves) up to the fixed
// binning of the score histograms, which is the same at every site.
//
// Undefined values (no cases of a class, no scores in the report, a model
// fit that does not converge) are NaN, never a crash.

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "proto/metrics.pb.h"

namespace echofed {

// The fixed binning of EvalAggregate.score_histogram: bin b holds
// probabilities in [b / 1000, (b + 1) / 1000), and p = 1 the last bin. Every
// site must use the same binning or their histograms cannot be added; 1000
// bins keep the binned AUC within about 1e-3 of the exact one.
inline constexpr int kScoreHistogramBins = 1000;

// What every undefined metric is.
inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Gives `aggregate` the layout of `class_count` classes with score
// histograms: zeroed confusion matrix, histograms and Brier sums. Leaves
// split, num_patients, num_images and loss_sum alone.
void InitAggregate(int class_count, EvalAggregate* aggregate);

// Adds one image: its true class and the model's predicted probability of
// every class (finite, in [0, 1], summing to 1 within 1e-6). The predicted
// class is the first most probable one. Counts num_images, the confusion
// matrix, the score histograms and the Brier sums; num_patients and loss_sum
// stay with the caller (the loss is better computed from logits). An
// aggregate with class_count 0 is initialised first. On error nothing is
// changed.
absl::Status AddCase(EvalAggregate* aggregate, int truth,
                     const std::vector<double>& probabilities);

// Adds `add` into `total` (same class count; splits may differ). An empty
// `total` (class_count 0) takes the layout of `add`. When only one side
// carries score histograms and both hold images, the pooled histograms would
// describe only part of the cases: they are dropped (histogram_bins 0), so
// pooled score metrics are NaN rather than wrong.
absl::Status AddAggregate(const EvalAggregate& add, EvalAggregate* total);

// Counts consistent: square confusion matrix of non-negative counts summing
// to num_images, a finite loss; withheld classes sorted, each once, in range
// and with no images (none on a suppressed aggregate); when scores are
// present, the fixed binning,
// a histogram per (true class, score class) whose total equals that true
// class's row of the confusion matrix, and finite Brier sums in range.
absl::Status ValidateAggregate(const EvalAggregate& aggregate,
                               int expected_classes);

// ---------------------------------------------------------------------------
// Statistical disclosure control of released counts (the site applies it).
//
// A table of patient counts in which some cells are the totals of others
// (partitions). A cell is withheld when 0 < count < min_cell_count
// (primary suppression), and then, until no withheld cell can be
// recovered by subtraction, more (secondary suppression): in a partition
// whose total is released, a single withheld part, or withheld parts that
// together hold fewer than min_cell_count patients, take the smallest
// other non-zero part with them, or, when there is none that may be
// withheld, the total; a withheld total with every part released takes
// its smallest non-zero part. Zeros are released: "nobody" names nobody.
// Public cells (released elsewhere anyway, e.g. an evaluation set's size)
// are never withheld, and never chosen to hide another.
struct DisclosureTable {
  std::vector<int64_t> counts;
  std::vector<bool> public_cells;  // empty: none; else one per count
  struct Partition {
    int total = 0;           // index of the total
    std::vector<int> parts;  // indices of the cells that sum to it
  };
  std::vector<Partition> partitions;
};
// One flag per cell: true to withhold. Indices out of range are ignored.
std::vector<bool> WithheldCells(const DisclosureTable& table,
                                int64_t min_cell_count);

double Accuracy(const EvalAggregate& aggregate);
double MeanLoss(const EvalAggregate& aggregate);
// Macro-averaged F1 over classes present in the truth or the predictions.
double MacroF1(const EvalAggregate& aggregate);
// Sensitivity (recall) of one class, NaN when it has no cases.
double Sensitivity(const EvalAggregate& aggregate, int class_index);
// Specificity of one class (one-vs-rest), NaN when every case is that class.
double Specificity(const EvalAggregate& aggregate, int class_index);

// A two-sided confidence interval; NaN bounds when undefined.
struct Interval {
  double lower = kNaN;
  double upper = kNaN;
};

// 1.96: the two-sided 95% normal quantile used by every interval here.
inline constexpr double kZ95 = 1.959963984540054;

// Wilson score interval of the proportion successes / trials (NaN bounds
// when trials is 0). Unlike the Wald interval it stays inside [0, 1] and
// keeps its coverage for the small counts of a single hospital.
Interval WilsonInterval(int64_t successes, int64_t trials, double z = kZ95);

// One point of a one-vs-rest ROC curve: images with p_c >= threshold are
// called positive. The first point (0, 0) has threshold +infinity.
struct RocPoint {
  double threshold = kNaN;
  double false_positive_rate = kNaN;
  double true_positive_rate = kNaN;
};

// One reliability (calibration) bin [lower, upper) of p_c.
struct ReliabilityBin {
  double lower = kNaN;
  double upper = kNaN;
  int64_t count;
  double mean_predicted = kNaN;     // from histogram bin midpoints
  double observed_fraction = kNaN;  // fraction of images whose true class is c
};

// Net benefit of calling class c when p_c >= threshold (decision-curve
// analysis): TP/n - FP/n * t/(1 - t); treat_all calls every image positive.
struct DecisionPoint {
  double threshold = kNaN;
  double net_benefit = kNaN;
  double treat_all = kNaN;
};

// One class against the rest.
struct ClassMetrics {
  int64_t support = 0;  // images whose true class is this one
  int64_t true_positives = 0;
  int64_t false_positives = 0;
  int64_t false_negatives = 0;
  int64_t true_negatives = 0;
  double precision = kNaN;    // positive predictive value
  double sensitivity = kNaN;  // recall
  double specificity = kNaN;
  double f1 = kNaN;
  double npv = kNaN;      // negative predictive value
  Interval precision_ci;  // Wilson
  Interval sensitivity_ci;
  Interval specificity_ci;
  Interval npv_ci;

  // From the score histograms; NaN (empty curves) without scores.
  // AUC of p_c separating this class from the rest, ties within a bin
  // counting one half (the trapezoid over bins).
  double auc = kNaN;
  // DeLong's variance of that AUC and the normal 95% interval clipped to
  // [0, 1]. The structural components are computed per bin, so this is
  // DeLong on the binned scores. DeLong's test between two models is not
  // possible from aggregates: it needs the covariance of the two models'
  // components on the same images, which separate marginal histograms lose.
  double auc_variance = kNaN;
  Interval auc_ci;
  std::vector<RocPoint> roc;
  double brier = kNaN;  // mean (p_c - y_c)^2, exact (from brier_sum)
  std::vector<ReliabilityBin> reliability;  // 10 equal-width bins
  // Mean |observed - predicted| over the reliability bins, weighted by count.
  double expected_calibration_error = kNaN;
  // Logistic recalibration of y_c on logit(p_c), fitted by Newton's method
  // on the histogram bins (each bin at its midpoint, weighted by its counts),
  // so it approximates the fit on individual images: the intercept with the
  // slope fixed at 1 (calibration in the large, 0 is ideal) and the slope of
  // the two-parameter fit (1 is ideal). NaN when the fit has no finite
  // optimum (a class absent, or perfectly separated).
  double calibration_intercept = kNaN;
  double calibration_slope = kNaN;
  // Thresholds 0.01, 0.02, ..., 0.99.
  std::vector<DecisionPoint> decision_curve;
};

// Averages of the one-vs-rest metrics over the classes present in the truth
// or the predictions. Macro: plain mean; weighted: weighted by support
// (prevalence); a class whose value is undefined counts as 0 in both, as
// scikit-learn's default does, so never predicting a class is not rewarded.
// Micro: the metric of the summed TP / FP / FN / TN counts.
struct AveragedMetrics {
  double precision = kNaN;
  double sensitivity = kNaN;
  double specificity = kNaN;
  double f1 = kNaN;
  double npv = kNaN;
};

struct MetricsSummary {
  int class_count = 0;
  int64_t num_images = 0;
  int64_t num_patients = 0;
  double accuracy = kNaN;
  Interval accuracy_ci;  // Wilson
  // Mean sensitivity over the classes that have cases.
  double balanced_accuracy = kNaN;
  double cohen_kappa = kNaN;
  double mean_loss = kNaN;
  std::vector<ClassMetrics> classes;
  AveragedMetrics macro;
  AveragedMetrics micro;
  AveragedMetrics weighted;

  // Whether the aggregate carries score histograms; the rest is NaN if not.
  bool has_scores = false;
  // Mean of the one-vs-rest AUCs of the classes that have both positives and
  // negatives (scikit-learn refuses the others).
  double macro_auc = kNaN;
  // 95% interval of the macro AUC from the classes' DeLong variances. The
  // covariances between classes would need each image's scores of all
  // classes jointly, which the marginal histograms do not keep, so the
  // standard error is bounded by the mean of the classes' standard errors
  // (perfect correlation): conservative, never too narrow.
  Interval macro_auc_ci;
  // AUC of all one-vs-rest pairs pooled (every image counted once per class).
  double micro_auc = kNaN;
  // One-vs-rest AUCs weighted by support.
  double weighted_auc = kNaN;
  // Hand & Till's M: the mean over class pairs (i, j) of the AUC of p_i
  // separating class i from class j and of p_j separating j from i, using
  // the images of those two classes only. Pairs with an absent class are
  // left out.
  double hand_till_auc = kNaN;
  // Multi-class Brier score: mean over images of sum_c (p_c - y_c)^2, in
  // [0, 2].
  double brier = kNaN;
};

// Every metric of one aggregate (a site's or a pool's). A malformed
// aggregate gives NaNs, never a crash; validate reports first.
MetricsSummary Summarize(const EvalAggregate& aggregate);

// ---------------------------------------------------------------------------
// Random-effects meta-analysis across sites.
//
// Pooling aggregates (above) answers "how does the model do on all patients";
// a meta-analysis of the sites' own estimates answers "how much does it vary
// between hospitals", which external validation must report too (Riley et
// al., BMJ 2016;353:i3140). DerSimonian & Laird (Control Clin Trials
// 1986;7:177-188): inverse-variance weights w_i = 1 / v_i, Cochran's
// Q = sum w_i (y_i - y_fixed)^2 on k - 1 degrees of freedom, the moment
// estimate tau^2 = max(0, (Q - (k - 1)) / (sum w_i - sum w_i^2 / sum w_i)),
// then weights 1 / (v_i + tau^2) for the pooled estimate, whose 95% interval
// is the normal one. Identical to R metafor's rma(yi, vi, method = "DL").

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

// ---------------------------------------------------------------------------
// Harrell's C-index of a survival / prognosis head from additive aggregates
// (SurvivalAggregate): patients are binned by follow-up time and risk score,
// so the pooled C is that of the pooled patients up to the binning.
//
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

#endif  // ECHOFED_COMMON_METRICS_H_
