#ifndef ECHOFED_COORDINATOR_FEDAVG_H_
#define ECHOFED_COORDINATOR_FEDAVG_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor_bundle.h"

namespace echofed {

// Federated averaging, folded in as updates arrive: memory is one running
// weighted sum (float32 for float tensors, float64 for integer buffers such
// as BatchNorm's step counter), never one model per site. Updates are read
// from a TensorSource block by block. The sum is allocated by the first
// update, which writes it instead of adding to zeros: no zero-filling pass
// when a round opens (20 ms of page faults at 11M parameters, on the path
// from one round's commit to the next one's opening). Not thread-safe: the
// caller serialises.
class FedAvgAggregator {
 public:
  // `layout` is the global model every update must match.
  explicit FedAvgAggregator(ModelManifest layout);

  // Adds weight * update. The update must have the layout (checked).
  absl::Status Fold(TensorSource& update, double weight);

  int contributions() const { return contributions_; }
  double total_weight() const { return total_weight_; }

  // Writes sum / total_weight as a model file and returns its digest.
  absl::StatusOr<std::string> WriteAverage(const std::string& path) const;
  // The same, in memory (tests).
  absl::StatusOr<TensorBundle> Average() const;

  // Calls sink(tensor index, first element, bytes) with the average in
  // manifest order, block by block, in the tensor's dtype.
  using BlockSink =
      std::function<absl::Status(int, uint64_t, absl::string_view)>;
  absl::Status EmitAverage(const BlockSink& sink) const;

  const ModelManifest& layout() const { return layout_; }

 private:
  ModelManifest layout_;
  // Elements per tensor.
  std::vector<uint64_t> elements_;
  // One of the two is used per tensor, by dtype; uninitialised until the
  // first update is folded (contributions_ == 0).
  std::vector<std::unique_ptr<float[]>> float_sums_;
  std::vector<std::unique_ptr<double[]>> double_sums_;
  double total_weight_ = 0;
  int contributions_ = 0;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_FEDAVG_H_
