#include "coordinator/masked_sum.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/half.h"

namespace echofed {
namespace {

// Values read per block: keeps the scratch buffer small.
constexpr uint64_t kBlockValues = 1 << 16;

}  // namespace

MaskedSum::MaskedSum(ModelManifest global_layout)
    : global_layout_(std::move(global_layout)),
      masked_layout_(MaskedLayout(global_layout_)) {
  sums_.resize(global_layout_.tensors_size());
}

absl::Status MaskedSum::Add(TensorSource& masked) {
  if (absl::Status status = CheckSameLayout(masked_layout_, masked.manifest());
      !status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("masked update: ", status.message()));
  }
  std::vector<uint64_t> block;
  for (int t = 0; t < masked_layout_.tensors_size(); ++t) {
    absl::StatusOr<uint64_t> bytes = TensorByteSize(masked_layout_.tensors(t));
    if (!bytes.ok()) return bytes.status();
    uint64_t count = *bytes / sizeof(uint64_t);
    std::vector<uint64_t>& sum = sums_[t];
    if (sum.empty()) sum.assign(count, 0);
    for (uint64_t first = 0; first < count; first += kBlockValues) {
      uint64_t size = std::min(kBlockValues, count - first);
      block.resize(size);
      if (absl::Status status =
              masked.Read(t, first * sizeof(uint64_t), size * sizeof(uint64_t),
                          reinterpret_cast<char*>(block.data()));
          !status.ok()) {
        return status;
      }
      for (uint64_t k = 0; k < size; ++k) sum[first + k] += block[k];
    }
  }
  ++count_;
  return absl::OkStatus();
}

absl::StatusOr<TensorBundle> MaskedSum::Average(TensorSource& global,
                                                double total_weight) const {
  if (count_ == 0 || !(total_weight > 0)) {
    return absl::FailedPreconditionError("no masked update to average");
  }
  if (absl::Status status = CheckSameLayout(global_layout_, global.manifest());
      !status.ok()) {
    return status;
  }
  TensorBundle average;
  average.manifest = global_layout_;
  average.data.resize(global_layout_.tensors_size());
  for (int t = 0; t < global_layout_.tensors_size(); ++t) {
    const TensorSpec& spec = global_layout_.tensors(t);
    absl::StatusOr<uint64_t> bytes = TensorByteSize(spec);
    absl::StatusOr<size_t> element = DTypeSize(spec.dtype());
    if (!bytes.ok()) return bytes.status();
    if (!element.ok()) return element.status();
    std::string& out = average.data[t];
    out.resize(*bytes);
    if (absl::Status status = global.Read(t, 0, *bytes, out.data());
        !status.ok()) {
      return status;
    }
    uint64_t count = *bytes / *element;
    for (uint64_t k = 0; k < count; ++k) {
      char* place = out.data() + k * *element;
      double value = ElementToDouble(spec.dtype(), place) +
                     DecodeFixedPoint(sums_[t][k]) / total_weight;
      DoubleToElement(spec.dtype(), value, place);
    }
  }
  if (absl::Status status = SealBundle(&average); !status.ok()) return status;
  return average;
}

}  // namespace echofed
