#ifndef ECHOFED_MODELS_STATE_EXCHANGE_H_
#define ECHOFED_MODELS_STATE_EXCHANGE_H_

// A module's exchange state is named_parameters() then named_buffers(), as
// raw little-endian tensors (common/tensor_bundle.h).

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor_bundle.h"
#include "torch/torch.h"

namespace echofed {

absl::StatusOr<DType> ToWireDType(torch::ScalarType type);
absl::StatusOr<torch::ScalarType> ToTorchDType(DType dtype);

// Copies parameters and buffers (on any device) into a sealed bundle.
// `float_wire` FLOAT16 or BFLOAT16 sends float32 tensors at half size (plan
// option wire_precision); other dtypes travel as they are.
absl::StatusOr<TensorBundle> ExportState(const torch::nn::Module& module,
                                         const std::string& model_name,
                                         DType float_wire = FLOAT32);

// Loads a bundle into the module in place; names and shapes must match
// exactly, and dtypes too, except that half-precision tensors load into
// float32 ones.
absl::Status ImportState(const TensorBundle& bundle, torch::nn::Module& module);

// FedBN: the batch-norm layers' parameters and buffers (copies, by name),
// which a training site keeps local, and putting them back after the
// global model was loaded.
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;
NamedTensors CopyBatchNormState(const torch::nn::Module& module);
absl::Status RestoreNamedTensors(const NamedTensors& saved,
                                 torch::nn::Module& module);

}  // namespace echofed

#endif  // ECHOFED_MODELS_STATE_EXCHANGE_H_
