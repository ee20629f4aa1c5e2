#include "site-agent/agent.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/pki.h"
#include "common/plan_util.h"
#include "common/secure_aggregation.h"
#include "common/sha256.h"
#include "google/protobuf/util/message_differencer.h"
#include "models/checkpoint.h"
#include "models/state_exchange.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/privacy/differential_privacy.h"
#include "site-agent/training/trainer.h"

namespace echofed {
namespace {

bool IsRefusal(const absl::Status& status) {
  return absl::IsUnauthenticated(status) || absl::IsPermissionDenied(status);
}

// Network trouble worth retrying (coordinator restarting, link down).
bool IsTransient(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status) ||
         absl::IsCancelled(status) || absl::IsAborted(status) ||
         absl::IsResourceExhausted(status) || absl::IsUnknown(status) ||
         absl::IsInternal(status);
}

std::vector<std::string> ClassNames(const Plan& plan) {
  return {plan.class_names().begin(), plan.class_names().end()};
}

}  // namespace

Agent::Agent(AgentOptions options,
             std::unique_ptr<CoordinatorClient> coordinator)
    : options_(std::move(options)),
      coordinator_(std::move(coordinator)),
      random_(std::random_device{}()) {}

Agent::~Agent() = default;

void Agent::Backoff(int attempt) {
  absl::Duration cap = std::min(
      options_.max_backoff,
      options_.first_backoff * static_cast<double>(1 << std::min(attempt, 16)));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  absl::Duration wait = cap * jitter(random_);
  LogInfo("retrying in ", absl::FormatDuration(wait));
  absl::Time until = absl::Now() + wait;
  while (!stopping_ && absl::Now() < until) {
    absl::SleepFor(std::min(absl::Milliseconds(100), until - absl::Now()));
  }
}

absl::Status Agent::Run() {
  absl::StatusOr<torch::Device> device = ResolveDevice(options_.device);
  if (!device.ok()) return device.status();
  device_ = *device;
  if (!options_.state_dir.empty()) {
    if (absl::Status status = MakeDirectories(options_.state_dir);
        !status.ok()) {
      return status;
    }
  }
  absl::StatusOr<PrivacyLedger> ledger = PrivacyLedger::Open(
      options_.state_dir.empty() ? ""
                                 : options_.state_dir + "/privacy-ledger.txt");
  if (!ledger.ok()) return ledger.status();
  ledger_ = std::move(*ledger);
  absl::StatusOr<SiteInputs> inputs = LoadSiteInputs(options_.data_dir);
  if (!inputs.ok()) return inputs.status();
  inputs_ = std::move(*inputs);
  for (const RecordError& error : inputs_->manifest.errors) {
    LogWarning("manifest line ", error.line, ": ", error.message);
  }
  if (inputs_->clinical) {
    for (const ClinicalRowError& error : inputs_->clinical->errors) {
      LogWarning("clinical.csv line ", error.line, ": ", error.message);
    }
  }
  LogInfo("data: ", inputs_->manifest.records.size(), " images listed, ",
          inputs_->manifest.errors.size(),
          " manifest problems, clinical table ",
          inputs_->clinical ? "present" : "absent", "; device ", device_.str());

  bool joined = false;
  int failures = 0;       // network: reset once the coordinator answers
  int task_failures = 0;  // work: reset once a task succeeds
  bool took_part = false;
  while (!stopping_) {
    if (!joined) {
      absl::Status status = Join();
      if (IsRefusal(status)) return status;
      if (!status.ok()) {
        LogWarning("cannot join ", coordinator_->Address(), ": ",
                   status.ToString());
        Backoff(failures++);
        continue;
      }
      joined = true;
      failures = 0;
    }
    NextTaskRequest request;
    request.set_wait_seconds(options_.long_poll_seconds);
    absl::StatusOr<Task> next = coordinator_->NextTask(request);
    absl::Status status = next.status();
    if (!status.ok()) {
      if (IsRefusal(status)) return status;
      joined = false;
      if (absl::IsFailedPrecondition(status)) {
        // The coordinator restarted and no longer knows us.
        LogInfo("the coordinator asks us to join again");
        continue;
      }
      LogWarning("lost the coordinator: ", status.ToString());
      Backoff(failures++);
      continue;
    }
    failures = 0;
    const Task& task = *next;
    if (task.kind() == Task::WAIT) continue;
    if (task.kind() == Task::STOP) {
      LogInfo("run ", task.run_id(), " is over");
      run_.reset();
      if (options_.exit_after_run && took_part) return absl::OkStatus();
      continue;
    }
    took_part = true;
    status = HandleTask(task);
    if (!status.ok()) {
      if (IsRefusal(status)) return status;
      LogError("task ", Task::Kind_Name(task.kind()), " of run ", task.run_id(),
               " round ", task.round(), " failed: ", status.ToString());
      // Back off whatever the cause: a site that cannot do its task (no
      // usable data, say) must not hammer the coordinator.
      Backoff(task_failures++);
    } else {
      task_failures = 0;
    }
  }
  return absl::OkStatus();
}

absl::Status Agent::Join() {
  JoinRequest request;
  request.set_agent_version(ECHOFED_VERSION);
  request.set_device(device_.str());
  *request.mutable_data() =
      Summarize(inputs_->manifest, options_.min_cell_count);
  absl::StatusOr<JoinResponse> response = coordinator_->Join(request);
  if (!response.ok()) return response.status();
  site_ = response->site();
  SetLogComponent(absl::StrCat("agent ", site_));
  LogInfo("joined the coordinator at ", coordinator_->Address(), " as ", site_);
  return absl::OkStatus();
}

absl::Status Agent::CheckPrivacyBudget(const Plan& plan,
                                       std::string* activity) const {
  if (options_.max_epsilon <= 0) return absl::OkStatus();
  // The coordinator keeps 32 characters of a site's activity.
  if (!plan.has_differential_privacy()) {
    *activity = "declined: plan has no DP";
    return absl::FailedPreconditionError(absl::StrFormat(
        "declined: the plan has no differential privacy, and this site "
        "requires epsilon <= %g (max_epsilon); no model of this site is "
        "sent in this run",
        options_.max_epsilon));
  }
  absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
  if (!projected.ok()) {
    *activity = "declined: DP settings unusable";
    return absl::FailedPreconditionError(absl::StrCat(
        "declined: the plan's differential privacy is not usable: ",
        projected.status().message()));
  }
  if (projected->epsilon > options_.max_epsilon) {
    *activity = absl::StrFormat("declined: epsilon %.3g > %g",
                                projected->epsilon, options_.max_epsilon);
    return absl::FailedPreconditionError(absl::StrFormat(
        "declined: the plan's %d rounds would spend epsilon %.4g at delta "
        "%g (noise multiplier %g), above this site's max_epsilon %g; no "
        "model of this site is sent in this run",
        plan.rounds(), projected->epsilon, projected->delta,
        plan.differential_privacy().noise_multiplier(), options_.max_epsilon));
  }
  return absl::OkStatus();
}

absl::Status Agent::HandleTask(const Task& task) {
  // The site's own budget is checked before anything of the run is built:
  // a declined run releases no model of this site's at all.
  if (task.kind() == Task::INITIALIZE || task.kind() == Task::TRAIN) {
    std::string activity;
    if (absl::Status budget = CheckPrivacyBudget(task.plan(), &activity);
        !budget.ok()) {
      LogError("run ", task.run_id(), ": ", budget.message());
      last_heartbeat_ = absl::InfinitePast();  // the operator must see it
      SendHeartbeat(task.run_id(), task.round(), activity, 0, 0, 0);
      return budget;
    }
  }
  switch (task.kind()) {
    case Task::INITIALIZE:
      return Initialize(task);
    case Task::TRAIN:
      return Train(task);
    case Task::EVALUATE:
      return Evaluate(task);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown task kind ", task.kind()));
  }
}

absl::StatusOr<Agent::RunData*> Agent::PrepareRun(const Task& task) {
  if (run_ != nullptr && run_->run_id == task.run_id()) {
    // One run, one plan: what this site agreed to (its privacy budget
    // included) cannot change under it.
    if (!google::protobuf::util::MessageDifferencer::Equals(run_->plan,
                                                            task.plan())) {
      return absl::FailedPreconditionError(
          absl::StrCat("the coordinator sent another plan for run ",
                       task.run_id(), "; refusing its tasks"));
    }
    return run_.get();
  }
  auto run = std::make_unique<RunData>();
  run->run_id = task.run_id();
  run->plan = task.plan();
  run->role = task.role();
  const Plan& plan = run->plan;
  ModelOptions model_options;
  model_options.name = plan.model();
  model_options.num_classes = plan.class_names_size();
  model_options.heads.assign(plan.heads().begin(), plan.heads().end());
  model_options.clinical_features =
      static_cast<int>(ClinicalFeatureNames().size());
  torch::manual_seed(plan.seed());
  absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> model =
      CreateClassifier(model_options);
  if (!model.ok()) return model.status();
  run->model = *model;

  // The protocol's cohort rules first, then the patient-level split of
  // what qualifies.
  CohortOptions cohort_options;
  cohort_options.class_names = ClassNames(plan);
  Cohort cohort = SelectCohort(
      inputs_->manifest, inputs_->clinical ? &*inputs_->clinical : nullptr,
      cohort_options);
  LogInfo("cohort for run ", run->run_id, ":\n", FormatFlow(cohort.flow));
  std::vector<ImageRecord> included = cohort.Records();
  std::vector<ImageRecord> train_records, validation_records;
  if (run->role == Plan::TRAIN) {
    std::set<std::string> training =
        TrainingPatients(included, plan.train_fraction(), plan.split_seed());
    for (const ImageRecord& record : included) {
      (training.count(record.patient_id) ? train_records : validation_records)
          .push_back(record);
    }
  } else {
    validation_records = included;
  }
  Preprocessing preprocessing = PreprocessingFromPlan(plan);
  run->train = LoadImageSet(train_records, ClassNames(plan), preprocessing);
  run->validation =
      LoadImageSet(validation_records, ClassNames(plan), preprocessing);
  run->flow.cohort = cohort.flow;
  run->flow.refused_manifest_lines =
      static_cast<int64_t>(inputs_->manifest.errors.size());
  run->flow.training_site = run->role == Plan::TRAIN;
  auto count_patients = [](const std::vector<ImageRecord>& records) {
    std::set<std::string> patients;
    for (const ImageRecord& record : records) {
      patients.insert(record.patient_id);
    }
    return static_cast<int64_t>(patients.size());
  };
  run->flow.training = count_patients(train_records);
  run->flow.validation = count_patients(validation_records);
  run->flow.not_loaded = run->flow.validation - run->validation.patients;
  if (run->model->uses_clinical()) {
    const ClinicalTable* table =
        inputs_->clinical ? &*inputs_->clinical : nullptr;
    if (table == nullptr) {
      LogWarning("model ", plan.model(),
                 " reads clinical data, but this site has no clinical.csv: "
                 "every clinical input is missing and no extra head learns");
    }
    std::vector<int> heads(plan.heads().begin(), plan.heads().end());
    AttachClinical(table, heads, &run->train);
    AttachClinical(table, heads, &run->validation);
  }
  size_t problems = run->train.errors.size() + run->validation.errors.size();
  for (const ImageSet* set : {&run->train, &run->validation}) {
    for (size_t i = 0; i < set->errors.size() && i < 10; ++i) {
      LogWarning("left out: ", set->errors[i].message);
    }
  }
  LogInfo("run ", run->run_id, " (", Plan::Role_Name(run->role),
          "): ", run->train.size(), " training images (", run->train.patients,
          " patients), ", run->validation.size(), " validation images (",
          run->validation.patients, " patients), ", problems, " left out");
  run_ = std::move(run);
  return run_.get();
}

absl::Status Agent::Initialize(const Task& task) {
  absl::StatusOr<RunData*> run = PrepareRun(task);
  if (!run.ok()) return run.status();
  if (!options_.initial_checkpoint.empty()) {
    absl::StatusOr<TensorBundle> layout =
        ExportState(*(*run)->model, task.plan().model());
    if (!layout.ok()) return layout.status();
    absl::StatusOr<TensorBundle> checkpoint =
        LoadTorchStateDict(options_.initial_checkpoint, layout->manifest);
    if (!checkpoint.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("initial checkpoint ", options_.initial_checkpoint, ": ",
                       checkpoint.status().message()));
    }
    if (absl::Status status = ImportState(*checkpoint, *(*run)->model);
        !status.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "initial checkpoint ", options_.initial_checkpoint,
          " does not fit model ", task.plan().model(), ": ", status.message()));
    }
    LogInfo("initial model from checkpoint ", options_.initial_checkpoint);
  }
  // Under differential privacy the initial model carries no site data
  // (dp_global null: no clinical statistics), so it costs no privacy.
  absl::StatusOr<TensorBundle> state = ExportForUpload(
      **run, std::max<int64_t>(1, (*run)->train.size()), /*dp_global=*/nullptr);
  if (!state.ok()) return state.status();
  UploadHeader header;
  header.set_run_id(task.run_id());
  header.set_round(0);
  header.set_upload_id(absl::StrFormat("%s-init-%016x", site_, random_()));
  return Upload(header, *state);
}

absl::Status Agent::Train(const Task& task) {
  absl::StatusOr<RunData*> prepared = PrepareRun(task);
  if (!prepared.ok()) return prepared.status();
  RunData& run = **prepared;
  const bool dp = run.plan.has_differential_privacy();
  if (run.trained && run.trained->round == task.round() &&
      run.trained->model_digest == task.model_digest()) {
    LogInfo("round ", task.round(), ": sending the update trained before");
  } else if (dp && ledger_->Released(run.run_id, task.round())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "round ", task.round(),
        " was already released under differential privacy; a second noisy "
        "update of it is not sent"));
  } else if (dp && task.round() > run.plan.rounds()) {
    return absl::FailedPreconditionError(
        absl::StrCat("round ", task.round(), " is beyond the plan's ",
                     run.plan.rounds(), " rounds: no update is sent"));
  } else if (absl::Status status = TrainRound(run, task); !status.ok()) {
    return status;
  }
  if (run.plan.secure_aggregation()) return UploadMasked(run, task);
  return Upload(TrainedHeader(run, task), run.trained->update);
}

absl::Status Agent::TrainRound(RunData& run, const Task& task) {
  run.trained.reset();
  const bool dp = run.plan.has_differential_privacy();
  absl::Time start = absl::Now();
  RunData::TrainedRound trained_round;
  if (absl::Status status = LoadGlobal(
          run, task, task.round() - 1, /*keep_local=*/true,
          run.plan.secure_aggregation() ? &trained_round.global : nullptr,
          dp ? &run.dp_global : nullptr);
      !status.ok()) {
    return status;
  }
  absl::Time downloaded = absl::Now();
  const Plan& plan = run.plan;
  TrainOptions options = TrainOptionsFromPlan(plan, task.round());
  options.device = device_;
  // Plans from coordinators before keep_optimizer_state was a field keep
  // it too (the default).
  if (!plan.has_keep_optimizer_state() || plan.keep_optimizer_state()) {
    options.optimizer_state = &run.optimizer_state;
  }
  TrainProgressReporter::Options progress_options;
  progress_options.mode = options_.progress_on_terminal
                              ? TrainProgressReporter::Mode::kTerminal
                              : TrainProgressReporter::Mode::kLog;
  progress_options.log_interval = options_.progress_log_interval;
  TrainProgressReporter reporter(progress_options, task.round(), absl::Now());
  options.on_progress = [&](const TrainProgress& progress) {
    std::string text = reporter.Update(progress, absl::Now());
    if (!text.empty()) {
      if (options_.progress_on_terminal) {
        std::fputs(text.c_str(), stderr);
        std::fflush(stderr);
      } else {
        LogInfo(text);
      }
    }
    // The loss depends on the data and is not noised: not sent under DP.
    SendHeartbeat(task.run_id(), task.round(), "training", progress.epoch,
                  progress.batch, dp ? 0.0 : progress.loss);
  };
  absl::StatusOr<TrainResult> trained =
      TrainLocal(*run.model, run.train, options);
  if (!trained.ok()) return trained.status();
  absl::Time trained_at = absl::Now();
  if (plan.strategy() == Plan::FEDBN) {
    run.local_batch_norm = CopyBatchNormState(*run.model);
  }
  absl::StatusOr<TensorBundle> update =
      ExportForUpload(run, static_cast<double>(trained->num_samples),
                      dp ? &run.dp_global : nullptr);
  if (!update.ok()) return update.status();
  trained_round.round = task.round();
  trained_round.model_digest = task.model_digest();
  trained_round.update = std::move(*update);
  trained_round.num_samples = trained->num_samples;
  trained_round.mean_loss = trained->mean_loss;
  trained_round.upload_id =
      absl::StrFormat("%s-r%d-%016x", site_, task.round(), random_());
  if (dp) {
    // Counted per round, not per call: after round r the site has released
    // at most r updates, whatever rounds it missed (and a restarted agent
    // counts the same way).
    absl::StatusOr<PrivacySpent> spent = SiteLevelEpsilon(
        plan.differential_privacy().noise_multiplier(), task.round(),
        PlanPrivacyDelta(plan.differential_privacy()));
    if (!spent.ok()) return spent.status();
    if (options_.max_epsilon > 0 && spent->epsilon > options_.max_epsilon) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "round %d would bring epsilon to %.4g, above this site's "
          "max_epsilon %g: no update is sent",
          task.round(), spent->epsilon, options_.max_epsilon));
    }
    trained_round.privacy_epsilon = spent->epsilon;
    trained_round.privacy_delta = spent->delta;
    // Released from here on, whether or not the upload gets through: on
    // disk before a byte leaves.
    if (absl::Status status = ledger_->Record(run.run_id, task.round());
        !status.ok()) {
      return status;
    }
    LogInfo(absl::StrFormat(
        "round %d: differential privacy spent so far in this run: epsilon "
        "%.4g at delta %g (noise multiplier %g, clip norm %g)",
        task.round(), spent->epsilon, spent->delta,
        plan.differential_privacy().noise_multiplier(),
        plan.differential_privacy().clip_norm()));
  }
  run.trained = std::move(trained_round);
  LogInfo(absl::StrFormat(
      "round %d timing: download+load %.3f s, train %.3f s, export %.3f s",
      task.round(), absl::ToDoubleSeconds(downloaded - start),
      absl::ToDoubleSeconds(trained_at - downloaded),
      absl::ToDoubleSeconds(absl::Now() - trained_at)));
  return absl::OkStatus();
}

UploadHeader Agent::TrainedHeader(const RunData& run, const Task& task) {
  const RunData::TrainedRound& trained = *run.trained;
  UploadHeader header;
  header.set_run_id(task.run_id());
  header.set_round(task.round());
  header.set_num_samples(trained.num_samples);
  // The loss depends on the data and is not noised: not sent under DP.
  if (!run.plan.has_differential_privacy()) {
    header.set_mean_train_loss(trained.mean_loss);
  }
  header.set_upload_id(trained.upload_id);
  header.set_privacy_epsilon(trained.privacy_epsilon);
  header.set_privacy_delta(trained.privacy_delta);
  return header;
}

absl::Status Agent::UploadMasked(RunData& run, const Task& task) {
  RunData::TrainedRound& trained = *run.trained;
  const int attempt = task.masking_attempt();
  // Whatever ends this attempt (a cohort without us, a new attempt, the
  // round closing) is the coordinator's call, not a failure of this site.
  auto attempt_over = [&](const absl::Status& status) {
    LogWarning("round ", task.round(), " masking attempt ", attempt, ": ",
               status.message(), "; waiting for the next task");
    return absl::OkStatus();
  };
  auto is_over = [](const absl::Status& status) {
    return absl::IsAborted(status) || absl::IsFailedPrecondition(status);
  };
  // Fresh keys for every attempt: masks of two attempts never combine. A
  // retry within the attempt keeps its key, so it masks the same update
  // with the same masks.
  if (trained.masking_attempt != attempt || !trained.masking_key) {
    absl::StatusOr<MaskingKey> fresh = MaskingKey::Generate();
    if (!fresh.ok()) return fresh.status();
    trained.masking_key = std::move(*fresh);
    trained.masking_attempt = attempt;
  }
  const MaskingKey* key = &*trained.masking_key;
  MaskingKeyRequest key_request;
  key_request.set_run_id(task.run_id());
  key_request.set_round(task.round());
  key_request.set_attempt(attempt);
  key_request.set_public_key(key->public_key());
  key_request.set_certificate_pem(options_.tls.cert);
  // Signed with this site's certificate key, so that the other sites can
  // tell the coordinator did not swap it.
  absl::StatusOr<std::string> signature = SignWithKey(
      options_.tls.key, MaskingKeyStatement(task.run_id(), task.round(),
                                            attempt, site_, key->public_key()));
  if (!signature.ok()) return signature.status();
  key_request.set_key_signature(*signature);
  for (int tries = 0;; ++tries) {
    absl::Status status = coordinator_->SubmitMaskingKey(key_request).status();
    if (status.ok()) break;
    // Aborted: the attempt is over. FailedPrecondition (a cohort fixed
    // without this key, a site no longer selected) is reported, so that the
    // agent backs off before it asks again.
    if (absl::IsAborted(status)) return attempt_over(status);
    if (absl::IsFailedPrecondition(status)) return status;
    if (!IsTransient(status) || tries >= 4 || stopping_) return status;
    Backoff(tries);
  }
  MaskingCohortRequest cohort_request;
  cohort_request.set_run_id(task.run_id());
  cohort_request.set_round(task.round());
  cohort_request.set_attempt(attempt);
  MaskingCohort cohort;
  int failures = 0;
  while (!stopping_) {
    absl::StatusOr<MaskingCohort> answer =
        coordinator_->GetMaskingCohort(cohort_request);
    absl::Status status = answer.status();
    if (status.ok()) cohort = *std::move(answer);
    if (status.ok() && cohort.ready()) break;
    if (is_over(status)) return attempt_over(status);
    if (!status.ok()) {
      if (!IsTransient(status) || failures >= 8) return status;
      Backoff(failures++);
      continue;
    }
    failures = 0;
    SendHeartbeat(task.run_id(), task.round(), "waiting for masking cohort", 0,
                  0, 0);
    absl::SleepFor(absl::Milliseconds(250));
  }
  if (stopping_) return absl::CancelledError("agent stopping");
  std::vector<MaskingPeerKey> peers;
  for (const MaskingPeer& peer : cohort.peers()) {
    peers.push_back({peer.site(), peer.public_key(), peer.certificate_pem(),
                     peer.key_signature()});
  }
  // Only the plan's training sites mask together.
  for (const MaskingPeerKey& peer : peers) {
    if (RoleInPlan(run.plan, peer.site) != Plan::TRAIN) {
      return absl::FailedPreconditionError(
          absl::StrCat("refusing to mask: the cohort lists ", peer.site,
                       ", not a training site of the plan"));
    }
  }
  absl::StatusOr<CertificateVerifier> verifier =
      CertificateVerifier::Create(options_.tls.ca_cert);
  if (!verifier.ok()) return verifier.status();
  if (absl::Status status = VerifyCohortKeys(
          *verifier, peers, site_, task.run_id(), task.round(), attempt);
      !status.ok()) {
    // Not a refusal of this site: the round goes on without its update.
    return absl::FailedPreconditionError(
        absl::StrCat("refusing to mask: ", status.message()));
  }
  absl::StatusOr<UpdateMasker> masker =
      UpdateMasker::Create(*key, site_, peers, task.run_id(), task.round(),
                           attempt, run.plan.min_sites());
  if (!masker.ok()) return masker.status();
  // The coordinator divides the sum by the same capped weights.
  const double weight = static_cast<double>(
      std::min(trained.num_samples, run.plan.max_samples_per_site()));
  absl::StatusOr<TensorBundle> masked =
      masker->Mask(trained.update, trained.global, weight);
  if (!masked.ok()) return masked.status();
  UploadHeader header = TrainedHeader(run, task);
  header.set_masking_attempt(attempt);
  header.set_upload_id(absl::StrFormat("%s-a%d", trained.upload_id, attempt));
  LogInfo("round ", task.round(), ": update masked with ", peers.size() - 1,
          " other sites (attempt ", attempt, ")");
  absl::Status uploaded = Upload(header, *masked);
  if (is_over(uploaded)) return attempt_over(uploaded);
  return uploaded;
}

absl::Status Agent::Evaluate(const Task& task) {
  absl::StatusOr<RunData*> prepared = PrepareRun(task);
  if (!prepared.ok()) return prepared.status();
  RunData& run = **prepared;
  // A training site validates its own model: under FedBN, the global
  // weights with its own batch-norm layers.
  if (absl::Status status = LoadGlobal(run, task, task.round(),
                                       /*keep_local=*/run.role == Plan::TRAIN);
      !status.ok()) {
    return status;
  }
  EvalSplit split =
      run.role == Plan::TRAIN ? INTERNAL_VALIDATION : EXTERNAL_VALIDATION;
  EvaluationReport report;
  report.set_run_id(task.run_id());
  report.set_round(task.round());
  EvaluationOptions evaluation_options;
  evaluation_options.class_count = run.plan.class_names_size();
  evaluation_options.split = split;
  evaluation_options.device = device_;
  evaluation_options.test_time_flip = UsesTestTimeFlip(run.plan);
  // The site's floor holds whatever the plan says.
  const int min_cell_count =
      std::max(options_.min_cell_count, run.plan.min_cell_count());
  evaluation_options.min_cell_count = min_cell_count;
  LocalEvaluation evaluation =
      EvaluateModel(*run.model, run.validation, evaluation_options);
  if (evaluation.suppressed) {
    LogInfo("evaluation set has ", run.validation.patients, " patients (",
            evaluation.withheld_patients,
            " of them in classes below the minimum cell count of ",
            min_cell_count, "); reporting it as suppressed");
  } else if (evaluation.withheld_patients > 0) {
    LogInfo("withholding ", evaluation.withheld_patients,
            " patients of classes below the minimum cell count of ",
            min_cell_count, " from the evaluation");
  }
  FlowCounts flow = run.flow;
  flow.withheld = evaluation.withheld_patients;
  flow.analysed = run.validation.patients - evaluation.withheld_patients;
  flow.analysed_released = !evaluation.suppressed;
  *report.mutable_flow() = ReleasePatientFlow(flow, min_cell_count);
  *report.mutable_aggregate() = evaluation.subtype;
  *report.mutable_patient_aggregate() = evaluation.patient_subtype;
  for (HeadAggregate& head : evaluation.heads) {
    *report.add_heads() = std::move(head);
  }
  LogInfo("round ", task.round(), " ", EvalSplit_Name(split), ": accuracy ",
          absl::StrFormat("%.3f", Accuracy(report.aggregate())), " on ",
          report.aggregate().num_images(), " images");
  return coordinator_->ReportEvaluation(report).status();
}

absl::Status Agent::LoadGlobal(RunData& run, const Task& task, int round,
                               bool keep_local, TensorBundle* global_out,
                               NamedTensors* global_snapshot) {
  absl::StatusOr<TensorBundle> global =
      Download(task.run_id(), round, task.model_digest());
  if (!global.ok()) return global.status();
  if (absl::Status status = ImportState(*global, *run.model); !status.ok()) {
    return status;
  }
  // Before FedBN's local layers go in: they are this site's, not public.
  if (global_snapshot != nullptr) {
    *global_snapshot = SnapshotFloatState(*run.model);
  }
  if (global_out != nullptr) *global_out = std::move(*global);
  if (keep_local && run.plan.strategy() == Plan::FEDBN &&
      !run.local_batch_norm.empty()) {
    return RestoreNamedTensors(run.local_batch_norm, *run.model);
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorBundle> Agent::ExportForUpload(
    RunData& run, double weight, const NamedTensors* dp_global) {
  const bool dp = run.plan.has_differential_privacy();
  if (auto* fusion = dynamic_cast<FusionModelImpl*>(run.model.get());
      fusion != nullptr && run.train.clinical.defined() &&
      run.train.size() > 0 && (!dp || dp_global != nullptr)) {
    fusion->clinical_encoder()->SetLocalStatistics(run.train.clinical, weight);
  }
  // After the statistics: they depend on the data, so they belong in the
  // clipped and noised vector.
  if (dp && dp_global != nullptr) {
    const DifferentialPrivacy& settings = run.plan.differential_privacy();
    absl::StatusOr<PrivatizedUpdate> privatized =
        PrivatizeUpdate(*dp_global, *run.model, settings.clip_norm(),
                        settings.noise_multiplier());
    if (!privatized.ok()) return privatized.status();
    LogInfo(absl::StrFormat(
        "differential privacy: update norm %.4g clipped to %.4g, noise std "
        "%.4g on %d coordinates",
        privatized->norm, privatized->norm * privatized->scale,
        settings.noise_multiplier() * settings.clip_norm(),
        privatized->coordinates));
  }
  DType wire = run.plan.wire_precision() == Plan::HALF            ? FLOAT16
               : run.plan.wire_precision() == Plan::BFLOAT16_WIRE ? BFLOAT16
                                                                  : FLOAT32;
  return ExportState(*run.model, run.plan.model(), wire);
}

absl::StatusOr<TensorBundle> Agent::Download(
    const std::string& run_id, int round, const std::string& expected_digest) {
  DownloadRequest request;
  request.set_run_id(run_id);
  request.set_round(round);
  absl::StatusOr<TensorBundle> bundle = coordinator_->DownloadModel(request);
  if (!bundle.ok()) return bundle.status();
  if (!expected_digest.empty() &&
      ModelDigest(bundle->manifest) != expected_digest) {
    return absl::DataLossError(
        absl::StrCat("downloaded model of round ", round,
                     " does not match the digest announced in the task"));
  }
  return bundle;
}

absl::Status Agent::Upload(const UploadHeader& header,
                           const TensorBundle& model) {
  // The same upload_id on every attempt: the coordinator counts it once.
  for (int attempt = 0;; ++attempt) {
    const absl::Time start = absl::Now();
    absl::StatusOr<UploadReceipt> receipt =
        coordinator_->UploadUpdate(header, model);
    absl::Status status = receipt.status();
    if (status.ok()) {
      // federation_bench reads the time from this line.
      LogInfo("uploaded round ", header.round(), " (",
              HexDigest(receipt->digest()).substr(0, 16),
              receipt->duplicate() ? ", already counted)" : ")",
              absl::StrFormat(" in %.3f s",
                              absl::ToDoubleSeconds(absl::Now() - start)));
      return absl::OkStatus();
    }
    if (!IsTransient(status) || attempt >= 4 || stopping_) return status;
    LogWarning("upload failed: ", status.ToString());
    Backoff(attempt);
  }
}

void Agent::SendHeartbeat(const std::string& run_id, int round,
                          const std::string& activity, int epoch, int batch,
                          double loss) {
  absl::Time now = absl::Now();
  if (now - last_heartbeat_ < absl::Seconds(2)) return;
  last_heartbeat_ = now;
  HeartbeatRequest request;
  request.set_run_id(run_id);
  request.set_round(round);
  request.set_activity(activity);
  request.set_epoch(epoch);
  request.set_batch(batch);
  request.set_loss(loss);
  absl::Status status = coordinator_->Heartbeat(request).status();
  if (!status.ok()) {
    LogWarning("heartbeat failed: ", status.message());
  }
}

}  // namespace echofed
