#ifndef ECHOFED_MODELS_TORCHSCRIPT_H_
#define ECHOFED_MODELS_TORCHSCRIPT_H_

// TorchScript export without Python: the C++ module tree is mirrored as a
// torch::jit::Module tree of the same names, holding copies of the
// parameters and buffers, whose forward methods are TorchScript source
// generated here from each module's options and compiled by LibTorch's own
// TorchScript compiler (Module::define). The file loads with
// torch.jit.load in Python (no echofed, no model code needed) and
// torch::jit::load in C++, and its state_dict() names are ExportState's.
//
// Tracing would spare the generated source but not the rest: LibTorch's
// tracer (torch::jit::tracer::trace) records a call against a jit::Module
// that already holds the parameters, which Python's torch.jit.trace builds
// from an nn.Module and LibTorch has no code for (that is most of this
// file); and a trace freezes the branches of the mode it ran in (dropout,
// batch-norm statistics), so the file could not be fine-tuned.
//
// Layers known here: Conv2d (zero padding), BatchNorm2d, ReLU, MaxPool2d,
// AdaptiveAvgPool2d, Linear, Dropout, Sequential; models: small_cnn, the
// image-only ResNet classifiers (resnet18, resnet_small) and their fusion
// models (*_fusion, *_gated_fusion, with the clinical encoder). Their
// forward code is restated here, so tests/models/checkpoint_test.cc
// compares the outputs of every exported model with the C++ model's.
//
// An image model's forward is images [N, 1, H, W] -> subtype logits
// [N, C]. A fusion model's is (images [N, 1, H, W], clinical [N, F] float
// with NaN where missing) -> Dict[str, Tensor]: "subtype" [N, C] logits
// and, per extra head, its module name without "head_" (e.g. "high_risk",
// "prognosis") -> [N], as FusionModelImpl::Predict.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "torch/script.h"
#include "torch/torch.h"

namespace echofed {

// The TorchScript twin of `model`, in eval mode (call train() to fine-tune),
// on the CPU. Unimplemented for a module type it does not know (the
// benchmark models), naming the module.
absl::StatusOr<torch::jit::Module> ToTorchScript(
    const torch::nn::Module& model);

// ToTorchScript, saved atomically to `path` (by convention `*.pt`).
absl::Status ExportTorchScript(const torch::nn::Module& model,
                               const std::string& path);

}  // namespace echofed

#endif  // ECHOFED_MODELS_TORCHSCRIPT_H_
