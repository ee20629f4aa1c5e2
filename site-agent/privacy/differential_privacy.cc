#include "site-agent/privacy/differential_privacy.h"

#include <openssl/rand.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace echofed {
namespace {

// The module's floating-point exchange tensors (live, not copies), in the
// order ExportState sends them.
NamedTensors FloatExchangeTensors(const torch::nn::Module& module) {
  NamedTensors tensors;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (item.value().is_floating_point()) {
      tensors.emplace_back(item.key(), item.value());
    }
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    if (item.value().is_floating_point()) {
      tensors.emplace_back(item.key(), item.value());
    }
  }
  return tensors;
}

// `n` independent N(0, 1) samples in float64, every bit of them from
// OpenSSL's CSPRNG (RAND_bytes): the noise must be unpredictable to whoever
// receives the update. Not LibTorch's generator: its Mersenne Twister keeps
// only 32 bits of its seed, few enough for a coordinator to try every seed
// and subtract the noise. Box-Muller on uniforms of 53 random bits in
// (0, 1].
absl::StatusOr<torch::Tensor> SecureStandardNormal(int64_t n) {
  const int64_t pairs = (n + 1) / 2;
  torch::Tensor bits = torch::empty({2 * pairs}, torch::kInt64);
  auto* bytes = static_cast<unsigned char*>(bits.data_ptr());
  const size_t total = static_cast<size_t>(bits.numel()) * sizeof(int64_t);
  constexpr size_t kMaxCall = size_t{1} << 30;  // RAND_bytes takes an int
  for (size_t offset = 0; offset < total; offset += kMaxCall) {
    const size_t size = std::min(kMaxCall, total - offset);
    if (RAND_bytes(bytes + offset, static_cast<int>(size)) != 1) {
      return absl::InternalError("RAND_bytes failed: no secure noise");
    }
  }
  constexpr int64_t kMask = (int64_t{1} << 53) - 1;
  // (m + 1) / 2^53 with m < 2^53: exact in float64, never 0 (log below).
  torch::Tensor uniform =
      (torch::bitwise_and(bits, kMask) + 1).to(torch::kFloat64) *
      std::ldexp(1.0, -53);
  torch::Tensor radius =
      torch::sqrt(-2.0 * torch::log(uniform.slice(0, 0, pairs)));
  torch::Tensor angle = (2 * M_PI) * uniform.slice(0, pairs, 2 * pairs);
  return torch::cat({radius * torch::cos(angle), radius * torch::sin(angle)})
      .slice(0, 0, n);
}

}  // namespace

NamedTensors SnapshotFloatState(const torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  NamedTensors snapshot;
  for (auto& [name, tensor] : FloatExchangeTensors(module)) {
    snapshot.emplace_back(
        name, tensor.detach().to(torch::kCPU, torch::kFloat64).clone());
  }
  return snapshot;
}

absl::StatusOr<PrivatizedUpdate> PrivatizeUpdate(const NamedTensors& global,
                                                 torch::nn::Module& module,
                                                 double clip_norm,
                                                 double noise_multiplier) {
  if (!(noise_multiplier > 0) || !std::isfinite(noise_multiplier)) {
    return absl::InvalidArgumentError(
        "differential privacy: noise_multiplier must be > 0");
  }
  return ClipAndAddNoise(global, module, clip_norm,
                         noise_multiplier * clip_norm);
}

absl::StatusOr<PrivatizedUpdate> ClipAndAddNoise(const NamedTensors& global,
                                                 torch::nn::Module& module,
                                                 double clip_norm,
                                                 double noise_std) {
  if (!(clip_norm > 0) || !std::isfinite(clip_norm)) {
    return absl::InvalidArgumentError(
        "differential privacy: clip_norm must be > 0");
  }
  if (!(noise_std >= 0) || !std::isfinite(noise_std)) {
    return absl::InvalidArgumentError(
        "differential privacy: noise std must be >= 0");
  }
  torch::NoGradGuard no_grad;
  NamedTensors live = FloatExchangeTensors(module);
  std::map<std::string, const torch::Tensor*> reference;
  for (const auto& [name, tensor] : global) reference[name] = &tensor;
  if (reference.size() != live.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "differential privacy: the global snapshot has ", reference.size(),
        " floating-point tensors, the model ", live.size()));
  }
  // The deltas in float64: a float32 sum of squares over millions of
  // coordinates, and global + small delta, would lose the bits that matter.
  std::vector<torch::Tensor> deltas;
  deltas.reserve(live.size());
  double squares = 0;
  for (const auto& [name, tensor] : live) {
    auto it = reference.find(name);
    if (it == reference.end() || !it->second->sizes().equals(tensor.sizes())) {
      return absl::InvalidArgumentError(
          absl::StrCat("differential privacy: tensor ", name,
                       " does not match the global snapshot"));
    }
    torch::Tensor delta =
        tensor.detach().to(torch::kCPU, torch::kFloat64) - *it->second;
    squares += delta.pow(2).sum().item<double>();
    deltas.push_back(std::move(delta));
  }
  PrivatizedUpdate result;
  result.norm = std::sqrt(squares);
  if (!std::isfinite(result.norm)) {
    // NaN or inf would pass through min(1, C / norm) unclipped.
    return absl::InvalidArgumentError(
        "differential privacy: the update is not finite");
  }
  result.scale = result.norm > clip_norm ? clip_norm / result.norm : 1.0;
  // All noise is drawn before the model changes, so that a failure leaves
  // the model as it was.
  std::vector<torch::Tensor> released;
  released.reserve(live.size());
  for (size_t i = 0; i < live.size(); ++i) {
    torch::Tensor value = *reference[live[i].first] + deltas[i] * result.scale;
    if (noise_std > 0) {
      absl::StatusOr<torch::Tensor> noise = SecureStandardNormal(value.numel());
      if (!noise.ok()) return noise.status();
      value += noise->view(value.sizes()) * noise_std;
    }
    result.coordinates += value.numel();
    released.push_back(std::move(value));
  }
  for (size_t i = 0; i < live.size(); ++i) live[i].second.copy_(released[i]);
  return result;
}

}  // namespace echofed
