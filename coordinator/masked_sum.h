#ifndef ECHOFED_COORDINATOR_MASKED_SUM_H_
#define ECHOFED_COORDINATOR_MASKED_SUM_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/secure_aggregation.h"
#include "common/tensor_bundle.h"

namespace echofed {

// The coordinator's half of secure aggregation (common/secure_aggregation.h):
// masked uploads are added element by element modulo 2^64 as they arrive
// (memory: 8 bytes per value, whatever the number of sites). Only when every
// site of the attempt has been added do the masks cancel; the sum of an
// incomplete cohort is noise and must be dropped. Not thread-safe: the
// coordinator serialises.
class MaskedSum {
 public:
  // `global_layout` is the round's global model; uploads must have its
  // masked layout.
  explicit MaskedSum(ModelManifest global_layout);

  absl::Status Add(TensorSource& masked);
  int count() const { return count_; }

  // The global model plus the decoded sum divided by `total_weight`: with
  // every site's mask in the sum, the sample-weighted mean of the sites'
  // models, in the global layout's dtypes (what FedAvg of the same updates
  // gives, to the fixed-point resolution).
  absl::StatusOr<TensorBundle> Average(TensorSource& global,
                                       double total_weight) const;

 private:
  ModelManifest global_layout_;
  ModelManifest masked_layout_;
  std::vector<std::vector<uint64_t>> sums_;
  int count_ = 0;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_MASKED_SUM_H_
