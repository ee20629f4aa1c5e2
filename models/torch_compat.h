#ifndef ECHOFED_MODELS_TORCH_COMPAT_H_
#define ECHOFED_MODELS_TORCH_COMPAT_H_

// The differences between the LibTorch generations the project builds
// against, in one place: Debian 12's LibTorch 1.13 (CPU; CI and the default
// build) and LibTorch 2.x (upstream with CUDA for GPU sites; Debian trixie's
// 2.6 headers in the `compat` ctest, tests/compat/). Everything else in the
// tree is written once, against these helpers; no other file tests
// TORCH_VERSION_*. Keyed on torch/version.h, so a build picks the right
// branch from the headers it compiles against.
//
// Header-only; no state. Thread safety is LibTorch's: autocast state is
// thread-local in both generations.

#include <variant>

#include "ATen/Context.h"
#include "ATen/autocast_mode.h"
#include "c10/core/ScalarType.h"
#include "torch/version.h"

// True when compiling against LibTorch `major`.`minor` or newer.
#define ECHOFED_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) ||          \
   (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#if !ECHOFED_TORCH_AT_LEAST(2, 2)
#include "c10/util/variant.h"
#endif

namespace echofed {
namespace torch_compat {

// "major.minor.patch" of the LibTorch headers this was compiled against.
inline constexpr const char* kTorchVersion = TORCH_VERSION;

// The alternative `T` of a module option held as a variant (e.g.
// Conv2dOptions::padding(), padding_mode()), or nullptr when it holds
// another. Until 2.1 these options are c10::variant (a backport with its own
// get_if); from 2.2 they are std::variant and c10::get_if is gone.
template <typename T, typename... Ts>
const T* GetIf(const std::variant<Ts...>* options_variant) {
  return std::get_if<T>(options_variant);
}
#if !ECHOFED_TORCH_AT_LEAST(2, 2)
template <typename T, typename... Ts>
const T* GetIf(const c10::variant<Ts...>* options_variant) {
  return c10::get_if<T>(options_variant);
}
#endif

// CUDA autocast. 2.4 replaced the CUDA-only calls (is_enabled, set_enabled,
// set_autocast_gpu_dtype), deprecated since, by calls naming the device
// type; they act on the same thread-local state.
inline bool IsCudaAutocastEnabled() {
#if ECHOFED_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}

inline void SetCudaAutocastEnabled(bool enabled) {
#if ECHOFED_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
#else
  at::autocast::set_enabled(enabled);
#endif
}

inline at::ScalarType CudaAutocastDtype() {
#if ECHOFED_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(at::kCUDA);
#else
  return at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void SetCudaAutocastDtype(at::ScalarType dtype) {
#if ECHOFED_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
#else
  at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

// Drops the casts autocast cached for the current thread (same in both).
inline void ClearAutocastCache() { at::autocast::clear_cache(); }

// The global switches that make training reproducible, as one value to
// save, set and restore. cuDNN: deterministic kernels, no benchmarking
// (benchmarking picks the fastest kernel by timing, which can differ from
// run to run). Deterministic algorithms: ops without a deterministic
// implementation warn (warn_only, so that a plan never fails on an op
// LibTorch has no deterministic version of). From 2.6 oneDNN (mkldnn) has
// its own switch; 1.13 has none. CUDA's cuBLAS also needs
// CUBLAS_WORKSPACE_CONFIG set before its first handle (the trainer sets it).
struct DeterminismState {
  bool deterministic_cudnn = false;
  bool benchmark_cudnn = false;
  bool deterministic_algorithms = false;
  bool warn_only = false;
  bool deterministic_mkldnn = false;
};

inline DeterminismState CurrentDeterminism() {
  at::Context& context = at::globalContext();
  DeterminismState state;
  state.deterministic_cudnn = context.deterministicCuDNN();
  state.benchmark_cudnn = context.benchmarkCuDNN();
  state.deterministic_algorithms = context.deterministicAlgorithms();
  state.warn_only = context.deterministicAlgorithmsWarnOnly();
#if ECHOFED_TORCH_AT_LEAST(2, 6)
  state.deterministic_mkldnn = context.deterministicMkldnn();
#endif
  return state;
}

inline void SetDeterminism(const DeterminismState& state) {
  at::Context& context = at::globalContext();
  context.setDeterministicCuDNN(state.deterministic_cudnn);
  context.setBenchmarkCuDNN(state.benchmark_cudnn);
  context.setDeterministicAlgorithms(state.deterministic_algorithms,
                                     state.warn_only);
#if ECHOFED_TORCH_AT_LEAST(2, 6)
  context.setDeterministicMkldnn(state.deterministic_mkldnn);
#endif
}

// What deterministic training sets (everything on, benchmarking off), and
// what fast training sets (cuDNN benchmarking on: input sizes are fixed
// within a run, so the timed search pays off after the first batches).
inline DeterminismState DeterministicTraining() {
  return {/*deterministic_cudnn=*/true, /*benchmark_cudnn=*/false,
          /*deterministic_algorithms=*/true, /*warn_only=*/true,
          /*deterministic_mkldnn=*/true};
}
inline DeterminismState FastTraining() {
  return {/*deterministic_cudnn=*/false, /*benchmark_cudnn=*/true,
          /*deterministic_algorithms=*/false, /*warn_only=*/false,
          /*deterministic_mkldnn=*/false};
}

}  // namespace torch_compat
}  // namespace echofed

#endif  // ECHOFED_MODELS_TORCH_COMPAT_H_
