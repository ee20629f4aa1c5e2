// The report's model: the round chosen, each site's released aggregates
// checked and summarised, the pools (sums of a split's released aggregates)
// and the DerSimonian-Laird meta-analyses of the sites' own estimates.

#include "coordinator/cli/report_model.h"

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/metrics.h"

namespace echofed {
namespace report_internal {

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

std::string WithheldClassText(int min_cell_count) {
  return absl::StrCat("class suppressed at this site (< min cell count ",
                      min_cell_count, "); its patients are left out");
}

int SiteMinCellCount(int plan_min_cell_count, const PatientFlow* flow) {
  return flow != nullptr && flow->min_cell_count() > 0
             ? std::max(plan_min_cell_count, flow->min_cell_count())
             : plan_min_cell_count;
}

const SiteStatus* FindSiteStatus(const RunStatus& status,
                                 const std::string& site) {
  for (const SiteStatus& entry : status.sites()) {
    if (entry.site() == site) return &entry;
  }
  return nullptr;
}

std::string UndeclaredReason(const SiteStatus* site) {
  if (site == nullptr) return "not available: the site is not in the status";
  if (site->has_declared_data()) return "";
  if (!site->joined()) {
    return "not available: the site has not joined since the coordinator "
           "started";
  }
  return "not available: the site declared no counts when it joined";
}

std::map<std::string, int64_t> SortedLabels(const DataSummary& data) {
  return std::map<std::string, int64_t>(data.images_per_label().begin(),
                                        data.images_per_label().end());
}

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

namespace {

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

}  // namespace

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

}  // namespace report_internal
}  // namespace echofed
