#ifndef ECHOFED_MODELS_CHECKPOINT_H_
#define ECHOFED_MODELS_CHECKPOINT_H_

// Checkpoints that Python reads: PyTorch's own file format (the zip archive
// of torch.save), so that
//
//   state = torch.load("model.pt")          # {name: tensor}, in order
//   model.load_state_dict(state)            # names as in ExportState
//
// works without echofed installed. The names are those of ExportState
// (parameters, then buffers); a Python module with the same attribute
// names loads them directly.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor_bundle.h"

namespace echofed {

// Writes `model` as a dict {name: tensor} in manifest order, atomically
// (temporary file, fsync, rename). The manifest itself (model name, which
// tensors are buffers) travels in an extra archive record that torch.load
// ignores, so that LoadTorchStateDict gives back the very same bundle.
absl::Status SaveTorchStateDict(const TensorBundle& model,
                                const std::string& path);

// Reads a checkpoint written by SaveTorchStateDict, or by Python's
// `torch.save(dict(model.state_dict()), path)`, into a sealed bundle. A
// file from Python gives an empty model name, no tensor marked as a buffer
// and Python's order: load it into a model with the overload below.
// Python's OrderedDict (a bare `torch.save(model.state_dict())`) is a class
// LibTorch 1.13's unpickler cannot rebuild: the error says to save a dict.
// Nor can it read Python's pickle of a dict with exactly one entry (the
// SETITEM opcode); any model has more.
// Errors: NotFound for a missing file, InvalidArgument for anything that is
// not a {str: tensor} dict of exchangeable dtypes.
absl::StatusOr<TensorBundle> LoadTorchStateDict(const std::string& path);

// LoadTorchStateDict, then put into the order of `layout` (from ExportState
// of the model to load into), whose model name and buffer flags it takes.
// For files from Python, whose state_dict() order (module by module) is
// not ExportState's (parameters, then buffers), so that ImportState takes
// them. The names must be the same set, with the same dtypes and shapes;
// InvalidArgument names the first difference.
absl::StatusOr<TensorBundle> LoadTorchStateDict(const std::string& path,
                                                const ModelManifest& layout);

}  // namespace echofed

#endif  // ECHOFED_MODELS_CHECKPOINT_H_
