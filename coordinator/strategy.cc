#include "coordinator/strategy.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "common/half.h"
#include "common/log.h"
#include "coordinator/fedavg.h"

namespace echofed {
namespace {

// Copies a verified update to a scratch model file (not fsynced: it lives
// only until the round closes).
absl::Status CopyToScratchFile(TensorSource& update, const std::string& path) {
  ModelFileOptions options;
  options.digests_verified = true;
  options.durable = false;
  absl::StatusOr<std::unique_ptr<ModelFileWriter>> writer =
      ModelFileWriter::Create(path, update.manifest(), options);
  if (!writer.ok()) return writer.status();
  constexpr size_t kCopyBytes = 1 << 20;
  std::vector<char> block(kCopyBytes);
  const ModelManifest& layout = update.manifest();
  for (int i = 0; i < layout.tensors_size(); ++i) {
    const uint64_t size = *TensorByteSize(layout.tensors(i));
    for (uint64_t offset = 0; offset < size; offset += kCopyBytes) {
      size_t take =
          static_cast<size_t>(std::min<uint64_t>(kCopyBytes, size - offset));
      absl::Status status = update.Read(i, offset, take, block.data());
      if (status.ok()) {
        status = (*writer)->Append(absl::string_view(block.data(), take));
      }
      if (!status.ok()) return status;
    }
  }
  return (*writer)->Commit().status();
}

class FedAvgRound : public RoundAggregator {
 public:
  explicit FedAvgRound(const ModelManifest& layout) : sum_(layout) {}

  absl::Status Add(TensorSource& update, double weight) override {
    return sum_.Fold(update, weight);
  }
  int contributions() const override { return sum_.contributions(); }
  double total_weight() const override { return sum_.total_weight(); }
  absl::StatusOr<std::string> WriteModel(const std::string& path) override {
    return sum_.WriteAverage(path);
  }

 protected:
  FedAvgAggregator sum_;
};

// FedAdam / FedYogi (Reddi et al. 2021, Algorithm 2): with the mean update
// delta = mean(x_i) - x_prev, the server keeps moments m and v and moves
// x = x_prev + lr * m / (sqrt(v) + tau). Only trained float32 parameters
// move this way (float16 / bfloat16 ones too, computed in float32); buffers
// and integer tensors take the plain average.
class FedOptRound : public FedAvgRound {
 public:
  FedOptRound(const Plan& plan, const RoundContext& context)
      : FedAvgRound(context.layout),
        context_(context),
        yogi_(plan.strategy() == Plan::FEDYOGI),
        learning_rate_(static_cast<float>(plan.server_learning_rate())),
        beta1_(static_cast<float>(plan.server_beta1())),
        beta2_(static_cast<float>(plan.server_beta2())),
        tau_(static_cast<float>(plan.server_tau())) {
    for (int i = 0; i < context.layout.tensors_size(); ++i) {
      const TensorSpec& spec = context.layout.tensors(i);
      const bool floating = spec.dtype() == FLOAT32 ||
                            spec.dtype() == FLOAT16 || spec.dtype() == BFLOAT16;
      if (floating && !spec.buffer()) {
        moment_index_.push_back(moments_layout_.tensors_size());
        TensorSpec* moment = moments_layout_.add_tensors();
        moment->set_name(spec.name());
        moment->set_dtype(FLOAT32);
        *moment->mutable_shape() = spec.shape();
      } else {
        moment_index_.push_back(-1);
      }
    }
  }

  absl::StatusOr<std::string> WriteModel(const std::string& path) override {
    absl::StatusOr<std::unique_ptr<ModelFileReader>> previous =
        ModelFileReader::Open(context_.previous_model_path);
    if (!previous.ok()) return previous.status();
    if (absl::Status status =
            CheckSameLayout(context_.layout, (*previous)->manifest());
        !status.ok()) {
      return status;
    }
    std::unique_ptr<ModelFileReader> previous_m, previous_v;
    std::string m_path = MomentPath("m", context_.round - 1);
    std::string v_path = MomentPath("v", context_.round - 1);
    if (std::filesystem::exists(m_path) && std::filesystem::exists(v_path)) {
      absl::StatusOr<std::unique_ptr<ModelFileReader>> m =
          ModelFileReader::Open(m_path);
      if (!m.ok()) return m.status();
      absl::StatusOr<std::unique_ptr<ModelFileReader>> v =
          ModelFileReader::Open(v_path);
      if (!v.ok()) return v.status();
      previous_m = std::move(*m);
      previous_v = std::move(*v);
    } else if (context_.round > 1) {
      LogWarning("server optimiser moments of round ", context_.round - 1,
                 " are missing; starting them afresh");
    }
    if (absl::Status status = MakeDirectories(context_.state_dir);
        !status.ok()) {
      return status;
    }
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> model =
        ModelFileWriter::Create(path, context_.layout);
    if (!model.ok()) return model.status();
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> m_out =
        ModelFileWriter::Create(MomentPath("m", context_.round),
                                moments_layout_);
    if (!m_out.ok()) return m_out.status();
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> v_out =
        ModelFileWriter::Create(MomentPath("v", context_.round),
                                moments_layout_);
    if (!v_out.ok()) return v_out.status();

    std::vector<float> x, mean, m, v;
    std::vector<char> bytes;
    absl::Status status = sum_.EmitAverage([&](int index, uint64_t first,
                                               absl::string_view average) {
      const int moment = moment_index_[index];
      if (moment < 0) return (*model)->Append(average);
      // Half-precision models (plan wire_precision) are updated in float32
      // and written back in their own dtype; the moments stay float32.
      const DType dtype = context_.layout.tensors(index).dtype();
      const size_t element = *DTypeSize(dtype);
      const size_t count = average.size() / element;
      x.resize(count);
      mean.resize(count);
      m.assign(count, 0.0f);
      v.assign(count, tau_ * tau_);
      bytes.resize(average.size());
      if (absl::Status read = (*previous)->Read(index, first * element,
                                                average.size(), bytes.data());
          !read.ok()) {
        return read;
      }
      for (size_t k = 0; k < count; ++k) {
        x[k] = static_cast<float>(
            ElementToDouble(dtype, bytes.data() + k * element));
        mean[k] = static_cast<float>(
            ElementToDouble(dtype, average.data() + k * element));
      }
      const uint64_t offset = first * sizeof(float);
      const size_t moment_bytes = count * sizeof(float);
      if (previous_m != nullptr) {
        absl::Status read = previous_m->Read(moment, offset, moment_bytes,
                                             reinterpret_cast<char*>(m.data()));
        if (read.ok()) {
          read = previous_v->Read(moment, offset, moment_bytes,
                                  reinterpret_cast<char*>(v.data()));
        }
        if (!read.ok()) return read;
      }
      for (size_t k = 0; k < count; ++k) {
        float delta = mean[k] - x[k];
        m[k] = beta1_ * m[k] + (1 - beta1_) * delta;
        float square = delta * delta;
        if (yogi_) {
          float sign = v[k] > square ? 1.0f : (v[k] < square ? -1.0f : 0);
          v[k] -= (1 - beta2_) * square * sign;
        } else {
          v[k] = beta2_ * v[k] + (1 - beta2_) * square;
        }
        x[k] += learning_rate_ * m[k] / (std::sqrt(v[k]) + tau_);
        DoubleToElement(dtype, x[k], bytes.data() + k * element);
      }
      auto floats = [moment_bytes](const std::vector<float>& values) {
        return absl::string_view(reinterpret_cast<const char*>(values.data()),
                                 moment_bytes);
      };
      absl::Status appended = (*m_out)->Append(floats(m));
      if (appended.ok()) appended = (*v_out)->Append(floats(v));
      if (appended.ok()) {
        appended =
            (*model)->Append(absl::string_view(bytes.data(), bytes.size()));
      }
      return appended;
    });
    if (!status.ok()) return status;
    // Moments first: a model whose moments are missing would restart them.
    if (absl::StatusOr<std::string> committed = (*m_out)->Commit();
        !committed.ok()) {
      return committed.status();
    }
    if (absl::StatusOr<std::string> committed = (*v_out)->Commit();
        !committed.ok()) {
      return committed.status();
    }
    return (*model)->Commit();
  }

 private:
  std::string MomentPath(absl::string_view moment, int round) const {
    return absl::StrCat(context_.state_dir, "/server_", moment, "_", round,
                        ".efm");
  }

  RoundContext context_;
  bool yogi_;
  float learning_rate_, beta1_, beta2_, tau_;
  ModelManifest moments_layout_;
  std::vector<int> moment_index_;  // per layout tensor; -1: not optimised
};

// Coordinate-wise median or trimmed mean, each site counting once. Updates
// are copied to scratch files as they arrive and combined at the end, a
// block of coordinates at a time.
class RobustRound : public RoundAggregator {
 public:
  RobustRound(const Plan& plan, const RoundContext& context)
      : layout_(context.layout),
        median_(plan.strategy() == Plan::MEDIAN),
        trim_fraction_(plan.trim_fraction()),
        spool_dir_(absl::StrCat(context.state_dir, "/round_", context.round,
                                "_updates")) {
    std::error_code ignored;
    std::filesystem::remove_all(spool_dir_, ignored);  // a crashed round's
  }

  ~RobustRound() override {
    std::error_code ignored;
    std::filesystem::remove_all(spool_dir_, ignored);
  }

  absl::Status Add(TensorSource& update, double weight) override {
    if (!(weight > 0) || !std::isfinite(weight)) {
      return absl::InvalidArgumentError("update weight must be positive");
    }
    if (absl::Status status = CheckSameLayout(layout_, update.manifest());
        !status.ok()) {
      return status;
    }
    if (absl::Status status = MakeDirectories(spool_dir_); !status.ok()) {
      return status;
    }
    std::string path = absl::StrCat(spool_dir_, "/", spooled_.size(), ".efm");
    if (absl::Status status = CopyToScratchFile(update, path); !status.ok()) {
      return status;
    }
    spooled_.push_back(path);
    total_weight_ += weight;
    return absl::OkStatus();
  }

  int contributions() const override {
    return static_cast<int>(spooled_.size());
  }
  double total_weight() const override { return total_weight_; }

  absl::StatusOr<std::string> WriteModel(const std::string& path) override {
    const int n = static_cast<int>(spooled_.size());
    if (n == 0) return absl::FailedPreconditionError("no update to combine");
    std::vector<std::unique_ptr<ModelFileReader>> updates;
    for (const std::string& spooled : spooled_) {
      absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
          ModelFileReader::Open(spooled);
      if (!reader.ok()) return reader.status();
      updates.push_back(std::move(*reader));
    }
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> writer =
        ModelFileWriter::Create(path, layout_);
    if (!writer.ok()) return writer.status();
    const int trim =
        median_ ? 0 : static_cast<int>(std::floor(trim_fraction_ * n));
    constexpr uint64_t kBlockElements = 16384;
    std::vector<std::vector<char>> blocks(n);
    std::vector<double> column(n);
    std::vector<char> out;
    for (int i = 0; i < layout_.tensors_size(); ++i) {
      const DType dtype = layout_.tensors(i).dtype();
      const size_t element = *DTypeSize(dtype);
      const uint64_t elements = *TensorByteSize(layout_.tensors(i)) / element;
      for (uint64_t first = 0; first < elements; first += kBlockElements) {
        const size_t count = static_cast<size_t>(
            std::min<uint64_t>(kBlockElements, elements - first));
        for (int u = 0; u < n; ++u) {
          blocks[u].resize(count * element);
          if (absl::Status status = updates[u]->Read(
                  i, first * element, count * element, blocks[u].data());
              !status.ok()) {
            return status;
          }
        }
        out.resize(count * element);
        for (size_t k = 0; k < count; ++k) {
          for (int u = 0; u < n; ++u) {
            column[u] = ElementToDouble(dtype, blocks[u].data() + k * element);
          }
          DoubleToElement(dtype, Combine(column, trim),
                          out.data() + k * element);
        }
        if (absl::Status status =
                (*writer)->Append(absl::string_view(out.data(), out.size()));
            !status.ok()) {
          return status;
        }
      }
    }
    return (*writer)->Commit();
  }

 private:
  // Median (even counts: mean of the middle two) or the mean after dropping
  // `trim` values at each end. Reorders `values`.
  double Combine(std::vector<double>& values, int trim) const {
    const size_t n = values.size();
    if (median_) {
      size_t middle = n / 2;
      std::nth_element(values.begin(), values.begin() + middle, values.end());
      double upper = values[middle];
      if (n % 2 == 1) return upper;
      double lower = *std::max_element(values.begin(), values.begin() + middle);
      return 0.5 * (lower + upper);
    }
    std::sort(values.begin(), values.end());
    double sum = 0;
    for (size_t k = trim; k < n - trim; ++k) sum += values[k];
    return sum / static_cast<double>(n - 2 * trim);
  }

  ModelManifest layout_;
  bool median_;
  double trim_fraction_;
  std::string spool_dir_;
  std::vector<std::string> spooled_;
  double total_weight_ = 0;
};

// Norm bounding around any strategy. The norm of each update's change to the
// previous global model is measured when it arrives (reading the update and
// the previous model block by block). Above max_update_norm the update is
// refused there and then, so the round never sees it. With
// update_norm_outlier_factor the updates wait in scratch files until the
// close, when those beyond factor x the round's median norm (with at least
// three updates) are left out and the rest go to the wrapped strategy.
class NormBoundRound : public RoundAggregator {
 public:
  using Factory = std::function<std::unique_ptr<RoundAggregator>()>;
  NormBoundRound(const Plan& plan, const RoundContext& context,
                 Factory make_inner)
      : context_(context),
        max_norm_(plan.max_update_norm()),
        outlier_factor_(plan.update_norm_outlier_factor()),
        make_inner_(std::move(make_inner)),
        inner_(make_inner_()),
        spool_dir_(absl::StrCat(context.state_dir, "/round_", context.round,
                                "_bounded")) {
    std::error_code ignored;
    std::filesystem::remove_all(spool_dir_, ignored);  // a crashed round's
  }

  ~NormBoundRound() override {
    std::error_code ignored;
    std::filesystem::remove_all(spool_dir_, ignored);
  }

  absl::Status Add(TensorSource& update, double weight) override {
    if (folded_) {
      return absl::FailedPreconditionError("the round is already combined");
    }
    absl::StatusOr<std::unique_ptr<ModelFileReader>> previous =
        ModelFileReader::Open(context_.previous_model_path);
    if (!previous.ok()) return previous.status();
    absl::StatusOr<double> norm = UpdateNorm(update, **previous);
    if (!norm.ok()) return norm.status();
    if (!std::isfinite(*norm)) {
      return absl::InvalidArgumentError("update norm is not finite");
    }
    if (max_norm_ > 0 && *norm > max_norm_) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "update norm %.6g exceeds the plan's max_update_norm %.6g", *norm,
          max_norm_));
    }
    if (outlier_factor_ <= 0) return inner_->Add(update, weight);
    if (absl::Status status = MakeDirectories(spool_dir_); !status.ok()) {
      return status;
    }
    std::string path = absl::StrCat(spool_dir_, "/", pending_.size(), ".efm");
    if (absl::Status status = CopyToScratchFile(update, path); !status.ok()) {
      return status;
    }
    pending_.push_back({path, weight, *norm});
    return absl::OkStatus();
  }

  int contributions() const override {
    return outlier_factor_ > 0 ? static_cast<int>(pending_.size())
                               : inner_->contributions();
  }
  double total_weight() const override {
    if (outlier_factor_ <= 0 || folded_) return inner_->total_weight();
    double total = 0;
    for (const Pending& update : pending_) total += update.weight;
    return total;
  }

  absl::StatusOr<std::string> WriteModel(const std::string& path) override {
    if (outlier_factor_ > 0 && !folded_) {
      if (absl::Status status = FoldPending(); !status.ok()) return status;
    }
    return inner_->WriteModel(path);
  }

  std::vector<int> Excluded() const override { return excluded_; }

 private:
  struct Pending {
    std::string path;
    double weight;
    double norm;
  };

  absl::Status FoldPending() {
    std::vector<double> norms;
    for (const Pending& update : pending_) norms.push_back(update.norm);
    double bound = std::numeric_limits<double>::infinity();
    if (norms.size() >= 3) {
      std::sort(norms.begin(), norms.end());
      const size_t n = norms.size();
      double median =
          n % 2 == 1 ? norms[n / 2] : 0.5 * (norms[n / 2 - 1] + norms[n / 2]);
      bound = outlier_factor_ * median;
    } else {
      LogWarning("round ", context_.round, ": only ", norms.size(),
                 " updates; update_norm_outlier_factor needs three to tell "
                 "an outlier, so none is left out");
    }
    excluded_.clear();
    // A fresh wrapped strategy per attempt: a fold that failed halfway (a
    // full disk) and is retried must not count the first updates twice.
    inner_ = make_inner_();
    for (size_t u = 0; u < pending_.size(); ++u) {
      if (pending_[u].norm > bound) {
        LogWarning("round ", context_.round, ": update ", u + 1,
                   " left out (norm ", pending_[u].norm, " > ", outlier_factor_,
                   " x median = ", bound, ")");
        excluded_.push_back(static_cast<int>(u));
        continue;
      }
      absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
          ModelFileReader::Open(pending_[u].path);
      if (!reader.ok()) return reader.status();
      if (absl::Status status = inner_->Add(**reader, pending_[u].weight);
          !status.ok()) {
        return status;
      }
    }
    // Folded once: a retried WriteModel must not add the updates again.
    folded_ = true;
    return absl::OkStatus();
  }

  RoundContext context_;
  double max_norm_;
  double outlier_factor_;
  Factory make_inner_;
  std::unique_ptr<RoundAggregator> inner_;
  std::string spool_dir_;
  std::vector<Pending> pending_;
  std::vector<int> excluded_;
  bool folded_ = false;
};

}  // namespace

absl::StatusOr<double> UpdateNorm(TensorSource& update,
                                  TensorSource& previous) {
  const ModelManifest& layout = previous.manifest();
  if (absl::Status status = CheckSameLayout(layout, update.manifest());
      !status.ok()) {
    return status;
  }
  constexpr uint64_t kBlockElements = 1 << 18;
  std::vector<char> ours, theirs;
  double sum_of_squares = 0;
  for (int i = 0; i < layout.tensors_size(); ++i) {
    const TensorSpec& spec = layout.tensors(i);
    const DType dtype = spec.dtype();
    if (spec.buffer() ||
        (dtype != FLOAT32 && dtype != FLOAT16 && dtype != BFLOAT16)) {
      continue;
    }
    const size_t element = *DTypeSize(dtype);
    const uint64_t elements = *TensorByteSize(spec) / element;
    for (uint64_t first = 0; first < elements; first += kBlockElements) {
      const size_t count = static_cast<size_t>(
          std::min<uint64_t>(kBlockElements, elements - first));
      ours.resize(count * element);
      theirs.resize(count * element);
      absl::Status status =
          update.Read(i, first * element, ours.size(), ours.data());
      if (status.ok()) {
        status =
            previous.Read(i, first * element, theirs.size(), theirs.data());
      }
      if (!status.ok()) return status;
      for (size_t k = 0; k < count; ++k) {
        double delta = ElementToDouble(dtype, ours.data() + k * element) -
                       ElementToDouble(dtype, theirs.data() + k * element);
        sum_of_squares += delta * delta;
      }
    }
  }
  return std::sqrt(sum_of_squares);
}

namespace {

std::unique_ptr<RoundAggregator> CreateStrategyRound(
    const Plan& plan, const RoundContext& context) {
  switch (plan.strategy()) {
    case Plan::FEDADAM:
    case Plan::FEDYOGI:
      return std::make_unique<FedOptRound>(plan, context);
    case Plan::MEDIAN:
    case Plan::TRIMMED_MEAN:
      return std::make_unique<RobustRound>(plan, context);
    default:
      // FEDAVG; FEDPROX and FEDBN differ only at the sites.
      return std::make_unique<FedAvgRound>(context.layout);
  }
}

}  // namespace

std::unique_ptr<RoundAggregator> CreateRoundAggregator(
    const Plan& plan, const RoundContext& context) {
  if (plan.max_update_norm() > 0 || plan.update_norm_outlier_factor() > 0) {
    return std::make_unique<NormBoundRound>(
        plan, context, [plan, context] {
          return CreateStrategyRound(plan, context);
        });
  }
  return CreateStrategyRound(plan, context);
}

}  // namespace echofed
