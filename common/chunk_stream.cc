#include "common/chunk_stream.h"

namespace echofed {

SourceChunkStream::SourceChunkStream(std::unique_ptr<TensorSource> source,
                                     size_t slice_bytes)
    : source_(std::move(source)), chunker_(source_.get(), slice_bytes) {}

absl::StatusOr<const ModelChunk*> SourceChunkStream::Next() {
  absl::StatusOr<bool> more = chunker_.Next(&chunk_);
  if (!more.ok()) return more.status();
  return *more ? &chunk_ : nullptr;
}

absl::StatusOr<std::shared_ptr<const ChunkedModel>> ChunkedModel::Cut(
    TensorSource& source, size_t slice_bytes) {
  std::shared_ptr<ChunkedModel> model(new ChunkedModel);
  ModelChunker chunker(&source, slice_bytes);
  for (;;) {
    ModelChunk chunk;
    absl::StatusOr<bool> more = chunker.Next(&chunk);
    if (!more.ok()) return more.status();
    if (!*more) break;
    if (chunk.has_slice()) model->tensor_bytes_ += chunk.slice().data().size();
    // Sizes cached now, while one thread owns the chunk: concurrent
    // serializations then only read them.
    chunk.ByteSizeLong();
    model->chunks_.push_back(std::move(chunk));
  }
  return std::shared_ptr<const ChunkedModel>(std::move(model));
}

absl::StatusOr<const ModelChunk*> SharedChunkStream::Next() {
  if (next_ >= model_->chunks().size()) return nullptr;
  return &model_->chunks()[next_++];
}

}  // namespace echofed
