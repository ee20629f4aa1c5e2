#include "models/state_exchange.h"

#include <cstring>
#include <map>

#include "absl/strings/str_cat.h"

namespace echofed {
namespace {

struct NamedTensor {
  std::string name;
  torch::Tensor value;
  bool buffer = false;
};

std::vector<NamedTensor> NamedState(const torch::nn::Module& module) {
  std::vector<NamedTensor> state;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    state.push_back({item.key(), item.value(), false});
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    state.push_back({item.key(), item.value(), true});
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
                                         const std::string& model_name,
                                         DType float_wire) {
  absl::StatusOr<torch::ScalarType> wire_type = ToTorchDType(float_wire);
  if (!wire_type.ok()) return wire_type.status();
  TensorBundle bundle;
  bundle.manifest.set_model_name(model_name);
  for (const auto& [name, value, buffer] : NamedState(module)) {
    torch::Tensor cpu = value.detach().to(torch::kCPU);
    if (cpu.scalar_type() == torch::kFloat32) cpu = cpu.to(*wire_type);
    cpu = cpu.contiguous();
    absl::StatusOr<DType> dtype = ToWireDType(cpu.scalar_type());
    if (!dtype.ok()) return dtype.status();
    TensorSpec* spec = bundle.manifest.add_tensors();
    spec->set_name(name);
    spec->set_dtype(*dtype);
    spec->set_buffer(buffer);
    for (int64_t dim : cpu.sizes()) spec->add_shape(dim);
    bundle.data.emplace_back(static_cast<const char*>(cpu.data_ptr()),
                             cpu.nbytes());
  }
  if (absl::Status status = SealBundle(&bundle); !status.ok()) return status;
  return bundle;
}

absl::Status ImportState(const TensorBundle& bundle,
                         torch::nn::Module& module) {
  std::vector<NamedTensor> state = NamedState(module);
  if (static_cast<int>(state.size()) != bundle.manifest.tensors_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model has ", state.size(), " tensors, the received state ",
        bundle.manifest.tensors_size()));
  }
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < state.size(); ++i) {
    const TensorSpec& spec = bundle.manifest.tensors(static_cast<int>(i));
    torch::Tensor& target = state[i].value;
    absl::StatusOr<torch::ScalarType> type = ToTorchDType(spec.dtype());
    if (!type.ok()) return type.status();
    std::vector<int64_t> shape(spec.shape().begin(), spec.shape().end());
    const bool half_into_float =
        target.scalar_type() == torch::kFloat32 &&
        (*type == torch::kFloat16 || *type == torch::kBFloat16);
    if (spec.name() != state[i].name ||
        (*type != target.scalar_type() && !half_into_float) ||
        target.sizes() != c10::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("received tensor ", DescribeSpec(spec),
                       " does not match the model's '", state[i].name, "'"));
    }
    if (bundle.data[i].size() !=
        static_cast<size_t>(target.numel()) * c10::elementSize(*type)) {
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

NamedTensors CopyBatchNormState(const torch::nn::Module& module) {
  NamedTensors saved;
  for (const auto& item : module.named_modules()) {
    const torch::nn::Module& layer = *item.value();
    if (layer.as<torch::nn::BatchNorm2d>() == nullptr &&
        layer.as<torch::nn::BatchNorm1d>() == nullptr) {
      continue;
    }
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& tensor : layer.named_parameters(/*recurse=*/false)) {
      saved.emplace_back(prefix + tensor.key(),
                         tensor.value().detach().clone());
    }
    for (const auto& tensor : layer.named_buffers(/*recurse=*/false)) {
      saved.emplace_back(prefix + tensor.key(),
                         tensor.value().detach().clone());
    }
  }
  return saved;
}

absl::Status RestoreNamedTensors(const NamedTensors& saved,
                                 torch::nn::Module& module) {
  std::map<std::string, torch::Tensor> state;
  for (const NamedTensor& entry : NamedState(module)) {
    state[entry.name] = entry.value;
  }
  torch::NoGradGuard no_grad;
  for (const auto& [name, value] : saved) {
    auto target = state.find(name);
    if (target == state.end() || target->second.sizes() != value.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "saved local tensor '", name, "' does not fit the model"));
    }
    target->second.copy_(value);
  }
  return absl::OkStatus();
}

}  // namespace echofed
