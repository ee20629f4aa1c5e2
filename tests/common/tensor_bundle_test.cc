#include "common/tensor_bundle.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "common/chunk_stream.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::MakeBundle;
using testing::TempDir;

std::vector<ModelChunk> Chunk(const TensorBundle& bundle, size_t slice_bytes) {
  BundleSource source(&bundle);
  ModelChunker chunker(&source, slice_bytes);
  std::vector<ModelChunk> chunks;
  ModelChunk chunk;
  while (*chunker.Next(&chunk)) chunks.push_back(chunk);
  return chunks;
}

TEST(TensorBundleTest, ChunkedRoundTripKeepsEveryByte) {
  TensorBundle bundle = MakeBundle("m", 1.5f, 4, 1000);
  // 4000-byte tensors in 1 KiB slices: several slices per tensor.
  std::vector<ModelChunk> chunks = Chunk(bundle, 1024);
  EXPECT_GT(chunks.size(), 10u);
  BundleAssembler assembler;
  for (const ModelChunk& chunk : chunks)
    ASSERT_TRUE(assembler.Accept(chunk).ok());
  absl::StatusOr<TensorBundle> received = assembler.Finish();
  ASSERT_TRUE(received.ok()) << received.status();
  EXPECT_EQ(received->data, bundle.data);
  EXPECT_EQ(ModelDigest(received->manifest), ModelDigest(bundle.manifest));
}

std::string Bytes(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

// The coordinator serves a round's model from one mapping of its file:
// every download must get exactly the bytes of the chunks a ModelChunker
// cuts, serialized (the agent parses them as ModelChunk).
TEST(TensorBundleTest, MappedModelSendsTheChunkerBytes) {
  // Odd sizes and an int64 tensor: slices of several sizes and offsets,
  // index 0 and offset 0 left out of the encoding as protobuf does.
  TensorBundle bundle = MakeBundle("m", 0.5f, 3, 1000);
  std::vector<ModelChunk> expected = Chunk(bundle, 1024);
  TempDir dir;
  std::string path = dir.Join("shared.efm");
  ASSERT_TRUE(WriteModelFile(path, bundle).ok());
  absl::StatusOr<std::shared_ptr<const MappedModel>> model =
      MappedModel::Open(path, 1024);
  ASSERT_TRUE(model.ok()) << model.status();
  ASSERT_EQ((*model)->chunk_count(), expected.size());
  MappedChunkStream first(*model), second(*model);
  SourceChunkStream from_file(*ModelFileReader::Open(path), 1024);
  // One buffer per stream, reused as a download reuses its chunk.
  grpc::ByteBuffer a, b, c;
  for (const ModelChunk& want : expected) {
    ASSERT_TRUE(*first.Next(&a));
    ASSERT_TRUE(*second.Next(&b));
    ASSERT_TRUE(*from_file.Next(&c));
    EXPECT_EQ(Bytes(a), want.SerializeAsString());
    EXPECT_EQ(Bytes(b), want.SerializeAsString());
    EXPECT_EQ(Bytes(c), want.SerializeAsString());
  }
  grpc::ByteBuffer end;
  EXPECT_FALSE(*first.Next(&end));
  EXPECT_FALSE(*from_file.Next(&end));
  // A chunk in flight keeps the mapping alive after every owner let go.
  grpc::ByteBuffer last = (*model)->Chunk((*model)->chunk_count() - 1);
  model->reset();
  first = MappedChunkStream(nullptr);
  second = MappedChunkStream(nullptr);
  EXPECT_EQ(Bytes(last), expected.back().SerializeAsString());
}

TEST(TensorBundleTest, SlicesStayWholeElements) {
  TensorBundle bundle = MakeBundle("m", 1.0f, 1, 100);
  for (const ModelChunk& chunk : Chunk(bundle, 10)) {
    if (chunk.has_slice()) EXPECT_EQ(chunk.slice().data().size() % 4, 0u);
  }
}

TEST(TensorBundleTest, DigestMismatchIsDataLoss) {
  TensorBundle bundle = MakeBundle("m", 2.0f);
  std::vector<ModelChunk> chunks = Chunk(bundle, 1 << 20);
  // Flip one byte of the first tensor in transit.
  chunks[1].mutable_slice()->mutable_data()->at(0) ^= 0x01;
  BundleAssembler assembler;
  ASSERT_TRUE(assembler.Accept(chunks[0]).ok());
  absl::Status status = assembler.Accept(chunks[1]);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
}

TEST(TensorBundleTest, OutOfOrderSliceIsRefused) {
  TensorBundle bundle = MakeBundle("m", 2.0f);
  std::vector<ModelChunk> chunks = Chunk(bundle, 1 << 20);
  BundleAssembler assembler;
  ASSERT_TRUE(assembler.Accept(chunks[0]).ok());
  EXPECT_EQ(assembler.Accept(chunks[2]).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorBundleTest, DataBeforeManifestIsRefused) {
  TensorBundle bundle = MakeBundle("m", 2.0f);
  std::vector<ModelChunk> chunks = Chunk(bundle, 1 << 20);
  BundleAssembler assembler;
  EXPECT_EQ(assembler.Accept(chunks[1]).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorBundleTest, IncompleteModelFailsAtFinish) {
  TensorBundle bundle = MakeBundle("m", 2.0f);
  std::vector<ModelChunk> chunks = Chunk(bundle, 1 << 20);
  BundleAssembler assembler;
  for (size_t i = 0; i + 1 < chunks.size(); ++i) {
    ASSERT_TRUE(assembler.Accept(chunks[i]).ok());
  }
  EXPECT_EQ(assembler.Finish().status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorBundleTest, NonFiniteValuesAreRefused) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    TensorBundle bundle = MakeBundle("m", 1.0f);
    std::memcpy(bundle.data[1].data() + 8, &bad, 4);
    ASSERT_TRUE(SealBundle(&bundle).ok());
    BundleAssembler assembler;
    absl::Status status;
    for (const ModelChunk& chunk : Chunk(bundle, 1 << 20)) {
      status = assembler.Accept(chunk);
      if (!status.ok()) break;
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(status.message().find("NaN or infinity"), std::string::npos);
  }
}

TEST(TensorBundleTest, HalfPrecisionNonFiniteDetected) {
  uint16_t half_inf = 0x7C00, half_one = 0x3C00, bf16_nan = 0x7FC0;
  EXPECT_TRUE(HasNonFinite(
      FLOAT16, absl::string_view(reinterpret_cast<char*>(&half_inf), 2)));
  EXPECT_FALSE(HasNonFinite(
      FLOAT16, absl::string_view(reinterpret_cast<char*>(&half_one), 2)));
  EXPECT_TRUE(HasNonFinite(
      BFLOAT16, absl::string_view(reinterpret_cast<char*>(&bf16_nan), 2)));
}

TEST(TensorBundleTest, ExpectedLayoutIsEnforced) {
  TensorBundle expected = MakeBundle("m", 1.0f, 3, 10);
  for (TensorBundle other :
       {MakeBundle("m", 1.0f, 3, 11), MakeBundle("m", 1.0f, 2, 10)}) {
    ChunkAssembler::Options options;
    options.expected_layout = &expected.manifest;
    BundleAssembler assembler(options);
    absl::Status status = assembler.Accept(Chunk(other, 1 << 20)[0]);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  }
  // Same names and shapes, other dtype.
  TensorBundle retyped = MakeBundle("m", 1.0f, 3, 10);
  retyped.manifest.mutable_tensors(0)->set_dtype(INT64);
  retyped.manifest.mutable_tensors(0)->set_shape(0, 5);
  ASSERT_TRUE(SealBundle(&retyped).ok());
  ChunkAssembler::Options options;
  options.expected_layout = &expected.manifest;
  BundleAssembler assembler(options);
  EXPECT_FALSE(assembler.Accept(Chunk(retyped, 1 << 20)[0]).ok());
}

TEST(TensorBundleTest, HostileManifestsAreRefused) {
  ModelManifest huge;
  TensorSpec* spec = huge.add_tensors();
  spec->set_name("w");
  spec->set_dtype(FLOAT32);
  spec->add_shape(int64_t{1} << 40);
  spec->set_sha256(std::string(32, 'x'));
  ModelChunk chunk;
  *chunk.mutable_manifest() = huge;
  BundleAssembler assembler;
  EXPECT_EQ(assembler.Accept(chunk).code(),
            absl::StatusCode::kResourceExhausted);

  ModelManifest duplicate;
  for (int i = 0; i < 2; ++i) {
    TensorSpec* twin = duplicate.add_tensors();
    twin->set_name("same");
    twin->set_dtype(FLOAT32);
    twin->add_shape(1);
    twin->set_sha256(std::string(32, 'x'));
  }
  *chunk.mutable_manifest() = duplicate;
  BundleAssembler second;
  EXPECT_EQ(second.Accept(chunk).code(), absl::StatusCode::kInvalidArgument);

  ModelManifest negative;
  TensorSpec* bad = negative.add_tensors();
  bad->set_name("w");
  bad->set_dtype(FLOAT32);
  bad->add_shape(-4);
  bad->set_sha256(std::string(32, 'x'));
  *chunk.mutable_manifest() = negative;
  BundleAssembler third;
  EXPECT_EQ(third.Accept(chunk).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ModelFileTest, WriteReadRoundTrip) {
  TempDir dir;
  TensorBundle bundle = MakeBundle("m", 3.0f, 5, 333);
  std::string path = dir.Join("model.efm");
  absl::StatusOr<std::string> digest = WriteModelFile(path, bundle);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, ModelDigest(bundle.manifest));
  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      ModelFileReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->digest(), *digest);
  absl::StatusOr<TensorBundle> read = (*reader)->ReadAll();
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->data, bundle.data);
}

TEST(ModelFileTest, TruncatedOrCorruptFileIsDetected) {
  TempDir dir;
  TensorBundle bundle = MakeBundle("m", 3.0f);
  std::string path = dir.Join("model.efm");
  ASSERT_TRUE(WriteModelFile(path, bundle).ok());
  std::string content = *ReadFileToString(path);

  ASSERT_TRUE(
      WriteFileAtomically(path, content.substr(0, content.size() - 3)).ok());
  EXPECT_EQ(ModelFileReader::Open(path).status().code(),
            absl::StatusCode::kDataLoss);

  std::string flipped = content;
  flipped[2] ^= 0x40;  // inside the first tensor
  ASSERT_TRUE(WriteFileAtomically(path, flipped).ok());
  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      ModelFileReader::Open(path);
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->ReadAll().status().code(), absl::StatusCode::kDataLoss);
}

TEST(ModelFileTest, UncommittedWriterLeavesNoFile) {
  TempDir dir;
  TensorBundle bundle = MakeBundle("m", 3.0f);
  std::string path = dir.Join("model.efm");
  {
    absl::StatusOr<std::unique_ptr<ModelFileWriter>> writer =
        ModelFileWriter::Create(path, bundle.manifest);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(bundle.data[0]).ok());
    EXPECT_FALSE((*writer)->Commit().ok());  // incomplete
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace echofed
