#ifndef ECHOFED_COMMON_TENSOR_BUNDLE_H_
#define ECHOFED_COMMON_TENSOR_BUNDLE_H_

// Models as named raw tensors: the in-memory form, the on-disk form, and the
// chunked wire form (proto/tensor.proto), with SHA-256 digests throughout.
// Nothing here knows LibTorch or gRPC.

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"
#include "proto/tensor.pb.h"

namespace echofed {

// Slices on the wire are at most this big: large enough that framing is
// negligible, small enough to keep memory flat (gRPC's 4 MB default limit is
// not in play).
inline constexpr size_t kDefaultSliceBytes = 1 << 20;

absl::StatusOr<size_t> DTypeSize(DType dtype);
// Bytes of one tensor; fails on unknown dtypes and negative or overflowing
// shapes.
absl::StatusOr<uint64_t> TensorByteSize(const TensorSpec& spec);
std::string DescribeSpec(const TensorSpec& spec);

// Names, dtypes and shapes equal and in the same order (digests ignored).
absl::Status CheckSameLayout(const ModelManifest& expected,
                             const ModelManifest& actual);

// The digest of a whole model: SHA-256 over every tensor's name, dtype,
// shape and digest, in order.
std::string ModelDigest(const ModelManifest& manifest);

// A model held in memory: data[i] holds the little-endian bytes of
// manifest.tensors(i).
struct TensorBundle {
  ModelManifest manifest;
  std::vector<std::string> data;
};

// Fills every tensor's sha256 from `bundle->data` and checks sizes.
absl::Status SealBundle(TensorBundle* bundle);

// Anything a model can be sent from.
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const ModelManifest& manifest() const = 0;
  // Copies `size` bytes of tensor `index` starting at `offset` into `out`.
  virtual absl::Status Read(int index, uint64_t offset, size_t size,
                            char* out) = 0;
};

class BundleSource : public TensorSource {
 public:
  explicit BundleSource(const TensorBundle* bundle) : bundle_(bundle) {}
  const ModelManifest& manifest() const override { return bundle_->manifest; }
  absl::Status Read(int index, uint64_t offset, size_t size,
                    char* out) override;

 private:
  const TensorBundle* bundle_;
};

// On-disk model: tensor bytes back to back, then the serialized manifest,
// then its size (uint64 little-endian), then the magic "EFMODEL1". Written
// under a temporary name and renamed when complete, so a model file that
// exists is whole.
class ModelFileReader : public TensorSource {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFileReader>> Open(
      const std::string& path);
  ~ModelFileReader() override;

  const ModelManifest& manifest() const override { return manifest_; }
  const std::string& digest() const { return digest_; }
  absl::Status Read(int index, uint64_t offset, size_t size,
                    char* out) override;
  // Reads the whole model into memory.
  absl::StatusOr<TensorBundle> ReadAll();

 private:
  ModelFileReader() = default;
  std::string path_;
  std::FILE* file_ = nullptr;
  ModelManifest manifest_;
  std::vector<uint64_t> tensor_offsets_;
  std::string digest_;
};

struct ModelFileOptions {
  // Keep the layout's digests instead of computing them, for bytes a
  // ChunkAssembler has already checked (saves hashing twice).
  bool digests_verified = false;
  // fsync before the rename. Off for scratch files (incoming updates) that
  // need not survive a crash; a committed model is always durable.
  bool durable = true;
};

class ModelFileWriter {
 public:
  // `layout` gives names, dtypes and shapes.
  static absl::StatusOr<std::unique_ptr<ModelFileWriter>> Create(
      const std::string& path, ModelManifest layout,
      ModelFileOptions options = {});
  ~ModelFileWriter();

  // Tensor bytes in manifest order, in pieces of any size.
  absl::Status Append(absl::string_view bytes);
  // Writes the manifest, syncs and renames into place; returns the model
  // digest. Without Commit the temporary file is removed.
  absl::StatusOr<std::string> Commit();

 private:
  ModelFileWriter() = default;
  absl::Status AdvanceToNonEmptyTensor();

  std::string path_;
  std::string temp_path_;
  std::FILE* file_ = nullptr;
  ModelManifest manifest_;
  int current_ = 0;
  uint64_t written_in_current_ = 0;
  std::unique_ptr<Sha256> sha_;
  bool compute_digests_ = true;
  bool durable_ = true;
  bool committed_ = false;
};

absl::StatusOr<std::string> WriteModelFile(const std::string& path,
                                           const TensorBundle& bundle);

// Cuts a model into wire chunks: the manifest first, then slices.
class ModelChunker {
 public:
  ModelChunker(TensorSource* source, size_t slice_bytes = kDefaultSliceBytes);
  // Fills `chunk`; returns false when everything was sent.
  absl::StatusOr<bool> Next(ModelChunk* chunk);

 private:
  TensorSource* source_;
  size_t slice_bytes_;
  bool manifest_sent_ = false;
  int index_ = 0;
  uint64_t offset_ = 0;
};

// Checks and reassembles a chunked model as it streams in. Each slice is
// handed to the sink once it has been checked (order, bounds, finite
// values); digests are checked as each tensor completes. Not thread-safe.
class ChunkAssembler {
 public:
  struct Options {
    // When set, the incoming model must have exactly this layout.
    const ModelManifest* expected_layout = nullptr;
    // Refuse NaN and infinities in floating-point tensors.
    bool reject_non_finite = true;
    // Refuse a manifest announcing more bytes than this.
    uint64_t max_total_bytes = uint64_t{64} << 30;
  };
  using ManifestSink = std::function<absl::Status(const ModelManifest&)>;
  using SliceSink =
      std::function<absl::Status(int tensor_index, absl::string_view bytes)>;

  ChunkAssembler(Options options, ManifestSink on_manifest, SliceSink on_slice);

  absl::Status Accept(const ModelChunk& chunk);
  // Every tensor arrived whole with its digest; returns the model digest.
  absl::StatusOr<std::string> Finish();
  const ModelManifest& manifest() const { return manifest_; }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  absl::Status AcceptManifest(const ModelManifest& manifest);
  absl::Status AcceptSlice(const TensorSlice& slice);
  absl::Status SkipEmptyTensors();

  Options options_;
  ManifestSink on_manifest_;
  SliceSink on_slice_;
  bool has_manifest_ = false;
  ModelManifest manifest_;
  std::vector<uint64_t> sizes_;
  int current_ = 0;
  uint64_t received_in_current_ = 0;
  uint64_t bytes_received_ = 0;
  std::unique_ptr<Sha256> sha_;
};

// Receives a whole model into memory.
class BundleAssembler {
 public:
  explicit BundleAssembler(ChunkAssembler::Options options = {});
  absl::Status Accept(const ModelChunk& chunk) {
    return assembler_.Accept(chunk);
  }
  absl::StatusOr<TensorBundle> Finish();

 private:
  TensorBundle bundle_;
  ChunkAssembler assembler_;
};

// True if any element of a floating-point tensor's bytes is NaN or infinite.
bool HasNonFinite(DType dtype, absl::string_view bytes);

}  // namespace echofed

#endif  // ECHOFED_COMMON_TENSOR_BUNDLE_H_
