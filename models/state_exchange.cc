#include "models/state_exchange.h"

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"

namespace echofed {
namespace {

std::vector<std::pair<std::string, torch::Tensor>> NamedState(
    const torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    state.emplace_back(item.key(), item.value());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    state.emplace_back(item.key(), item.value());
  }
  return state;
}

}  // namespace

absl::StatusOr<DType> ToWireDType(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return FLOAT32;
    case torch::kFloat64:
      return FLOAT64;
    case torch::kInt64:
      return INT64;
    case torch::kFloat16:
      return FLOAT16;
    case torch::kBFloat16:
      return BFLOAT16;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor type ", c10::toString(type), " cannot be exchanged"));
  }
}

absl::StatusOr<torch::ScalarType> ToTorchDType(DType dtype) {
  switch (dtype) {
    case FLOAT32:
      return torch::kFloat32;
    case FLOAT64:
      return torch::kFloat64;
    case INT64:
      return torch::kInt64;
    case FLOAT16:
      return torch::kFloat16;
    case BFLOAT16:
      return torch::kBFloat16;
    default:
      return absl::InvalidArgumentError("unknown wire dtype");
  }
}

absl::StatusOr<TensorBundle> ExportState(const torch::nn::Module& module,
                                         const std::string& model_name) {
  TensorBundle bundle;
  bundle.manifest.set_model_name(model_name);
  for (const auto& [name, value] : NamedState(module)) {
    absl::StatusOr<DType> dtype = ToWireDType(value.scalar_type());
    if (!dtype.ok()) return dtype.status();
    torch::Tensor cpu = value.detach().to(torch::kCPU).contiguous();
    TensorSpec* spec = bundle.manifest.add_tensors();
    spec->set_name(name);
    spec->set_dtype(*dtype);
    for (int64_t dim : cpu.sizes()) spec->add_shape(dim);
    bundle.data.emplace_back(static_cast<const char*>(cpu.data_ptr()),
                             cpu.nbytes());
  }
  if (absl::Status status = SealBundle(&bundle); !status.ok()) return status;
  return bundle;
}

absl::Status ImportState(const TensorBundle& bundle,
                         torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> state = NamedState(module);
  if (static_cast<int>(state.size()) != bundle.manifest.tensors_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model has ", state.size(), " tensors, the received state ",
        bundle.manifest.tensors_size()));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    const TensorSpec& spec = bundle.manifest.tensors(static_cast<int>(i));
    torch::Tensor& target = state[i].second;
    absl::StatusOr<torch::ScalarType> type = ToTorchDType(spec.dtype());
    if (!type.ok()) return type.status();
    std::vector<int64_t> shape(spec.shape().begin(), spec.shape().end());
    if (spec.name() != state[i].first || *type != target.scalar_type() ||
        target.sizes() != c10::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("received tensor ", DescribeSpec(spec),
                       " does not match the model's '", state[i].first, "'"));
    }
    if (bundle.data[i].size() != target.nbytes()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' has the wrong byte count"));
    }
    torch::Tensor source =
        torch::from_blob(const_cast<char*>(bundle.data[i].data()), shape,
                         torch::TensorOptions().dtype(*type));
    target.copy_(source);
  }
  return absl::OkStatus();
}

}  // namespace echofed
