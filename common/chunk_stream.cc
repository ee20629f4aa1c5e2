#include "common/chunk_stream.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/impl/codegen/proto_utils.h"

namespace echofed {
namespace {

using google::protobuf::internal::WireFormatLite;

// The bytes that precede a slice's data in its serialized ModelChunk, as
// protobuf writes them (fields in number order, zeros left out), so that
// header + data is exactly ModelChunk::SerializeAsString().
std::string SliceHeader(uint32_t tensor_index, uint64_t offset, uint64_t size) {
  std::string body;
  {
    google::protobuf::io::StringOutputStream stream(&body);
    google::protobuf::io::CodedOutputStream out(&stream);
    if (tensor_index != 0) {
      out.WriteTag(WireFormatLite::MakeTag(TensorSlice::kTensorIndexFieldNumber,
                                           WireFormatLite::WIRETYPE_VARINT));
      out.WriteVarint32(tensor_index);
    }
    if (offset != 0) {
      out.WriteTag(WireFormatLite::MakeTag(TensorSlice::kOffsetFieldNumber,
                                           WireFormatLite::WIRETYPE_VARINT));
      out.WriteVarint64(offset);
    }
    out.WriteTag(
        WireFormatLite::MakeTag(TensorSlice::kDataFieldNumber,
                                WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    out.WriteVarint64(size);
  }
  std::string header;
  {
    google::protobuf::io::StringOutputStream stream(&header);
    google::protobuf::io::CodedOutputStream out(&stream);
    out.WriteTag(
        WireFormatLite::MakeTag(ModelChunk::kSliceFieldNumber,
                                WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    out.WriteVarint64(body.size() + size);
    out.WriteRaw(body.data(), static_cast<int>(body.size()));
  }
  return header;
}

grpc::ByteBuffer BufferOf(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

// gRPC drops its reference to a data slice through this.
void ReleaseModel(void* holder) {
  delete static_cast<std::shared_ptr<const MappedModel>*>(holder);
}

}  // namespace

SourceChunkStream::SourceChunkStream(std::unique_ptr<TensorSource> source,
                                     size_t slice_bytes)
    : source_(std::move(source)), chunker_(source_.get(), slice_bytes) {}

absl::StatusOr<bool> SourceChunkStream::Next(grpc::ByteBuffer* chunk) {
  absl::StatusOr<bool> more = chunker_.Next(&message_);
  if (!more.ok() || !*more) return more;
  bool own = false;
  // gRPC serializes only into an empty buffer (it asserts so).
  chunk->Clear();
  grpc::Status status =
      grpc::SerializationTraits<ModelChunk>::Serialize(message_, chunk, &own);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot serialize a model chunk: ",
                                            status.error_message()));
  }
  return true;
}

absl::StatusOr<std::shared_ptr<const MappedModel>> MappedModel::Open(
    const std::string& path, size_t slice_bytes) {
  // The reader checks the file's structure and gives the manifest.
  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      ModelFileReader::Open(path);
  if (!reader.ok()) return reader.status();
  std::shared_ptr<MappedModel> model(new MappedModel);
  model->manifest_ = (*reader)->manifest();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open model file ", path));
  }
  struct stat info;
  if (::fstat(fd, &info) != 0 || info.st_size <= 0) {
    ::close(fd);
    return absl::DataLossError(absl::StrCat("cannot stat model file ", path));
  }
  void* map = ::mmap(nullptr, static_cast<size_t>(info.st_size), PROT_READ,
                     MAP_SHARED, fd, 0);
  ::close(fd);  // the mapping keeps the file
  if (map == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map model file ", path));
  }
  model->map_ = static_cast<char*>(map);
  model->map_size_ = static_cast<size_t>(info.st_size);
  ModelChunk manifest_chunk;
  *manifest_chunk.mutable_manifest() = model->manifest_;
  model->manifest_chunk_ = manifest_chunk.SerializeAsString();
  // The same cuts as ModelChunker: whole elements, at most slice_bytes.
  uint64_t file_offset = 0;
  for (int i = 0; i < model->manifest_.tensors_size(); ++i) {
    const TensorSpec& spec = model->manifest_.tensors(i);
    absl::StatusOr<uint64_t> size = TensorByteSize(spec);
    if (!size.ok()) return size.status();
    const size_t element = *DTypeSize(spec.dtype());
    const uint64_t step = slice_bytes / element * element;
    for (uint64_t offset = 0; offset < *size; offset += step) {
      const uint64_t take = std::min<uint64_t>(*size - offset, step);
      model->slices_.push_back(
          {SliceHeader(i, offset, take), file_offset + offset, take});
    }
    file_offset += *size;
  }
  if (file_offset > model->map_size_) {
    return absl::DataLossError(
        absl::StrCat("model file ", path, " changed while it was opened"));
  }
  return std::shared_ptr<const MappedModel>(std::move(model));
}

MappedModel::~MappedModel() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

grpc::ByteBuffer MappedModel::Chunk(size_t index) const {
  if (index == 0) return BufferOf(manifest_chunk_);
  const Slice& slice = slices_[index - 1];
  grpc::Slice parts[2] = {
      grpc::Slice(slice.header.data(), slice.header.size()),
      grpc::Slice(map_ + slice.offset, slice.size, &ReleaseModel,
                  new std::shared_ptr<const MappedModel>(shared_from_this()))};
  return grpc::ByteBuffer(parts, 2);
}

absl::StatusOr<bool> MappedChunkStream::Next(grpc::ByteBuffer* chunk) {
  if (next_ >= model_->chunk_count()) return false;
  *chunk = model_->Chunk(next_++);
  return true;
}

}  // namespace echofed
