// Coordinator (coordinator.h), training rounds: opening a round, taking
// updates (BeginUpload, the UploadSession that streams one in, and
// CompleteUpload, which folds it into the round or makes it the initial
// model), and closing the round by committing the new global model.

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/log.h"
#include "common/secure_aggregation.h"
#include "common/sha256.h"
#include "coordinator/coordinator.h"
#include "coordinator/coordinator_internal.h"

namespace echofed {

using coordinator_internal::PhaseName;

// ---------------------------------------------------------------------------
// Updates.

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
  if (run->state == RunStatus::TRAINING &&
      run->pending.timeline().first_upload_us() == 0) {
    run->pending.mutable_timeline()->set_first_upload_us(
        SinceOpenedLocked(*run));
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
    UploadSession& session, int64_t received_us) {
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
      ServeCommittedLocked(*run, 0);
      run->done.insert(site);
      run->upload_ids[site] = header.upload_id();
      LogInfo("run ", run->run_id, ": initial model from ", site, " (",
              run->global_layout.tensors_size(), " tensors, digest ",
              HexDigest(record.model_digest()).substr(0, 16), ")");
      Audit({site, "initial-model", run->run_id, 0, record.model_digest(), ""});
      PinAuditHeadLocked(*run, RunStatus::TRAINING);
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
      RoundTimeline* timeline = run->pending.mutable_timeline();
      timeline->set_last_upload_us(std::max(
          timeline->last_upload_us(), received_us - run->round_opened_us));
      timeline->set_last_fold_us(SinceOpenedLocked(*run));
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

// ---------------------------------------------------------------------------
// Opening and closing a training round.

void Coordinator::ServeCommittedLocked(const Run& run, int round) {
  // Mapping costs no read: the pages are in the page cache from the write.
  absl::StatusOr<std::shared_ptr<const MappedModel>> model =
      MappedModel::Open(ModelPath(run.run_id, round));
  if (!model.ok()) {
    served_ = ServedModel();
    LogWarning("run ", run.run_id, " round ", round,
               ": downloads read the model file (", model.status().message(),
               ")");
    return;
  }
  served_ = ServedModel{run.run_id, round, std::move(*model)};
}

int64_t Coordinator::SinceOpenedLocked(const Run& run) const {
  return options_.clock->MonotonicMicros() - run.round_opened_us;
}

void Coordinator::NoteDownload(const std::string& run_id, int round,
                               bool finished) {
  absl::MutexLock lock(&mu_);
  Run* run = active_;
  // Only the downloads of a training round's base model are its phases.
  if (run == nullptr || run->run_id != run_id ||
      run->state != RunStatus::TRAINING || round != run->round - 1) {
    return;
  }
  RoundTimeline* timeline = run->pending.mutable_timeline();
  if (finished) {
    timeline->set_last_download_us(SinceOpenedLocked(*run));
  } else if (timeline->first_download_us() == 0) {
    timeline->set_first_download_us(SinceOpenedLocked(*run));
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
  run.round_opened_us = options_.clock->MonotonicMicros();
  if (run.previous_audited_us != 0) {
    run.pending.mutable_timeline()->set_since_previous_us(
        run.round_opened_us - run.previous_audited_us);
  }
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
  run.pending.mutable_timeline()->set_model_written_us(SinceOpenedLocked(run));
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
      // Saved again with the audit head (PinAuditHeadLocked).
      record.mutable_timeline()->set_committed_us(SinceOpenedLocked(run));
      run.rounds.push_back(record);
      run.aggregator.reset();
      ServeCommittedLocked(run, run.round);
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
      run.rounds.back().mutable_timeline()->set_audited_us(
          SinceOpenedLocked(run));
      run.previous_audited_us = options_.clock->MonotonicMicros();
      PinAuditHeadLocked(run, next);
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

// The round is saved before its audit lines are written, so that the log
// never tells of a commit the store does not hold; the head that follows
// them is then saved into the record in a second step. If that save fails
// the round stays committed, and the next save of its record (an
// evaluation report) carries the head along.
void Coordinator::PinAuditHeadLocked(Run& run, RunStatus::State run_state) {
  RoundRecord& record = run.rounds.back();
  const AuditHead head = audit_->Head();
  AuditLogHead* pinned = record.mutable_audit_head();
  pinned->set_records(head.records);
  pinned->set_hash(head.hash);
  // Unsynced: the round is already durable (committed with a synced save)
  // and its audit lines fsynced; a power cut may lose only the pinned head,
  // which the next synced save of the store (the next round's commit, an
  // evaluation report) makes durable. Saves an fsync per round.
  if (absl::Status status = store_->SaveRound(run.run_id, record, run_state,
                                              /*synced=*/false);
      !status.ok()) {
    LogError("run ", run.run_id, " round ", record.round(),
             ": cannot save the audit log head: ", status.message());
  }
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
  const int64_t received_us = coordinator_->options_.clock->MonotonicMicros();
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
  return coordinator_->CompleteUpload(*this, received_us);
}

}  // namespace echofed
