// Coordinator (coordinator.h), the run lifecycle: creation and restore
// after a restart, sites joining, NextTask long polls and their wake-ups,
// heartbeats, the phase dispatch of Tick, starting, stopping and finishing
// runs, and status, run lists and committed models for operators. Training
// rounds and uploads are in coordinator_rounds.cc, secure aggregation in
// coordinator_masking.cc, evaluation in coordinator_evaluation.cc.

#include "coordinator/coordinator.h"

#include <unistd.h>

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/log.h"
#include "common/plan_util.h"
#include "coordinator/coordinator_internal.h"

namespace echofed {
namespace {

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

}  // namespace

using coordinator_internal::PhaseName;

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

absl::StatusOr<std::unique_ptr<ChunkStream>> Coordinator::OpenModelForSite(
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
    if (served_.model != nullptr && served_.run_id == run->run_id &&
        served_.round == request.round()) {
      return std::unique_ptr<ChunkStream>(
          std::make_unique<MappedChunkStream>(served_.model));
    }
    path = ModelPath(run->run_id, request.round());
  }
  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      ModelFileReader::Open(path);
  if (!reader.ok()) return reader.status();
  return std::unique_ptr<ChunkStream>(
      std::make_unique<SourceChunkStream>(std::move(*reader)));
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

void Coordinator::FinishRunLocked(Run& run, RunStatus::State state,
                                  const std::string& message) {
  run.state = state;
  run.message = message;
  run.selected.clear();
  run.done.clear();
  run.aggregator.reset();
  run.masking = Run::Masking();
  // No more site downloads of this run: its model leaves memory.
  if (served_.run_id == run.run_id) served_ = ServedModel();
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

}  // namespace echofed
