// Coordinator (coordinator.h), evaluation of a committed model: opening
// it at every live site, checking and recording each site's aggregate
// report, and closing it with the pooled accuracies.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/plan_util.h"
#include "coordinator/coordinator.h"

namespace echofed {
namespace {

// The patient-level aggregate (one case per patient) of a report that has
// one: a valid aggregate of the plan's classes and the expected split, of
// the same set as the image-level aggregate (same patients, released or
// suppressed with it, the same classes withheld).
absl::Status ValidatePatientAggregate(const Plan& plan,
                                      const EvaluationReport& report,
                                      EvalSplit expected) {
  const EvalAggregate& patients = report.patient_aggregate();
  const EvalAggregate& images = report.aggregate();
  absl::Status status = ValidateAggregate(patients, plan.class_names_size());
  if (status.ok() && patients.split() != expected) {
    status = absl::InvalidArgumentError(
        absl::StrCat("must be ", EvalSplit_Name(expected)));
  }
  if (status.ok() && patients.num_images() != patients.num_patients()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "has ", patients.num_images(), " cases for ", patients.num_patients(),
        " patients; it must have one case per patient"));
  }
  if (status.ok() && patients.suppressed() != images.suppressed()) {
    status = absl::InvalidArgumentError(
        patients.suppressed()
            ? "is suppressed but the image-level aggregate is not"
            : "is released but the image-level aggregate is suppressed");
  }
  if (status.ok() && !patients.suppressed() &&
      patients.num_patients() != images.num_patients()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "has ", patients.num_patients(),
        " patients, the image-level aggregate ", images.num_patients()));
  }
  if (status.ok() && !std::equal(patients.withheld_classes().begin(),
                                 patients.withheld_classes().end(),
                                 images.withheld_classes().begin(),
                                 images.withheld_classes().end())) {
    status = absl::InvalidArgumentError(
        "withholds other classes than the image-level aggregate");
  }
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("patient-level aggregate: ", status.message()));
  }
  return absl::OkStatus();
}

// A fusion model's extra heads: each one of the plan's, at most once, in the
// right form (2-class aggregate, or survival for PROGNOSIS) and split.
absl::Status ValidateHeadReports(const Plan& plan,
                                 const EvaluationReport& report,
                                 EvalSplit expected) {
  std::set<int> planned(plan.heads().begin(), plan.heads().end());
  std::set<int> seen;
  for (const HeadAggregate& head : report.heads()) {
    const std::string name =
        Plan::Head_IsValid(head.head())
            ? Plan::Head_Name(static_cast<Plan::Head>(head.head()))
            : absl::StrCat(head.head());
    if (head.head() == Plan::SUBTYPE || !planned.count(head.head())) {
      return absl::InvalidArgumentError(
          absl::StrCat("head ", name, " is not an extra head of the plan"));
    }
    if (!seen.insert(head.head()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("head ", name, " reported twice"));
    }
    absl::Status status;
    if (head.head() == Plan::PROGNOSIS) {
      status = head.has_binary()
                   ? absl::InvalidArgumentError("PROGNOSIS is not binary")
                   : ValidateSurvivalAggregate(head.survival());
      if (status.ok() && head.survival().split() != expected) {
        status = absl::InvalidArgumentError("wrong split");
      }
    } else {
      status = head.has_survival()
                   ? absl::InvalidArgumentError("a binary head has no survival")
                   : ValidateAggregate(head.binary(), 2);
      if (status.ok() && head.binary().split() != expected) {
        status = absl::InvalidArgumentError("wrong split");
      }
    }
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("head ", name, ": ", status.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Coordinator::ReportEvaluation(const std::string& site,
                                           const EvaluationReport& report) {
  Delivery delivery;
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = options_.clock->Now();
    Run* run = active_;
    if (run == nullptr || run->run_id != report.run_id() ||
        run->state != RunStatus::EVALUATING || run->round != report.round()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no evaluation open for run '", report.run_id(),
                       "' round ", report.round()));
    }
    if (!run->selected.count(site)) {
      return absl::FailedPreconditionError(
          absl::StrCat("site ", site, " was not asked to evaluate"));
    }
    if (run->done.count(site)) {
      return absl::AlreadyExistsError("evaluation already reported");
    }
    if (absl::Status status =
            ValidateAggregate(report.aggregate(), run->plan.class_names_size());
        !status.ok()) {
      return status;
    }
    EvalSplit expected = RoleInPlan(run->plan, site) == Plan::TRAIN
                             ? INTERNAL_VALIDATION
                             : EXTERNAL_VALIDATION;
    if (report.aggregate().split() != expected) {
      return absl::InvalidArgumentError(absl::StrCat(
          "site ", site, " must report ", EvalSplit_Name(expected)));
    }
    if (absl::Status status = ValidateHeadReports(run->plan, report, expected);
        !status.ok()) {
      return status;
    }
    // Agents before patient-level reporting send none.
    if (report.has_patient_aggregate()) {
      if (absl::Status status =
              ValidatePatientAggregate(run->plan, report, expected);
          !status.ok()) {
        return status;
      }
    }
    RoundRecord& record = run->rounds[run->round];
    SiteEvaluation* evaluation = record.add_evaluations();
    evaluation->set_site(site);
    *evaluation->mutable_aggregate() = report.aggregate();
    *evaluation->mutable_heads() = report.heads();
    *evaluation->mutable_flow() = report.flow();
    if (report.has_patient_aggregate()) {
      *evaluation->mutable_patient_aggregate() = report.patient_aggregate();
    }
    run->done.insert(site);
    sites_[site].activity = "evaluated";
    sites_[site].last_seen = now;
    if (absl::Status status =
            store_->SaveRound(run->run_id, record, run->state);
        !status.ok()) {
      LogError("cannot save evaluation: ", status.message());
    }
    if (run->done.size() == run->selected.size()) {
      CloseEvaluationLocked(*run, now);
    }
    WakeWaitersLocked(now, &delivery);
  }
  Deliver(delivery);
  return absl::OkStatus();
}

void Coordinator::OpenEvaluationLocked(Run& run, absl::Time now) {
  run.state = RunStatus::EVALUATING;
  std::vector<std::string> live = LiveSitesLocked(run, false, now);
  run.selected = std::set<std::string>(live.begin(), live.end());
  run.done.clear();
  run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
  if (run.selected.empty()) CloseEvaluationLocked(run, now);
}

void Coordinator::CloseEvaluationLocked(Run& run, absl::Time now) {
  EvalAggregate internal, external;
  for (const SiteEvaluation& evaluation : run.rounds[run.round].evaluations()) {
    EvalAggregate* pooled =
        evaluation.aggregate().split() == INTERNAL_VALIDATION ? &internal
                                                              : &external;
    AddAggregate(evaluation.aggregate(), pooled).IgnoreError();
  }
  LogInfo("run ", run.run_id, " round ", run.round,
          ": pooled internal accuracy ", Accuracy(internal), " (",
          internal.num_images(), " images), external accuracy ",
          Accuracy(external), " (", external.num_images(), " images)");
  if (run.round >= run.plan.rounds()) {
    FinishRunLocked(run, RunStatus::DONE, "");
  } else {
    OpenTrainingLocked(run, run.round + 1, now);
  }
}

}  // namespace echofed
