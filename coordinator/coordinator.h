#ifndef ECHOFED_COORDINATOR_COORDINATOR_H_
#define ECHOFED_COORDINATOR_COORDINATOR_H_

// Coordinator is implemented in several files:
//   coordinator.cc             creation and restore, Join, NextTask and the
//                              waking of long polls, Heartbeat, Tick and the
//                              phase dispatch (AdvanceLocked), starting,
//                              stopping and finishing runs, status, run
//                              lists and committed models (OpenModel*);
//   coordinator_rounds.cc      training rounds: opening and closing them,
//                              BeginUpload, CompleteUpload, UploadSession;
//   coordinator_masking.cc     secure aggregation: masking keys and cohorts,
//                              redone attempts, folding the unmasked sum;
//   coordinator_evaluation.cc  ReportEvaluation and its checks, opening and
//                              closing evaluation.
// coordinator_internal.h holds the helpers more than one of them uses.

#include <cstdio>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/audit_log.h"
#include "common/chunk_stream.h"
#include "common/clock.h"
#include "common/tensor_bundle.h"
#include "coordinator/masked_sum.h"
#include "coordinator/store.h"
#include "coordinator/strategy.h"
#include "coordinator/telemetry.h"
#include "proto/admin.pb.h"
#include "proto/federation.pb.h"

namespace echofed {

struct CoordinatorOptions {
  // SQLite database, model files and incoming uploads live here.
  std::string state_dir;
  Clock* clock = Clock::Real();
  // Longest a NextTask call is held before it is answered WAIT.
  absl::Duration max_long_poll = absl::Seconds(20);
  // A site not heard from for this long is not selected for a new round.
  absl::Duration site_liveness = absl::Seconds(90);
  // Identities enrolled as sites; plans may name only these. Empty: no check.
  std::set<std::string> enrolled_sites;
};

class UploadSession;

// The run and round state machine, with no knowledge of gRPC: the service
// adapters pass in the verified identity of the caller.
//
// One run is active at a time. A run waits for its sites, asks one training
// site for the initial weights (round 0, built from the plan's seed), then
// for each round: every live training site downloads the global model,
// trains and uploads; updates are checked and handed to the plan's strategy as
// they complete (coordinator/strategy.h); the round closes when every selected
// site has uploaded, or at the deadline once min_sites have; the new model and
// the round record are committed (model file first, then the SQLite row,
// then the round-commit audit line, whose head the record keeps); then
// every site evaluates the new model and reports aggregate counts.
//
// Thread-safe. Calls never wait on the network; task callbacks run outside
// the lock. Errors: NOT_FOUND for unknown runs or rounds, FAILED_PRECONDITION
// for work that does not fit the run's phase (e.g. an upload for a closed
// round), INVALID_ARGUMENT for bad content, PERMISSION_DENIED for a site
// acting outside its role in the plan.
class Coordinator {
 public:
  static absl::StatusOr<std::unique_ptr<Coordinator>> Create(
      CoordinatorOptions options);
  ~Coordinator();

  // Appends to the hash-chained audit log (state_dir/audit.log); a failure
  // to write is logged, never hidden. Thread-safe.
  void Audit(const AuditEvent& event);

  // --- Site agents (`site` is the verified certificate identity).
  absl::StatusOr<JoinResponse> Join(const std::string& site,
                                    const JoinRequest& request);
  using TaskCallback = std::function<void(absl::StatusOr<Task>)>;
  // Calls `done` exactly once: at once when there is work (or `wait` is
  // zero), else when work appears or the wait runs out (Task WAIT).
  // FAILED_PRECONDITION when the site has not joined (e.g. after a restart
  // of the coordinator): the agent joins again.
  void NextTask(const std::string& site, absl::Duration wait,
                TaskCallback done);
  // The latest committed model comes from one mapping of its file, shared
  // by every download and sent without copies; older ones are read.
  absl::StatusOr<std::unique_ptr<ChunkStream>> OpenModelForSite(
      const std::string& site, const DownloadRequest& request);
  // A download of `round`'s model in `run_id` sent its first byte (or, with
  // `finished`, its last): the round timeline's download phases.
  void NoteDownload(const std::string& run_id, int round, bool finished);
  absl::StatusOr<std::unique_ptr<UploadSession>> BeginUpload(
      const std::string& site, const UploadHeader& header);
  absl::Status ReportEvaluation(const std::string& site,
                                const EvaluationReport& report);
  absl::Status Heartbeat(const std::string& site,
                         const HeartbeatRequest& request);
  // Secure aggregation: a selected training site's public key for the
  // round's current masking attempt (FAILED_PRECONDITION once the cohort is
  // fixed without it, or for another attempt), then the cohort (ready=false
  // while keys are missing; ABORTED when the attempt was superseded by a
  // new one, FAILED_PRECONDITION when the site is not in it).
  absl::Status SubmitMaskingKey(const std::string& site,
                                const MaskingKeyRequest& request);
  absl::StatusOr<MaskingCohort> GetMaskingCohort(
      const std::string& site, const MaskingCohortRequest& request);
  // The coordinator's clock, for sites that measure their skew (Ping).
  absl::Time Now() const { return options_.clock->Now(); }

  // --- Operators and statisticians.
  absl::StatusOr<std::string> StartRun(Plan plan);
  absl::Status StopRun(const std::string& run_id);
  // Empty run_id: the most recent run.
  absl::StatusOr<RunStatus> GetRunStatus(const std::string& run_id);
  ListRunsResponse ListRuns();
  // Negative round: the latest committed one.
  absl::StatusOr<std::unique_ptr<ModelFileReader>> OpenModel(
      const std::string& run_id, int round);

  // Sites that have joined since the coordinator started, and those of
  // them heard from within `site_liveness`.
  struct SiteCounts {
    int joined = 0;
    int live = 0;
  };
  SiteCounts CountSites();
  // Counters for the metrics endpoint; the services add traffic and
  // refusals, the coordinator committed rounds. Thread-safe.
  Telemetry& telemetry() { return telemetry_; }

  // Applies deadlines and answers expired long polls; the server calls it
  // a few times a second.
  void Tick();
  // Answers every parked long poll; later ones are answered WAIT at once.
  void Shutdown();

 private:
  friend class UploadSession;

  struct SiteState {
    bool joined = false;
    absl::Time last_seen;
    JoinRequest join;
    std::string activity;
    int epoch = 0;
    int batch = 0;
    double loss = 0;
  };

  struct Run {
    std::string run_id;
    Plan plan;
    RunStatus::State state = RunStatus::WAITING_FOR_SITES;
    std::string message;
    int64_t created_unix_ms = 0;
    int round = 0;
    // When the current training round opened (round durations), and the
    // same on the monotonic clock with the previous round's audited point
    // (the round timeline, pending.timeline()).
    absl::Time round_opened;
    int64_t round_opened_us = 0;
    int64_t previous_audited_us = 0;
    absl::Time deadline;
    std::set<std::string> selected;
    std::set<std::string> done;
    std::map<std::string, std::string> upload_ids;
    std::string init_site;
    std::unique_ptr<RoundAggregator> aggregator;
    // This round's contributors in upload order, with weight and loss.
    struct Contribution {
      std::string site;
      double weight = 0;
      double loss = 0;
    };
    std::vector<Contribution> contributions;
    RoundRecord pending;
    ModelManifest global_layout;
    std::vector<RoundRecord> rounds;  // committed, index == round
    std::set<std::string> told_stop;
    absl::Time retry_close_after;
    // Secure aggregation (plan secure_aggregation): the round's current
    // masking attempt. While keys come in, `selected` is the sites asked to
    // train; once the cohort is fixed, it is the cohort.
    struct Masking {
      int attempt = 1;
      // Site -> its X25519 public key, certificate and signature.
      std::map<std::string, MaskingPeer> keys;
      bool cohort_fixed = false;
      // Uploads of a fixed cohort are due by then, else the attempt is
      // redone without the sites that did not upload.
      absl::Time upload_deadline;
      std::unique_ptr<MaskedSum> sum;
      // The unmasked mean has gone to `aggregator` (once per round).
      bool folded = false;
      std::vector<std::string> dropouts;  // over the round's attempts
    };
    Masking masking;
  };

  struct Waiter {
    std::string site;
    absl::Time expires;
    TaskCallback done;
  };
  using Delivery = std::vector<std::pair<TaskCallback, absl::StatusOr<Task>>>;

  Coordinator(CoordinatorOptions options, std::unique_ptr<Store> store,
              std::unique_ptr<AuditLog> audit);
  absl::Status Restore();

  // `received_us`: when the update's last chunk arrived (monotonic).
  absl::StatusOr<UploadReceipt> CompleteUpload(UploadSession& session,
                                               int64_t received_us);

  Run* FindRunLocked(const std::string& run_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsLiveLocked(const std::string& site, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<std::string> LiveSitesLocked(const Run& run, bool train_only,
                                           absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Task TaskForLocked(const std::string& site)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WakeWaitersLocked(absl::Time now, Delivery* delivery)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AdvanceLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void StartFromWaitingLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenTrainingLocked(Run& run, int round, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseTrainingLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the audit log's head in the round just committed (the last of
  // run.rounds, its audit lines written) and saves it with `run_state`.
  void PinAuditHeadLocked(Run& run, RunStatus::State run_state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Secure aggregation steps of a training round.
  void AdvanceMaskingLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FixMaskingCohortLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RedoMaskingLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FoldMaskedSumLocked(Run& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The active run, if `site` may take part in masking for `round` of it.
  absl::StatusOr<Run*> MaskingRunLocked(const std::string& site,
                                        const std::string& run_id, int round,
                                        absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenEvaluationLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseEvaluationLocked(Run& run, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishRunLocked(Run& run, RunStatus::State state,
                       const std::string& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  RunStatus StatusOfLocked(const Run& run) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Maps the model just committed for `round` for the downloads of it; on
  // failure they read its file.
  void ServeCommittedLocked(const Run& run, int round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Microseconds since the current round opened, for its timeline.
  int64_t SinceOpenedLocked(const Run& run) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string ModelPath(const std::string& run_id, int round) const;
  static void Deliver(Delivery& delivery);

  const CoordinatorOptions options_;
  const std::unique_ptr<Store> store_;
  const std::unique_ptr<AuditLog> audit_;
  Telemetry telemetry_;

  absl::Mutex mu_;
  std::map<std::string, SiteState> sites_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Run>> runs_ ABSL_GUARDED_BY(mu_);
  // The run agents work on; finished runs stay active until the next starts
  // so that late agents still hear STOP.
  Run* active_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::string latest_run_id_ ABSL_GUARDED_BY(mu_);
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t spool_counter_ ABSL_GUARDED_BY(mu_) = 0;
  // The latest committed model of the active run, mapped once (its pages
  // count once however many sites download it); downloads in flight keep
  // the one they started with mapped.
  struct ServedModel {
    std::string run_id;
    int round = -1;
    std::shared_ptr<const MappedModel> model;
  };
  ServedModel served_ ABSL_GUARDED_BY(mu_);
};

// One update streaming in. Chunks are checked as they arrive (order, layout
// of the global model, finite values, digests) and spooled to disk; only a
// complete, verified update is folded into the round. Destroying a session
// that did not finish discards its spool, so a broken stream leaves no
// trace. Not thread-safe (one gRPC stream).
class UploadSession {
 public:
  ~UploadSession();
  absl::Status Accept(const ModelChunk& chunk);
  absl::StatusOr<UploadReceipt> Finish();
  const UploadHeader& header() const { return header_; }

 private:
  friend class Coordinator;
  UploadSession(Coordinator* coordinator, std::string site, UploadHeader header,
                double weight, std::optional<ModelManifest> expected_layout,
                std::string expected_model_name, std::string spool_path,
                bool duplicate);

  Coordinator* coordinator_;
  std::string site_;
  UploadHeader header_;
  double weight_;
  std::optional<ModelManifest> expected_layout_;
  std::string expected_model_name_;
  std::string spool_path_;
  bool duplicate_;
  std::unique_ptr<ModelFileWriter> spool_;
  std::unique_ptr<ChunkAssembler> assembler_;
  bool finished_ = false;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_COORDINATOR_H_
