#include "models/torchscript.h"

#include <memory>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "models/classifier.h"
#include "models/resnet.h"
#include "models/torch_compat.h"

namespace echofed {
namespace {

using torch::nn::Module;

// A float literal TorchScript reads as a float (never "1" for 1.0).
std::string Float(double value) {
  std::string text = absl::StrFormat("%.17g", value);
  if (text.find_first_of(".en") == std::string::npos) text += ".0";
  return text;
}

template <size_t D>
std::string IntList(const torch::ExpandingArray<D>& values) {
  return absl::StrCat("[", absl::StrJoin(*values, ", "), "]");
}

// A child attribute as TorchScript source: names like "0" (Sequential
// children) are not identifiers.
std::string Child(const std::string& name) {
  return absl::StrCat("getattr(self, \"", name, "\")");
}

// Converts one module (and its children) at a time; every class lands in
// one compilation unit, mangled to stay unique.
class Converter {
 public:
  absl::StatusOr<torch::jit::Module> Convert(const Module& module,
                                             const std::string& path) {
    absl::StatusOr<std::string> source = ForwardSource(module, path);
    if (!source.ok()) return source.status();
    torch::jit::Module out(c10::QualifiedName(absl::StrCat("__torch__.echofed.",
                                                           TypeName(module))),
                           unit_, /*shouldMangle=*/true);
    out.register_attribute("training", c10::BoolType::get(), false);
    torch::NoGradGuard no_grad;
    for (const auto& item : module.named_parameters(/*recurse=*/false)) {
      torch::Tensor copy = item.value().detach().to(torch::kCPU).clone();
      copy.set_requires_grad(item.value().requires_grad());
      out.register_parameter(item.key(), copy, /*is_buffer=*/false);
    }
    for (const auto& item : module.named_buffers(/*recurse=*/false)) {
      out.register_buffer(item.key(),
                          item.value().detach().to(torch::kCPU).clone());
    }
    for (const auto& item : module.named_children()) {
      absl::StatusOr<torch::jit::Module> child =
          Convert(*item.value(), absl::StrCat(path, ".", item.key()));
      if (!child.ok()) return child.status();
      out.register_module(item.key(), *child);
    }
    out.define(*source);
    return out;
  }

 private:
  static std::string TypeName(const Module& module) {
    const std::string& full = module.name();  // "torch::nn::Conv2dImpl"
    absl::string_view name = full;
    if (size_t colon = name.rfind(':'); colon != name.npos) {
      name.remove_prefix(colon + 1);
    }
    absl::ConsumeSuffix(&name, "Impl");
    return std::string(name);
  }

  // The forward method of `module` in TorchScript, mirroring its C++
  // forward.
  static absl::StatusOr<std::string> ForwardSource(const Module& module,
                                                   const std::string& path) {
    auto has = [&module](const std::string& name) {
      for (const auto& item : module.named_parameters(false)) {
        if (item.key() == name) return true;
      }
      return false;
    };
    auto or_none = [&has](const std::string& name) {
      return has(name) ? absl::StrCat("self.", name) : std::string("None");
    };
    if (const auto* conv =
            dynamic_cast<const torch::nn::Conv2dImpl*>(&module)) {
      const auto& options = conv->options;
      const auto* padding =
          torch_compat::GetIf<torch::ExpandingArray<2>>(&options.padding());
      if (padding == nullptr || !torch_compat::GetIf<torch::enumtype::kZeros>(
                                    &options.padding_mode())) {
        return absl::UnimplementedError(absl::StrCat(
            path, ": only explicit zero padding exports to TorchScript"));
      }
      return absl::StrCat(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    return torch.conv2d(x, self.weight, ",
          or_none("bias"), ", ", IntList(options.stride()), ", ",
          IntList(*padding), ", ", IntList(options.dilation()), ", ",
          options.groups(), ")\n");
    }
    if (const auto* bn =
            dynamic_cast<const torch::nn::BatchNorm2dImpl*>(&module)) {
      const auto& options = bn->options;
      if (!options.track_running_stats()) {
        return absl::StrCat(
            "def forward(self, x: Tensor) -> Tensor:\n"
            "    return torch.batch_norm(x, ",
            or_none("weight"), ", ", or_none("bias"), ", None, None, True, ",
            Float(options.momentum().value_or(0.0)), ", ", Float(options.eps()),
            ", True)\n");
      }
      // As torch.nn.BatchNorm2d: count batches in training; without a
      // momentum, a cumulative average.
      const std::string factor = options.momentum().has_value()
                                     ? Float(*options.momentum())
                                     : "1.0 / float(self.num_batches_tracked)";
      return absl::StrCat(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    factor = 0.0\n"
          "    if self.training:\n"
          "        self.num_batches_tracked.add_(1)\n"
          "        factor = ",
          factor,
          "\n"
          "    return torch.batch_norm(x, ",
          or_none("weight"), ", ", or_none("bias"),
          ", self.running_mean, self.running_var, self.training, factor, ",
          Float(options.eps()), ", True)\n");
    }
    if (dynamic_cast<const torch::nn::ReLUImpl*>(&module)) {
      return std::string(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    return torch.relu(x)\n");
    }
    if (const auto* pool =
            dynamic_cast<const torch::nn::MaxPool2dImpl*>(&module)) {
      const auto& options = pool->options;
      return absl::StrCat(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    return torch.max_pool2d(x, ",
          IntList(options.kernel_size()), ", ", IntList(options.stride()), ", ",
          IntList(options.padding()), ", ", IntList(options.dilation()), ", ",
          options.ceil_mode() ? "True" : "False", ")\n");
    }
    if (const auto* pool =
            dynamic_cast<const torch::nn::AdaptiveAvgPool2dImpl*>(&module)) {
      std::vector<int64_t> size;
      // Elements are c10::optional or std::optional, by LibTorch version.
      for (const auto& side : *pool->options.output_size()) {
        if (!side.has_value()) {
          return absl::UnimplementedError(
              absl::StrCat(path, ": adaptive pooling to 'None' sizes"));
        }
        size.push_back(*side);
      }
      return absl::StrCat(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    return torch.adaptive_avg_pool2d(x, [",
          absl::StrJoin(size, ", "), "])\n");
    }
    if (dynamic_cast<const torch::nn::LinearImpl*>(&module)) {
      return absl::StrCat(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    return torch.linear(x, self.weight, ",
          or_none("bias"), ")\n");
    }
    if (const auto* dropout =
            dynamic_cast<const torch::nn::DropoutImpl*>(&module)) {
      return absl::StrCat(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    return torch.dropout(x, ",
          Float(dropout->options.p()), ", self.training)\n");
    }
    // Sequential, and ModuleList used as one (ResNetEncoder's stages).
    if (dynamic_cast<const torch::nn::SequentialImpl*>(&module) ||
        dynamic_cast<const torch::nn::ModuleListImpl*>(&module)) {
      std::string source = "def forward(self, x: Tensor) -> Tensor:\n";
      for (const auto& item : module.named_children()) {
        absl::StrAppend(&source, "    x = ", Child(item.key()),
                        ".forward(x)\n");
      }
      return absl::StrCat(source, "    return x\n");
    }
    if (dynamic_cast<const BasicBlockImpl*>(&module)) {
      return std::string(
          "def forward(self, x: Tensor) -> Tensor:\n"
          "    out = torch.relu(self.bn1.forward(self.conv1.forward(x)))\n"
          "    out = self.bn2.forward(self.conv2.forward(out))\n"
          "    return torch.relu(out + self.shortcut.forward(x))\n");
    }
    if (dynamic_cast<const ResNetEncoderImpl*>(&module)) {
      return std::string(
          "def forward(self, images: Tensor) -> Tensor:\n"
          "    x = self.stages.forward(self.stem.forward(images))\n"
          "    return torch.flatten(torch.adaptive_avg_pool2d(x, [1, 1]), "
          "1)\n");
    }
    if (dynamic_cast<const ResNetClassifierImpl*>(&module)) {
      return std::string(
          "def forward(self, images: Tensor) -> Tensor:\n"
          "    x = self.encoder.forward(images)\n"
          "    return self.head.forward(self.dropout.forward(x))\n");
    }
    if (dynamic_cast<const SmallCnnImpl*>(&module)) {
      return std::string(
          "def forward(self, images: Tensor) -> Tensor:\n"
          "    x = torch.flatten(self.features.forward(images), 1)\n"
          "    return self.head.forward(self.dropout.forward(x))\n");
    }
    if (dynamic_cast<const ClinicalEncoderImpl*>(&module)) {
      // ClinicalEncoderImpl::forward: float64 statistics, z-scores with the
      // missing values at the mean, clipped, then the missing indicators.
      return std::string(
          "def forward(self, clinical: Tensor) -> Tensor:\n"
          "    count = self.stat_count\n"
          "    known = count > 0\n"
          "    mean = torch.where(known, self.stat_sum / "
          "count.clamp_min(1e-12), 0.0)\n"
          "    variance = self.stat_sum_squares / count.clamp_min(1e-12) - "
          "mean * mean\n"
          "    std = torch.where(known & (variance > 1e-12), "
          "variance.clamp_min(1e-12).sqrt(), 1.0)\n"
          "    missing = torch.isnan(clinical)\n"
          "    z = (clinical - mean.to(clinical.dtype)) / "
          "std.to(clinical.dtype)\n"
          "    z = torch.where(missing, torch.zeros_like(z), z).clamp(-6, 6)\n"
          "    return self.mlp.forward(torch.cat([z, missing.to(z.dtype)], "
          "1))\n");
    }
    if (dynamic_cast<const FusionModelImpl*>(&module)) {
      return FusionSource(module);
    }
    return absl::UnimplementedError(absl::StrCat(
        path, " (", module.name(),
        ") has no TorchScript export; exportable: small_cnn, resnet18, "
        "resnet_small and their *_fusion, *_gated_fusion models"));
  }

  // FusionModelImpl::Predict as forward(images, clinical) -> {"subtype":
  // [N, C] logits, "<head>": [N] per extra head}, the extra heads read from
  // the children named "head_<head>" (in registration order) and the gated
  // variant from the presence of "gate".
  static std::string FusionSource(const Module& module) {
    bool gated = false;
    std::vector<std::string> heads;
    for (const auto& item : module.named_children()) {
      if (item.key() == "gate") gated = true;
      if (absl::StartsWith(item.key(), "head_")) heads.push_back(item.key());
    }
    std::string source =
        "def forward(self, images: Tensor, clinical: Tensor) -> "
        "Dict[str, Tensor]:\n"
        "    image_embedding = self.encoder.forward(images)\n"
        "    clinical_embedding = self.clinical.forward(clinical)\n"
        "    fused = torch.cat([image_embedding, clinical_embedding], 1)\n";
    if (gated) {
      absl::StrAppend(
          &source,
          "    gate = torch.sigmoid(self.gate.forward(fused))\n"
          "    fused = gate * self.image_projection.forward(image_embedding) "
          "+ (1 - gate) * "
          "self.clinical_projection.forward(clinical_embedding)\n");
    }
    absl::StrAppend(&source,
                    "    fused = self.dropout.forward(fused)\n"
                    "    outputs: Dict[str, Tensor] = {}\n"
                    "    outputs[\"subtype\"] = self.subtype.forward(fused)\n");
    for (const std::string& head : heads) {
      absl::StrAppend(&source, "    outputs[\"",
                      absl::StripPrefix(head, "head_"), "\"] = ", Child(head),
                      ".forward(fused).squeeze(1)\n");
    }
    return absl::StrCat(source, "    return outputs\n");
  }

  std::shared_ptr<torch::jit::CompilationUnit> unit_ =
      std::make_shared<torch::jit::CompilationUnit>();
};

}  // namespace

absl::StatusOr<torch::jit::Module> ToTorchScript(const Module& model) {
  try {
    Converter converter;
    return converter.Convert(model, "model");
  } catch (const std::exception& e) {
    // A TorchScript compile error here is a bug in the generated source.
    return absl::InternalError(
        absl::StrCat("TorchScript export failed: ", e.what()));
  }
}

absl::Status ExportTorchScript(const Module& model, const std::string& path) {
  absl::StatusOr<torch::jit::Module> script = ToTorchScript(model);
  if (!script.ok()) return script.status();
  std::ostringstream bytes;
  try {
    script->save(bytes);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot serialize TorchScript: ", e.what()));
  }
  return WriteFileAtomically(path, bytes.str());
}

}  // namespace echofed
