#include "common/tensor_bundle.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"

namespace echofed {
namespace {

constexpr char kMagic[] = "EFMODEL1";
constexpr size_t kMagicSize = 8;

// Model files and wire bytes are little-endian; so are the hosts we build
// for (x86-64, arm64).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "echofed assumes a little-endian host");

bool IsFloating(DType dtype) {
  return dtype == FLOAT32 || dtype == FLOAT64 || dtype == FLOAT16 ||
         dtype == BFLOAT16;
}

// Half-precision formats: non-finite when every exponent bit is set.
bool HalfHasNonFinite(absl::string_view bytes, uint16_t exponent_mask) {
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    uint16_t bits;
    std::memcpy(&bits, bytes.data() + i, 2);
    if ((bits & exponent_mask) == exponent_mask) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<size_t> DTypeSize(DType dtype) {
  switch (dtype) {
    case FLOAT32:
      return 4;
    case FLOAT64:
    case INT64:
      return 8;
    case FLOAT16:
    case BFLOAT16:
      return 2;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown tensor dtype ", static_cast<int>(dtype)));
  }
}

absl::StatusOr<uint64_t> TensorByteSize(const TensorSpec& spec) {
  absl::StatusOr<size_t> element = DTypeSize(spec.dtype());
  if (!element.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", spec.name(), "': ", element.status().message()));
  }
  uint64_t size = *element;
  for (int64_t dim : spec.shape()) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' has a negative dimension"));
    }
    if (dim != 0 && size > std::numeric_limits<uint64_t>::max() /
                               static_cast<uint64_t>(dim)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' is impossibly large"));
    }
    size *= static_cast<uint64_t>(dim);
  }
  return size;
}

std::string DescribeSpec(const TensorSpec& spec) {
  return absl::StrCat(spec.name(), " ", DType_Name(spec.dtype()), "[",
                      absl::StrJoin(spec.shape(), ","), "]");
}

absl::Status CheckSameLayout(const ModelManifest& expected,
                             const ModelManifest& actual) {
  if (expected.tensors_size() != actual.tensors_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model has ", actual.tensors_size(), " tensors, expected ",
                     expected.tensors_size()));
  }
  for (int i = 0; i < expected.tensors_size(); ++i) {
    const TensorSpec& want = expected.tensors(i);
    const TensorSpec& got = actual.tensors(i);
    if (want.name() != got.name() || want.dtype() != got.dtype() ||
        !std::equal(want.shape().begin(), want.shape().end(),
                    got.shape().begin(), got.shape().end())) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", i, " is ", DescribeSpec(got), ", expected ",
                       DescribeSpec(want)));
    }
  }
  return absl::OkStatus();
}

std::string ModelDigest(const ModelManifest& manifest) {
  Sha256 sha;
  for (const TensorSpec& spec : manifest.tensors()) {
    std::string line = absl::StrCat(spec.name(), "\n", spec.dtype(), "\n",
                                    absl::StrJoin(spec.shape(), ","), "\n");
    sha.Update(line);
    sha.Update(spec.sha256());
  }
  return sha.Finish();
}

absl::Status SealBundle(TensorBundle* bundle) {
  if (static_cast<int>(bundle->data.size()) !=
      bundle->manifest.tensors_size()) {
    return absl::InvalidArgumentError("bundle data and manifest disagree");
  }
  for (int i = 0; i < bundle->manifest.tensors_size(); ++i) {
    TensorSpec* spec = bundle->manifest.mutable_tensors(i);
    absl::StatusOr<uint64_t> size = TensorByteSize(*spec);
    if (!size.ok()) return size.status();
    if (*size != bundle->data[i].size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor ", DescribeSpec(*spec), " holds ",
                       bundle->data[i].size(), " bytes, expected ", *size));
    }
    spec->set_sha256(Sha256::Of(bundle->data[i]));
  }
  return absl::OkStatus();
}

absl::Status BundleSource::Read(int index, uint64_t offset, size_t size,
                                char* out) {
  const std::string& data = bundle_->data.at(index);
  if (offset + size > data.size()) {
    return absl::OutOfRangeError("read past the end of a tensor");
  }
  std::memcpy(out, data.data() + offset, size);
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Model files.

absl::StatusOr<std::unique_ptr<ModelFileReader>> ModelFileReader::Open(
    const std::string& path) {
  std::unique_ptr<ModelFileReader> reader(new ModelFileReader);
  reader->path_ = path;
  reader->file_ = std::fopen(path.c_str(), "rb");
  if (reader->file_ == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open model file ", path));
  }
  auto corrupt = [&](absl::string_view why) {
    return absl::DataLossError(
        absl::StrCat("model file ", path, " is damaged: ", why));
  };
  if (std::fseek(reader->file_, 0, SEEK_END) != 0) return corrupt("seek");
  long end = std::ftell(reader->file_);
  if (end < static_cast<long>(kMagicSize + 8)) return corrupt("too short");
  char trailer[kMagicSize + 8];
  std::fseek(reader->file_, end - static_cast<long>(sizeof(trailer)), SEEK_SET);
  if (std::fread(trailer, 1, sizeof(trailer), reader->file_) !=
      sizeof(trailer)) {
    return corrupt("cannot read trailer");
  }
  if (std::memcmp(trailer + 8, kMagic, kMagicSize) != 0) {
    return corrupt("bad magic");
  }
  uint64_t manifest_size;
  std::memcpy(&manifest_size, trailer, 8);
  uint64_t body_end = static_cast<uint64_t>(end) - sizeof(trailer);
  if (manifest_size > body_end) return corrupt("bad manifest size");
  std::string manifest_bytes(manifest_size, '\0');
  std::fseek(reader->file_, static_cast<long>(body_end - manifest_size),
             SEEK_SET);
  if (std::fread(manifest_bytes.data(), 1, manifest_size, reader->file_) !=
      manifest_size) {
    return corrupt("cannot read manifest");
  }
  if (!reader->manifest_.ParseFromString(manifest_bytes)) {
    return corrupt("unparsable manifest");
  }
  uint64_t offset = 0;
  for (const TensorSpec& spec : reader->manifest_.tensors()) {
    absl::StatusOr<uint64_t> size = TensorByteSize(spec);
    if (!size.ok()) return corrupt(size.status().message());
    reader->tensor_offsets_.push_back(offset);
    offset += *size;
  }
  if (offset != body_end - manifest_size) {
    return corrupt("tensor bytes do not match the manifest");
  }
  reader->digest_ = ModelDigest(reader->manifest_);
  return reader;
}

ModelFileReader::~ModelFileReader() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status ModelFileReader::Read(int index, uint64_t offset, size_t size,
                                   char* out) {
  if (index < 0 || index >= manifest_.tensors_size()) {
    return absl::OutOfRangeError("no such tensor");
  }
  if (std::fseek(file_, static_cast<long>(tensor_offsets_[index] + offset),
                 SEEK_SET) != 0 ||
      std::fread(out, 1, size, file_) != size) {
    return absl::DataLossError(absl::StrCat("cannot read ", path_));
  }
  return absl::OkStatus();
}

absl::StatusOr<TensorBundle> ModelFileReader::ReadAll() {
  TensorBundle bundle;
  bundle.manifest = manifest_;
  for (int i = 0; i < manifest_.tensors_size(); ++i) {
    absl::StatusOr<uint64_t> size = TensorByteSize(manifest_.tensors(i));
    if (!size.ok()) return size.status();
    std::string data(*size, '\0');
    if (absl::Status status = Read(i, 0, data.size(), data.data());
        !status.ok()) {
      return status;
    }
    if (Sha256::Of(data) != manifest_.tensors(i).sha256()) {
      return absl::DataLossError(absl::StrCat("model file ", path_,
                                              ": digest mismatch in tensor ",
                                              manifest_.tensors(i).name()));
    }
    bundle.data.push_back(std::move(data));
  }
  return bundle;
}

absl::StatusOr<std::unique_ptr<ModelFileWriter>> ModelFileWriter::Create(
    const std::string& path, ModelManifest layout, ModelFileOptions options) {
  std::unique_ptr<ModelFileWriter> writer(new ModelFileWriter);
  writer->compute_digests_ = !options.digests_verified;
  writer->durable_ = options.durable;
  writer->path_ = path;
  writer->temp_path_ = absl::StrCat(path, ".partial.", ::getpid());
  writer->manifest_ = std::move(layout);
  for (const TensorSpec& spec : writer->manifest_.tensors()) {
    if (absl::StatusOr<uint64_t> size = TensorByteSize(spec); !size.ok()) {
      return size.status();
    }
  }
  writer->file_ = std::fopen(writer->temp_path_.c_str(), "wb");
  if (writer->file_ == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create model file ",
                                                    writer->temp_path_, ": ",
                                                    std::strerror(errno)));
  }
  if (absl::Status status = writer->AdvanceToNonEmptyTensor(); !status.ok()) {
    return status;
  }
  return writer;
}

ModelFileWriter::~ModelFileWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!committed_) ::unlink(temp_path_.c_str());
}

absl::Status ModelFileWriter::AdvanceToNonEmptyTensor() {
  while (current_ < manifest_.tensors_size()) {
    TensorSpec* spec = manifest_.mutable_tensors(current_);
    uint64_t size = *TensorByteSize(*spec);
    if (!sha_) sha_ = std::make_unique<Sha256>();
    if (written_in_current_ < size) return absl::OkStatus();
    std::string digest = sha_->Finish();
    if (compute_digests_) spec->set_sha256(digest);
    sha_.reset();
    ++current_;
    written_in_current_ = 0;
  }
  return absl::OkStatus();
}

absl::Status ModelFileWriter::Append(absl::string_view bytes) {
  while (!bytes.empty()) {
    if (current_ >= manifest_.tensors_size()) {
      return absl::InvalidArgumentError("more bytes than the model holds");
    }
    uint64_t size = *TensorByteSize(manifest_.tensors(current_));
    size_t take = static_cast<size_t>(
        std::min<uint64_t>(bytes.size(), size - written_in_current_));
    if (std::fwrite(bytes.data(), 1, take, file_) != take) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "cannot write model file ", temp_path_, ": ", std::strerror(errno)));
    }
    if (compute_digests_) sha_->Update(bytes.data(), take);
    written_in_current_ += take;
    bytes.remove_prefix(take);
    if (absl::Status status = AdvanceToNonEmptyTensor(); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ModelFileWriter::Commit() {
  if (current_ != manifest_.tensors_size()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model file incomplete: stopped in tensor ", current_));
  }
  std::string manifest_bytes = manifest_.SerializeAsString();
  uint64_t manifest_size = manifest_bytes.size();
  bool ok = std::fwrite(manifest_bytes.data(), 1, manifest_bytes.size(),
                        file_) == manifest_bytes.size() &&
            std::fwrite(&manifest_size, 1, 8, file_) == 8 &&
            std::fwrite(kMagic, 1, kMagicSize, file_) == kMagicSize &&
            std::fflush(file_) == 0;
  int close_rc = std::fclose(file_);
  file_ = nullptr;
  if (!ok || close_rc != 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot write model file ", temp_path_, ": ", std::strerror(errno)));
  }
  if (durable_) {
    // Two fsyncs (the bytes, then the rename): a committed round's model is
    // durable before the round record that names it is saved.
    if (absl::Status status = SyncAndRename(temp_path_, path_); !status.ok()) {
      return status;
    }
  } else if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot rename to ", path_, ": ", std::strerror(errno)));
  }
  committed_ = true;
  return ModelDigest(manifest_);
}

absl::StatusOr<std::string> WriteModelFile(const std::string& path,
                                           const TensorBundle& bundle) {
  absl::StatusOr<std::unique_ptr<ModelFileWriter>> writer =
      ModelFileWriter::Create(path, bundle.manifest);
  if (!writer.ok()) return writer.status();
  for (const std::string& data : bundle.data) {
    if (absl::Status status = (*writer)->Append(data); !status.ok()) {
      return status;
    }
  }
  return (*writer)->Commit();
}

// ---------------------------------------------------------------------------
// Wire chunks.

ModelChunker::ModelChunker(TensorSource* source, size_t slice_bytes)
    : source_(source), slice_bytes_(slice_bytes) {}

absl::StatusOr<bool> ModelChunker::Next(ModelChunk* chunk) {
  chunk->Clear();
  if (!manifest_sent_) {
    *chunk->mutable_manifest() = source_->manifest();
    manifest_sent_ = true;
    return true;
  }
  const ModelManifest& manifest = source_->manifest();
  while (index_ < manifest.tensors_size()) {
    absl::StatusOr<uint64_t> size = TensorByteSize(manifest.tensors(index_));
    if (!size.ok()) return size.status();
    if (offset_ < *size) {
      // Slices stay whole elements so the receiver can check values slice by
      // slice.
      size_t element = *DTypeSize(manifest.tensors(index_).dtype());
      size_t take = static_cast<size_t>(std::min<uint64_t>(
          *size - offset_, slice_bytes_ / element * element));
      TensorSlice* slice = chunk->mutable_slice();
      slice->set_tensor_index(index_);
      slice->set_offset(offset_);
      std::string* data = slice->mutable_data();
      data->resize(take);
      if (absl::Status status =
              source_->Read(index_, offset_, take, data->data());
          !status.ok()) {
        return status;
      }
      offset_ += take;
      return true;
    }
    ++index_;
    offset_ = 0;
  }
  return false;
}

ChunkAssembler::ChunkAssembler(Options options, ManifestSink on_manifest,
                               SliceSink on_slice)
    : options_(options),
      on_manifest_(std::move(on_manifest)),
      on_slice_(std::move(on_slice)) {}

absl::Status ChunkAssembler::Accept(const ModelChunk& chunk) {
  switch (chunk.payload_case()) {
    case ModelChunk::kManifest:
      return AcceptManifest(chunk.manifest());
    case ModelChunk::kSlice:
      return AcceptSlice(chunk.slice());
    default:
      return absl::InvalidArgumentError("empty model chunk");
  }
}

absl::Status ChunkAssembler::AcceptManifest(const ModelManifest& manifest) {
  if (has_manifest_) return absl::InvalidArgumentError("second manifest");
  uint64_t total = 0;
  std::set<std::string> names;
  for (const TensorSpec& spec : manifest.tensors()) {
    absl::StatusOr<uint64_t> size = TensorByteSize(spec);
    if (!size.ok()) return size.status();
    if (!names.insert(spec.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor name '", spec.name(), "' appears twice"));
    }
    if (spec.sha256().size() != 32) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", spec.name(), "' has no SHA-256 digest"));
    }
    total += *size;
    if (total > options_.max_total_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "model announces more than ", options_.max_total_bytes, " bytes"));
    }
    sizes_.push_back(*size);
  }
  if (options_.expected_layout != nullptr) {
    if (absl::Status status =
            CheckSameLayout(*options_.expected_layout, manifest);
        !status.ok()) {
      return status;
    }
  }
  manifest_ = manifest;
  has_manifest_ = true;
  if (on_manifest_) {
    if (absl::Status status = on_manifest_(manifest_); !status.ok()) {
      return status;
    }
  }
  return SkipEmptyTensors();
}

absl::Status ChunkAssembler::SkipEmptyTensors() {
  while (current_ < manifest_.tensors_size()) {
    if (!sha_) sha_ = std::make_unique<Sha256>();
    if (received_in_current_ < sizes_[current_]) return absl::OkStatus();
    std::string digest = sha_->Finish();
    sha_.reset();
    if (digest != manifest_.tensors(current_).sha256()) {
      return absl::DataLossError(
          absl::StrCat("digest mismatch in tensor '",
                       manifest_.tensors(current_).name(), "'"));
    }
    ++current_;
    received_in_current_ = 0;
  }
  return absl::OkStatus();
}

absl::Status ChunkAssembler::AcceptSlice(const TensorSlice& slice) {
  if (!has_manifest_) {
    return absl::InvalidArgumentError("tensor data before the manifest");
  }
  if (current_ >= manifest_.tensors_size()) {
    return absl::InvalidArgumentError("tensor data after the last tensor");
  }
  if (static_cast<int>(slice.tensor_index()) != current_ ||
      slice.offset() != received_in_current_) {
    return absl::InvalidArgumentError(
        absl::StrCat("out-of-order slice: got tensor ", slice.tensor_index(),
                     " offset ", slice.offset(), ", expected tensor ", current_,
                     " offset ", received_in_current_));
  }
  const TensorSpec& spec = manifest_.tensors(current_);
  size_t element = *DTypeSize(spec.dtype());
  if (slice.data().empty() || slice.data().size() % element != 0 ||
      slice.data().size() > sizes_[current_] - received_in_current_) {
    return absl::InvalidArgumentError(
        absl::StrCat("slice of ", slice.data().size(),
                     " bytes does not fit tensor '", spec.name(), "'"));
  }
  if (options_.reject_non_finite && HasNonFinite(spec.dtype(), slice.data())) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", spec.name(), "' holds NaN or infinity"));
  }
  sha_->Update(slice.data());
  received_in_current_ += slice.data().size();
  bytes_received_ += slice.data().size();
  if (on_slice_) {
    if (absl::Status status = on_slice_(current_, slice.data()); !status.ok()) {
      return status;
    }
  }
  return SkipEmptyTensors();
}

absl::StatusOr<std::string> ChunkAssembler::Finish() {
  if (!has_manifest_) return absl::InvalidArgumentError("no model was sent");
  if (current_ != manifest_.tensors_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model incomplete: tensor '", manifest_.tensors(current_).name(),
        "' has ", received_in_current_, " of ", sizes_[current_], " bytes"));
  }
  return ModelDigest(manifest_);
}

BundleAssembler::BundleAssembler(ChunkAssembler::Options options)
    : assembler_(
          options,
          [this](const ModelManifest& manifest) {
            bundle_.manifest = manifest;
            bundle_.data.resize(manifest.tensors_size());
            for (int i = 0; i < manifest.tensors_size(); ++i) {
              bundle_.data[i].reserve(*TensorByteSize(manifest.tensors(i)));
            }
            return absl::OkStatus();
          },
          [this](int index, absl::string_view bytes) {
            bundle_.data[index].append(bytes.data(), bytes.size());
            return absl::OkStatus();
          }) {}

absl::StatusOr<TensorBundle> BundleAssembler::Finish() {
  absl::StatusOr<std::string> digest = assembler_.Finish();
  if (!digest.ok()) return digest.status();
  return std::move(bundle_);
}

bool HasNonFinite(DType dtype, absl::string_view bytes) {
  if (!IsFloating(dtype)) return false;
  switch (dtype) {
    case FLOAT32: {
      for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
        float value;
        std::memcpy(&value, bytes.data() + i, 4);
        if (!std::isfinite(value)) return true;
      }
      return false;
    }
    case FLOAT64: {
      for (size_t i = 0; i + 8 <= bytes.size(); i += 8) {
        double value;
        std::memcpy(&value, bytes.data() + i, 8);
        if (!std::isfinite(value)) return true;
      }
      return false;
    }
    case FLOAT16:
      return HalfHasNonFinite(bytes, 0x7C00);
    case BFLOAT16:
      return HalfHasNonFinite(bytes, 0x7F80);
    default:
      return false;
  }
}

}  // namespace echofed
