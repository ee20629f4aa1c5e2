// report.json, through common/json_writer.h: NaN becomes null (JSON has no
// NaN). Per-site ROC curves go without thresholds and decision curves are
// pooled only (see report.h).

#include "coordinator/cli/report_json.h"

#include <cstddef>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/dp_accountant.h"
#include "common/json_writer.h"
#include "common/metrics.h"
#include "coordinator/cli/report_model.h"
#include "coordinator/cli/report_tripod.h"

namespace echofed {
namespace report_internal {
namespace {

std::string RoleName(Plan::Role role) {
  return role == Plan::EXTERNAL_VALIDATION ? "external_validation" : "training";
}

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

}  // namespace

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
  // The coordinator's audit log when the round was committed: a copy of the
  // log that ends before it, or differs at it, was cut or rewritten.
  // Null when the coordinator recorded none (before it kept heads).
  json.Key("audit_log");
  if (round.has_audit_head()) {
    json.BeginObject();
    json.Field("records", round.audit_head().records());
    json.Field("head_sha256", round.audit_head().hash());
    json.EndObject();
  } else {
    json.Null();
  }
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

}  // namespace report_internal
}  // namespace echofed
