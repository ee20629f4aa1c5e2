#ifndef ECHOFED_COMMON_CHUNK_STREAM_H_
#define ECHOFED_COMMON_CHUNK_STREAM_H_

// A model's wire chunks (serialized ModelChunk messages) for a download, one
// at a time: cut from a source as they go (one slice in memory, one copy
// into the message), or taken from a committed model file mapped into
// memory once and shared by every download of it, whose slices point into
// the mapping: no read, no copy, only TLS touches the bytes.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor_bundle.h"
#include "grpcpp/support/byte_buffer.h"
#include "proto/tensor.pb.h"

namespace echofed {

class ChunkStream {
 public:
  virtual ~ChunkStream() = default;
  // Fills `chunk` with the next serialized ModelChunk (manifest first);
  // false after the last.
  virtual absl::StatusOr<bool> Next(grpc::ByteBuffer* chunk) = 0;
};

// Chunks of a source, cut and serialized as they are asked for. Owns the
// source.
class SourceChunkStream : public ChunkStream {
 public:
  explicit SourceChunkStream(std::unique_ptr<TensorSource> source,
                             size_t slice_bytes = kDefaultSliceBytes);
  absl::StatusOr<bool> Next(grpc::ByteBuffer* chunk) override;

 private:
  std::unique_ptr<TensorSource> source_;
  ModelChunker chunker_;
  ModelChunk message_;
};

// A model file (tensor_bundle.h) mapped read-only, with the chunks
// ModelChunker would cut from it, byte for byte: each slice's message is a
// small header followed by a gRPC slice that references the mapping (and
// keeps it alive while gRPC holds it). Model files are never changed in
// place (written under another name and renamed), so the mapping stays
// valid. Immutable once opened: any number of threads may read it.
class MappedModel : public std::enable_shared_from_this<MappedModel> {
 public:
  static absl::StatusOr<std::shared_ptr<const MappedModel>> Open(
      const std::string& path, size_t slice_bytes = kDefaultSliceBytes);
  ~MappedModel();
  MappedModel(const MappedModel&) = delete;
  MappedModel& operator=(const MappedModel&) = delete;

  const ModelManifest& manifest() const { return manifest_; }
  // The manifest, then one per slice.
  size_t chunk_count() const { return 1 + slices_.size(); }
  // Serialized ModelChunk `index`; shares the mapping, copies nothing big.
  grpc::ByteBuffer Chunk(size_t index) const;

 private:
  MappedModel() = default;
  struct Slice {
    std::string header;   // ModelChunk and TensorSlice up to the data bytes
    uint64_t offset = 0;  // of the data in the file
    uint64_t size = 0;
  };
  char* map_ = nullptr;
  size_t map_size_ = 0;
  ModelManifest manifest_;
  std::string manifest_chunk_;
  std::vector<Slice> slices_;
};

// One download's walk over a shared MappedModel.
class MappedChunkStream : public ChunkStream {
 public:
  explicit MappedChunkStream(std::shared_ptr<const MappedModel> model)
      : model_(std::move(model)) {}
  absl::StatusOr<bool> Next(grpc::ByteBuffer* chunk) override;

 private:
  std::shared_ptr<const MappedModel> model_;
  size_t next_ = 0;
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_CHUNK_STREAM_H_
