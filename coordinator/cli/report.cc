#include "coordinator/cli/report.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "common/html.h"
#include "common/json_writer.h"
#include "common/metrics.h"

namespace echofed {
namespace {

// The plan's default when it leaves min_cell_count at 0 (plan.proto).
constexpr int kDefaultMinCellCount = 5;

// ---------------------------------------------------------------------------
// What the report is about, computed once and then written three ways.

enum class SetType { kSite, kPooled };

// One extra head (Plan.Head other than SUBTYPE) of one set.
struct HeadResult {
  bool reported = false;  // the set holds a report of this head
  bool suppressed = false;
  EvalAggregate binary;
  MetricsSummary summary;  // binary heads
  SurvivalAggregate survival;
  ConcordanceIndex concordance;  // PROGNOSIS
};

// A site's own validation set, or a split's sets pooled.
struct SetResult {
  std::string key;    // the site's name, or pooled_internal / pooled_external
  std::string title;  // for people
  SetType type = SetType::kSite;
  EvalSplit split = EVAL_SPLIT_UNSPECIFIED;
  // Pooled sets: the sites added, and those that released nothing.
  std::vector<std::string> contributors;
  std::vector<std::string> suppressed_sites;
  // Sites: true classes the site withheld (disclosure control: a few
  // patients of the class). Pools: "site: class" for every class a
  // contributing site withheld, so left out of the pool.
  std::vector<int> withheld_classes;
  std::vector<std::string> left_out;
  // Sites: the patient flow the site reported with this evaluation.
  bool has_flow = false;
  PatientFlow flow;
  // A site's report was suppressed, or no site of a pool released data.
  bool suppressed = false;
  EvalAggregate aggregate;
  MetricsSummary summary;
  std::vector<HeadResult> heads;  // parallel to Report::heads
  // The same set at the patient level: one case per patient, scored with
  // the mean of the patient's image probabilities. Sites: whether the site
  // sent it (agents before patient-level reporting did not). Pools: whether
  // any released site of the split did; the pool adds those sites' patient
  // aggregates, and names the released sites that sent none.
  bool has_patient_level = false;
  EvalAggregate patient_aggregate;
  MetricsSummary patient_summary;
  std::vector<std::string> patient_contributors;
  std::vector<std::string> patient_not_reported;
};

// Sites whose own estimates are meta-analysed together.
struct MetaGroup {
  std::string key;    // meta_internal, meta_external, meta_all
  std::string split;  // internal, external, all
  std::string title;
  std::vector<int> sets;  // indices into Report::sets (sites only)
};

// One DerSimonian-Laird analysis: a group x head x class x metric.
struct MetaResult {
  int group = 0;        // index into Report::groups
  int head = -1;        // index into Report::heads; -1 the subtype
  int class_index = 0;  // of the subtype, or 1 (positive) of a binary head
  std::string metric;   // auc, sensitivity, specificity
  absl::StatusOr<PooledSiteMetric> pooled;
};

struct Report {
  const RunStatus* status = nullptr;
  const RoundRecord* round = nullptr;
  ReportOptions options;
  std::vector<std::string> class_names;
  std::vector<int> heads;  // Plan.Head values other than SUBTYPE
  int min_cell_count = kDefaultMinCellCount;
  std::vector<SetResult> sets;  // sites (internal, then external), pools
  std::vector<MetaGroup> groups;
  std::vector<MetaResult> meta;
  // Some site sent a patient-level aggregate with this round's evaluation.
  bool any_patient_level = false;
};

// The two units of analysis of the subtype metrics, as the report names
// them.
constexpr char kImageLevel[] = "image-level";
constexpr char kPatientLevel[] =
    "patient-level (mean probability over a patient's images)";
constexpr char kPatientScoring[] = "mean probability over a patient's images";

std::string SplitName(EvalSplit split) {
  switch (split) {
    case INTERNAL_VALIDATION:
      return "internal";
    case EXTERNAL_VALIDATION:
      return "external";
    default:
      return "unspecified";
  }
}

std::string HeadName(int head) {
  if (head == Plan::SUBTYPE) return "SUBTYPE";
  const std::string& name = Plan::Head_Name(static_cast<Plan::Head>(head));
  return name.empty() ? absl::StrCat("HEAD_", head) : name;
}

bool IsSurvivalHead(int head) { return head == Plan::PROGNOSIS; }

std::string SuppressedText(int min_cell_count) {
  return absl::StrCat("suppressed (< min cell count ", min_cell_count, ")");
}

// A class a site withheld: it had some patients, fewer than the minimum.
std::string WithheldClassText(int min_cell_count) {
  return absl::StrCat("class suppressed at this site (< min cell count ",
                      min_cell_count, "); its patients are left out");
}

// The minimum a site applied: its flow says (a site may ask for more than
// the plan), else the plan's.
int SiteMinCellCount(int plan_min_cell_count, const PatientFlow* flow) {
  return flow != nullptr && flow->min_cell_count() > 0
             ? std::max(plan_min_cell_count, flow->min_cell_count())
             : plan_min_cell_count;
}

// A plan site's entry in the run status, or null.
const SiteStatus* FindSiteStatus(const RunStatus& status,
                                 const std::string& site) {
  for (const SiteStatus& entry : status.sites()) {
    if (entry.site() == site) return &entry;
  }
  return nullptr;
}

// Why the run status holds no counts declared by `site`; empty when it does.
std::string UndeclaredReason(const SiteStatus* site) {
  if (site == nullptr) return "not available: the site is not in the status";
  if (site->has_declared_data()) return "";
  if (!site->joined()) {
    return "not available: the site has not joined since the coordinator "
           "started";
  }
  return "not available: the site declared no counts when it joined";
}

// Images per label as declared, sorted by label (protobuf maps are not).
std::map<std::string, int64_t> SortedLabels(const DataSummary& data) {
  return std::map<std::string, int64_t>(data.images_per_label().begin(),
                                        data.images_per_label().end());
}

std::string RoleName(Plan::Role role) {
  return role == Plan::EXTERNAL_VALIDATION ? "external_validation" : "training";
}

// The split a site's report is about; a report that does not say takes the
// site's role in the plan.
EvalSplit SplitOf(const SiteEvaluation& evaluation, const Plan& plan) {
  if (evaluation.aggregate().split() != EVAL_SPLIT_UNSPECIFIED) {
    return evaluation.aggregate().split();
  }
  for (const Plan::SiteRole& role : plan.sites()) {
    if (role.site() == evaluation.site()) {
      return role.role() == Plan::EXTERNAL_VALIDATION ? EXTERNAL_VALIDATION
                                                      : INTERNAL_VALIDATION;
    }
  }
  return INTERNAL_VALIDATION;
}

const RoundRecord* SelectRound(const RunStatus& status, int round) {
  const RoundRecord* chosen = nullptr;
  for (const RoundRecord& record : status.rounds()) {
    if (record.evaluations().empty()) continue;
    if (round >= 0 ? record.round() == round
                   : chosen == nullptr || record.round() > chosen->round()) {
      chosen = &record;
    }
  }
  return chosen;
}

absl::Status CheckHead(const std::string& site, const HeadAggregate& head) {
  absl::Status status;
  if (IsSurvivalHead(head.head())) {
    status = ValidateSurvivalAggregate(head.survival());
  } else if (!head.binary().suppressed()) {
    status = ValidateAggregate(head.binary(), 2);
  }
  if (status.ok()) return status;
  return absl::InvalidArgumentError(absl::StrCat(
      "site ", site, ", head ", HeadName(head.head()), ": ", status.message()));
}

void SummarizeHead(int head_value, HeadResult* head) {
  if (!head->reported || head->suppressed) return;
  if (IsSurvivalHead(head_value)) {
    head->concordance = CIndex(head->survival);
  } else {
    head->summary = Summarize(head->binary);
  }
}

absl::StatusOr<Report> BuildReport(const RunStatus& status,
                                   const ReportOptions& options) {
  Report report;
  report.status = &status;
  report.options = options;
  report.round = SelectRound(status, options.round);
  if (report.round == nullptr) {
    return absl::NotFoundError(
        options.round >= 0
            ? absl::StrCat("run ", status.run_id(),
                           " has no evaluations of round ", options.round)
            : absl::StrCat("run ", status.run_id(),
                           " has no evaluated round yet"));
  }
  const Plan& plan = status.plan();
  if (plan.min_cell_count() > 0) report.min_cell_count = plan.min_cell_count();
  for (const std::string& name : plan.class_names()) {
    report.class_names.push_back(name);
  }
  if (report.class_names.empty()) {
    for (int c = 0; c < report.round->evaluations(0).aggregate().class_count();
         ++c) {
      report.class_names.push_back(absl::StrCat("class ", c));
    }
  }
  const int class_count = static_cast<int>(report.class_names.size());
  for (int head : plan.heads()) {
    if (head != Plan::SUBTYPE && head != Plan::HEAD_UNSPECIFIED &&
        std::find(report.heads.begin(), report.heads.end(), head) ==
            report.heads.end()) {
      report.heads.push_back(head);
    }
  }
  // A head reported but not planned is still shown rather than dropped.
  for (const SiteEvaluation& evaluation : report.round->evaluations()) {
    for (const HeadAggregate& head : evaluation.heads()) {
      if (std::find(report.heads.begin(), report.heads.end(), head.head()) ==
          report.heads.end()) {
        report.heads.push_back(head.head());
      }
    }
  }

  // Sites, internal before external, by name within each.
  std::vector<const SiteEvaluation*> evaluations;
  for (const SiteEvaluation& evaluation : report.round->evaluations()) {
    evaluations.push_back(&evaluation);
  }
  std::stable_sort(evaluations.begin(), evaluations.end(),
                   [&](const SiteEvaluation* a, const SiteEvaluation* b) {
                     EvalSplit sa = SplitOf(*a, plan), sb = SplitOf(*b, plan);
                     if (sa != sb) return sa < sb;
                     return a->site() < b->site();
                   });
  for (const SiteEvaluation* evaluation : evaluations) {
    const EvalAggregate& aggregate = evaluation->aggregate();
    if (!aggregate.suppressed()) {
      if (absl::Status valid = ValidateAggregate(aggregate, class_count);
          !valid.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("site ", evaluation->site(), ": ", valid.message()));
      }
    }
    SetResult set;
    set.key = evaluation->site();
    set.title = evaluation->site();
    set.type = SetType::kSite;
    set.split = SplitOf(*evaluation, plan);
    set.suppressed = aggregate.suppressed();
    set.aggregate = aggregate;
    set.withheld_classes.assign(aggregate.withheld_classes().begin(),
                                aggregate.withheld_classes().end());
    set.has_flow = evaluation->has_flow();
    set.flow = evaluation->flow();
    if (!set.suppressed) set.summary = Summarize(aggregate);
    if (evaluation->has_patient_aggregate()) {
      const EvalAggregate& patients = evaluation->patient_aggregate();
      if (!patients.suppressed()) {
        if (absl::Status valid = ValidateAggregate(patients, class_count);
            !valid.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("site ", evaluation->site(),
                           ", patient-level aggregate: ", valid.message()));
        }
      }
      set.has_patient_level = true;
      report.any_patient_level = true;
      set.patient_aggregate = patients;
      if (!set.suppressed && !patients.suppressed()) {
        set.patient_summary = Summarize(patients);
      }
    }
    set.heads.resize(report.heads.size());
    for (const HeadAggregate& head : evaluation->heads()) {
      if (absl::Status valid = CheckHead(evaluation->site(), head);
          !valid.ok()) {
        return valid;
      }
      const int index = static_cast<int>(
          std::find(report.heads.begin(), report.heads.end(), head.head()) -
          report.heads.begin());
      HeadResult& result = set.heads[index];
      result.reported = true;
      result.binary = head.binary();
      result.survival = head.survival();
      result.suppressed = IsSurvivalHead(head.head())
                              ? head.survival().suppressed()
                              : head.binary().suppressed();
      SummarizeHead(head.head(), &result);
    }
    report.sets.push_back(std::move(set));
  }

  // Pools: the sum of the released aggregates of a split, so the metrics of
  // the pooled cases (not an average of the sites' metrics).
  const size_t site_count = report.sets.size();
  for (EvalSplit split : {INTERNAL_VALIDATION, EXTERNAL_VALIDATION}) {
    SetResult pool;
    pool.key = absl::StrCat("pooled_", SplitName(split));
    pool.title = absl::StrCat("Pooled ", SplitName(split), " validation");
    pool.type = SetType::kPooled;
    pool.split = split;
    pool.heads.resize(report.heads.size());
    bool any = false;
    for (size_t i = 0; i < site_count; ++i) {
      const SetResult& site = report.sets[i];
      if (site.split != split) continue;
      any = true;
      if (site.suppressed) {
        pool.suppressed_sites.push_back(site.key);
      } else {
        if (absl::Status added = AddAggregate(site.aggregate, &pool.aggregate);
            !added.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("site ", site.key, ": ", added.message()));
        }
        pool.contributors.push_back(site.key);
        for (int c : site.withheld_classes) {
          pool.left_out.push_back(
              absl::StrCat(site.key, ": ", report.class_names[c]));
        }
        // Pooled exactly as the image-level aggregates, over the sites
        // that sent one.
        if (site.has_patient_level && !site.patient_aggregate.suppressed()) {
          if (absl::Status added =
                  AddAggregate(site.patient_aggregate, &pool.patient_aggregate);
              !added.ok()) {
            return absl::InvalidArgumentError(
                absl::StrCat("site ", site.key,
                             ", patient-level aggregate: ", added.message()));
          }
          pool.patient_contributors.push_back(site.key);
        } else {
          pool.patient_not_reported.push_back(site.key);
        }
      }
      for (size_t h = 0; h < report.heads.size(); ++h) {
        const HeadResult& head = site.heads[h];
        if (!head.reported || head.suppressed) continue;
        HeadResult& total = pool.heads[h];
        total.reported = true;
        absl::Status added =
            IsSurvivalHead(report.heads[h])
                ? AddSurvivalAggregate(head.survival, &total.survival)
                : AddAggregate(head.binary, &total.binary);
        if (!added.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("site ", site.key, ", head ",
                           HeadName(report.heads[h]), ": ", added.message()));
        }
      }
    }
    if (!any) continue;
    pool.suppressed = pool.contributors.empty();
    pool.aggregate.set_split(split);
    if (!pool.suppressed) pool.summary = Summarize(pool.aggregate);
    pool.has_patient_level = !pool.patient_contributors.empty();
    pool.patient_aggregate.set_split(split);
    if (pool.has_patient_level) {
      pool.patient_summary = Summarize(pool.patient_aggregate);
    }
    for (size_t h = 0; h < report.heads.size(); ++h) {
      SummarizeHead(report.heads[h], &pool.heads[h]);
    }
    report.sets.push_back(std::move(pool));
  }

  // Meta-analysis groups: a split with at least two sites, and all sites
  // together when both splits are present.
  std::vector<int> internal, external, all;
  for (size_t i = 0; i < site_count; ++i) {
    (report.sets[i].split == EXTERNAL_VALIDATION ? external : internal)
        .push_back(static_cast<int>(i));
    all.push_back(static_cast<int>(i));
  }
  if (internal.size() >= 2) {
    report.groups.push_back(
        {"meta_internal", "internal", "internal validation sites", internal});
  }
  if (external.size() >= 2) {
    report.groups.push_back(
        {"meta_external", "external", "external validation sites", external});
  }
  if (!internal.empty() && !external.empty()) {
    report.groups.push_back({"meta_all", "all", "all sites", all});
  }
  for (int g = 0; g < static_cast<int>(report.groups.size()); ++g) {
    for (int h = -1; h < static_cast<int>(report.heads.size()); ++h) {
      if (h >= 0 && IsSurvivalHead(report.heads[h])) continue;
      std::vector<SiteAggregate> sites;
      for (int i : report.groups[g].sets) {
        const SetResult& set = report.sets[i];
        if (h < 0) {
          sites.push_back({set.key, &set.aggregate});
        } else if (set.heads[h].reported) {
          sites.push_back({set.key, &set.heads[h].binary});
        }
      }
      if (sites.empty()) continue;
      const int classes = h < 0 ? class_count : 2;
      for (int c = h < 0 ? 0 : 1; c < classes; ++c) {
        report.meta.push_back({g, h, c, "auc", MetaAnalyzeAuc(sites, c)});
        report.meta.push_back(
            {g, h, c, "sensitivity", MetaAnalyzeSensitivity(sites, c)});
        report.meta.push_back(
            {g, h, c, "specificity", MetaAnalyzeSpecificity(sites, c)});
      }
    }
  }
  return report;
}

const MetaResult* FindMeta(const Report& report, int group, int head,
                           int class_index, absl::string_view metric) {
  for (const MetaResult& meta : report.meta) {
    if (meta.group == group && meta.head == head &&
        meta.class_index == class_index && meta.metric == metric) {
      return &meta;
    }
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Numbers.

// Shortest text that reads back as the same double: files compare exactly
// with a recomputation, and stay short where a value is short.
std::string Shortest(double value) {
  char buffer[32];
  std::to_chars_result result =
      std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string Fixed(double value, int digits = 3) {
  if (!std::isfinite(value)) return "n/a";
  return absl::StrFormat("%.*f", digits, value);
}

std::string Percent(double value) {
  if (!std::isfinite(value)) return "n/a";
  return absl::StrFormat("%.1f%%", 100 * value);
}

std::string WithInterval(double value, const Interval& ci, int digits = 3) {
  if (!std::isfinite(value)) return "n/a";
  if (!std::isfinite(ci.lower) || !std::isfinite(ci.upper)) {
    return Fixed(value, digits);
  }
  return absl::StrFormat("%.*f (%.*f–%.*f)", digits, value, digits, ci.lower,
                         digits, ci.upper);
}

std::string PercentWithInterval(double value, const Interval& ci) {
  if (!std::isfinite(value)) return "n/a";
  if (!std::isfinite(ci.lower)) return Percent(value);
  return absl::StrFormat("%.1f%% (%.1f–%.1f)", 100 * value, 100 * ci.lower,
                         100 * ci.upper);
}

// ---------------------------------------------------------------------------
// JSON, through common/json_writer.h: NaN becomes null (JSON has no NaN).

void WriteClassJson(const ClassMetrics& m, const std::string& name,
                    bool with_thresholds, JsonWriter* json) {
  json->BeginObject();
  json->Field("class", name);
  json->Field("support", m.support);
  json->Field("true_positives", m.true_positives);
  json->Field("false_positives", m.false_positives);
  json->Field("false_negatives", m.false_negatives);
  json->Field("true_negatives", m.true_negatives);
  const std::pair<const char*, std::pair<double, Interval>> proportions[] = {
      {"sensitivity", {m.sensitivity, m.sensitivity_ci}},
      {"specificity", {m.specificity, m.specificity_ci}},
      {"precision", {m.precision, m.precision_ci}},
      {"npv", {m.npv, m.npv_ci}},
  };
  for (const auto& [key, value] : proportions) {
    json->Key(key);
    json->BeginObject();
    json->Field("estimate", value.first);
    json->FieldInterval("ci_wilson", value.second);
    json->EndObject();
  }
  json->Field("f1", m.f1);
  json->Key("auc");
  json->BeginObject();
  json->Field("estimate", m.auc);
  json->Field("variance_delong", m.auc_variance);
  json->FieldInterval("ci_delong", m.auc_ci);
  json->EndObject();
  json->Field("brier", m.brier);
  json->Field("expected_calibration_error", m.expected_calibration_error);
  json->Field("calibration_intercept", m.calibration_intercept);
  json->Field("calibration_slope", m.calibration_slope);
  // [fpr, tpr] or, pooled, [fpr, tpr, threshold] (the first point's
  // threshold is +infinity, written as null).
  json->Key(with_thresholds ? "roc_fpr_tpr_threshold" : "roc_fpr_tpr");
  json->BeginArray();
  for (const RocPoint& point : m.roc) {
    json->BeginArray(true);
    json->Number(point.false_positive_rate);
    json->Number(point.true_positive_rate);
    if (with_thresholds) json->Number(point.threshold);
    json->EndArray();
  }
  json->EndArray();
  json->Key("reliability");
  json->BeginArray();
  for (const ReliabilityBin& bin : m.reliability) {
    json->BeginObject();
    json->Field("lower", bin.lower);
    json->Field("upper", bin.upper);
    json->Field("count", bin.count);
    json->Field("mean_predicted", bin.mean_predicted);
    json->Field("observed_fraction", bin.observed_fraction);
    json->EndObject();
  }
  json->EndArray();
  if (with_thresholds) {
    json->Key("decision_curve_threshold_net_benefit_treat_all");
    json->BeginArray();
    for (const DecisionPoint& point : m.decision_curve) {
      json->BeginArray(true);
      json->Number(point.threshold);
      json->Number(point.net_benefit);
      json->Number(point.treat_all);
      json->EndArray();
    }
    json->EndArray();
  }
  json->EndObject();
}

void WriteAveragedJson(const char* key, const AveragedMetrics& m,
                       JsonWriter* json) {
  json->Key(key);
  json->BeginObject();
  json->Field("precision", m.precision);
  json->Field("sensitivity", m.sensitivity);
  json->Field("specificity", m.specificity);
  json->Field("f1", m.f1);
  json->Field("npv", m.npv);
  json->EndObject();
}

// The subtype metrics of one aggregate. Image-level: "patients" and
// "images"; patient-level (one case per patient): "patients" only, which
// is then also every count's unit.
void WriteSummaryJson(const Report& report, const EvalAggregate& aggregate,
                      const MetricsSummary& s, bool pooled, bool patient_level,
                      JsonWriter* json) {
  json->BeginObject();
  json->Field("patients", aggregate.num_patients());
  if (!patient_level) json->Field("images", s.num_images);
  json->Key("confusion_true_by_predicted");
  json->BeginArray();
  const int k = aggregate.class_count();
  for (int t = 0; t < k && aggregate.confusion_size() == k * k; ++t) {
    json->BeginArray(true);
    for (int p = 0; p < k; ++p) json->Int(aggregate.confusion(t * k + p));
    json->EndArray();
  }
  json->EndArray();
  json->Key("accuracy");
  json->BeginObject();
  json->Field("estimate", s.accuracy);
  json->FieldInterval("ci_wilson", s.accuracy_ci);
  json->EndObject();
  json->Field("balanced_accuracy", s.balanced_accuracy);
  json->Field("cohen_kappa", s.cohen_kappa);
  // Patient-level aggregates carry no loss.
  if (!patient_level) json->Field("mean_loss", s.mean_loss);
  WriteAveragedJson("macro", s.macro, json);
  WriteAveragedJson("micro", s.micro, json);
  WriteAveragedJson("weighted", s.weighted, json);
  json->Field("has_scores", s.has_scores);
  json->Key("macro_auc");
  json->BeginObject();
  json->Field("estimate", s.macro_auc);
  json->FieldInterval("ci_conservative", s.macro_auc_ci);
  json->EndObject();
  json->Field("micro_auc", s.micro_auc);
  json->Field("weighted_auc", s.weighted_auc);
  json->Field("hand_till_auc", s.hand_till_auc);
  json->Field("brier", s.brier);
  json->Key("classes");
  json->BeginArray();
  for (size_t c = 0; c < s.classes.size(); ++c) {
    WriteClassJson(s.classes[c],
                   c < report.class_names.size() ? report.class_names[c]
                                                 : absl::StrCat("class ", c),
                   pooled, json);
  }
  json->EndArray();
  json->EndObject();
}

void WriteSummaryJson(const Report& report, const SetResult& set,
                      JsonWriter* json) {
  WriteSummaryJson(report, set.aggregate, set.summary,
                   set.type == SetType::kPooled, /*patient_level=*/false, json);
}

// Whether a set's patient-level metrics can be shown, and if not why.
enum class PatientLevel { kReported, kSuppressed, kNotReported };

PatientLevel PatientLevelOf(const SetResult& set) {
  if (set.suppressed) return PatientLevel::kSuppressed;
  if (!set.has_patient_level) return PatientLevel::kNotReported;
  if (set.patient_aggregate.suppressed()) return PatientLevel::kSuppressed;
  return PatientLevel::kReported;
}

std::string PatientNotReportedText(const SetResult& set) {
  return set.type == SetType::kSite
             ? "not reported: the site sent no patient-level aggregate "
               "(agents before patient-level reporting do not)"
             : "not reported: no site of this set sent a patient-level "
               "aggregate";
}

// Why a set has no patient-level metrics; empty when it has them.
std::string PatientLevelNote(const Report& report, const SetResult& set) {
  switch (PatientLevelOf(set)) {
    case PatientLevel::kReported:
      return "";
    case PatientLevel::kSuppressed:
      return set.type == SetType::kSite
                 ? SuppressedText(report.min_cell_count)
                 : "every site of this set suppressed its report";
    case PatientLevel::kNotReported:
      break;
  }
  return PatientNotReportedText(set);
}

// A pool's patient-level coverage when some of its released sites sent no
// patient-level aggregate; empty otherwise.
std::string PatientCoverageNote(const SetResult& set) {
  if (set.type != SetType::kPooled || set.patient_not_reported.empty() ||
      set.patient_contributors.empty()) {
    return "";
  }
  return absl::StrCat(
      "patient-level pool of sites: ",
      absl::StrJoin(set.patient_contributors, " "),
      "; not reported by: ", absl::StrJoin(set.patient_not_reported, " "));
}

void WritePatientLevelJson(const Report& report, const SetResult& set,
                           JsonWriter* json) {
  json->BeginObject();
  json->Field("unit_of_analysis", "patient");
  json->Field("scoring", kPatientScoring);
  const PatientLevel level = PatientLevelOf(set);
  json->Field("reported", level == PatientLevel::kReported);
  if (level != PatientLevel::kReported) {
    json->Field("status", PatientLevelNote(report, set));
  }
  if (set.type == SetType::kPooled) {
    json->Key("contributors");
    json->BeginArray(true);
    for (const std::string& site : set.patient_contributors) {
      json->String(site);
    }
    json->EndArray();
    json->Key("not_reported_by");
    json->BeginArray(true);
    for (const std::string& site : set.patient_not_reported) {
      json->String(site);
    }
    json->EndArray();
  }
  json->Key("summary");
  if (level == PatientLevel::kReported) {
    WriteSummaryJson(report, set.patient_aggregate, set.patient_summary,
                     set.type == SetType::kPooled, /*patient_level=*/true,
                     json);
  } else {
    json->Null();
  }
  json->EndObject();
}

void WriteHeadJson(const Report& report, const SetResult& set, size_t h,
                   JsonWriter* json) {
  const HeadResult& head = set.heads[h];
  json->BeginObject();
  json->Field("head", HeadName(report.heads[h]));
  json->Field("reported", head.reported);
  json->Field("suppressed", head.suppressed);
  if (head.reported && !head.suppressed) {
    if (IsSurvivalHead(report.heads[h])) {
      const ConcordanceIndex& c = head.concordance;
      json->Field("patients", head.survival.num_patients());
      json->Key("c_index");
      json->BeginObject();
      json->Field("estimate", c.c_index);
      json->Field("standard_error", c.standard_error);
      json->FieldInterval("ci", c.ci);
      json->Field("comparable_pairs", c.comparable_pairs);
      json->Field("concordant", c.concordant);
      json->Field("discordant", c.discordant);
      json->Field("tied", c.tied);
      json->EndObject();
    } else {
      const MetricsSummary& s = head.summary;
      json->Field("patients", head.binary.num_patients());
      json->Field("images", s.num_images);
      json->Field("accuracy", s.accuracy);
      json->Field("brier", s.brier);
      json->Key("positive");
      if (s.classes.size() == 2) {
        WriteClassJson(s.classes[1], "positive", set.type == SetType::kPooled,
                       json);
      } else {
        json->Null();
      }
    }
  }
  json->EndObject();
}

void WriteMetaJson(const Report& report, const MetaResult& meta,
                   JsonWriter* json) {
  const MetaGroup& group = report.groups[meta.group];
  json->BeginObject();
  json->Field("group", group.key);
  json->Field("split", group.split);
  json->Field("head",
              meta.head < 0 ? "SUBTYPE" : HeadName(report.heads[meta.head]));
  json->Field("class", meta.head < 0 ? report.class_names[meta.class_index]
                                     : std::string("positive"));
  json->Field("metric", meta.metric);
  json->Field("method", "DerSimonian-Laird random effects");
  json->Field("scale", meta.metric == "auc" ? "auc" : "logit");
  if (!meta.pooled.ok()) {
    json->Field("error", std::string(meta.pooled.status().message()));
    json->EndObject();
    return;
  }
  const PooledSiteMetric& p = *meta.pooled;
  const MetaAnalysis& a = p.analysis;
  json->Field("estimate", p.estimate);
  json->FieldInterval("ci", p.ci);
  json->Field("study_count", a.study_count);
  json->Field("tau2", a.tau2);
  json->Field("q", a.q);
  json->Field("degrees_of_freedom", a.degrees_of_freedom);
  json->Field("q_p_value", a.q_p_value);
  json->Field("i2_percent", a.i2);
  json->Field("heterogeneity", std::string(HeterogeneityName(a.heterogeneity)));
  json->Field("fixed_effect_estimate_analysis_scale", a.fixed_estimate);
  json->Key("weights_percent");
  json->BeginObject();
  for (const StudyWeight& weight : a.weights) {
    json->Field(weight.label, weight.percent);
  }
  json->EndObject();
  json->Key("excluded");
  json->BeginArray(true);
  for (const std::string& excluded : p.excluded) json->String(excluded);
  json->EndArray();
  json->EndObject();
}

struct TripodItem {
  const char* item;
  const char* topic;
  // in_report, partly, site_local, not_available, not_applicable, authors
  const char* status;
  const char* where;  // a section anchor of the HTML report, or words
};

// TRIPOD+AI (Collins et al., BMJ 2024;385:e078378): the items a report of a
// model's validation states, and which of them the federation can answer.
// Items of the manuscript's framing (title, discussion...) are the authors'.
const std::vector<TripodItem>& TripodItems() {
  static const auto* items = new std::vector<TripodItem>{
      {"1-3", "Title, abstract, background, intended use", "authors",
       "the manuscript"},
      {"4", "Objectives: development and/or evaluation", "partly",
       "#run: the plan's site roles (training with internal validation, "
       "external validation)"},
      {"5a", "Sources of data per centre", "partly",
       "#run: the centres and their roles; whether data are retrospective or "
       "prospective and the scanners used are not available from the "
       "federation"},
      {"5b", "Dates of data collection and follow-up per centre",
       "not_available",
       "not available from the federation (no dates leave a site)"},
      {"6a", "Setting: number and location of centres", "partly",
       "#run: number of centres and roles; locations are not available from "
       "the federation"},
      {"6b", "Eligibility criteria", "site_local",
       "the protocol's cohort rules, applied identically at every site "
       "(site-agent/CLINICAL_SCHEMA.md); their outcome per site is site-local"},
      {"6c", "Treatments received", "not_available",
       "not available from the federation"},
      {"7", "Data preparation and quality checks", "partly",
       "#run: image size, normalisation and ROI margin of the plan; per-image "
       "quality checks are site-local (echofed-agent check-data)"},
      {"8a", "Outcome definition", "partly",
       "#run: the classes (histological subtype) and heads; how and when the "
       "reference standard was assessed is the authors'"},
      {"8b-c", "Outcome assessors and blinding", "authors", "the manuscript"},
      {"9a-c", "Predictors: choice, definition, assessors", "partly",
       "#run: the model's inputs (ultrasound image; clinical inputs for "
       "fusion models)"},
      {"10", "Sample size", "partly",
       "#flow: patients and images per centre and set; the justification is "
       "the authors'"},
      {"11", "Handling of missing data", "site_local",
       "fusion models use missingness indicators at each site; counts of "
       "missing values are not available from the federation"},
      {"12a", "How data were used: partitioning", "in_report",
       "#run: patient-level split fraction and seed; external sites validate "
       "on all their patients"},
      {"12b-c", "Predictor handling, model type, training", "in_report",
       "#run: model, strategy, rounds, local epochs, optimiser, loss"},
      {"12d", "Heterogeneity across centres", "in_report",
       "#heterogeneity: DerSimonian-Laird random effects with tau² and I²"},
      {"12e", "Performance measures and their rationale", "in_report",
       "#methods; #performance: subtype metrics per image and, where the "
       "sites sent them, per patient (mean probability over a patient's "
       "images), each labelled with its unit of analysis"},
      {"12f", "Model updating / recalibration", "in_report",
       "#calibration: intercept and slope are reported; no recalibration is "
       "applied by the federation"},
      {"12g", "How predictions were calculated", "in_report",
       "#run: the committed model (digest), downloadable with echofed model "
       "download"},
      {"13", "Class imbalance", "in_report", "#run: the plan's loss"},
      {"14", "Fairness", "not_available",
       "not available from the federation (no sociodemographic subgroups "
       "leave a site)"},
      {"15", "Model output and thresholds", "in_report",
       "#methods: class probabilities; the predicted class is the most "
       "probable"},
      {"16", "Differences between development and evaluation data", "partly",
       "#flow: case mix per centre and set; other differences are the "
       "authors'"},
      {"17-19", "Ethics, open science, patient and public involvement",
       "authors", "the manuscript"},
      {"20a", "Participant flow", "in_report",
       "#flow: each site's CONSORT-style flow (screened, excluded by reason, "
       "included, split, analysed), counts under the minimum cell count "
       "suppressed; the counts each site declared at join"},
      {"20b", "Participant characteristics by centre", "partly",
       "#flow: class distribution per centre; clinical characteristics are not "
       "available from the federation"},
      {"20c", "Predictor distributions, development vs evaluation",
       "not_available", "not available from the federation"},
      {"21", "Participants and outcome events in each analysis", "in_report",
       "#performance and the CSV's n column"},
      {"22", "Full model specification", "in_report",
       "#run: model name and committed model digest"},
      {"23a", "Performance with confidence intervals, by centre", "in_report",
       "#performance, #roc, #confusion, #calibration; subgroups are not "
       "available from the federation"},
      {"23b", "Heterogeneity of performance across centres", "in_report",
       "#heterogeneity"},
      {"24", "Model updating results", "not_applicable",
       "the federation does not update models after evaluation"},
      {"25-27", "Interpretation, limitations, implementation", "authors",
       "the manuscript"},
  };
  return *items;
}

std::string RenderJson(const Report& report) {
  const RunStatus& status = *report.status;
  const Plan& plan = status.plan();
  const RoundRecord& round = *report.round;
  JsonWriter json;
  json.BeginObject();
  json.Field("schema", "echofed.report.v1");
  if (report.options.generated_unix_ms != 0) {
    json.Field("generated_unix_ms", report.options.generated_unix_ms);
  }
  json.Key("run");
  json.BeginObject();
  json.Field("run_id", status.run_id());
  json.Field("name", plan.name());
  json.Field("state", RunStatus::State_Name(status.state()));
  json.Field("rounds_planned", plan.rounds());
  json.Field("model", plan.model());
  json.Field("strategy", Plan::Strategy_Name(plan.strategy()));
  json.Field("secure_aggregation", plan.secure_aggregation());
  json.Key("class_names");
  json.BeginArray(true);
  for (const std::string& name : report.class_names) json.String(name);
  json.EndArray();
  json.Key("heads");
  json.BeginArray(true);
  for (int head : report.heads) json.String(HeadName(head));
  json.EndArray();
  json.Field("min_cell_count", report.min_cell_count);
  json.Field("train_fraction", plan.train_fraction());
  // A string: 64-bit seeds do not survive JSON readers' doubles.
  json.Field("split_seed", absl::StrCat(plan.split_seed()));
  // What one case of the subtype metrics is: "subtype" of a set counts
  // images, "subtype_patient_level" patients.
  json.Key("unit_of_analysis");
  json.BeginObject();
  json.Field("subtype", "image");
  json.Field("subtype_patient_level", "patient");
  json.Field("patient_level_scoring", kPatientScoring);
  json.Field("patient_level_reported", report.any_patient_level);
  if (!report.any_patient_level) {
    json.Field("patient_level_status",
               "not reported: no site sent patient-level aggregates");
  }
  json.EndObject();
  if (plan.has_differential_privacy()) {
    // Each site's epsilon as of the reported round, as the site declared it
    // with its updates, and what the whole run costs a training site.
    const DifferentialPrivacy& dp = plan.differential_privacy();
    json.Key("differential_privacy");
    json.BeginObject();
    json.Field("clip_norm", dp.clip_norm());
    json.Field("noise_multiplier", dp.noise_multiplier());
    json.Field("delta", PlanPrivacyDelta(dp));
    absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
    if (projected.ok()) {
      json.Field("projected_run_epsilon", projected->epsilon);
    }
    json.Key("sites");
    json.BeginArray();
    for (const SitePrivacySpent& site :
         LatestSitePrivacy(status, round.round())) {
      json.BeginObject();
      json.Field("site", site.site);
      json.Field("epsilon", site.epsilon);
      json.Field("delta", site.delta);
      json.Field("as_of_round", site.round);
      json.EndObject();
    }
    json.EndArray();
    json.EndObject();
  }
  json.Key("sites");
  json.BeginArray();
  for (const Plan::SiteRole& role : plan.sites()) {
    json.BeginObject();
    json.Field("site", role.site());
    json.Field("role", Plan::Role_Name(role.role()));
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();

  json.Key("round");
  json.BeginObject();
  json.Field("round", round.round());
  json.Field("model_sha256", absl::BytesToHexString(round.model_digest()));
  json.Key("contributors");
  json.BeginArray(true);
  for (const std::string& site : round.contributors()) json.String(site);
  json.EndArray();
  json.Field("mean_train_loss", round.mean_train_loss());
  json.Field("closed_unix_ms", round.closed_unix_ms());
  json.EndObject();

  json.Key("sets");
  json.BeginArray();
  for (const SetResult& set : report.sets) {
    json.BeginObject();
    json.Field("set", set.key);
    json.Field("set_type", set.type == SetType::kSite ? "site" : "pooled");
    json.Field("split", SplitName(set.split));
    json.Field("suppressed", set.suppressed);
    if (set.type == SetType::kPooled) {
      json.Key("contributors");
      json.BeginArray(true);
      for (const std::string& site : set.contributors) json.String(site);
      json.EndArray();
      json.Key("suppressed_sites");
      json.BeginArray(true);
      for (const std::string& site : set.suppressed_sites) json.String(site);
      json.EndArray();
      json.Key("classes_left_out");
      json.BeginArray(true);
      for (const std::string& left_out : set.left_out) json.String(left_out);
      json.EndArray();
    } else {
      json.Key("withheld_classes");
      json.BeginArray(true);
      for (int c : set.withheld_classes) json.String(report.class_names[c]);
      json.EndArray();
    }
    json.Key("subtype");
    if (set.suppressed) {
      json.Null();
    } else {
      WriteSummaryJson(report, set, &json);
    }
    json.Field("subtype_unit_of_analysis", "image");
    json.Key("subtype_patient_level");
    WritePatientLevelJson(report, set, &json);
    json.Key("heads");
    json.BeginArray();
    for (size_t h = 0; h < report.heads.size(); ++h) {
      WriteHeadJson(report, set, h, &json);
    }
    json.EndArray();
    json.EndObject();
  }
  json.EndArray();

  json.Key("meta_analyses");
  json.BeginArray();
  for (const MetaResult& meta : report.meta) WriteMetaJson(report, meta, &json);
  json.EndArray();

  json.Key("suppressed");
  json.BeginArray();
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    if (set.suppressed) {
      json.BeginObject();
      json.Field("site", set.key);
      json.Field("split", SplitName(set.split));
      json.Field("what", "SUBTYPE");
      json.Field("status", SuppressedText(report.min_cell_count));
      json.EndObject();
    }
    for (size_t h = 0; h < report.heads.size(); ++h) {
      if (!set.heads[h].suppressed) continue;
      json.BeginObject();
      json.Field("site", set.key);
      json.Field("split", SplitName(set.split));
      json.Field("what", HeadName(report.heads[h]));
      json.Field("status", SuppressedText(report.min_cell_count));
      json.EndObject();
    }
    const int site_min = SiteMinCellCount(report.min_cell_count,
                                          set.has_flow ? &set.flow : nullptr);
    for (int c : set.withheld_classes) {
      json.BeginObject();
      json.Field("site", set.key);
      json.Field("split", SplitName(set.split));
      json.Field("what", absl::StrCat("SUBTYPE class ", report.class_names[c]));
      json.Field("status", WithheldClassText(site_min));
      json.EndObject();
    }
  }
  json.EndArray();

  json.Key("patient_flow");
  json.BeginObject();
  // Agents before the flow was sent report none.
  bool any_flow = false;
  for (const SetResult& set : report.sets) any_flow = any_flow || set.has_flow;
  json.Field("available_from_federation", any_flow);
  json.Field("note",
             "The CONSORT-style flow (screened, excluded by reason, included, "
             "split, analysed) is counted at each site and sent with its "
             "evaluation as counts only (by_site), each count below the "
             "site's minimum cell count, or recoverable from the others by "
             "subtraction, suppressed (patients null). Also: the aggregate "
             "counts each site declared when it joined (declared_at_join, "
             "before the patient-level split, not verified by the "
             "coordinator) and the evaluated counts per site and set "
             "(sites).");
  json.Key("by_site");
  json.BeginArray();
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    json.BeginObject();
    json.Field("site", set.key);
    json.Field("split", SplitName(set.split));
    json.Field("reported", set.has_flow);
    if (set.has_flow) {
      json.Field("min_cell_count", set.flow.min_cell_count());
      json.Key("steps");
      json.BeginArray();
      auto step_json = [&](const FlowCount& step) {
        json.BeginObject();
        json.Field("step", step.step());
        json.Key("patients");
        if (step.suppressed()) {
          json.Null();
        } else {
          json.Int(step.patients());
        }
        json.Field("suppressed", step.suppressed());
        json.EndObject();
      };
      for (const FlowCount& step : set.flow.steps()) step_json(step);
      json.EndArray();
      json.Key("refused_manifest_lines");
      step_json(set.flow.refused_manifest_lines());
      json.Key("notes");
      json.BeginArray(true);
      for (const std::string& note : set.flow.notes()) json.String(note);
      json.EndArray();
    } else {
      json.Field("status", "not available: the site sent no flow");
    }
    json.EndObject();
  }
  json.EndArray();
  json.Key("declared_at_join");
  json.BeginArray();
  for (const Plan::SiteRole& role : report.status->plan().sites()) {
    const SiteStatus* site = FindSiteStatus(*report.status, role.site());
    const std::string reason = UndeclaredReason(site);
    json.BeginObject();
    json.Field("site", role.site());
    json.Field("role", RoleName(role.role()));
    json.Field("declared", reason.empty());
    if (reason.empty()) {
      const DataSummary& data = site->declared_data();
      json.Field("patients", data.patients());
      json.Field("images", data.images());
      json.Key("images_per_label");
      json.BeginObject();
      for (const auto& [label, images] : SortedLabels(data)) {
        json.Field(label, images);
      }
      json.EndObject();
      json.Field("min_cell_count", data.min_cell_count());
      json.Key("withheld_labels");
      json.BeginArray(true);
      for (const std::string& label : data.withheld_labels()) {
        json.String(label);
      }
      json.EndArray();
    } else {
      json.Field("status", reason);
    }
    json.EndObject();
  }
  json.EndArray();
  json.Key("sites");
  json.BeginArray();
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    json.BeginObject();
    json.Field("site", set.key);
    json.Field("split", SplitName(set.split));
    json.Field("suppressed", set.suppressed);
    if (!set.suppressed) {
      json.Field("patients", set.aggregate.num_patients());
      json.Field("images", set.summary.num_images);
      json.Key("images_per_class");
      json.BeginObject();
      for (size_t c = 0; c < set.summary.classes.size(); ++c) {
        json.Field(report.class_names[c], set.summary.classes[c].support);
      }
      json.EndObject();
    }
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();

  json.Key("tripod_ai");
  json.BeginArray();
  for (const TripodItem& item : TripodItems()) {
    json.BeginObject();
    json.Field("item", item.item);
    json.Field("topic", item.topic);
    json.Field("status", item.status);
    json.Field("where", item.where);
    json.EndObject();
  }
  json.EndArray();
  json.EndObject();
  return json.Take();
}

// ---------------------------------------------------------------------------
// CSV: tidy, one row per set x head x metric (x class).

std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\n\r") == absl::string_view::npos) {
    return std::string(text);
  }
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  out += "\"";
  return out;
}

std::string CsvNumber(double value) {
  return std::isfinite(value) ? Shortest(value) : "NA";
}

class CsvWriter {
 public:
  explicit CsvWriter(const Report& report) : report_(report) {
    out_ = absl::StrCat(kReportCsvHeader, "\n");
  }

  // The columns that stay the same over a block of rows.
  void SetContext(std::string set, std::string set_type, std::string split,
                  std::string head) {
    set_ = std::move(set);
    set_type_ = std::move(set_type);
    split_ = std::move(split);
    head_ = std::move(head);
  }

  // A default note for every row of the block (a suppressed set), and the
  // note of an undefined estimate otherwise.
  void SetBlockNote(std::string note) { block_note_ = std::move(note); }

  // The unit of analysis of the block's estimates: "image", "patient", or
  // empty where there is none (privacy).
  void SetUnit(std::string unit) { unit_ = std::move(unit); }

  void Row(absl::string_view metric, absl::string_view class_name,
           double estimate, Interval ci, std::optional<int64_t> n,
           absl::string_view note = "") {
    std::string why(note);
    if (!block_note_.empty()) {
      estimate = kNaN;
      ci = Interval();
      n.reset();
      why = block_note_;
    } else if (!std::isfinite(estimate) && why.empty()) {
      why = "undefined";
    }
    absl::StrAppend(
        &out_,
        absl::StrJoin(
            {CsvField(report_.status->run_id()),
             absl::StrCat(report_.round->round()), CsvField(set_),
             CsvField(set_type_), CsvField(split_), CsvField(head_),
             CsvField(metric), CsvField(class_name), CsvNumber(estimate),
             CsvNumber(ci.lower), CsvNumber(ci.upper),
             n.has_value() ? absl::StrCat(*n) : std::string("NA"),
             CsvField(why), CsvField(unit_)},
            ","),
        "\n");
  }

  std::string Take() { return std::move(out_); }

 private:
  const Report& report_;
  std::string out_;
  std::string set_, set_type_, split_, head_, block_note_, unit_;
};

// Which sites a pool holds: `contributors` (the image-level pool's, or the
// patient-level one's, which may be fewer), those that sent nothing of the
// kind, those suppressed, and the classes left out.
std::string PoolNote(const SetResult& set,
                     const std::vector<std::string>& contributors,
                     const std::vector<std::string>& not_reported = {}) {
  if (set.type != SetType::kPooled) return "";
  std::string note = absl::StrCat("sites: ", absl::StrJoin(contributors, " "));
  if (!not_reported.empty()) {
    absl::StrAppend(&note, "; not reported, not pooled: ",
                    absl::StrJoin(not_reported, " "));
  }
  if (!set.suppressed_sites.empty()) {
    absl::StrAppend(&note, "; suppressed, not pooled: ",
                    absl::StrJoin(set.suppressed_sites, " "));
  }
  if (!set.left_out.empty()) {
    absl::StrAppend(&note,
                    "; classes suppressed at a site, their patients not "
                    "pooled: ",
                    absl::StrJoin(set.left_out, ", "));
  }
  return note;
}

// The subtype metrics of `s`, each named `prefix` + metric, with `cases`
// (images or patients) as the n of the rows counted in cases.
void SummaryRows(const Report& report, const SetResult& set,
                 const MetricsSummary& s, absl::string_view prefix,
                 int64_t cases, CsvWriter* csv) {
  auto metric = [&](absl::string_view name) {
    return absl::StrCat(prefix, name);
  };
  csv->Row(metric("accuracy"), "", s.accuracy, s.accuracy_ci, cases);
  csv->Row(metric("balanced_accuracy"), "", s.balanced_accuracy, {}, cases);
  csv->Row(metric("macro_f1"), "", s.macro.f1, {}, cases);
  csv->Row(metric("cohen_kappa"), "", s.cohen_kappa, {}, cases);
  csv->Row(metric("macro_auc"), "", s.macro_auc, s.macro_auc_ci, cases);
  csv->Row(metric("hand_till_auc"), "", s.hand_till_auc, {}, cases);
  csv->Row(metric("brier"), "", s.brier, {}, cases);
  const int site_min = SiteMinCellCount(report.min_cell_count,
                                        set.has_flow ? &set.flow : nullptr);
  for (size_t c = 0; c < report.class_names.size(); ++c) {
    const std::string& name = report.class_names[c];
    const ClassMetrics m = c < s.classes.size() ? s.classes[c] : ClassMetrics();
    const bool withheld =
        std::find(set.withheld_classes.begin(), set.withheld_classes.end(),
                  static_cast<int>(c)) != set.withheld_classes.end();
    const std::string no_cases =
        withheld ? WithheldClassText(site_min)
                 : (m.support == 0 ? "no cases of the class" : "");
    csv->Row(metric("sensitivity"), name, m.sensitivity, m.sensitivity_ci,
             m.support, no_cases);
    csv->Row(metric("specificity"), name, m.specificity, m.specificity_ci,
             m.true_negatives + m.false_positives);
    csv->Row(metric("precision"), name, m.precision, m.precision_ci,
             m.true_positives + m.false_positives,
             m.true_positives + m.false_positives == 0
                 ? "the class was never predicted"
                 : "");
    csv->Row(metric("npv"), name, m.npv, m.npv_ci,
             m.true_negatives + m.false_negatives);
    csv->Row(metric("f1"), name, m.f1, {}, cases);
    csv->Row(metric("auc"), name, m.auc, m.auc_ci, cases,
             std::isfinite(m.auc) ? "DeLong 95% CI" : no_cases);
    csv->Row(metric("brier"), name, m.brier, {}, cases);
    csv->Row(metric("calibration_intercept"), name, m.calibration_intercept, {},
             cases);
    csv->Row(metric("calibration_slope"), name, m.calibration_slope, {}, cases);
  }
}

void SubtypeRows(const Report& report, const SetResult& set, CsvWriter* csv) {
  csv->SetContext(set.key, set.type == SetType::kSite ? "site" : "pooled",
                  SplitName(set.split), "SUBTYPE");
  csv->SetUnit("image");
  csv->SetBlockNote(set.suppressed
                        ? (set.type == SetType::kSite
                               ? SuppressedText(report.min_cell_count)
                               : std::string("every site of this set "
                                             "suppressed its report"))
                        : "");
  const MetricsSummary& s = set.summary;
  const int64_t images = s.num_images;
  const std::string pool_note = PoolNote(set, set.contributors);
  csv->Row("patients", "", static_cast<double>(set.aggregate.num_patients()),
           {}, set.aggregate.num_patients(), pool_note);
  csv->Row("images", "", static_cast<double>(images), {}, images, pool_note);
  SummaryRows(report, set, s, "", images, csv);
  csv->SetBlockNote("");
}

// The subtype metrics of the set at the patient level (unit "patient"),
// as SubtypeRows' with "patient_level_" before the metric's name, so that
// (set, head, metric, class) still names one row. Every row is NA with the
// reason when the set has none ("not reported" when no site sent one).
void PatientLevelRows(const Report& report, const SetResult& set,
                      CsvWriter* csv) {
  csv->SetContext(set.key, set.type == SetType::kSite ? "site" : "pooled",
                  SplitName(set.split), "SUBTYPE");
  csv->SetUnit("patient");
  csv->SetBlockNote(PatientLevelNote(report, set));
  const MetricsSummary& s = set.patient_summary;
  const int64_t patients = set.patient_aggregate.num_patients();
  std::string note =
      absl::StrCat("one case per patient, scored with the ", kPatientScoring);
  if (set.type == SetType::kPooled) {
    absl::StrAppend(
        &note, "; ",
        PoolNote(set, set.patient_contributors, set.patient_not_reported));
  }
  csv->Row("patient_level_patients", "", static_cast<double>(patients), {},
           patients, note);
  SummaryRows(report, set, s, "patient_level_", patients, csv);
  csv->SetBlockNote("");
}

// A site's patient flow: one row per step, the count as the estimate.
void FlowRows(const SetResult& set, CsvWriter* csv) {
  if (set.type != SetType::kSite || !set.has_flow) return;
  csv->SetContext(set.key, "site", SplitName(set.split), "");
  csv->SetUnit("patient");
  csv->SetBlockNote("");
  const std::string suppressed = SuppressedText(set.flow.min_cell_count());
  auto row = [&](absl::string_view metric, const FlowCount& step) {
    if (step.suppressed()) {
      csv->Row(metric, step.step(), kNaN, {}, std::nullopt, suppressed);
    } else {
      csv->Row(metric, step.step(), static_cast<double>(step.patients()), {},
               step.patients());
    }
  };
  for (const FlowCount& step : set.flow.steps()) row("patient_flow", step);
  row("manifest_lines_refused", set.flow.refused_manifest_lines());
}

void HeadRows(const Report& report, const SetResult& set, CsvWriter* csv) {
  for (size_t h = 0; h < report.heads.size(); ++h) {
    const HeadResult& head = set.heads[h];
    if (!head.reported && set.type == SetType::kSite) continue;
    csv->SetContext(set.key, set.type == SetType::kSite ? "site" : "pooled",
                    SplitName(set.split), HeadName(report.heads[h]));
    // Binary heads are scored per image, the prognosis head per patient.
    csv->SetUnit(IsSurvivalHead(report.heads[h]) ? "patient" : "image");
    std::string block_note;
    if (head.suppressed) block_note = SuppressedText(report.min_cell_count);
    if (!head.reported) block_note = "no site released this head";
    csv->SetBlockNote(block_note);
    if (IsSurvivalHead(report.heads[h])) {
      const ConcordanceIndex& c = head.concordance;
      const int64_t patients = head.survival.num_patients();
      csv->Row("patients", "", static_cast<double>(patients), {}, patients);
      csv->Row(
          "c_index", "", c.c_index, c.ci, patients,
          absl::StrCat("Harrell; ", c.comparable_pairs, " comparable pairs"));
    } else {
      const MetricsSummary& s = head.summary;
      const ClassMetrics m =
          s.classes.size() == 2 ? s.classes[1] : ClassMetrics();
      csv->Row("patients", "", static_cast<double>(head.binary.num_patients()),
               {}, head.binary.num_patients());
      csv->Row("images", "", static_cast<double>(s.num_images), {},
               s.num_images);
      csv->Row("auc", "positive", m.auc, m.auc_ci, s.num_images,
               std::isfinite(m.auc) ? "DeLong 95% CI" : "");
      csv->Row("sensitivity", "positive", m.sensitivity, m.sensitivity_ci,
               m.support);
      csv->Row("specificity", "positive", m.specificity, m.specificity_ci,
               m.true_negatives + m.false_positives);
      csv->Row("brier", "", s.brier, {}, s.num_images);
    }
    csv->SetBlockNote("");
  }
}

void MetaRows(const Report& report, CsvWriter* csv) {
  for (const MetaResult& meta : report.meta) {
    const MetaGroup& group = report.groups[meta.group];
    csv->SetContext(
        group.key, "meta", group.split,
        meta.head < 0 ? "SUBTYPE" : HeadName(report.heads[meta.head]));
    csv->SetUnit("image");  // of the sites' image-level estimates
    const std::string class_name = meta.head < 0
                                       ? report.class_names[meta.class_index]
                                       : std::string("positive");
    const std::string metric = absl::StrCat(meta.metric, "_dl");
    if (!meta.pooled.ok()) {
      csv->Row(metric, class_name, kNaN, {}, std::nullopt,
               meta.pooled.status().message());
      continue;
    }
    const PooledSiteMetric& p = *meta.pooled;
    const MetaAnalysis& a = p.analysis;
    std::string note = "DerSimonian-Laird random effects";
    if (meta.metric != "auc")
      absl::StrAppend(&note, ", pooled on the logit scale");
    if (!p.excluded.empty()) {
      absl::StrAppend(&note, "; excluded: ", absl::StrJoin(p.excluded, "; "));
    }
    csv->Row(metric, class_name, p.estimate, p.ci, a.study_count, note);
    csv->Row(absl::StrCat(meta.metric, "_tau2"), class_name, a.tau2, {},
             a.study_count, meta.metric == "auc" ? "" : "on the logit scale");
    csv->Row(absl::StrCat(meta.metric, "_i2_percent"), class_name, a.i2, {},
             a.study_count, a.study_count < 2 ? "undefined with one site" : "");
    csv->Row(absl::StrCat(meta.metric, "_q_p_value"), class_name, a.q_p_value,
             {}, a.study_count);
  }
}

// Differential privacy runs: each site's epsilon as of the reported round
// (set = the site) and a training site's over the whole run (set "plan"),
// with the delta and the plan's settings in the note.
void PrivacyRows(const Report& report, CsvWriter* csv) {
  const Plan& plan = report.status->plan();
  if (!plan.has_differential_privacy()) return;
  const DifferentialPrivacy& dp = plan.differential_privacy();
  const std::string settings =
      absl::StrCat("clip_norm ", Shortest(dp.clip_norm()),
                   "; noise_multiplier ", Shortest(dp.noise_multiplier()));
  csv->SetBlockNote("");
  csv->SetUnit("");
  for (const SitePrivacySpent& site :
       LatestSitePrivacy(*report.status, report.round->round())) {
    csv->SetContext(site.site, "site", "training", "");
    csv->Row("privacy_epsilon", "", site.epsilon, Interval(), std::nullopt,
             absl::StrCat("delta ", Shortest(site.delta), "; as of round ",
                          site.round, "; ", settings));
  }
  absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
  if (projected.ok()) {
    csv->SetContext("plan", "plan", "training", "");
    csv->Row("privacy_epsilon_projected", "", projected->epsilon, Interval(),
             std::nullopt,
             absl::StrCat("delta ", Shortest(projected->delta), "; ",
                          plan.rounds(), " rounds; ", settings));
  }
}

std::string RenderCsv(const Report& report) {
  CsvWriter csv(report);
  for (const SetResult& set : report.sets) {
    SubtypeRows(report, set, &csv);
    PatientLevelRows(report, set, &csv);
    HeadRows(report, set, &csv);
    FlowRows(set, &csv);
  }
  MetaRows(report, &csv);
  PrivacyRows(report, &csv);
  return csv.Take();
}

// ---------------------------------------------------------------------------
// HTML with inline SVG. Drawn here rather than by a plotting library so that
// the page has no script, no external asset and no runtime dependency: it
// opens offline, inside a hospital network, and archives as one file.

// Okabe & Ito's palette: distinguishable with the common colour-vision
// deficiencies.
const char* Colour(int index) {
  static const char* kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#F0E442"};
  return kColours[index % 8];
}

// A rectangle of the page that maps data coordinates to SVG pixels.
struct Frame {
  double width = 0, height = 0;
  double left = 0, right = 0, top = 0, bottom = 0;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  double X(double v) const {
    return left + (v - x_min) / (x_max - x_min) * (width - left - right);
  }
  double Y(double v) const {
    return height - bottom -
           (v - y_min) / (y_max - y_min) * (height - top - bottom);
  }
};

std::string SvgOpen(double width, double height, absl::string_view label) {
  return absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
      "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
      "aria-label=\"%s\" font-family=\"sans-serif\" font-size=\"11\">"
      "<title>%s</title><rect width=\"100%%\" height=\"100%%\" "
      "fill=\"#fff\"/>",
      width, height, width, height, HtmlEscape(label), HtmlEscape(label));
}

std::string SvgText(double x, double y, absl::string_view text,
                    absl::string_view anchor = "start",
                    absl::string_view extra = "") {
  return absl::StrFormat(
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>%s</text>", x, y,
      anchor, extra, HtmlEscape(text));
}

std::string SvgLine(double x1, double y1, double x2, double y2,
                    absl::string_view colour, double width = 1,
                    absl::string_view dash = "") {
  return absl::StrFormat(
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
      "stroke-width=\"%.1f\"%s/>",
      x1, y1, x2, y2, colour, width,
      dash.empty() ? "" : absl::StrCat(" stroke-dasharray=\"", dash, "\""));
}

// Frame, grid, ticks at `ticks` on both axes, axis titles.
std::string SvgAxes(const Frame& f, const std::vector<double>& x_ticks,
                    const std::vector<double>& y_ticks,
                    absl::string_view x_title, absl::string_view y_title) {
  std::string out;
  for (double t : x_ticks) {
    absl::StrAppend(
        &out, SvgLine(f.X(t), f.Y(f.y_min), f.X(t), f.Y(f.y_max), "#e5e5e5"),
        SvgText(f.X(t), f.Y(f.y_min) + 13, Fixed(t, 1), "middle"));
  }
  for (double t : y_ticks) {
    absl::StrAppend(
        &out, SvgLine(f.X(f.x_min), f.Y(t), f.X(f.x_max), f.Y(t), "#e5e5e5"),
        SvgText(f.X(f.x_min) - 4, f.Y(t) + 4, Fixed(t, 1), "end"));
  }
  absl::StrAppend(
      &out,
      absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                      "height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>",
                      f.X(f.x_min), f.Y(f.y_max), f.X(f.x_max) - f.X(f.x_min),
                      f.Y(f.y_min) - f.Y(f.y_max)),
      SvgText((f.X(f.x_min) + f.X(f.x_max)) / 2, f.Y(f.y_min) + 26, x_title,
              "middle"),
      absl::StrFormat("<text transform=\"translate(12 %.1f) rotate(-90)\" "
                      "text-anchor=\"middle\">%s</text>",
                      (f.Y(f.y_min) + f.Y(f.y_max)) / 2, HtmlEscape(y_title)));
  return out;
}

std::string SvgPolyline(const Frame& f,
                        const std::vector<std::pair<double, double>>& points,
                        absl::string_view colour, double width = 1.8) {
  std::string coordinates;
  for (const auto& [x, y] : points) {
    absl::StrAppend(&coordinates,
                    absl::StrFormat("%.1f,%.1f ", f.X(x), f.Y(y)));
  }
  return absl::StrFormat(
      "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" "
      "stroke-width=\"%.1f\" stroke-linejoin=\"round\"/>",
      coordinates, colour, width);
}

const std::vector<double>& UnitTicks() {
  static const auto* ticks =
      new std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0};
  return *ticks;
}

// One-vs-rest ROC curves of every class of one set.
std::string RocSvg(const Report& report, const SetResult& set, double size) {
  Frame f;
  f.width = size;
  f.height = size;
  f.left = 38;
  f.right = 8;
  f.top = 22;
  f.bottom = 32;
  std::string out =
      SvgOpen(size, size, absl::StrCat("ROC curves, ", set.title));
  absl::StrAppend(&out, SvgText(size / 2, 14, set.title, "middle",
                                " font-weight=\"bold\""));
  absl::StrAppend(&out, SvgAxes(f, UnitTicks(), UnitTicks(), "1 − specificity",
                                "sensitivity"));
  absl::StrAppend(&out,
                  SvgLine(f.X(0), f.Y(0), f.X(1), f.Y(1), "#999", 1, "4 3"));
  const std::vector<ClassMetrics>& classes = set.summary.classes;
  int legend_row = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    const ClassMetrics& m = classes[c];
    std::string legend =
        absl::StrCat(report.class_names[c], " ", WithInterval(m.auc, m.auc_ci));
    if (!m.roc.empty()) {
      std::vector<std::pair<double, double>> points;
      for (const RocPoint& point : m.roc) {
        points.emplace_back(point.false_positive_rate,
                            point.true_positive_rate);
      }
      absl::StrAppend(&out, SvgPolyline(f, points, Colour(c)));
    }
    const double y =
        f.Y(0) - 8 -
        14 * (static_cast<double>(classes.size()) - 1 - legend_row);
    absl::StrAppend(
        &out, SvgLine(f.X(0.36), y - 4, f.X(0.36) + 14, y - 4, Colour(c), 2.5),
        SvgText(f.X(0.36) + 18, y, legend));
    ++legend_row;
  }
  out += "</svg>";
  return out;
}

// Reliability diagram of every class of one set: observed fraction against
// mean predicted probability per tenth, dots sized by the bin's images.
std::string CalibrationSvg(const Report& report, const SetResult& set) {
  const double size = 380;
  const std::vector<ClassMetrics>& classes = set.summary.classes;
  // The legend goes under the plot: inside, it would hide bins.
  const double legend = 8 + 14 * static_cast<double>(classes.size());
  Frame f;
  f.width = size;
  f.height = size + legend;
  f.left = 38;
  f.right = 8;
  f.top = 22;
  f.bottom = 32 + legend;
  std::string out =
      SvgOpen(f.width, f.height, absl::StrCat("Calibration, ", set.title));
  absl::StrAppend(&out, SvgText(size / 2, 14, set.title, "middle",
                                " font-weight=\"bold\""));
  absl::StrAppend(
      &out, SvgAxes(f, UnitTicks(), UnitTicks(), "mean predicted probability",
                    "observed fraction"));
  absl::StrAppend(&out,
                  SvgLine(f.X(0), f.Y(0), f.X(1), f.Y(1), "#999", 1, "4 3"));
  int64_t largest = 1;
  for (const ClassMetrics& m : classes) {
    for (const ReliabilityBin& bin : m.reliability) {
      largest = std::max(largest, bin.count);
    }
  }
  for (size_t c = 0; c < classes.size(); ++c) {
    const ClassMetrics& m = classes[c];
    std::vector<std::pair<double, double>> points;
    for (const ReliabilityBin& bin : m.reliability) {
      if (bin.count == 0) continue;
      points.emplace_back(bin.mean_predicted, bin.observed_fraction);
      absl::StrAppend(
          &out,
          absl::StrFormat(
              "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" "
              "fill-opacity=\"0.6\"><title>%s: %d images, predicted %.3f, "
              "observed %.3f</title></circle>",
              f.X(bin.mean_predicted), f.Y(bin.observed_fraction),
              2 + 5 * std::sqrt(static_cast<double>(bin.count) / largest),
              Colour(c), HtmlEscape(report.class_names[c]), bin.count,
              bin.mean_predicted, bin.observed_fraction));
    }
    if (points.size() > 1) {
      absl::StrAppend(&out, SvgPolyline(f, points, Colour(c), 1.2));
    }
    const double y = size + 8 + 14 * static_cast<double>(c);
    absl::StrAppend(
        &out, SvgLine(f.X(0.03), y - 4, f.X(0.03) + 14, y - 4, Colour(c), 2.5),
        SvgText(f.X(0.03) + 18, y,
                absl::StrCat(report.class_names[c], ": intercept ",
                             Fixed(m.calibration_intercept, 2), ", slope ",
                             Fixed(m.calibration_slope, 2))));
  }
  out += "</svg>";
  return out;
}

// The AUC (with DeLong interval) of class `class_index` of the subtype
// (head < 0) or of a binary head's positive class, in one set.
struct AucOf {
  bool available = false;  // reported and not suppressed
  double auc = kNaN;
  Interval ci;
};

AucOf SetAuc(const SetResult& set, int head, int class_index) {
  AucOf result;
  const MetricsSummary* summary = nullptr;
  if (head < 0) {
    if (set.suppressed) return result;
    summary = &set.summary;
  } else {
    const HeadResult& h = set.heads[head];
    if (!h.reported || h.suppressed) return result;
    summary = &h.summary;
  }
  result.available = true;
  if (class_index < static_cast<int>(summary->classes.size())) {
    result.auc = summary->classes[class_index].auc;
    result.ci = summary->classes[class_index].auc_ci;
  }
  return result;
}

// Forest plot of the sites' AUCs of one class, then the pooled-cases AUC of
// each split and the DerSimonian-Laird estimate of each group.
std::string ForestSvg(const Report& report, int head, int class_index,
                      absl::string_view title) {
  struct Line {
    std::string label;
    std::string kind;  // site, pooled, meta, note
    double estimate = kNaN;
    Interval ci;
    double weight = kNaN;  // percent, sites only
    std::string text;
  };
  std::vector<Line> lines;
  const MetaGroup* weight_group = nullptr;
  int weight_group_index = -1;
  for (size_t g = 0; g < report.groups.size(); ++g) {
    // The widest group gives the sites' weights.
    if (weight_group == nullptr ||
        report.groups[g].sets.size() > weight_group->sets.size()) {
      weight_group = &report.groups[g];
      weight_group_index = static_cast<int>(g);
    }
  }
  const MetaResult* weight_meta =
      weight_group_index < 0
          ? nullptr
          : FindMeta(report, weight_group_index, head, class_index, "auc");
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    Line line;
    line.label = absl::StrCat(set.key, " (", SplitName(set.split), ")");
    AucOf auc = SetAuc(set, head, class_index);
    if (head >= 0 && !set.heads[head].reported) continue;
    if (!auc.available) {
      line.kind = "note";
      line.text = SuppressedText(report.min_cell_count);
    } else if (!std::isfinite(auc.auc)) {
      line.kind = "note";
      line.text = "n/a (needs cases in and outside the class)";
    } else {
      line.kind = "site";
      line.estimate = auc.auc;
      line.ci = auc.ci;
      if (weight_meta != nullptr && weight_meta->pooled.ok()) {
        for (const StudyWeight& w : weight_meta->pooled->analysis.weights) {
          if (w.label == set.key) line.weight = w.percent;
        }
      }
      line.text = WithInterval(auc.auc, auc.ci);
      absl::StrAppend(&line.text, std::isfinite(line.weight)
                                      ? absl::StrFormat("  %.0f%%", line.weight)
                                      : "  excluded");
    }
    lines.push_back(line);
  }
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kPooled) continue;
    AucOf auc = SetAuc(set, head, class_index);
    if (!auc.available || !std::isfinite(auc.auc)) continue;
    Line line;
    line.kind = "pooled";
    line.label = absl::StrCat("pooled cases, ", SplitName(set.split));
    line.estimate = auc.auc;
    line.ci = auc.ci;
    line.text = WithInterval(auc.auc, auc.ci);
    lines.push_back(line);
  }
  for (size_t g = 0; g < report.groups.size(); ++g) {
    const MetaResult* meta =
        FindMeta(report, static_cast<int>(g), head, class_index, "auc");
    if (meta == nullptr) continue;
    Line line;
    line.label = absl::StrCat("DL, ", report.groups[g].title);
    if (!meta->pooled.ok()) {
      line.kind = "note";
      line.text = "not estimable (no site with a variance)";
    } else {
      const PooledSiteMetric& p = *meta->pooled;
      line.kind = "meta";
      line.estimate = p.estimate;
      line.ci = p.ci;
      line.text = absl::StrCat(WithInterval(p.estimate, p.ci), "  I² ",
                               std::isfinite(p.analysis.i2)
                                   ? absl::StrFormat("%.0f%%", p.analysis.i2)
                                   : std::string("n/a"),
                               "  τ² ", Fixed(p.analysis.tau2, 4));
    }
    lines.push_back(line);
  }

  double x_min = 0.5;
  for (const Line& line : lines) {
    if (std::isfinite(line.ci.lower)) x_min = std::min(x_min, line.ci.lower);
    if (std::isfinite(line.estimate)) x_min = std::min(x_min, line.estimate);
  }
  x_min = std::floor(x_min * 10) / 10;
  const double row = 20, width = 820;
  Frame f;
  f.width = width;
  f.left = 230;
  f.right = 290;
  f.top = 30;
  f.bottom = 34;
  f.height = f.top + f.bottom + row * std::max<size_t>(lines.size(), 1);
  f.x_min = x_min;
  f.x_max = 1;
  f.y_min = 0;
  f.y_max = static_cast<double>(std::max<size_t>(lines.size(), 1));
  std::string out =
      SvgOpen(f.width, f.height, absl::StrCat("Forest plot of AUC, ", title));
  absl::StrAppend(&out, SvgText(8, 16, title, "start", " font-weight=\"bold\""),
                  SvgText(f.width - f.right + 8, 16, "AUC (95% CI)  weight",
                          "start", " font-weight=\"bold\""));
  const double plot_top = f.top, plot_bottom = f.height - f.bottom;
  for (double t = x_min; t <= 1.0 + 1e-9; t += 0.1) {
    absl::StrAppend(&out,
                    SvgLine(f.X(t), plot_top, f.X(t), plot_bottom, "#eee"),
                    SvgText(f.X(t), plot_bottom + 13, Fixed(t, 1), "middle"));
  }
  if (x_min < 0.5) {
    absl::StrAppend(&out, SvgLine(f.X(0.5), plot_top, f.X(0.5), plot_bottom,
                                  "#999", 1, "4 3"));
  }
  absl::StrAppend(&out,
                  SvgLine(f.X(x_min), plot_bottom, f.X(1), plot_bottom, "#444"),
                  SvgText((f.X(x_min) + f.X(1)) / 2, f.height - 6,
                          "area under the ROC curve", "middle"));
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& line = lines[i];
    const double y = plot_top + row * (static_cast<double>(i) + 0.5);
    const bool summary_row = line.kind == "meta" || line.kind == "pooled";
    absl::StrAppend(&out, SvgText(8, y + 4, line.label, "start",
                                  summary_row ? " font-weight=\"bold\"" : ""));
    if (line.kind == "note") {
      absl::StrAppend(&out, SvgText(f.X(x_min) + 4, y + 4, line.text, "start",
                                    " fill=\"#a00\" font-style=\"italic\""));
      continue;
    }
    const double lower =
        std::isfinite(line.ci.lower) ? line.ci.lower : line.estimate;
    const double upper =
        std::isfinite(line.ci.upper) ? line.ci.upper : line.estimate;
    if (line.kind == "site") {
      const double half = std::isfinite(line.weight)
                              ? 2.5 + 4.5 * std::sqrt(line.weight / 100)
                              : 2.5;
      absl::StrAppend(
          &out, SvgLine(f.X(lower), y, f.X(upper), y, "#333", 1.2),
          absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                          "height=\"%.1f\" fill=\"%s\"/>",
                          f.X(line.estimate) - half, y - half, 2 * half,
                          2 * half,
                          std::isfinite(line.weight) ? "#0072B2" : "#999"));
    } else {
      // Pooled cases: an open diamond; DL: a filled one spanning the CI.
      const bool filled = line.kind == "meta";
      absl::StrAppend(
          &out,
          absl::StrFormat(
              "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" "
              "fill=\"%s\" stroke=\"%s\" stroke-width=\"1.2\"/>",
              f.X(lower), y, f.X(line.estimate), y - 6, f.X(upper), y,
              f.X(line.estimate), y + 6, filled ? "#D55E00" : "#fff",
              filled ? "#D55E00" : "#333"));
    }
    absl::StrAppend(&out, SvgText(f.width - f.right + 8, y + 4, line.text));
  }
  out += "</svg>";
  return out;
}

std::string ConfusionTable(const Report& report, const SetResult& set) {
  const int k = set.aggregate.class_count();
  std::string out = absl::StrCat("<table class=\"confusion\"><caption>",
                                 HtmlEscape(set.title),
                                 "</caption><tr><th>true \\ predicted</th>");
  for (int p = 0; p < k; ++p) {
    absl::StrAppend(&out, "<th>", HtmlEscape(report.class_names[p]), "</th>");
  }
  absl::StrAppend(&out, "<th>total</th></tr>");
  for (int t = 0; t < k; ++t) {
    int64_t row_total = 0;
    for (int p = 0; p < k; ++p) row_total += set.aggregate.confusion(t * k + p);
    absl::StrAppend(&out, "<tr><th>", HtmlEscape(report.class_names[t]),
                    "</th>");
    for (int p = 0; p < k; ++p) {
      const int64_t count = set.aggregate.confusion(t * k + p);
      const double share =
          row_total > 0 ? static_cast<double>(count) / row_total : 0;
      absl::StrAppend(
          &out,
          absl::StrFormat(
              "<td style=\"background:rgba(%s,%.2f)%s\">%d<br><small>%s</small>"
              "</td>",
              t == p ? "0,158,115" : "213,94,0", 0.08 + 0.6 * share,
              share > 0.6 ? ";color:#fff" : "", count,
              row_total > 0 ? Percent(share) : "–"));
    }
    absl::StrAppend(&out, "<td>", row_total, "</td></tr>");
  }
  out += "</table>";
  return out;
}

std::string SuppressedCell(const Report& report) {
  return absl::StrCat("<span class=\"suppressed\">",
                      HtmlEscape(SuppressedText(report.min_cell_count)),
                      "</span>");
}

std::string PerformanceTable(const Report& report) {
  std::string out =
      "<table><tr><th>set</th><th>split</th><th>patients</th><th>images</th>"
      "<th>accuracy (95% CI)</th><th>balanced accuracy</th><th>macro-F1</th>"
      "<th>Cohen's κ</th><th>macro AUC (95% CI)</th><th>Hand-Till AUC</th>"
      "<th>Brier</th></tr>";
  for (const SetResult& set : report.sets) {
    const bool pooled = set.type == SetType::kPooled;
    absl::StrAppend(&out, pooled ? "<tr class=\"pooled\">" : "<tr>", "<td>",
                    HtmlEscape(set.title), "</td><td>", SplitName(set.split),
                    "</td>");
    if (set.suppressed) {
      absl::StrAppend(&out, "<td colspan=\"9\">",
                      pooled ? "<span class=\"suppressed\">every site of this "
                               "set suppressed its report</span>"
                             : SuppressedCell(report),
                      "</td></tr>");
      continue;
    }
    const MetricsSummary& s = set.summary;
    absl::StrAppend(
        &out, "<td>", set.aggregate.num_patients(), "</td><td>", s.num_images,
        "</td><td>", PercentWithInterval(s.accuracy, s.accuracy_ci),
        "</td><td>", Percent(s.balanced_accuracy), "</td><td>",
        Percent(s.macro.f1), "</td><td>", Fixed(s.cohen_kappa), "</td><td>",
        WithInterval(s.macro_auc, s.macro_auc_ci), "</td><td>",
        Fixed(s.hand_till_auc), "</td><td>", Fixed(s.brier), "</td></tr>");
  }
  out += "</table>";
  return out;
}

// Per-class metrics of one set, image-level or (patient_level) of its
// patient-level aggregate.
std::string ClassTable(const Report& report, const SetResult& set,
                       bool patient_level = false) {
  const MetricsSummary& summary =
      patient_level ? set.patient_summary : set.summary;
  std::string out = absl::StrCat(
      "<table><caption>", HtmlEscape(set.title),
      patient_level ? HtmlEscape(absl::StrCat(", ", kPatientLevel))
                    : std::string(),
      "</caption><tr><th>class</th><th>n</th><th>sensitivity</th>"
      "<th>specificity</th><th>precision (PPV)</th><th>NPV</th><th>F1</th>"
      "<th>AUC (DeLong 95% CI)</th><th>Brier</th></tr>");
  for (size_t c = 0; c < summary.classes.size(); ++c) {
    const ClassMetrics& m = summary.classes[c];
    if (std::find(set.withheld_classes.begin(), set.withheld_classes.end(),
                  static_cast<int>(c)) != set.withheld_classes.end()) {
      absl::StrAppend(
          &out, "<tr><td>", HtmlEscape(report.class_names[c]),
          "</td><td colspan=\"8\"><span class=\"suppressed\">",
          HtmlEscape(WithheldClassText(SiteMinCellCount(
              report.min_cell_count, set.has_flow ? &set.flow : nullptr))),
          "</span></td></tr>");
      continue;
    }
    absl::StrAppend(
        &out, "<tr><td>", HtmlEscape(report.class_names[c]), "</td><td>",
        m.support, "</td><td>",
        PercentWithInterval(m.sensitivity, m.sensitivity_ci), "</td><td>",
        PercentWithInterval(m.specificity, m.specificity_ci), "</td><td>",
        PercentWithInterval(m.precision, m.precision_ci), "</td><td>",
        PercentWithInterval(m.npv, m.npv_ci), "</td><td>", Percent(m.f1),
        "</td><td>", WithInterval(m.auc, m.auc_ci), "</td><td>", Fixed(m.brier),
        "</td></tr>");
  }
  out += "</table>";
  return out;
}

// The patient-level counterpart of PerformanceTable: one case per patient,
// scored with the mean of the patient's image probabilities; sets without
// it say why ("not reported", suppressed).
std::string PatientPerformanceTable(const Report& report) {
  std::string out = absl::StrCat(
      "<table class=\"patient-level\"><caption>",
      HtmlEscape(absl::StrCat("Subtype, ", kPatientLevel)),
      "</caption><tr><th>set</th><th>split</th><th>patients</th>"
      "<th>accuracy (95% CI)</th><th>balanced accuracy</th><th>macro-F1</th>"
      "<th>Cohen's κ</th><th>macro AUC (95% CI)</th><th>Hand-Till AUC</th>"
      "<th>Brier</th></tr>");
  std::string footnotes;
  for (const SetResult& set : report.sets) {
    const bool pooled = set.type == SetType::kPooled;
    absl::StrAppend(&out, pooled ? "<tr class=\"pooled\">" : "<tr>", "<td>",
                    HtmlEscape(set.title), "</td><td>", SplitName(set.split),
                    "</td>");
    if (const std::string coverage = PatientCoverageNote(set);
        !coverage.empty()) {
      absl::StrAppend(&footnotes, "<p class=\"na\">", HtmlEscape(set.title),
                      ": ", HtmlEscape(coverage), ".</p>");
    }
    switch (PatientLevelOf(set)) {
      case PatientLevel::kSuppressed:
        absl::StrAppend(&out,
                        "<td colspan=\"8\" class=\"wrap\"><span "
                        "class=\"suppressed\">",
                        HtmlEscape(PatientLevelNote(report, set)),
                        "</span></td></tr>");
        continue;
      case PatientLevel::kNotReported:
        absl::StrAppend(&out,
                        "<td colspan=\"8\" class=\"wrap\"><span "
                        "class=\"na\">",
                        HtmlEscape(PatientNotReportedText(set)),
                        "</span></td></tr>");
        continue;
      case PatientLevel::kReported:
        break;
    }
    const MetricsSummary& s = set.patient_summary;
    absl::StrAppend(&out, "<td>", set.patient_aggregate.num_patients(),
                    "</td><td>", PercentWithInterval(s.accuracy, s.accuracy_ci),
                    "</td><td>", Percent(s.balanced_accuracy), "</td><td>",
                    Percent(s.macro.f1), "</td><td>", Fixed(s.cohen_kappa),
                    "</td><td>", WithInterval(s.macro_auc, s.macro_auc_ci),
                    "</td><td>", Fixed(s.hand_till_auc), "</td><td>",
                    Fixed(s.brier), "</td></tr>");
  }
  absl::StrAppend(&out, "</table>", footnotes);
  return out;
}

// The performance section's patient-level part: its table and per-class
// tables, or one line saying no site reported it.
std::string PatientLevelPerformance(const Report& report) {
  std::string out = absl::StrCat("<h3 id=\"performance-patient\">",
                                 HtmlEscape(kPatientLevel), "</h3>");
  if (!report.any_patient_level) {
    absl::StrAppend(
        &out,
        "<p class=\"na\">Patient-level metrics: not reported. No site sent "
        "patient-level aggregates with this round's evaluation (agents "
        "before patient-level reporting do not); the metrics above are "
        "image-level.</p>");
    return out;
  }
  absl::StrAppend(
      &out,
      "<p>Unit of analysis: the patient. Each patient is one case, scored "
      "with the mean of the probabilities of the patient's images; n counts "
      "patients.</p>",
      PatientPerformanceTable(report));
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled &&
        PatientLevelOf(set) == PatientLevel::kReported) {
      absl::StrAppend(&out, ClassTable(report, set, /*patient_level=*/true));
    }
  }
  absl::StrAppend(&out,
                  "<details><summary>Per-class patient-level metrics of each "
                  "site</summary>");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kSite &&
        PatientLevelOf(set) == PatientLevel::kReported) {
      absl::StrAppend(&out, ClassTable(report, set, /*patient_level=*/true));
    }
  }
  absl::StrAppend(&out, "</details>");
  return out;
}

std::string HeadsSection(const Report& report) {
  if (report.heads.empty()) return "";
  std::string out =
      "<h2 id=\"heads\">Clinical heads</h2><p>Binary heads: AUC of the "
      "positive class (high risk, metastasis, good response) with DeLong's "
      "interval; prognosis: Harrell's C-index of event-free survival.</p>"
      "<table><tr><th>set</th><th>split</th>";
  for (int head : report.heads) {
    absl::StrAppend(&out, "<th>", HeadName(head), "</th>");
  }
  out += "</tr>";
  for (const SetResult& set : report.sets) {
    absl::StrAppend(
        &out, set.type == SetType::kPooled ? "<tr class=\"pooled\">" : "<tr>",
        "<td>", HtmlEscape(set.title), "</td><td>", SplitName(set.split),
        "</td>");
    for (size_t h = 0; h < report.heads.size(); ++h) {
      const HeadResult& head = set.heads[h];
      std::string cell;
      if (!head.reported) {
        cell = "–";
      } else if (head.suppressed) {
        cell = SuppressedCell(report);
      } else if (IsSurvivalHead(report.heads[h])) {
        cell = absl::StrCat(
            "C ", WithInterval(head.concordance.c_index, head.concordance.ci),
            "<br><small>", head.survival.num_patients(), " patients</small>");
      } else {
        const ClassMetrics m = head.summary.classes.size() == 2
                                   ? head.summary.classes[1]
                                   : ClassMetrics();
        cell =
            absl::StrCat("AUC ", WithInterval(m.auc, m.auc_ci), "<br><small>",
                         head.summary.num_images, " images</small>");
      }
      absl::StrAppend(&out, "<td>", cell, "</td>");
    }
    out += "</tr>";
  }
  out += "</table>";
  return out;
}

// One row per group x head x class, the three pooled metrics side by side.
std::string MetaTable(const Report& report) {
  std::string out =
      "<table><caption>DerSimonian-Laird random-effects estimates (95% CI) "
      "of the sites' own AUCs, sensitivities and specificities; k: sites "
      "pooled</caption><tr><th>sites</th><th>head</th><th>class</th>"
      "<th>AUC</th><th>sensitivity</th><th>specificity</th>"
      "<th style=\"text-align:left\">left out</th></tr>";
  for (const MetaResult& row : report.meta) {
    if (row.metric != "auc") continue;
    absl::StrAppend(
        &out, "<tr><td>", HtmlEscape(report.groups[row.group].title),
        "</td><td>",
        row.head < 0 ? "SUBTYPE" : HeadName(report.heads[row.head]),
        "</td><td>",
        HtmlEscape(row.head < 0 ? report.class_names[row.class_index]
                                : std::string("positive")),
        "</td>");
    std::vector<std::string> excluded;
    for (const char* metric : {"auc", "sensitivity", "specificity"}) {
      const MetaResult* meta =
          FindMeta(report, row.group, row.head, row.class_index, metric);
      if (meta == nullptr || !meta->pooled.ok()) {
        absl::StrAppend(
            &out, "<td class=\"na\">",
            meta == nullptr ? "" : HtmlEscape(meta->pooled.status().message()),
            "</td>");
        continue;
      }
      const PooledSiteMetric& p = *meta->pooled;
      const MetaAnalysis& a = p.analysis;
      absl::StrAppend(
          &out, "<td>", WithInterval(p.estimate, p.ci), "<br><small>k ",
          a.study_count, ", I² ",
          std::isfinite(a.i2) ? absl::StrFormat("%.0f%%", a.i2) : "n/a",
          ", τ² ", Fixed(a.tau2, 4), ", ", HeterogeneityName(a.heterogeneity),
          "</small></td>");
      for (const std::string& reason : p.excluded) {
        if (std::find(excluded.begin(), excluded.end(), reason) ==
            excluded.end()) {
          excluded.push_back(reason);
        }
      }
    }
    absl::StrAppend(&out, "<td style=\"white-space:normal;text-align:left\">",
                    HtmlEscape(absl::StrJoin(excluded, "; ")), "</td></tr>");
  }
  out += "</table>";
  return out;
}

// Differential privacy runs: the settings, each site's epsilon as of the
// reported round and a training site's over the whole run.
std::string PrivacyRow(const Report& report) {
  const Plan& plan = report.status->plan();
  if (!plan.has_differential_privacy()) return "";
  const DifferentialPrivacy& dp = plan.differential_privacy();
  std::string value = absl::StrCat(
      "site-level (&epsilon;, &delta;) of released updates: clip norm ",
      Shortest(dp.clip_norm()), ", noise multiplier ",
      Shortest(dp.noise_multiplier()));
  absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
  if (projected.ok()) {
    absl::StrAppend(
        &value, "; whole run (", plan.rounds(),
        " rounds): &epsilon; = ", absl::StrFormat("%.3g", projected->epsilon),
        " at &delta; = ", Shortest(projected->delta));
  }
  std::vector<SitePrivacySpent> spent =
      LatestSitePrivacy(*report.status, report.round->round());
  if (!spent.empty()) {
    absl::StrAppend(&value, "<ul class=\"privacy\">");
    for (const SitePrivacySpent& site : spent) {
      absl::StrAppend(&value, "<li>", HtmlEscape(site.site),
                      ": &epsilon; = ", absl::StrFormat("%.4g", site.epsilon),
                      " at &delta; = ", Shortest(site.delta), " (as of round ",
                      site.round, ")</li>");
    }
    absl::StrAppend(&value, "</ul>");
  }
  return absl::StrCat("<tr><th>differential privacy</th><td>", value,
                      "</td></tr>");
}

std::string RunSection(const Report& report) {
  const RunStatus& status = *report.status;
  const Plan& plan = status.plan();
  const RoundRecord& round = *report.round;
  std::string sites;
  for (const Plan::SiteRole& role : plan.sites()) {
    absl::StrAppend(&sites, "<tr><td>", HtmlEscape(role.site()), "</td><td>",
                    role.role() == Plan::EXTERNAL_VALIDATION
                        ? "external validation (all patients validate)"
                        : "training; internal validation on its held-out "
                          "patients",
                    "</td></tr>");
  }
  std::vector<std::string> heads = {"SUBTYPE"};
  for (int head : report.heads) heads.push_back(HeadName(head));
  auto row = [](absl::string_view key, absl::string_view value) {
    return absl::StrCat("<tr><th>", key, "</th><td>", value, "</td></tr>");
  };
  return absl::StrCat(
      "<h2 id=\"run\">Run and model</h2><table class=\"kv\">",
      row("run", HtmlEscape(status.run_id())),
      row("plan", HtmlEscape(plan.name())),
      row("state", RunStatus::State_Name(status.state())),
      row("round reported", absl::StrCat(round.round(), " of ", plan.rounds())),
      row("model",
          absl::StrCat(HtmlEscape(plan.model()), ", image ", plan.image_size(),
                       " px, ",
                       Plan::Normalization_Name(plan.normalization()))),
      row("committed model (SHA-256)",
          absl::StrCat("<code>", absl::BytesToHexString(round.model_digest()),
                       "</code>")),
      row("classes", HtmlEscape(absl::StrJoin(report.class_names, ", "))),
      row("heads", absl::StrJoin(heads, ", ")),
      row("training",
          absl::StrCat(Plan::Strategy_Name(plan.strategy()), ", ",
                       Plan::Trainer_Name(plan.trainer()), ", ",
                       Plan::Loss_Name(plan.loss()), ", ", plan.local_epochs(),
                       " local epochs, learning rate ",
                       Shortest(plan.learning_rate()))),
      row("split", absl::StrCat("patient level, training fraction ",
                                Shortest(plan.train_fraction()), ", seed ",
                                plan.split_seed())),
      row("disclosure control",
          absl::StrCat("sites release no set of fewer than ",
                       report.min_cell_count, " patients")),
      row("secure aggregation",
          plan.secure_aggregation()
              ? "on: the coordinator saw only the masked sum of each "
                "round's updates"
              : "off"),
      row("contributors to this round",
          HtmlEscape(absl::StrJoin(round.contributors(), ", "))),
      PrivacyRow(report),
      "</table><table class=\"text\"><tr><th>centre</th><th>role</th></tr>",
      sites, "</table>");
}

std::string FlowSection(const Report& report) {
  std::string out =
      "<h2 id=\"flow\">Patient flow per site</h2><p class=\"note\">The "
      "CONSORT-style flow is counted at each site (the excluded patients and "
      "their reasons stay site-local) and sent with its evaluation as counts "
      "only. A count with some patients but fewer than the site's minimum "
      "cell count is suppressed, and so is any count from which it could be "
      "recovered by subtraction. Patients, except for refused manifest "
      "lines (images).</p>";
  std::string flows;
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    absl::StrAppend(&flows, "<table class=\"flow\"><caption>",
                    HtmlEscape(set.key), " (", SplitName(set.split),
                    " validation)</caption>");
    if (!set.has_flow) {
      absl::StrAppend(&flows,
                      "<tr><td>not available: the site sent no flow"
                      "</td></tr></table>");
      continue;
    }
    auto row = [&](const FlowCount& step) {
      const bool indented = absl::StartsWith(step.step(), "excluded: ") ||
                            absl::StartsWith(step.step(), "withheld: ") ||
                            absl::StartsWith(step.step(), "evaluation set: ");
      absl::StrAppend(
          &flows, "<tr><td", indented ? " class=\"indent\"" : "", ">",
          HtmlEscape(step.step()), "</td><td>",
          step.suppressed()
              ? absl::StrCat("<span class=\"suppressed\">&lt; ",
                             set.flow.min_cell_count(), " or suppressed</span>")
              : absl::StrCat(step.patients()),
          "</td></tr>");
    };
    for (const FlowCount& step : set.flow.steps()) row(step);
    row(set.flow.refused_manifest_lines());
    for (const std::string& note : set.flow.notes()) {
      absl::StrAppend(&flows, "<tr><td colspan=\"2\" class=\"note\">note: ",
                      HtmlEscape(note), "</td></tr>");
    }
    flows += "</table>";
  }
  absl::StrAppend(&out, "<h3>Counted at each site</h3><div class=\"plots\">",
                  flows, "</div>");
  absl::StrAppend(
      &out,
      "<h3>Declared by each site at join</h3><p class=\"note\">Counts only, "
      "as each site's agent read its local data when it last joined the "
      "coordinator: before the patient-level split, and not verified by the "
      "coordinator.</p><table><tr><th>site</th><th>role</th><th>patients</th>"
      "<th>images</th><th>images per label</th></tr>");
  for (const Plan::SiteRole& role : report.status->plan().sites()) {
    const SiteStatus* site = FindSiteStatus(*report.status, role.site());
    const std::string reason = UndeclaredReason(site);
    absl::StrAppend(&out, "<tr><td>", HtmlEscape(role.site()), "</td><td>",
                    role.role() == Plan::EXTERNAL_VALIDATION
                        ? "external validation"
                        : "training",
                    "</td>");
    if (!reason.empty()) {
      absl::StrAppend(&out, "<td colspan=\"3\">", HtmlEscape(reason),
                      "</td></tr>");
      continue;
    }
    const DataSummary& data = site->declared_data();
    std::map<std::string, std::string> shown;
    for (const auto& [label, images] : SortedLabels(data)) {
      shown[label] = absl::StrCat(images);
    }
    for (const std::string& label : data.withheld_labels()) {
      shown[label] =
          absl::StrCat("<span class=\"suppressed\">&lt;", data.min_cell_count(),
                       " patients or suppressed</span>");
    }
    std::vector<std::string> labels;
    for (const auto& [label, text] : shown) {
      labels.push_back(absl::StrCat(HtmlEscape(label), ": ", text));
    }
    absl::StrAppend(&out, "<td>", data.patients(), "</td><td>", data.images(),
                    "</td><td>",
                    labels.empty() ? std::string("not declared")
                                   : absl::StrJoin(labels, ", "),
                    "</td></tr>");
  }
  absl::StrAppend(
      &out,
      "</table><h3>Evaluated sets</h3><table>"
      "<tr><th>site</th><th>split</th><th>patients</th><th>images</th>");
  for (const std::string& name : report.class_names) {
    absl::StrAppend(&out, "<th>", HtmlEscape(name), " images</th>");
  }
  out += "</tr>";
  for (const SetResult& set : report.sets) {
    absl::StrAppend(
        &out, set.type == SetType::kPooled ? "<tr class=\"pooled\">" : "<tr>",
        "<td>", HtmlEscape(set.title), "</td><td>", SplitName(set.split),
        "</td>");
    if (set.suppressed) {
      absl::StrAppend(&out, "<td colspan=\"", 2 + report.class_names.size(),
                      "\">",
                      set.type == SetType::kSite
                          ? SuppressedCell(report)
                          : "<span class=\"suppressed\">no site released "
                            "data</span>",
                      "</td></tr>");
      continue;
    }
    absl::StrAppend(&out, "<td>", set.aggregate.num_patients(), "</td><td>",
                    set.summary.num_images, "</td>");
    for (const ClassMetrics& m : set.summary.classes) {
      absl::StrAppend(&out, "<td>", m.support, "</td>");
    }
    out += "</tr>";
  }
  out += "</table>";
  return out;
}

std::string SuppressedSection(const Report& report) {
  std::string rows;
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    if (set.suppressed) {
      absl::StrAppend(&rows, "<tr><td>", HtmlEscape(set.key), "</td><td>",
                      SplitName(set.split), "</td><td>SUBTYPE</td><td>",
                      SuppressedCell(report), "</td></tr>");
    }
    for (size_t h = 0; h < report.heads.size(); ++h) {
      if (!set.heads[h].suppressed) continue;
      absl::StrAppend(&rows, "<tr><td>", HtmlEscape(set.key), "</td><td>",
                      SplitName(set.split), "</td><td>",
                      HeadName(report.heads[h]), "</td><td>",
                      SuppressedCell(report), "</td></tr>");
    }
    for (int c : set.withheld_classes) {
      absl::StrAppend(
          &rows, "<tr><td>", HtmlEscape(set.key), "</td><td>",
          SplitName(set.split), "</td><td>SUBTYPE class ",
          HtmlEscape(report.class_names[c]),
          "</td><td><span class=\"suppressed\">",
          HtmlEscape(WithheldClassText(SiteMinCellCount(
              report.min_cell_count, set.has_flow ? &set.flow : nullptr))),
          ", and from the pooled ", SplitName(set.split),
          " set</span></td></tr>");
    }
  }
  std::string out = absl::StrCat(
      "<h2 id=\"suppressed\">Suppressed cells</h2><p>A site releases no "
      "aggregate of a set with fewer than ",
      report.min_cell_count,
      " patients; such sets are left out of every pool and meta-analysis. "
      "Within a released set, a class with fewer patients (but some) is "
      "suppressed and its patients left out of the site's counts and the "
      "pools; a binary head with fewer positive or negative patients, or a "
      "survival head with fewer events or censored patients, is "
      "suppressed.</p>");
  if (rows.empty()) {
    absl::StrAppend(&out, "<p>No site suppressed a set in this round.</p>");
  } else {
    absl::StrAppend(&out,
                    "<table><tr><th>site</th><th>split</th><th>what</th>"
                    "<th>status</th></tr>",
                    rows, "</table>");
  }
  return out;
}

std::string TripodSection() {
  std::string out =
      "<h2 id=\"tripod\">TRIPOD+AI checklist</h2><p>The items TRIPOD+AI "
      "(Collins et al., BMJ 2024;385:e078378) asks of a report of a model's "
      "evaluation, and where each is answered. Links point into this "
      "report.</p><table class=\"text\"><tr><th>item</th><th>topic</th>"
      "<th>status</th>"
      "<th>where</th></tr>";
  for (const TripodItem& item : TripodItems()) {
    // "#section" in the text becomes a link to that section.
    std::string where_html;
    absl::string_view where = item.where;
    while (!where.empty()) {
      const size_t hash = where.find('#');
      if (hash == absl::string_view::npos) {
        where_html += HtmlEscape(where);
        break;
      }
      where_html += HtmlEscape(where.substr(0, hash));
      size_t end = hash + 1;
      while (end < where.size() && absl::ascii_islower(where[end])) ++end;
      const absl::string_view anchor = where.substr(hash + 1, end - hash - 1);
      absl::StrAppend(&where_html, "<a href=\"#", anchor, "\">§", anchor,
                      "</a>");
      where.remove_prefix(end);
    }
    const absl::string_view status = item.status;
    const char* label = status == "in_report"        ? "in this report"
                        : status == "partly"         ? "partly"
                        : status == "site_local"     ? "site-local"
                        : status == "not_available"  ? "not available from the "
                                                       "federation"
                        : status == "not_applicable" ? "not applicable"
                                                     : "authors (manuscript)";
    absl::StrAppend(&out, "<tr class=\"", status, "\"><td>", item.item,
                    "</td><td>", HtmlEscape(item.topic), "</td><td>", label,
                    "</td><td>", where_html, "</td></tr>");
  }
  out += "</table>";
  return out;
}

constexpr char kStyle[] = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;
max-width:1180px;margin:0 auto;padding:16px 24px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:2px solid #0072B2;
padding-bottom:2px;margin-top:2em}h3{margin-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;
vertical-align:top;white-space:nowrap}
th{white-space:normal}th:first-child,td:first-child{text-align:left}
table.text th,table.text td{text-align:left;white-space:normal}
caption{text-align:left;font-weight:bold;padding:4px 0}
tr.pooled td{font-weight:bold;background:#f4f8fb}
table.kv th{text-align:left;color:#555;font-weight:normal}
table.kv td{text-align:left;white-space:normal}
table.confusion td{text-align:center;min-width:56px}
.suppressed{color:#a00;font-style:italic}.na{color:#888}
td.wrap{white-space:normal;text-align:left}
table.flow td.indent{padding-left:24px}
.note{background:#fff8e5;border-left:4px solid #E69F00;padding:6px 10px}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
tr.not_available td:nth-child(3){color:#a00}
tr.in_report td:nth-child(3){color:#007a55}
nav a{margin-right:10px}code{font-size:12px}
.warning{font-weight:bold;color:#a00}
)";

std::string RenderHtml(const Report& report) {
  const RunStatus& status = *report.status;
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width\">"
      "<title>echofed validation report: ",
      HtmlEscape(status.plan().name()), " (", HtmlEscape(status.run_id()),
      ")</title><style>", kStyle, "</style></head><body>");
  absl::StrAppend(
      &out, "<h1>Validation report: ", HtmlEscape(status.plan().name()),
      "</h1><p>", "run <code>", HtmlEscape(status.run_id()), "</code>, round ",
      report.round->round(), " of ", status.plan().rounds());
  if (report.options.generated_unix_ms != 0) {
    absl::StrAppend(
        &out, ", generated ",
        absl::FormatTime("%Y-%m-%d %H:%M UTC",
                         absl::FromUnixMillis(report.options.generated_unix_ms),
                         absl::UTCTimeZone()));
  }
  absl::StrAppend(
      &out,
      ".</p><nav><a href=\"#run\">run</a><a href=\"#methods\">methods</a>"
      "<a href=\"#performance\">performance</a>"
      "<a href=\"#performance-patient\">patient-level</a>"
      "<a href=\"#roc\">ROC</a>"
      "<a href=\"#confusion\">confusion</a><a href=\"#calibration\">"
      "calibration</a><a href=\"#heterogeneity\">heterogeneity</a>",
      report.heads.empty() ? "" : "<a href=\"#heads\">heads</a>",
      "<a href=\"#suppressed\">suppressed</a><a href=\"#flow\">patient flow"
      "</a><a href=\"#tripod\">TRIPOD+AI</a></nav>");

  absl::StrAppend(&out, RunSection(report));
  absl::StrAppend(
      &out,
      "<h2 id=\"methods\">Methods</h2><p>Each site evaluates the committed "
      "model on its own validation set and releases additive aggregates only: "
      "a confusion matrix, score histograms of 1,000 bins per class and exact "
      "Brier sums. A pooled set adds the aggregates of its sites, so its "
      "metrics are those of the pooled cases (counts exactly; score-based "
      "metrics to the 1/1000 binning), not an average of site metrics. The "
      "model outputs class probabilities; the predicted class is the most "
      "probable. Subtype metrics are given at two units of analysis: "
      "image-level, each image one case (patients are counted beside "
      "them), and, where the sites sent it, patient-level (mean probability "
      "over a patient's images), each patient one case scored with the mean "
      "of the class probabilities of the patient's images, pooled the same "
      "way. "
      "Intervals are 95%: Wilson's for proportions, DeLong's for one-vs-rest "
      "AUCs (on the binned scores); the macro AUC interval averages the "
      "classes' standard errors (conservative, as their covariances are not "
      "released). Hand-Till's multi-class AUC averages the pairwise AUCs. "
      "Calibration: multi-class Brier score, reliability per tenth of "
      "predicted probability, and the logistic recalibration intercept "
      "(slope fixed at 1) and slope of each class. Between-site heterogeneity: "
      "DerSimonian-Laird random-effects meta-analysis of the sites' own AUCs "
      "(AUC scale), sensitivities and specificities (logit scale), with tau² "
      "and I². Sites with fewer patients than the minimum cell count release "
      "nothing and are left out.</p>");

  absl::StrAppend(&out, "<h2 id=\"performance\">Performance</h2>",
                  "<h3 id=\"performance-image\">", kImageLevel,
                  "</h3><p>Unit of analysis: the image; n counts images. "
                  "The ROC curves, confusion matrices, calibration and "
                  "heterogeneity sections further down are image-level "
                  "too.</p>",
                  PerformanceTable(report));
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled && !set.suppressed) {
      absl::StrAppend(&out, ClassTable(report, set));
    }
  }
  absl::StrAppend(&out,
                  "<details><summary>Per-class metrics of each site"
                  "</summary>");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kSite && !set.suppressed) {
      absl::StrAppend(&out, ClassTable(report, set));
    }
  }
  absl::StrAppend(&out, "</details>");
  absl::StrAppend(&out, PatientLevelPerformance(report));

  absl::StrAppend(&out,
                  "<h2 id=\"roc\">ROC curves</h2><p>One-vs-rest, per class; "
                  "legend: AUC (DeLong 95% CI).</p><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled && !set.suppressed) {
      absl::StrAppend(&out, "<figure>", RocSvg(report, set, 400), "</figure>");
    }
  }
  absl::StrAppend(&out, "</div><h3>Per site</h3><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    if (set.suppressed) {
      absl::StrAppend(&out, "<p>", HtmlEscape(set.key), ": ",
                      SuppressedCell(report), "</p>");
    } else {
      absl::StrAppend(&out, "<figure>", RocSvg(report, set, 280), "</figure>");
    }
  }
  absl::StrAppend(&out, "</div>");

  absl::StrAppend(&out,
                  "<h2 id=\"confusion\">Confusion matrices</h2><p>Counts of "
                  "images and, below each, the share of its true-class row."
                  "</p><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.suppressed) continue;
    if (set.type == SetType::kPooled) {
      absl::StrAppend(&out, ConfusionTable(report, set));
    }
  }
  for (const SetResult& set : report.sets) {
    if (set.suppressed || set.type != SetType::kSite) continue;
    absl::StrAppend(&out, ConfusionTable(report, set));
  }
  absl::StrAppend(&out, "</div>");

  absl::StrAppend(&out,
                  "<h2 id=\"calibration\">Calibration</h2><p>Reliability "
                  "diagrams of the pooled sets: observed fraction of the class "
                  "against mean predicted probability per tenth, dot area by "
                  "images; the diagonal is perfect calibration. Intercept 0 "
                  "and slope 1 are ideal.</p><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled && !set.suppressed &&
        set.summary.has_scores) {
      absl::StrAppend(&out, "<figure>", CalibrationSvg(report, set),
                      "</figure>");
    }
  }
  absl::StrAppend(&out, "</div>");

  absl::StrAppend(
      &out,
      "<h2 id=\"heterogeneity\">Heterogeneity between sites</h2><p>Per-site "
      "AUC with DeLong's interval (squares sized by random-effects weight; "
      "grey: left out of the meta-analysis, e.g. an AUC of 1 has no variance "
      "to weigh), the AUC of the pooled cases (open diamonds) and the "
      "DerSimonian-Laird estimate (filled diamonds) with I² and τ².</p>");
  for (size_t c = 0; c < report.class_names.size(); ++c) {
    absl::StrAppend(&out, "<figure>",
                    ForestSvg(report, -1, static_cast<int>(c),
                              absl::StrCat(report.class_names[c], " vs rest")),
                    "</figure>");
  }
  for (size_t h = 0; h < report.heads.size(); ++h) {
    if (IsSurvivalHead(report.heads[h])) continue;
    absl::StrAppend(
        &out, "<figure>",
        ForestSvg(report, static_cast<int>(h), 1,
                  absl::StrCat(HeadName(report.heads[h]), " (binary head)")),
        "</figure>");
  }
  if (report.groups.empty()) {
    absl::StrAppend(&out,
                    "<p class=\"na\">No meta-analysis: fewer than two sites "
                    "in every split.</p>");
  } else {
    absl::StrAppend(&out, MetaTable(report));
  }

  absl::StrAppend(&out, HeadsSection(report));
  absl::StrAppend(&out, SuppressedSection(report));
  absl::StrAppend(&out, FlowSection(report));
  absl::StrAppend(&out, TripodSection());
  absl::StrAppend(&out,
                  "<p class=\"na\">Made by echofed report from the run's "
                  "aggregates; no per-case data was used or is shown.</p>"
                  "</body></html>\n");
  return out;
}

}  // namespace

absl::StatusOr<ReportDocuments> RenderReport(const RunStatus& status,
                                             const ReportOptions& options) {
  absl::StatusOr<Report> report = BuildReport(status, options);
  if (!report.ok()) return report.status();
  ReportDocuments documents;
  documents.round = report->round->round();
  documents.json = RenderJson(*report);
  documents.csv = RenderCsv(*report);
  documents.html = RenderHtml(*report);
  return documents;
}

absl::StatusOr<ReportPaths> WriteReport(const RunStatus& status,
                                        const ReportOptions& options,
                                        const std::string& out_dir) {
  absl::StatusOr<ReportDocuments> documents = RenderReport(status, options);
  if (!documents.ok()) return documents.status();
  if (absl::Status made = MakeDirectories(out_dir); !made.ok()) return made;
  ReportPaths paths;
  paths.round = documents->round;
  paths.json = out_dir + "/report.json";
  paths.csv = out_dir + "/metrics.csv";
  paths.html = out_dir + "/report.html";
  const std::pair<const std::string*, const std::string*> files[] = {
      {&paths.json, &documents->json},
      {&paths.csv, &documents->csv},
      {&paths.html, &documents->html}};
  for (const auto& [path, content] : files) {
    if (absl::Status written = WriteFileAtomically(*path, *content);
        !written.ok()) {
      return written;
    }
  }
  return paths;
}

}  // namespace echofed
