#include "coordinator/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/pki.h"
#include "common/plan_util.h"
#include "common/secure_aggregation.h"
#include "common/sha256.h"

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

bool IsTerminal(RunStatus::State state) {
  return state == RunStatus::DONE || state == RunStatus::STOPPED ||
         state == RunStatus::FAILED;
}

std::string NewRunId(absl::Time now) {
  static std::mt19937_64 random{std::random_device{}()};
  return absl::StrCat(
      "run-", absl::FormatTime("%Y%m%d-%H%M%S", now, absl::UTCTimeZone()), "-",
      absl::StrFormat("%04x", random() & 0xFFFF));
}

std::string PhaseName(RunStatus::State state) {
  return absl::AsciiStrToLower(RunStatus::State_Name(state));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Coordinator>> Coordinator::Create(
    CoordinatorOptions options) {
  if (options.state_dir.empty()) {
    return absl::InvalidArgumentError("coordinator needs a state_dir");
  }
  for (const char* sub : {"", "/models", "/incoming"}) {
    if (absl::Status status = MakeDirectories(options.state_dir + sub);
        !status.ok()) {
      return status;
    }
  }
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(options.state_dir + "/echofed.sqlite");
  if (!store.ok()) return store.status();
  absl::StatusOr<std::unique_ptr<AuditLog>> audit =
      AuditLog::Open(options.state_dir + "/audit.log");
  if (!audit.ok()) return audit.status();
  std::unique_ptr<Coordinator> coordinator(new Coordinator(
      std::move(options), std::move(*store), std::move(*audit)));
  if (absl::Status status = coordinator->Restore(); !status.ok()) {
    return status;
  }
  return coordinator;
}

Coordinator::Coordinator(CoordinatorOptions options,
                         std::unique_ptr<Store> store,
                         std::unique_ptr<AuditLog> audit)
    : options_(std::move(options)),
      store_(std::move(store)),
      audit_(std::move(audit)),
      telemetry_(options_.clock->Now()) {}

void Coordinator::Audit(const AuditEvent& event) {
  if (absl::Status status = audit_->Append(event, options_.clock->Now());
      !status.ok()) {
    LogError("audit log: ", status.message());
  }
}

Coordinator::~Coordinator() { Shutdown(); }

absl::Status Coordinator::Restore() {
  absl::StatusOr<std::vector<Store::StoredRun>> stored = store_->LoadRuns();
  if (!stored.ok()) return stored.status();
  absl::MutexLock lock(&mu_);
  absl::Time now = options_.clock->Now();
  for (Store::StoredRun& saved : *stored) {
    auto run = std::make_unique<Run>();
    run->run_id = saved.run_id;
    run->plan = saved.plan;
    run->state = saved.state;
    run->message = saved.message;
    run->created_unix_ms = saved.created_unix_ms;
    // Keep the committed rounds whose model file is whole and matches.
    for (RoundRecord& record : saved.rounds) {
      if (record.round() != static_cast<int>(run->rounds.size())) break;
      absl::StatusOr<std::unique_ptr<ModelFileReader>> model =
          ModelFileReader::Open(ModelPath(run->run_id, record.round()));
      if (!model.ok() || (*model)->digest() != record.model_digest()) {
        LogError("run ", run->run_id, " round ", record.round(),
                 ": model file missing or damaged; resuming before it");
        break;
      }
      run->global_layout = (*model)->manifest();
      run->rounds.push_back(std::move(record));
    }
    // A model written for the next round but never committed (a crash
    // between the two) goes: under secure aggregation it is the sum of a
    // cohort, and the redone round may sum another; the two must never lie
    // side by side.
    std::string orphan =
        ModelPath(run->run_id, static_cast<int>(run->rounds.size()));
    if (::unlink(orphan.c_str()) == 0) {
      LogWarning("run ", run->run_id, ": removed uncommitted model ", orphan);
    }
    latest_run_id_ = run->run_id;
    if (!IsTerminal(run->state)) {
      LogInfo("resuming run ", run->run_id, " after round ",
              static_cast<int>(run->rounds.size()) - 1);
      run->state = RunStatus::WAITING_FOR_SITES;
      run->deadline = now + absl::Seconds(run->plan.round_deadline_seconds());
      active_ = run.get();
    }
    runs_[run->run_id] = std::move(run);
  }
  if (active_ == nullptr && !latest_run_id_.empty()) {
    active_ = runs_[latest_run_id_].get();
  }
  return absl::OkStatus();
}

std::string Coordinator::ModelPath(const std::string& run_id, int round) const {
  return absl::StrFormat("%s/models/%s/round-%05d.efm", options_.state_dir,
                         run_id, round);
}

void Coordinator::Deliver(Delivery& delivery) {
  for (auto& [callback, task] : delivery) callback(std::move(task));
  delivery.clear();
}

Coordinator::Run* Coordinator::FindRunLocked(const std::string& run_id) {
  auto it = runs_.find(run_id.empty() ? latest_run_id_ : run_id);
  return it == runs_.end() ? nullptr : it->second.get();
}

bool Coordinator::IsLiveLocked(const std::string& site, absl::Time now) {
  auto it = sites_.find(site);
  return it != sites_.end() && it->second.joined &&
         now - it->second.last_seen <= options_.site_liveness;
}

std::vector<std::string> Coordinator::LiveSitesLocked(const Run& run,
                                                      bool train_only,
                                                      absl::Time now) {
  std::vector<std::string> live;
  for (const Plan::SiteRole& entry : run.plan.sites()) {
    if (train_only && entry.role() != Plan::TRAIN) continue;
    if (IsLiveLocked(entry.site(), now)) live.push_back(entry.site());
  }
  std::sort(live.begin(), live.end());
  return live;
}

// ---------------------------------------------------------------------------
// Site-facing calls.

absl::StatusOr<JoinResponse> Coordinator::Join(const std::string& site,
                                               const JoinRequest& request) {
  if (request.data().images() < 0 || request.data().patients() < 0) {
    return absl::InvalidArgumentError("negative data counts");
  }
  Delivery delivery;
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = options_.clock->Now();
    SiteState& state = sites_[site];
    bool rejoin = state.joined;
    state.joined = true;
    state.last_seen = now;
    state.join = request;
    state.activity = "joined";
    LogInfo("site ", site, rejoin ? " rejoined" : " joined", " (device ",
            request.device(), ", ", request.data().patients(), " patients, ",
            request.data().images(), " images)");
    Audit({site, rejoin ? "rejoin" : "join", "", -1, "",
           absl::StrCat("device ", request.device())});
    if (active_ != nullptr) AdvanceLocked(*active_, now);
    WakeWaitersLocked(now, &delivery);
  }
  Deliver(delivery);
  JoinResponse response;
  response.set_site(site);
  response.set_coordinator_version(ECHOFED_VERSION);
  return response;
}

void Coordinator::NextTask(const std::string& site, absl::Duration wait,
                           TaskCallback done) {
  Delivery delivery;
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = options_.clock->Now();
    auto it = sites_.find(site);
    if (it == sites_.end() || !it->second.joined) {
      delivery.emplace_back(std::move(done),
                            absl::FailedPreconditionError("join first"));
    } else {
      it->second.last_seen = now;
      Task task;
      task.set_kind(Task::WAIT);
      if (!shutting_down_) task = TaskForLocked(site);
      if (task.kind() != Task::WAIT || wait <= absl::ZeroDuration() ||
          shutting_down_) {
        delivery.emplace_back(std::move(done), std::move(task));
      } else {
        waiters_.push_back(Waiter{site,
                                  now + std::min(wait, options_.max_long_poll),
                                  std::move(done)});
      }
    }
  }
  Deliver(delivery);
}

Task Coordinator::TaskForLocked(const std::string& site) {
  Task task;
  task.set_kind(Task::WAIT);
  if (active_ == nullptr) return task;
  Run& run = *active_;
  Plan::Role role = RoleInPlan(run.plan, site);
  if (role == Plan::ROLE_UNSPECIFIED) return task;
  task.set_run_id(run.run_id);
  task.set_round(run.round);
  *task.mutable_plan() = run.plan;
  task.set_role(role);
  SiteState& state = sites_[site];
  switch (run.state) {
    case RunStatus::INITIALIZING:
      if (site == run.init_site) {
        task.set_kind(Task::INITIALIZE);
        state.activity = "initializing";
      }
      break;
    case RunStatus::TRAINING:
      if (run.selected.count(site) && !run.done.count(site)) {
        task.set_kind(Task::TRAIN);
        task.set_model_digest(run.rounds[run.round - 1].model_digest());
        if (run.plan.secure_aggregation()) {
          task.set_masking_attempt(run.masking.attempt);
        }
        state.activity = "training";
      }
      break;
    case RunStatus::EVALUATING:
      if (run.selected.count(site) && !run.done.count(site)) {
        task.set_kind(Task::EVALUATE);
        task.set_model_digest(run.rounds[run.round].model_digest());
        state.activity = "evaluating";
      }
      break;
    case RunStatus::DONE:
    case RunStatus::STOPPED:
    case RunStatus::FAILED:
      if (!run.told_stop.count(site)) {
        run.told_stop.insert(site);
        task.set_kind(Task::STOP);
        state.activity = "finished";
      }
      break;
    default:
      break;
  }
  if (task.kind() == Task::WAIT) task.clear_plan();
  return task;
}

void Coordinator::WakeWaitersLocked(absl::Time now, Delivery* delivery) {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    Task task;
    if (shutting_down_) {
      task.set_kind(Task::WAIT);
    } else {
      task = TaskForLocked(it->site);
    }
    if (task.kind() != Task::WAIT || now >= it->expires || shutting_down_) {
      delivery->emplace_back(std::move(it->done), std::move(task));
      it = waiters_.erase(it);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<std::unique_ptr<ModelFileReader>> Coordinator::OpenModelForSite(
    const std::string& site, const DownloadRequest& request) {
  std::string path;
  {
    absl::MutexLock lock(&mu_);
    Run* run = FindRunLocked(request.run_id());
    if (run == nullptr || request.run_id().empty()) {
      return absl::NotFoundError(
          absl::StrCat("no run '", request.run_id(), "'"));
    }
    if (RoleInPlan(run->plan, site) == Plan::ROLE_UNSPECIFIED) {
      return absl::PermissionDeniedError(
          absl::StrCat("site ", site, " takes no part in run ", run->run_id));
    }
    if (request.round() < 0 ||
        request.round() >= static_cast<int>(run->rounds.size())) {
      return absl::NotFoundError(
          absl::StrCat("run ", run->run_id,
                       " has no committed model for round ", request.round()));
    }
    sites_[site].last_seen = options_.clock->Now();
    path = ModelPath(run->run_id, request.round());
  }
  return ModelFileReader::Open(path);
}

absl::StatusOr<std::unique_ptr<UploadSession>> Coordinator::BeginUpload(
    const std::string& site, const UploadHeader& header) {
  absl::MutexLock lock(&mu_);
  absl::Time now = options_.clock->Now();
  if (header.upload_id().empty() || header.upload_id().size() > 128) {
    return absl::InvalidArgumentError("upload_id must be 1 to 128 characters");
  }
  Run* run = active_;
  if (run == nullptr || run->run_id != header.run_id()) {
    return absl::FailedPreconditionError(
        absl::StrCat("run '", header.run_id(), "' is not the active run"));
  }
  auto site_it = sites_.find(site);
  if (site_it == sites_.end() || !site_it->second.joined) {
    return absl::FailedPreconditionError("join before uploading");
  }
  site_it->second.last_seen = now;
  std::optional<ModelManifest> layout;
  double weight = 0;
  if (run->state == RunStatus::INITIALIZING) {
    if (header.round() != 0 || site != run->init_site) {
      return absl::FailedPreconditionError(
          absl::StrCat("site ", site, " was not asked for initial weights"));
    }
  } else if (run->state == RunStatus::TRAINING) {
    if (header.round() != run->round) {
      return absl::FailedPreconditionError(
          absl::StrCat("round ", header.round(),
                       " is not open for updates (open: ", run->round, ")"));
    }
    if (!run->selected.count(site)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "site ", site, " is not selected for round ", run->round));
    }
    if (header.num_samples() <= 0) {
      return absl::InvalidArgumentError("num_samples must be positive");
    }
    if (!std::isfinite(header.mean_train_loss())) {
      return absl::InvalidArgumentError("mean_train_loss is not finite");
    }
    // An agent without differential privacy (an older one, or one that
    // ignores the plan) reports no privacy spent: its update is refused
    // before a byte of it is read.
    if (run->plan.has_differential_privacy() &&
        !(header.privacy_epsilon() >= 0 &&
          std::isfinite(header.privacy_epsilon()) &&
          header.privacy_delta() > 0 && header.privacy_delta() < 1)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "run ", run->run_id,
          " uses differential privacy, and the update of site ", site,
          " reports no privacy_epsilon / privacy_delta: is its agent too "
          "old?"));
    }
    // A site cannot weigh more than the data it declared, nor than the
    // plan's cap.
    int64_t declared =
        std::max<int64_t>(1, site_it->second.join.data().images());
    weight = static_cast<double>(std::min(
        {header.num_samples(), declared, run->plan.max_samples_per_site()}));
    if (run->plan.secure_aggregation()) {
      if (!run->masking.cohort_fixed ||
          header.masking_attempt() != run->masking.attempt) {
        return absl::FailedPreconditionError(absl::StrCat(
            "masking attempt ", header.masking_attempt(), " of round ",
            run->round, " takes no uploads (open: attempt ",
            run->masking.attempt,
            run->masking.cohort_fixed ? "" : ", cohort not fixed yet", ")"));
      }
      // The site multiplied its change by min(num_samples, cap) before
      // masking; the sum is divided by the same weights.
      if (header.num_samples() >
          std::max<int64_t>(1, site_it->second.join.data().images())) {
        return absl::InvalidArgumentError(
            "num_samples is above the images this site declared");
      }
      weight = static_cast<double>(
          std::min(header.num_samples(), run->plan.max_samples_per_site()));
      layout = MaskedLayout(run->global_layout);
    } else if (header.masking_attempt() != 0) {
      return absl::InvalidArgumentError(
          "a masked update, but this run does not use secure aggregation");
    } else {
      layout = run->global_layout;
    }
  } else {
    return absl::FailedPreconditionError(
        absl::StrCat("run ", run->run_id, " takes no updates while ",
                     PhaseName(run->state)));
  }
  bool duplicate = false;
  if (run->done.count(site)) {
    if (run->upload_ids[site] != header.upload_id()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "site ", site, " already contributed to round ", run->round));
    }
    duplicate = true;
  }
  std::string spool = absl::StrFormat(
      "%s/incoming/%s-r%d-%s-%d-%d.part", options_.state_dir, run->run_id,
      header.round(), site, ::getpid(), ++spool_counter_);
  site_it->second.activity = "uploading";
  return std::unique_ptr<UploadSession>(
      new UploadSession(this, site, header, weight, std::move(layout),
                        run->plan.model(), spool, duplicate));
}

absl::StatusOr<UploadReceipt> Coordinator::CompleteUpload(
    UploadSession& session) {
  const std::string& site = session.site_;
  const UploadHeader& header = session.header_;
  Delivery delivery;
  UploadReceipt receipt;
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = options_.clock->Now();
    Run* run = active_;
    // The round may have closed while the update was streaming in.
    if (run == nullptr || run->run_id != header.run_id() ||
        run->round != header.round() ||
        (run->state != RunStatus::TRAINING &&
         run->state != RunStatus::INITIALIZING)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "round ", header.round(), " closed before the update completed"));
    }
    if (run->state == RunStatus::TRAINING && run->plan.secure_aggregation() &&
        header.masking_attempt() != run->masking.attempt) {
      return absl::FailedPreconditionError(
          absl::StrCat("masking attempt ", header.masking_attempt(),
                       " was dropped before the update completed (now attempt ",
                       run->masking.attempt, ")"));
    }
    if (run->done.count(site)) {
      if (run->upload_ids[site] == header.upload_id()) {
        receipt.set_accepted(true);
        receipt.set_duplicate(true);
        return receipt;
      }
      return absl::AlreadyExistsError("site already contributed to this round");
    }
    absl::StatusOr<std::unique_ptr<ModelFileReader>> update =
        ModelFileReader::Open(session.spool_path_);
    if (!update.ok()) return update.status();
    receipt.set_digest((*update)->digest());
    if (run->state == RunStatus::INITIALIZING) {
      std::string path = ModelPath(run->run_id, 0);
      if (absl::Status status =
              MakeDirectories(options_.state_dir + "/models/" + run->run_id);
          !status.ok()) {
        return status;
      }
      if (absl::Status status = SyncAndRename(session.spool_path_, path);
          !status.ok()) {
        return status;
      }
      RoundRecord record;
      record.set_round(0);
      record.set_model_digest((*update)->digest());
      record.add_contributors(site);
      record.set_closed_unix_ms(absl::ToUnixMillis(now));
      if (absl::Status status =
              store_->SaveRound(run->run_id, record, RunStatus::TRAINING);
          !status.ok()) {
        return status;
      }
      run->global_layout = (*update)->manifest();
      run->rounds.push_back(record);
      run->done.insert(site);
      run->upload_ids[site] = header.upload_id();
      LogInfo("run ", run->run_id, ": initial model from ", site, " (",
              run->global_layout.tensors_size(), " tensors, digest ",
              HexDigest(record.model_digest()).substr(0, 16), ")");
      Audit({site, "initial-model", run->run_id, 0, record.model_digest(), ""});
      OpenTrainingLocked(*run, 1, now);
    } else {
      // Under secure aggregation only the sum of the whole cohort means
      // anything; it goes to the strategy at the close.
      if (absl::Status status =
              run->plan.secure_aggregation()
                  ? run->masking.sum->Add(**update)
                  : run->aggregator->Add(**update, session.weight_);
          !status.ok()) {
        // A masked sum that took part of an upload is of no use: the
        // attempt starts again.
        if (run->plan.secure_aggregation()) RedoMaskingLocked(*run, now);
        return status;
      }
      run->done.insert(site);
      run->upload_ids[site] = header.upload_id();
      run->pending.add_contributors(site);
      if (run->plan.has_differential_privacy()) {
        SitePrivacy* privacy = run->pending.add_privacy();
        privacy->set_site(site);
        privacy->set_epsilon(header.privacy_epsilon());
        privacy->set_delta(header.privacy_delta());
      }
      run->contributions.push_back(
          {site, session.weight_, header.mean_train_loss()});
      sites_[site].activity = "uploaded";
      LogInfo("run ", run->run_id, " round ", run->round, ": update from ",
              site, " accepted (weight ", session.weight_, ", ",
              run->done.size(), "/", run->selected.size(), ")");
      if (run->done.size() == run->selected.size()) {
        CloseTrainingLocked(*run, now);
      }
    }
    receipt.set_accepted(true);
    WakeWaitersLocked(now, &delivery);
  }
  Deliver(delivery);
  return receipt;
}

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

absl::Status Coordinator::Heartbeat(const std::string& site,
                                    const HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  auto it = sites_.find(site);
  if (it == sites_.end() || !it->second.joined) {
    return absl::FailedPreconditionError("join first");
  }
  SiteState& state = it->second;
  state.last_seen = options_.clock->Now();
  // Shown to operators; a short free-text word from the agent.
  if (!request.activity().empty())
    state.activity = request.activity().substr(0, 32);
  state.epoch = request.epoch();
  state.batch = request.batch();
  state.loss = request.loss();
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// State machine.

void Coordinator::AdvanceLocked(Run& run, absl::Time now) {
  switch (run.state) {
    case RunStatus::WAITING_FOR_SITES:
      StartFromWaitingLocked(run, now);
      break;
    case RunStatus::INITIALIZING:
      if (now >= run.deadline || !IsLiveLocked(run.init_site, now)) {
        std::vector<std::string> live = LiveSitesLocked(run, true, now);
        if (live.empty()) break;
        // Ask the next live training site.
        auto next = std::upper_bound(live.begin(), live.end(), run.init_site);
        run.init_site = next == live.end() ? live.front() : *next;
        run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
        LogWarning("run ", run.run_id, ": asking ", run.init_site,
                   " for the initial model instead");
      }
      break;
    case RunStatus::TRAINING:
      if (now < run.retry_close_after) break;
      if (run.plan.secure_aggregation() && !run.masking.folded) {
        AdvanceMaskingLocked(run, now);
        break;
      }
      if (!run.selected.empty() && run.done.size() == run.selected.size()) {
        CloseTrainingLocked(run, now);
      } else if (now >= run.deadline) {
        if (static_cast<int>(run.done.size()) >= run.plan.min_sites()) {
          LogWarning("run ", run.run_id, " round ", run.round,
                     ": deadline reached; closing with ", run.done.size(),
                     " of ", run.selected.size(), " sites");
          CloseTrainingLocked(run, now);
        } else {
          // Too few updates: keep the round open, and let sites that came
          // (back) since take part.
          for (const std::string& site : LiveSitesLocked(run, true, now)) {
            run.selected.insert(site);
          }
          run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
          LogWarning("run ", run.run_id, " round ", run.round, ": only ",
                     run.done.size(), " of min ", run.plan.min_sites(),
                     " updates at the deadline; extended");
        }
      }
      break;
    case RunStatus::EVALUATING:
      if (now >= run.deadline) {
        LogWarning("run ", run.run_id, " round ", run.round,
                   ": evaluation deadline; ", run.done.size(), " of ",
                   run.selected.size(), " sites reported");
        CloseEvaluationLocked(run, now);
      }
      break;
    default:
      break;
  }
}

void Coordinator::StartFromWaitingLocked(Run& run, absl::Time now) {
  std::vector<std::string> live = LiveSitesLocked(run, true, now);
  int train_sites = 0;
  for (const Plan::SiteRole& entry : run.plan.sites()) {
    if (entry.role() == Plan::TRAIN) ++train_sites;
  }
  bool all_here = static_cast<int>(live.size()) == train_sites;
  bool enough_at_deadline =
      now >= run.deadline &&
      static_cast<int>(live.size()) >= run.plan.min_sites();
  if (!all_here && !enough_at_deadline) return;
  if (run.rounds.empty()) {
    run.state = RunStatus::INITIALIZING;
    run.round = 0;
    run.init_site = live.front();
    run.selected = {run.init_site};
    run.done.clear();
    run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
    LogInfo("run ", run.run_id, ": ", live.size(),
            " training sites here; asking ", run.init_site,
            " for the initial model");
    return;
  }
  int last = static_cast<int>(run.rounds.size()) - 1;
  if (last >= run.plan.rounds()) {
    run.round = last;
    OpenEvaluationLocked(run, now);
  } else {
    OpenTrainingLocked(run, last + 1, now);
  }
}

void Coordinator::OpenTrainingLocked(Run& run, int round, absl::Time now) {
  run.state = RunStatus::TRAINING;
  run.round = round;
  std::vector<std::string> live = LiveSitesLocked(run, true, now);
  run.selected = std::set<std::string>(live.begin(), live.end());
  run.done.clear();
  run.upload_ids.clear();
  RoundContext context;
  context.layout = run.global_layout;
  context.round = round;
  context.previous_model_path = ModelPath(run.run_id, round - 1);
  context.state_dir = options_.state_dir + "/models/" + run.run_id;
  run.aggregator = CreateRoundAggregator(run.plan, context);
  run.contributions.clear();
  run.pending = RoundRecord();
  run.pending.set_round(round);
  run.masking = Run::Masking();
  if (run.plan.secure_aggregation()) {
    run.masking.sum = std::make_unique<MaskedSum>(run.global_layout);
  }
  run.round_opened = now;
  run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
  LogInfo("run ", run.run_id, " round ", round, "/", run.plan.rounds(),
          ": training at ", absl::StrJoin(live, ", "));
}

void Coordinator::CloseTrainingLocked(Run& run, absl::Time now) {
  if (run.plan.secure_aggregation() && !run.masking.folded) {
    if (absl::Status status = FoldMaskedSumLocked(run); !status.ok()) {
      run.message = absl::StrCat("cannot unmask round ", run.round, ": ",
                                 status.message());
      run.retry_close_after = now + absl::Seconds(5);
      LogError("run ", run.run_id, ": ", run.message);
      return;
    }
  }
  std::string dir = options_.state_dir + "/models/" + run.run_id;
  absl::StatusOr<std::string> digest =
      MakeDirectories(dir).ok()
          ? run.aggregator->WriteModel(ModelPath(run.run_id, run.round))
          : absl::StatusOr<std::string>(
                absl::InternalError(absl::StrCat("cannot create ", dir)));
  RoundRecord record = run.pending;
  if (run.plan.secure_aggregation()) {
    record.set_masking_attempts(run.masking.attempt);
    for (const std::string& site : run.masking.dropouts) {
      record.add_masking_dropouts(site);
    }
  }
  if (digest.ok()) {
    record.set_model_digest(*digest);
    record.set_total_weight(
        static_cast<int64_t>(run.aggregator->total_weight()));
    std::vector<int> excluded = run.aggregator->Excluded();
    double loss_weighted_sum = 0;
    for (size_t i = 0; i < run.contributions.size(); ++i) {
      const Run::Contribution& contribution = run.contributions[i];
      if (std::find(excluded.begin(), excluded.end(), static_cast<int>(i)) !=
          excluded.end()) {
        record.add_excluded(contribution.site);
      } else {
        loss_weighted_sum += contribution.weight * contribution.loss;
      }
    }
    record.set_mean_train_loss(loss_weighted_sum /
                               run.aggregator->total_weight());
    record.set_closed_unix_ms(absl::ToUnixMillis(now));
    bool evaluate =
        run.plan.evaluate_every_round() || run.round == run.plan.rounds();
    RunStatus::State next =
        evaluate ? RunStatus::EVALUATING
                 : (run.round < run.plan.rounds() ? RunStatus::TRAINING
                                                  : RunStatus::DONE);
    absl::Status saved = store_->SaveRound(run.run_id, record, next);
    if (saved.ok()) {
      run.rounds.push_back(record);
      run.aggregator.reset();
      run.message.clear();
      telemetry_.ObserveRoundCommitted(now - run.round_opened);
      LogInfo("run ", run.run_id, " round ", run.round, ": committed model ",
              HexDigest(*digest).substr(0, 16), " from ",
              absl::StrJoin(record.contributors(), ", "), " (mean train loss ",
              record.mean_train_loss(), ")");
      Audit({"coordinator", "round-commit", run.run_id, run.round, *digest,
             absl::StrCat(Plan::Strategy_Name(run.plan.strategy()), " of ",
                          absl::StrJoin(record.contributors(), ","))});
      for (const std::string& site : record.excluded()) {
        LogWarning("run ", run.run_id, " round ", run.round, ": update from ",
                   site, " left out by norm bounding (update_norm_outlier_",
                   "factor ", run.plan.update_norm_outlier_factor(), ")");
        Audit({site, "update-excluded", run.run_id, run.round, "",
               "update norm beyond the round's bound"});
      }
      if (evaluate) {
        OpenEvaluationLocked(run, now);
      } else if (run.round < run.plan.rounds()) {
        OpenTrainingLocked(run, run.round + 1, now);
      } else {
        FinishRunLocked(run, RunStatus::DONE, "");
      }
      return;
    }
    digest = saved;
  }
  // The previous committed model stays the global one; try again shortly.
  run.message = absl::StrCat("cannot commit round ", run.round, ": ",
                             digest.status().message());
  run.retry_close_after = now + absl::Seconds(5);
  LogError("run ", run.run_id, ": ", run.message);
}

void Coordinator::AdvanceMaskingLocked(Run& run, absl::Time now) {
  Run::Masking& masking = run.masking;
  if (!masking.cohort_fixed) {
    const bool enough = static_cast<int>(masking.keys.size()) >=
                        std::max(2, run.plan.min_sites());
    if (enough && masking.keys.size() == run.selected.size()) {
      FixMaskingCohortLocked(run, now);
      return;
    }
    if (now < run.deadline) return;
    if (enough) {
      FixMaskingCohortLocked(run, now);
      return;
    }
    // Too few keys: keep collecting, and let sites that came (back) since
    // take part.
    for (const std::string& site : LiveSitesLocked(run, true, now)) {
      run.selected.insert(site);
    }
    run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
    LogWarning("run ", run.run_id, " round ", run.round, ": only ",
               masking.keys.size(), " masking keys at the deadline (min ",
               std::max(2, run.plan.min_sites()), "); extended");
    return;
  }
  if (run.done.size() == run.selected.size()) {
    CloseTrainingLocked(run, now);
  } else if (now >= masking.upload_deadline) {
    RedoMaskingLocked(run, now);
  }
}

void Coordinator::FixMaskingCohortLocked(Run& run, absl::Time now) {
  Run::Masking& masking = run.masking;
  masking.cohort_fixed = true;
  run.selected.clear();
  for (const auto& [site, key] : masking.keys) run.selected.insert(site);
  // The cohort has trained already: what is left is masking and uploading.
  masking.upload_deadline =
      now + absl::Seconds(run.plan.round_deadline_seconds());
  std::vector<std::string> cohort(run.selected.begin(), run.selected.end());
  LogInfo("run ", run.run_id, " round ", run.round, ": masking cohort of ",
          "attempt ", masking.attempt, ": ", absl::StrJoin(cohort, ", "));
  Audit({"coordinator", "masking-cohort", run.run_id, run.round, "",
         absl::StrCat("attempt ", masking.attempt, ": ",
                      absl::StrJoin(cohort, ","))});
}

void Coordinator::RedoMaskingLocked(Run& run, absl::Time now) {
  Run::Masking& masking = run.masking;
  std::vector<std::string> dropped, survivors;
  for (const std::string& site : run.selected) {
    if (!run.done.count(site)) {
      dropped.push_back(site);
      if (std::find(masking.dropouts.begin(), masking.dropouts.end(), site) ==
          masking.dropouts.end()) {
        masking.dropouts.push_back(site);
      }
    } else if (IsLiveLocked(site, now)) {
      survivors.push_back(site);
    }
  }
  // The partial sum still holds the dropped sites' masks: it is noise, and
  // the survivors' uploads are dropped with it. They mask the same updates
  // again with fresh keys, so nothing of this attempt can be combined with
  // the next.
  ++masking.attempt;
  masking.keys.clear();
  masking.cohort_fixed = false;
  masking.sum = std::make_unique<MaskedSum>(run.global_layout);
  run.done.clear();
  run.upload_ids.clear();
  run.contributions.clear();
  run.pending = RoundRecord();
  run.pending.set_round(run.round);
  if (static_cast<int>(survivors.size()) >= std::max(2, run.plan.min_sites())) {
    run.selected = std::set<std::string>(survivors.begin(), survivors.end());
  } else {
    std::vector<std::string> live = LiveSitesLocked(run, true, now);
    run.selected = std::set<std::string>(live.begin(), live.end());
  }
  run.deadline = now + absl::Seconds(run.plan.round_deadline_seconds());
  std::vector<std::string> again(run.selected.begin(), run.selected.end());
  LogWarning("run ", run.run_id, " round ", run.round, ": ",
             absl::StrJoin(dropped, ", "),
             " did not upload after masking; masking again (attempt ",
             masking.attempt, ") with ", absl::StrJoin(again, ", "));
  Audit({"coordinator", "masking-redo", run.run_id, run.round, "",
         absl::StrCat("attempt ", masking.attempt, " without ",
                      absl::StrJoin(dropped, ","))});
}

absl::Status Coordinator::FoldMaskedSumLocked(Run& run) {
  double total_weight = 0;
  for (const Run::Contribution& contribution : run.contributions) {
    total_weight += contribution.weight;
  }
  absl::StatusOr<std::unique_ptr<ModelFileReader>> previous =
      ModelFileReader::Open(ModelPath(run.run_id, run.round - 1));
  if (!previous.ok()) return previous.status();
  absl::StatusOr<TensorBundle> average =
      run.masking.sum->Average(**previous, total_weight);
  if (!average.ok()) return average.status();
  BundleSource source(&*average);
  if (absl::Status status = run.aggregator->Add(source, total_weight);
      !status.ok()) {
    return status;
  }
  run.masking.folded = true;
  run.masking.sum.reset();
  return absl::OkStatus();
}

absl::Status Coordinator::SubmitMaskingKey(const std::string& site,
                                           const MaskingKeyRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::Time now = options_.clock->Now();
  absl::StatusOr<Run*> run =
      MaskingRunLocked(site, request.run_id(), request.round(), now);
  if (!run.ok()) return run.status();
  Run::Masking& masking = (*run)->masking;
  if (request.attempt() != masking.attempt) {
    return absl::AbortedError(absl::StrCat(
        "masking attempt ", request.attempt(), " of round ", request.round(),
        " is over (now attempt ", masking.attempt, ")"));
  }
  if (request.public_key().size() != kMaskingKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a masking public key has ", kMaskingKeyBytes, " bytes"));
  }
  // A key no one can agree with (a low-order point) would make every peer
  // refuse the cohort: refused here, before it spoils the attempt.
  absl::StatusOr<MaskingKey> probe = MaskingKey::Generate();
  if (!probe.ok()) return probe.status();
  if (absl::StatusOr<std::string> seed =
          probe->PairSeed(request.public_key(), "key check");
      !seed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("masking public key: ", seed.status().message()));
  }
  if (masking.cohort_fixed) {
    auto it = masking.keys.find(site);
    if (it != masking.keys.end() &&
        it->second.public_key() == request.public_key()) {
      return absl::OkStatus();  // a retry
    }
    return absl::FailedPreconditionError(
        absl::StrCat("the masking cohort of round ", request.round(),
                     " attempt ", masking.attempt, " is already fixed",
                     it == masking.keys.end() ? " without this site" : ""));
  }
  if (!(*run)->selected.count(site)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "site ", site, " is not selected for round ", request.round()));
  }
  // The other sites verify the certificate against the study CA; here it
  // must at least be the caller's and have signed the key, so that a
  // mistake shows at its source.
  absl::StatusOr<PeerIdentity> owner =
      ReadCertificateSubject(request.certificate_pem());
  if (!owner.ok() || owner->identity != site) {
    return absl::InvalidArgumentError(
        "the masking key must come with this site's own certificate");
  }
  if (absl::Status status = CheckSignature(
          request.certificate_pem(),
          MaskingKeyStatement(request.run_id(), request.round(),
                              request.attempt(), site, request.public_key()),
          request.key_signature());
      !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("masking key signature: ", status.message()));
  }
  // A new key before the cohort is fixed replaces the old one (an agent
  // that restarted lost its private key).
  MaskingPeer& entry = masking.keys[site];
  entry.set_site(site);
  entry.set_public_key(request.public_key());
  entry.set_certificate_pem(request.certificate_pem());
  entry.set_key_signature(request.key_signature());
  sites_[site].activity = "masking";
  if (masking.keys.size() == (*run)->selected.size() &&
      static_cast<int>(masking.keys.size()) >=
          std::max(2, (*run)->plan.min_sites())) {
    FixMaskingCohortLocked(**run, now);
  }
  return absl::OkStatus();
}

absl::StatusOr<MaskingCohort> Coordinator::GetMaskingCohort(
    const std::string& site, const MaskingCohortRequest& request) {
  absl::MutexLock lock(&mu_);
  absl::Time now = options_.clock->Now();
  absl::StatusOr<Run*> run =
      MaskingRunLocked(site, request.run_id(), request.round(), now);
  if (!run.ok()) return run.status();
  const Run::Masking& masking = (*run)->masking;
  if (request.attempt() != masking.attempt) {
    return absl::AbortedError(absl::StrCat(
        "masking attempt ", request.attempt(), " of round ", request.round(),
        " is over (now attempt ", masking.attempt, ")"));
  }
  MaskingCohort cohort;
  if (!masking.cohort_fixed) return cohort;
  if (!masking.keys.count(site)) {
    return absl::FailedPreconditionError(
        absl::StrCat("site ", site, " is not in the masking cohort of round ",
                     request.round(), " attempt ", masking.attempt));
  }
  cohort.set_ready(true);
  for (const auto& [peer, entry] : masking.keys) *cohort.add_peers() = entry;
  return cohort;
}

absl::StatusOr<Coordinator::Run*> Coordinator::MaskingRunLocked(
    const std::string& site, const std::string& run_id, int round,
    absl::Time now) {
  auto site_it = sites_.find(site);
  if (site_it == sites_.end() || !site_it->second.joined) {
    return absl::FailedPreconditionError("join first");
  }
  site_it->second.last_seen = now;
  Run* run = active_;
  if (run == nullptr || run->run_id != run_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("run '", run_id, "' is not the active run"));
  }
  if (!run->plan.secure_aggregation()) {
    return absl::FailedPreconditionError(
        absl::StrCat("run ", run_id, " does not use secure aggregation"));
  }
  if (run->state != RunStatus::TRAINING || run->round != round ||
      run->masking.folded) {
    return absl::AbortedError(
        absl::StrCat("round ", round, " of run ", run_id,
                     " is not collecting masked updates"));
  }
  return run;
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

void Coordinator::FinishRunLocked(Run& run, RunStatus::State state,
                                  const std::string& message) {
  run.state = state;
  run.message = message;
  run.selected.clear();
  run.done.clear();
  run.aggregator.reset();
  run.masking = Run::Masking();
  if (absl::Status status = store_->UpdateRunState(run.run_id, state, message);
      !status.ok()) {
    LogError("cannot record the end of run ", run.run_id, ": ",
             status.message());
  }
  LogInfo("run ", run.run_id, " ", PhaseName(state),
          message.empty() ? "" : ": ", message);
  Audit({"coordinator", absl::StrCat("run-", PhaseName(state)), run.run_id,
         run.round, "", message});
}

void Coordinator::Tick() {
  Delivery delivery;
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = options_.clock->Now();
    if (active_ != nullptr && !shutting_down_) AdvanceLocked(*active_, now);
    WakeWaitersLocked(now, &delivery);
  }
  Deliver(delivery);
}

void Coordinator::Shutdown() {
  Delivery delivery;
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    WakeWaitersLocked(options_.clock->Now(), &delivery);
  }
  Deliver(delivery);
}

// ---------------------------------------------------------------------------
// Operators.

absl::StatusOr<std::string> Coordinator::StartRun(Plan plan) {
  ApplyPlanDefaults(&plan);
  if (absl::Status status = ValidatePlan(plan); !status.ok()) return status;
  if (!options_.enrolled_sites.empty()) {
    for (const Plan::SiteRole& entry : plan.sites()) {
      if (!options_.enrolled_sites.count(entry.site())) {
        return absl::InvalidArgumentError(absl::StrCat(
            "plan names site '", entry.site(), "', which is not enrolled"));
      }
    }
  }
  Delivery delivery;
  std::string run_id;
  {
    absl::MutexLock lock(&mu_);
    if (active_ != nullptr && !IsTerminal(active_->state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("run ", active_->run_id, " is still ",
                       PhaseName(active_->state), "; stop it first"));
    }
    absl::Time now = options_.clock->Now();
    auto run = std::make_unique<Run>();
    run->run_id = NewRunId(now);
    while (runs_.count(run->run_id)) run->run_id = NewRunId(now);
    run->plan = plan;
    run->created_unix_ms = absl::ToUnixMillis(now);
    run->deadline = now + absl::Seconds(plan.round_deadline_seconds());
    if (absl::Status status = store_->SaveRun(run->run_id, plan, run->state, "",
                                              run->created_unix_ms);
        !status.ok()) {
      return status;
    }
    run_id = run->run_id;
    latest_run_id_ = run_id;
    active_ = run.get();
    runs_[run_id] = std::move(run);
    LogInfo("run ", run_id, " started: '", plan.name(), "', ", plan.rounds(),
            " rounds of ", plan.model(), " at ", plan.sites_size(), " sites");
    AdvanceLocked(*active_, now);
    WakeWaitersLocked(now, &delivery);
  }
  Deliver(delivery);
  return run_id;
}

absl::Status Coordinator::StopRun(const std::string& run_id) {
  Delivery delivery;
  {
    absl::MutexLock lock(&mu_);
    Run* run = FindRunLocked(run_id);
    if (run == nullptr) {
      return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
    }
    if (IsTerminal(run->state)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "run ", run->run_id, " is already ", PhaseName(run->state)));
    }
    FinishRunLocked(*run, RunStatus::STOPPED, "stopped by an operator");
    WakeWaitersLocked(options_.clock->Now(), &delivery);
  }
  Deliver(delivery);
  return absl::OkStatus();
}

RunStatus Coordinator::StatusOfLocked(const Run& run) {
  RunStatus status;
  status.set_run_id(run.run_id);
  *status.mutable_plan() = run.plan;
  status.set_state(run.state);
  status.set_round(run.round);
  status.set_message(run.message);
  if (!IsTerminal(run.state)) {
    status.set_phase_deadline_unix_ms(absl::ToUnixMillis(run.deadline));
  }
  for (const Plan::SiteRole& entry : run.plan.sites()) {
    SiteStatus* site = status.add_sites();
    site->set_site(entry.site());
    site->set_role(entry.role());
    auto it = sites_.find(entry.site());
    if (it == sites_.end()) {
      site->set_activity("never seen");
      continue;
    }
    const SiteState& state = it->second;
    site->set_joined(state.joined);
    site->set_live(IsLiveLocked(entry.site(), options_.clock->Now()));
    site->set_activity(state.activity);
    site->set_last_seen_unix_ms(absl::ToUnixMillis(state.last_seen));
    site->set_epoch(state.epoch);
    site->set_batch(state.batch);
    site->set_loss(state.loss);
    site->set_device(state.join.device());
    if (state.join.has_data()) {
      *site->mutable_declared_data() = state.join.data();
    }
  }
  for (const RoundRecord& record : run.rounds) *status.add_rounds() = record;
  return status;
}

absl::StatusOr<RunStatus> Coordinator::GetRunStatus(const std::string& run_id) {
  absl::MutexLock lock(&mu_);
  Run* run = FindRunLocked(run_id);
  if (run == nullptr) {
    return absl::NotFoundError(run_id.empty()
                                   ? std::string("no run yet")
                                   : absl::StrCat("no run '", run_id, "'"));
  }
  return StatusOfLocked(*run);
}

Coordinator::SiteCounts Coordinator::CountSites() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = options_.clock->Now();
  SiteCounts counts;
  for (const auto& [site, state] : sites_) {
    if (!state.joined) continue;
    ++counts.joined;
    if (IsLiveLocked(site, now)) ++counts.live;
  }
  return counts;
}

ListRunsResponse Coordinator::ListRuns() {
  absl::MutexLock lock(&mu_);
  ListRunsResponse response;
  for (const auto& [id, run] : runs_) {
    RunStatus* status = response.add_runs();
    *status = StatusOfLocked(*run);
    status->clear_rounds();
    status->clear_sites();
  }
  return response;
}

absl::StatusOr<std::unique_ptr<ModelFileReader>> Coordinator::OpenModel(
    const std::string& run_id, int round) {
  std::string path;
  {
    absl::MutexLock lock(&mu_);
    Run* run = FindRunLocked(run_id);
    if (run == nullptr) {
      return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
    }
    if (run->rounds.empty()) {
      return absl::NotFoundError(
          absl::StrCat("run ", run->run_id, " has no committed model yet"));
    }
    int last = static_cast<int>(run->rounds.size()) - 1;
    if (round < 0) round = last;
    if (round > last) {
      return absl::NotFoundError(
          absl::StrCat("run ", run->run_id, " has no round ", round));
    }
    path = ModelPath(run->run_id, round);
  }
  return ModelFileReader::Open(path);
}

// ---------------------------------------------------------------------------
// Upload sessions.

UploadSession::UploadSession(Coordinator* coordinator, std::string site,
                             UploadHeader header, double weight,
                             std::optional<ModelManifest> expected_layout,
                             std::string expected_model_name,
                             std::string spool_path, bool duplicate)
    : coordinator_(coordinator),
      site_(std::move(site)),
      header_(std::move(header)),
      weight_(weight),
      expected_layout_(std::move(expected_layout)),
      expected_model_name_(std::move(expected_model_name)),
      spool_path_(std::move(spool_path)),
      duplicate_(duplicate) {
  ChunkAssembler::Options options;
  if (expected_layout_) options.expected_layout = &*expected_layout_;
  assembler_ = std::make_unique<ChunkAssembler>(
      options,
      [this](const ModelManifest& manifest) -> absl::Status {
        if (manifest.model_name() != expected_model_name_) {
          return absl::InvalidArgumentError(absl::StrCat(
              "update is a '", manifest.model_name(),
              "' model; the plan trains '", expected_model_name_, "'"));
        }
        if (duplicate_) return absl::OkStatus();
        ModelFileOptions spool_options;
        spool_options.digests_verified = true;  // by the assembler
        spool_options.durable = false;          // scratch until folded
        absl::StatusOr<std::unique_ptr<ModelFileWriter>> writer =
            ModelFileWriter::Create(spool_path_, manifest, spool_options);
        if (!writer.ok()) return writer.status();
        spool_ = std::move(*writer);
        return absl::OkStatus();
      },
      [this](int, absl::string_view bytes) -> absl::Status {
        if (duplicate_) return absl::OkStatus();
        return spool_->Append(bytes);
      });
}

UploadSession::~UploadSession() {
  spool_.reset();
  ::unlink(spool_path_.c_str());
}

absl::Status UploadSession::Accept(const ModelChunk& chunk) {
  if (finished_)
    return absl::FailedPreconditionError("upload already finished");
  return assembler_->Accept(chunk);
}

absl::StatusOr<UploadReceipt> UploadSession::Finish() {
  finished_ = true;
  absl::StatusOr<std::string> digest = assembler_->Finish();
  if (!digest.ok()) return digest.status();
  if (duplicate_) {
    UploadReceipt receipt;
    receipt.set_accepted(true);
    receipt.set_duplicate(true);
    receipt.set_digest(*digest);
    return receipt;
  }
  absl::StatusOr<std::string> committed = spool_->Commit();
  if (!committed.ok()) return committed.status();
  return coordinator_->CompleteUpload(*this);
}

}  // namespace echofed
