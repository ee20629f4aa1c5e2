#ifndef ECHOFED_COORDINATOR_STRATEGY_H_
#define ECHOFED_COORDINATOR_STRATEGY_H_

// Federated strategies: how the coordinator turns one round's verified
// updates into the next global model. The plan names one (Plan::Strategy).
//
// Memory stays bounded by the model, not by the number of sites:
// - FEDAVG, FEDPROX, FEDBN fold each update into one running sum (fedavg.h);
//   FEDPROX and FEDBN differ from FedAvg only at the sites.
// - FEDADAM, FEDYOGI fold the same sum, then stream the previous global
//   model and the optimiser moments from disk, block by block, to write the
//   new model and moments. The moments live in files beside the models, so
//   a restarted coordinator resumes them.
// - MEDIAN, TRIMMED_MEAN need every update at once per coordinate: updates
//   are spooled to disk and combined block by block (memory: sites x one
//   block).
//
// Any of them can be wrapped by norm bounding (plan max_update_norm,
// update_norm_outlier_factor): each update's change to the global model is
// measured as it arrives; one above the absolute bound is refused, and one
// far beyond the round's median is left out of the aggregate at the close.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor_bundle.h"
#include "proto/plan.pb.h"

namespace echofed {

class RoundAggregator {
 public:
  virtual ~RoundAggregator() = default;
  // Adds a verified update of the global layout. `weight` is its sample
  // count (robust strategies ignore it: each site counts once).
  virtual absl::Status Add(TensorSource& update, double weight) = 0;
  virtual int contributions() const = 0;
  virtual double total_weight() const = 0;
  // Writes the next global model to `path` (and any optimiser state beside
  // it) and returns the model digest. May be called again after a failure:
  // it reads only the previous round's files and its own inputs.
  virtual absl::StatusOr<std::string> WriteModel(const std::string& path) = 0;
  // After WriteModel: the contributions (0-based, in Add order) that were
  // left out of the model (norm bounding); empty for plain strategies.
  virtual std::vector<int> Excluded() const { return {}; }
};

// The L2 norm of `update` - `previous` over trained floating-point
// parameters (buffers and integer tensors do not count). Both must have the
// same layout.
absl::StatusOr<double> UpdateNorm(TensorSource& update, TensorSource& previous);

struct RoundContext {
  // The layout every update must have (the global model's).
  ModelManifest layout;
  // The round being aggregated (>= 1) and the previous global model file.
  int round = 1;
  std::string previous_model_path;
  // A folder of this run for strategy state and spooled updates.
  std::string state_dir;
};

std::unique_ptr<RoundAggregator> CreateRoundAggregator(
    const Plan& plan, const RoundContext& context);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_STRATEGY_H_
