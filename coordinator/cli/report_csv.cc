// metrics.csv: tidy, one row per set x head x metric (x class), every value
// that is missing "NA" with the reason in the row's note.

#include "coordinator/cli/report_csv.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "common/dp_accountant.h"
#include "common/metrics.h"
#include "coordinator/cli/report.h"
#include "coordinator/cli/report_format.h"
#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {
namespace {

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

// The coordinator's audit log when the reported round was committed (set
// "audit_log"): its record count, with the head hash in the note, so that
// a copy of the log can be checked against it.
void AuditLogRows(const Report& report, CsvWriter* csv) {
  const RoundRecord& round = *report.round;
  csv->SetBlockNote("");
  csv->SetUnit("");
  csv->SetContext("audit_log", "round", "", "");
  if (!round.has_audit_head()) {
    csv->Row("audit_log_records", "", kNaN, Interval(), std::nullopt,
             "not recorded by the coordinator");
    return;
  }
  csv->Row(
      "audit_log_records", "",
      static_cast<double>(round.audit_head().records()), Interval(),
      std::nullopt,
      // The count again in full: large estimates print in exponent
      // form, and --expect-records wants the integer.
      absl::StrCat("head ", round.audit_head().hash(), " (record ",
                   round.audit_head().records(), ", the log's last when round ",
                   round.round(), " was committed)"));
}

}  // namespace

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
  AuditLogRows(report, &csv);
  return csv.Take();
}

}  // namespace report_internal
}  // namespace echofed
