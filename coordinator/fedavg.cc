#include "coordinator/fedavg.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/half.h"

namespace echofed {
namespace {

bool UsesDoubleSum(DType dtype) { return dtype == INT64 || dtype == FLOAT64; }

constexpr size_t kBlockBytes = 1 << 20;

}  // namespace

FedAvgAggregator::FedAvgAggregator(ModelManifest layout)
    : layout_(std::move(layout)) {
  float_sums_.resize(layout_.tensors_size());
  double_sums_.resize(layout_.tensors_size());
  for (const TensorSpec& spec : layout_.tensors()) {
    elements_.push_back(*TensorByteSize(spec) / *DTypeSize(spec.dtype()));
  }
}

absl::Status FedAvgAggregator::Fold(TensorSource& update, double weight) {
  if (!(weight > 0) || !std::isfinite(weight)) {
    return absl::InvalidArgumentError("update weight must be positive");
  }
  if (absl::Status status = CheckSameLayout(layout_, update.manifest());
      !status.ok()) {
    return status;
  }
  std::vector<char> block(kBlockBytes);
  const float w = static_cast<float>(weight);
  // The first update writes the sum; later ones add to it.
  const bool first_update = contributions_ == 0;
  for (int i = 0; i < layout_.tensors_size(); ++i) {
    const DType dtype = layout_.tensors(i).dtype();
    if (first_update) {
      // new T[n]: not value-initialised, so no page is touched before the
      // update's values land in it.
      if (UsesDoubleSum(dtype)) {
        if (!double_sums_[i]) double_sums_[i].reset(new double[elements_[i]]);
      } else if (!float_sums_[i]) {
        float_sums_[i].reset(new float[elements_[i]]);
      }
    }
    const size_t element = *DTypeSize(dtype);
    const uint64_t size = *TensorByteSize(layout_.tensors(i));
    for (uint64_t offset = 0; offset < size; offset += kBlockBytes) {
      size_t take =
          static_cast<size_t>(std::min<uint64_t>(kBlockBytes, size - offset));
      if (absl::Status status = update.Read(i, offset, take, block.data());
          !status.ok()) {
        return status;
      }
      const size_t first = offset / element;
      const size_t count = take / element;
      const char* bytes = block.data();
      switch (dtype) {
        case FLOAT32: {
          float* sum = float_sums_[i].get() + first;
          const float* values = reinterpret_cast<const float*>(bytes);
          // 0 + x, not x: the same bits as adding to a zeroed sum (-0 too).
          if (first_update) {
            for (size_t k = 0; k < count; ++k) sum[k] = 0.0f + w * values[k];
          } else {
            for (size_t k = 0; k < count; ++k) sum[k] += w * values[k];
          }
          break;
        }
        case FLOAT16:
        case BFLOAT16: {
          float* sum = float_sums_[i].get() + first;
          for (size_t k = 0; k < count; ++k) {
            uint16_t bits;
            std::memcpy(&bits, bytes + 2 * k, 2);
            const float value =
                w * (dtype == FLOAT16 ? HalfToFloat(bits) : Bf16ToFloat(bits));
            sum[k] = (first_update ? 0.0f : sum[k]) + value;
          }
          break;
        }
        case FLOAT64: {
          double* sum = double_sums_[i].get() + first;
          for (size_t k = 0; k < count; ++k) {
            double value;
            std::memcpy(&value, bytes + 8 * k, 8);
            sum[k] = (first_update ? 0.0 : sum[k]) + weight * value;
          }
          break;
        }
        case INT64: {
          double* sum = double_sums_[i].get() + first;
          for (size_t k = 0; k < count; ++k) {
            int64_t value;
            std::memcpy(&value, bytes + 8 * k, 8);
            const double weighted = weight * static_cast<double>(value);
            sum[k] = (first_update ? 0.0 : sum[k]) + weighted;
          }
          break;
        }
        default:
          return absl::InvalidArgumentError("unsupported dtype");
      }
    }
  }
  total_weight_ += weight;
  ++contributions_;
  return absl::OkStatus();
}

absl::Status FedAvgAggregator::EmitAverage(const BlockSink& sink) const {
  if (contributions_ == 0) {
    return absl::FailedPreconditionError("no update to average");
  }
  std::vector<char> block;
  const double inverse = 1.0 / total_weight_;
  for (int i = 0; i < layout_.tensors_size(); ++i) {
    const DType dtype = layout_.tensors(i).dtype();
    const size_t element = *DTypeSize(dtype);
    const size_t elements = elements_[i];
    const size_t per_block = kBlockBytes / element;
    for (size_t first = 0; first < elements; first += per_block) {
      size_t count = std::min(per_block, elements - first);
      block.resize(count * element);
      char* out = block.data();
      for (size_t k = 0; k < count; ++k) {
        switch (dtype) {
          case FLOAT32: {
            float value =
                static_cast<float>(float_sums_[i][first + k] * inverse);
            std::memcpy(out + 4 * k, &value, 4);
            break;
          }
          case FLOAT16:
          case BFLOAT16: {
            float value =
                static_cast<float>(float_sums_[i][first + k] * inverse);
            uint16_t bits =
                dtype == FLOAT16 ? FloatToHalf(value) : FloatToBf16(value);
            std::memcpy(out + 2 * k, &bits, 2);
            break;
          }
          case FLOAT64: {
            double value = double_sums_[i][first + k] * inverse;
            std::memcpy(out + 8 * k, &value, 8);
            break;
          }
          case INT64: {
            int64_t value = static_cast<int64_t>(
                std::llround(double_sums_[i][first + k] * inverse));
            std::memcpy(out + 8 * k, &value, 8);
            break;
          }
          default:
            return absl::InvalidArgumentError("unsupported dtype");
        }
      }
      if (absl::Status status =
              sink(i, first, absl::string_view(block.data(), block.size()));
          !status.ok()) {
        return status;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FedAvgAggregator::WriteAverage(
    const std::string& path) const {
  absl::StatusOr<std::unique_ptr<ModelFileWriter>> writer =
      ModelFileWriter::Create(path, layout_);
  if (!writer.ok()) return writer.status();
  absl::Status status =
      EmitAverage([&](int, uint64_t, absl::string_view bytes) {
        return (*writer)->Append(bytes);
      });
  if (!status.ok()) return status;
  return (*writer)->Commit();
}

absl::StatusOr<TensorBundle> FedAvgAggregator::Average() const {
  TensorBundle bundle;
  bundle.manifest = layout_;
  bundle.data.resize(layout_.tensors_size());
  absl::Status status =
      EmitAverage([&](int index, uint64_t, absl::string_view bytes) {
        bundle.data[index].append(bytes.data(), bytes.size());
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  if (absl::Status sealed = SealBundle(&bundle); !sealed.ok()) return sealed;
  return bundle;
}

}  // namespace echofed
