#ifndef ECHOFED_SITE_AGENT_PRIVACY_DIFFERENTIAL_PRIVACY_H_
#define ECHOFED_SITE_AGENT_PRIVACY_DIFFERENTIAL_PRIVACY_H_

// Differential privacy of the site's released updates (plan
// differential_privacy; README, "Differential privacy"): the change the site
// made to the global model is clipped to an L2 norm and gets Gaussian noise
// before it leaves the site. The accounting is common/dp_accountant.h.

#include <cstdint>

#include "absl/status/statusor.h"
#include "models/state_exchange.h"
#include "torch/torch.h"

namespace echofed {

// A float64 CPU copy of every floating-point tensor of the module's exchange
// state (named_parameters() then named_buffers(), as ExportState sends
// them), by name: the reference a privatized update is measured from. Take
// it right after the global model is loaded, before anything local (FedBN's
// own batch-norm layers, training) touches the module: the reference must
// be what the coordinator already knows.
NamedTensors SnapshotFloatState(const torch::nn::Module& module);

struct PrivatizedUpdate {
  // The joint L2 norm of the update before clipping.
  double norm = 0;
  // The clipping factor min(1, C / norm).
  double scale = 1;
  // Number of noised coordinates.
  int64_t coordinates = 0;
};

// Replaces the module's floating-point exchange tensors by
// global + clip(module - global, clip_norm) + N(0, (noise_multiplier *
// clip_norm)^2) per coordinate, where the clipping is of the joint L2 norm
// over all of them. Integer buffers (batch counts) are left as they are.
// Every random bit of the noise comes from OpenSSL's RAND_bytes, never
// from the plan's seed (which the coordinator knows) nor LibTorch's
// generator (whose seed is 32 bits). Errors:
// INVALID_ARGUMENT for a clip norm or multiplier that is not > 0, or a
// `global` that does not match the module's tensors.
absl::StatusOr<PrivatizedUpdate> PrivatizeUpdate(const NamedTensors& global,
                                                 torch::nn::Module& module,
                                                 double clip_norm,
                                                 double noise_multiplier);

// PrivatizeUpdate with the noise's standard deviation given directly; 0
// only clips. For tests: 0 gives no privacy at all.
absl::StatusOr<PrivatizedUpdate> ClipAndAddNoise(const NamedTensors& global,
                                                 torch::nn::Module& module,
                                                 double clip_norm,
                                                 double noise_std);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PRIVACY_DIFFERENTIAL_PRIVACY_H_
