#ifndef ECHOFED_COMMON_CHUNK_STREAM_H_
#define ECHOFED_COMMON_CHUNK_STREAM_H_

// A model's wire chunks, one at a time, for a download: cut from a source
// as they go (a model file: one slice in memory), or taken from a model cut
// once and held in memory, which every download of it shares (no read and
// no copy per download: the coordinator serves the round's model to every
// site from one copy).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor_bundle.h"
#include "proto/tensor.pb.h"

namespace echofed {

class ChunkStream {
 public:
  virtual ~ChunkStream() = default;
  // The next chunk, or nullptr after the last. The chunk stays valid and
  // unchanged until the next call (a write in flight reads it).
  virtual absl::StatusOr<const ModelChunk*> Next() = 0;
};

// Chunks of a source, cut as they are asked for. Owns the source.
class SourceChunkStream : public ChunkStream {
 public:
  explicit SourceChunkStream(std::unique_ptr<TensorSource> source,
                             size_t slice_bytes = kDefaultSliceBytes);
  absl::StatusOr<const ModelChunk*> Next() override;

 private:
  std::unique_ptr<TensorSource> source_;
  ModelChunker chunker_;
  ModelChunk chunk_;
};

// A whole model as wire chunks in memory: the same chunks ModelChunker
// makes (manifest first, then whole-element slices). Immutable once made,
// so any number of threads may read it.
class ChunkedModel {
 public:
  static absl::StatusOr<std::shared_ptr<const ChunkedModel>> Cut(
      TensorSource& source, size_t slice_bytes = kDefaultSliceBytes);

  const std::vector<ModelChunk>& chunks() const { return chunks_; }
  // Tensor bytes held (the model's size).
  uint64_t tensor_bytes() const { return tensor_bytes_; }

 private:
  ChunkedModel() = default;
  std::vector<ModelChunk> chunks_;
  uint64_t tensor_bytes_ = 0;
};

// One download's walk over a shared ChunkedModel.
class SharedChunkStream : public ChunkStream {
 public:
  explicit SharedChunkStream(std::shared_ptr<const ChunkedModel> model)
      : model_(std::move(model)) {}
  absl::StatusOr<const ModelChunk*> Next() override;

 private:
  std::shared_ptr<const ChunkedModel> model_;
  size_t next_ = 0;
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_CHUNK_STREAM_H_
