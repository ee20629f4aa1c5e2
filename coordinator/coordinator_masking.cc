// Coordinator (coordinator.h), secure aggregation within a training round:
// collecting the sites' masking keys, fixing the cohort, redoing an attempt
// without the sites that dropped out, and folding the unmasked mean into
// the round's strategy.

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/pki.h"
#include "common/secure_aggregation.h"
#include "coordinator/coordinator.h"

namespace echofed {

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

}  // namespace echofed
