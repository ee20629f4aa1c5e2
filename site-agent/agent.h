#ifndef ECHOFED_SITE_AGENT_AGENT_H_
#define ECHOFED_SITE_AGENT_AGENT_H_

#include <atomic>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/pki.h"
#include "common/secure_aggregation.h"
#include "common/tensor_bundle.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "proto/federation.pb.h"
#include "site-agent/coordinator_client.h"
#include "site-agent/data/cohort.h"
#include "site-agent/privacy/privacy_ledger.h"
#include "site-agent/training/dataset.h"
#include "torch/torch.h"

namespace echofed {

struct AgentOptions {
  // This site's certificate and key sign its masking keys; the study CA
  // checks the other sites' (secure aggregation).
  TlsMaterial tls;
  std::string data_dir;
  std::string device = "auto";
  // Initial model from this state-dict file instead of the plan's seed.
  std::string initial_checkpoint;
  // Leave after the first run this site took part in has ended (demo,
  // tests); a service keeps waiting for the next run.
  bool exit_after_run = false;
  // Reconnect backoff: exponential from the first to the max, with full
  // jitter so that many sites do not retry in step.
  absl::Duration first_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(30);
  // How long one NextTask call may wait at the coordinator.
  int long_poll_seconds = 20;
  // The site's own minimum cell count: no count of fewer patients (but
  // some) leaves the site. A plan may ask for more, never for less.
  int min_cell_count = 5;
  // The site's privacy budget (AgentConfig max_epsilon): above 0, the agent
  // declines to initialise or train in a run whose plan has no differential
  // privacy, or whose projected epsilon over its rounds exceeds this.
  double max_epsilon = 0;
  // AgentConfig state_dir: where the privacy ledger is kept (empty: in
  // memory only).
  std::string state_dir;
  // Training progress as one line redrawn in place (a person watching a
  // terminal) rather than a log line every `progress_log_interval` and at
  // each epoch's end (a service's journal).
  bool progress_on_terminal = false;
  absl::Duration progress_log_interval = absl::Seconds(30);
};

// The site daemon: dials out to the coordinator, joins, and works through
// tasks (initialise, train, evaluate) on local data. Only weights and
// aggregate counts leave the site. Reconnects with backoff after any
// network failure; refusals of its certificate end it with a clear error.
// It talks to the coordinator only through `coordinator` (the gRPC client
// in production, a fake in unit tests). Run() is blocking; Stop() may be
// called from another thread.
class Agent {
 public:
  Agent(AgentOptions options, std::unique_ptr<CoordinatorClient> coordinator);
  ~Agent();

  absl::Status Run();
  void Stop() { stopping_ = true; }

 private:
  struct RunData {
    std::string run_id;
    Plan plan;
    Plan::Role role = Plan::ROLE_UNSPECIFIED;
    ImageSet train;
    ImageSet validation;
    // The patient flow up to the evaluation set (site-local counts).
    FlowCounts flow;
    std::shared_ptr<ImageClassifierImpl> model;
    // FedBN: this site's own batch-norm layers, kept across rounds.
    NamedTensors local_batch_norm;
    // The optimiser's state after the last round trained (plan
    // keep_optimizer_state), serialised; site-local, never sent. An agent
    // restart starts it afresh.
    std::string optimizer_state;
    // The update of the last round trained. A repeated TRAIN task for that
    // round (a restarted coordinator, a refused upload, a new masking
    // attempt) sends it again instead of training anew: a second, different
    // update of one round would tell more about the site's data (and, under
    // differential privacy, cost privacy the count leaves out).
    struct TrainedRound {
      int round = 0;
      // Digest of the global model it was trained from (the task's): a
      // task for the same round from another global model is not answered
      // with it.
      std::string model_digest;
      TensorBundle update;
      // The global model it was trained from (secure aggregation masks the
      // change).
      TensorBundle global;
      int64_t num_samples = 0;
      double mean_loss = 0;
      std::string upload_id;
      // Differential privacy: the run's epsilon with this update, at delta.
      double privacy_epsilon = 0;
      double privacy_delta = 0;
      // Secure aggregation: the key of the attempt it was last masked for.
      // A retry within that attempt reuses it (same masks, same bytes); a
      // new attempt gets a new key.
      int masking_attempt = 0;
      std::optional<MaskingKey> masking_key;
    };
    std::optional<TrainedRound> trained;
    // Differential privacy: the global model of the round being trained
    // (floating-point tensors, float64), which the update is measured from.
    NamedTensors dp_global;
  };
  // Loads the global model of `round` into the run's model (with this
  // site's batch-norm layers under FedBN when `keep_local` is set).
  // `global_snapshot`: if set, receives the global model's floating-point
  // tensors before this site's batch-norm layers replace any.
  absl::Status LoadGlobal(RunData& run, const Task& task, int round,
                          bool keep_local, TensorBundle* global_out = nullptr,
                          NamedTensors* global_snapshot = nullptr);
  // The model state to upload: under fusion models, the clinical
  // statistics buffers carry this site's contribution (models/classifier.h).
  // Under differential privacy, `dp_global` is the round's global model
  // (the update is clipped and noised from it, statistics included) or null
  // for the initial model, which then carries no site data at all.
  absl::StatusOr<TensorBundle> ExportForUpload(RunData& run, double weight,
                                               const NamedTensors* dp_global);
  // Under max_epsilon: OK when the plan's differential privacy keeps the
  // run within it, else FAILED_PRECONDITION saying why the site declines,
  // and `activity` the short form for the coordinator's status.
  absl::Status CheckPrivacyBudget(const Plan& plan,
                                  std::string* activity) const;

  absl::Status Join();
  absl::Status HandleTask(const Task& task);
  absl::StatusOr<RunData*> PrepareRun(const Task& task);
  absl::Status Initialize(const Task& task);
  absl::Status Train(const Task& task);
  // Downloads the global model, trains and keeps the update in
  // `run.trained`.
  absl::Status TrainRound(RunData& run, const Task& task);
  // The upload header of `run.trained` for `task`.
  UploadHeader TrainedHeader(const RunData& run, const Task& task);
  absl::Status Evaluate(const Task& task);
  absl::StatusOr<TensorBundle> Download(const std::string& run_id, int round,
                                        const std::string& expected_digest);
  absl::Status Upload(const UploadHeader& header, const TensorBundle& model);
  // Secure aggregation: agrees masks with the attempt's cohort and uploads
  // the masked update of `run.trained`. A cohort without this site, or an
  // attempt that is over, ends the task quietly: the coordinator asks
  // again if it still wants the update.
  absl::Status UploadMasked(RunData& run, const Task& task);
  void SendHeartbeat(const std::string& run_id, int round,
                     const std::string& activity, int epoch, int batch,
                     double loss);
  void Backoff(int attempt);

  AgentOptions options_;
  const std::unique_ptr<CoordinatorClient> coordinator_;
  torch::Device device_ = torch::kCPU;
  std::optional<SiteInputs> inputs_;
  std::string site_;
  std::unique_ptr<RunData> run_;
  // Differential privacy: per run, the rounds whose update left this site
  // (on disk under state_dir); a second, fresh noisy update of one of them
  // would cost privacy the count leaves out. Kept when a run's data is
  // dropped (STOP) and across restarts.
  std::optional<PrivacyLedger> ledger_;
  std::mt19937_64 random_;
  absl::Time last_heartbeat_ = absl::InfinitePast();
  std::atomic<bool> stopping_{false};
};

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_AGENT_H_
