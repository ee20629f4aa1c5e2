#include "models/checkpoint.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "common/files.h"
#include "gtest/gtest.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "models/torchscript.h"
#include "proto/plan.pb.h"
#include "tests/testing/fixtures.h"
#include "torch/csrc/jit/serialization/pickle.h"
#include "torch/script.h"

namespace echofed {
namespace {

using ::echofed::testing::TempDir;

std::shared_ptr<ImageClassifierImpl> NewModel(const std::string& name,
                                              uint64_t seed = 1) {
  torch::manual_seed(seed);
  return *CreateClassifier({name, 3});
}

// A model whose running statistics and batch counters have moved.
std::shared_ptr<ImageClassifierImpl> TrainedModel(const std::string& name) {
  auto model = NewModel(name);
  model->train();
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 2; ++i) model->forward(torch::randn({4, 1, 64, 64}));
  return model;
}

void ExpectSameBundle(const TensorBundle& expected,
                      const TensorBundle& actual) {
  EXPECT_EQ(expected.manifest.SerializeAsString(),
            actual.manifest.SerializeAsString())
      << expected.manifest.DebugString() << "\nvs\n"
      << actual.manifest.DebugString();
  ASSERT_EQ(expected.data.size(), actual.data.size());
  for (size_t i = 0; i < expected.data.size(); ++i) {
    EXPECT_TRUE(expected.data[i] == actual.data[i])
        << expected.manifest.tensors(static_cast<int>(i)).name();
  }
}

TEST(CheckpointTest, SaveLoadRoundTripIsExact) {
  TempDir dir;
  absl::StatusOr<TensorBundle> state =
      ExportState(*TrainedModel("resnet_small"), "resnet_small");
  ASSERT_TRUE(state.ok()) << state.status();
  const std::string path = dir.Join("model.pt");
  ASSERT_TRUE(SaveTorchStateDict(*state, path).ok());
  absl::StatusOr<TensorBundle> loaded = LoadTorchStateDict(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // Model name, buffer flags and digests included.
  ExpectSameBundle(*state, *loaded);
  EXPECT_EQ(ModelDigest(state->manifest), ModelDigest(loaded->manifest));

  auto target = NewModel("resnet_small", /*seed=*/2);
  ASSERT_TRUE(ImportState(*loaded, *target).ok());
  absl::StatusOr<TensorBundle> again = ExportState(*target, "resnet_small");
  ExpectSameBundle(*state, *again);
}

TEST(CheckpointTest, EveryExchangeDTypeAndShapeRoundTrips) {
  TensorBundle bundle;
  bundle.manifest.set_model_name("mixed");
  auto add = [&bundle](const std::string& name, DType dtype,
                       std::vector<int64_t> shape, bool buffer) {
    TensorSpec* spec = bundle.manifest.add_tensors();
    spec->set_name(name);
    spec->set_dtype(dtype);
    spec->set_buffer(buffer);
    for (int64_t dim : shape) spec->add_shape(dim);
    std::string bytes(*TensorByteSize(*spec), '\0');
    for (size_t i = 0; i < bytes.size(); ++i) {
      bytes[i] = static_cast<char>(i * 37 + name.size());
    }
    bundle.data.push_back(bytes);
  };
  add("a.float32", FLOAT32, {2, 3}, false);
  add("b.float64", FLOAT64, {5}, false);
  add("c.float16", FLOAT16, {1, 1, 3}, false);
  add("d.bfloat16", BFLOAT16, {4}, false);
  add("e.count", INT64, {}, true);
  add("f.empty", FLOAT32, {0, 7}, true);
  ASSERT_TRUE(SealBundle(&bundle).ok());
  TempDir dir;
  ASSERT_TRUE(SaveTorchStateDict(bundle, dir.Join("mixed.pt")).ok());
  absl::StatusOr<TensorBundle> loaded =
      LoadTorchStateDict(dir.Join("mixed.pt"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ExpectSameBundle(bundle, *loaded);
}

TEST(CheckpointTest, PlainDictWithoutManifestLoads) {
  // What Python's torch.save(dict(model.state_dict()), path) writes.
  TempDir dir;
  c10::Dict<std::string, at::Tensor> state;
  state.insert("layer.weight", torch::arange(6, torch::kFloat32).view({2, 3}));
  state.insert("layer.bias", torch::ones({2}, torch::kFloat64));
  std::vector<char> bytes = torch::jit::pickle_save(state);
  ASSERT_TRUE(WriteFileAtomically(dir.Join("plain.pt"),
                                  std::string(bytes.begin(), bytes.end()))
                  .ok());
  absl::StatusOr<TensorBundle> loaded =
      LoadTorchStateDict(dir.Join("plain.pt"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->manifest.tensors_size(), 2);
  EXPECT_EQ(loaded->manifest.tensors(0).name(), "layer.weight");
  EXPECT_EQ(loaded->manifest.tensors(0).dtype(), FLOAT32);
  EXPECT_EQ(loaded->manifest.tensors(1).dtype(), FLOAT64);
  EXPECT_EQ(loaded->manifest.model_name(), "");
  EXPECT_EQ(loaded->manifest.tensors(0).sha256().size(), 32u);
  float values[6];
  std::memcpy(values, loaded->data[0].data(), sizeof(values));
  EXPECT_EQ(values[5], 5.0f);
}

TEST(CheckpointTest, BadFilesAreRefused) {
  TempDir dir;
  EXPECT_EQ(LoadTorchStateDict(dir.Join("missing.pt")).status().code(),
            absl::StatusCode::kNotFound);

  ASSERT_TRUE(WriteFileAtomically(dir.Join("junk.pt"), "not a zip").ok());
  EXPECT_EQ(LoadTorchStateDict(dir.Join("junk.pt")).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::vector<char> tensor = torch::jit::pickle_save(torch::ones({2}));
  ASSERT_TRUE(WriteFileAtomically(dir.Join("tensor.pt"),
                                  std::string(tensor.begin(), tensor.end()))
                  .ok());
  absl::Status status = LoadTorchStateDict(dir.Join("tensor.pt")).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("not a state dict"), std::string::npos)
      << status;

  TensorBundle short_bytes = testing::MakeBundle("m", 1.0f);
  short_bytes.data[0].pop_back();
  EXPECT_EQ(SaveTorchStateDict(short_bytes, dir.Join("short.pt")).code(),
            absl::StatusCode::kInvalidArgument);
}

class TorchScriptTest : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchScriptTest, ExportedModelComputesTheSameOutputs) {
  TempDir dir;
  auto model = TrainedModel(GetParam());
  model->eval();
  const std::string path = dir.Join("model.torchscript.pt");
  absl::Status exported = ExportTorchScript(*model, path);
  ASSERT_TRUE(exported.ok()) << exported;

  torch::jit::Module script = torch::jit::load(path);
  torch::Tensor images = torch::randn({3, 1, 64, 64});
  torch::NoGradGuard no_grad;
  torch::Tensor expected = model->forward(images);
  torch::Tensor actual = script.forward({images}).toTensor();
  EXPECT_TRUE(torch::allclose(expected, actual, /*rtol=*/1e-5, /*atol=*/1e-6))
      << expected << actual;

  // Same names and values as the exchange state.
  absl::StatusOr<TensorBundle> state = ExportState(*model, GetParam());
  int matched = 0;
  for (const auto& item : script.named_parameters()) {
    EXPECT_TRUE(item.value.equal(model->named_parameters()[item.name]))
        << item.name;
    ++matched;
  }
  for (const auto& item : script.named_buffers()) {
    EXPECT_TRUE(item.value.equal(model->named_buffers()[item.name]))
        << item.name;
    ++matched;
  }
  EXPECT_EQ(matched, state->manifest.tensors_size());

  // Training mode reaches every layer: dropout differs between calls and
  // batch-norm counters move, as in the C++ model.
  auto counters = [&script] {
    int64_t total = 0;
    for (const auto& item : script.named_buffers()) {
      if (item.name.find("num_batches_tracked") != std::string::npos) {
        total += item.value.item<int64_t>();
      }
    }
    return total;
  };
  const int64_t before = counters();
  script.train();
  torch::Tensor a = script.forward({images}).toTensor();
  torch::Tensor b = script.forward({images}).toTensor();
  EXPECT_FALSE(torch::equal(a, b));
  EXPECT_GT(counters(), before);
}

INSTANTIATE_TEST_SUITE_P(Models, TorchScriptTest,
                         ::testing::Values("small_cnn", "resnet_small",
                                           "resnet18"));

constexpr int kClinicalFeatures = 14;

// [rows, 14] clinical values with NaN gaps, column 12 constant (no
// variance) and column 13 missing throughout (no statistics).
torch::Tensor ClinicalWithGaps(int64_t rows) {
  torch::Tensor clinical = torch::randn({rows, kClinicalFeatures}) * 3 + 1;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  clinical.masked_fill_(torch::rand({rows, kClinicalFeatures}) < 0.25, nan);
  clinical.select(1, 12).fill_(2.5);
  clinical.select(1, 13).fill_(nan);
  return clinical;
}

class FusionTorchScriptTest : public ::testing::TestWithParam<std::string> {};

TEST_P(FusionTorchScriptTest, ExportedModelComputesTheSameOutputs) {
  torch::manual_seed(1);
  ModelOptions options{GetParam(), 3};
  options.heads = {Plan::SUBTYPE, Plan::HIGH_RISK, Plan::PROGNOSIS};
  options.clinical_features = kClinicalFeatures;
  absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> created =
      CreateClassifier(options);
  ASSERT_TRUE(created.ok()) << created.status();
  std::shared_ptr<ImageClassifierImpl> model = *created;
  auto* fusion = dynamic_cast<FusionModelImpl*>(model.get());
  ASSERT_NE(fusion, nullptr);
  fusion->clinical_encoder()->SetLocalStatistics(ClinicalWithGaps(40), 40);
  {
    // Moved batch-norm statistics.
    torch::NoGradGuard no_grad;
    model->train();
    for (int i = 0; i < 2; ++i) {
      model->Predict(torch::randn({4, 1, 64, 64}), ClinicalWithGaps(4));
    }
  }
  model->eval();

  TempDir dir;
  const std::string path = dir.Join("fusion.torchscript.pt");
  absl::Status exported = ExportTorchScript(*model, path);
  ASSERT_TRUE(exported.ok()) << exported;
  torch::jit::Module script = torch::jit::load(path);

  torch::Tensor images = torch::randn({5, 1, 64, 64});
  torch::Tensor clinical = ClinicalWithGaps(5);
  // Far outside the statistics: clipped at 6 standard deviations.
  clinical[0][0] = 1e4;
  clinical[1][1] = -1e4;
  torch::NoGradGuard no_grad;
  ModelOutputs expected = model->Predict(images, clinical);
  c10::Dict<c10::IValue, c10::IValue> actual =
      script.forward({images, clinical}).toGenericDict();
  const std::map<std::string, torch::Tensor> want = {
      {"subtype", expected.subtype},
      {"high_risk", expected.heads.at(Plan::HIGH_RISK)},
      {"prognosis", expected.heads.at(Plan::PROGNOSIS)}};
  EXPECT_EQ(actual.size(), want.size());
  for (const auto& [name, tensor] : want) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(actual.contains(name));
    torch::Tensor got = actual.at(name).toTensor();
    ASSERT_EQ(got.sizes(), tensor.sizes());
    EXPECT_LT((got - tensor).abs().max().item<float>(), 1e-5) << tensor << got;
  }
  EXPECT_EQ(want.at("subtype").sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(want.at("prognosis").sizes(), (std::vector<int64_t>{5}));

  // Same names and values as the exchange state, float64 statistics
  // included.
  absl::StatusOr<TensorBundle> state = ExportState(*model, GetParam());
  ASSERT_TRUE(state.ok()) << state.status();
  int matched = 0;
  for (const auto& item : script.named_parameters()) {
    EXPECT_TRUE(item.value.equal(model->named_parameters()[item.name]))
        << item.name;
    ++matched;
  }
  for (const auto& item : script.named_buffers()) {
    EXPECT_TRUE(item.value.equal(model->named_buffers()[item.name]))
        << item.name;
    ++matched;
  }
  EXPECT_EQ(matched, state->manifest.tensors_size());

  // Training mode reaches the fusion dropout.
  script.train();
  torch::Tensor a = script.forward({images, clinical})
                        .toGenericDict()
                        .at("subtype")
                        .toTensor();
  torch::Tensor b = script.forward({images, clinical})
                        .toGenericDict()
                        .at("subtype")
                        .toTensor();
  EXPECT_FALSE(torch::equal(a, b));
}

INSTANTIATE_TEST_SUITE_P(Models, FusionTorchScriptTest,
                         ::testing::Values("resnet_small_fusion",
                                           "resnet_small_gated_fusion",
                                           "resnet18_fusion",
                                           "resnet18_gated_fusion"));

TEST(TorchScriptExportTest, UnknownModulesAreUnimplemented) {
  torch::manual_seed(1);
  auto blob = *CreateClassifier({"bench_blob_1000", 3});
  TempDir dir;
  absl::Status status = ExportTorchScript(*blob, dir.Join("blob.pt"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
}

}  // namespace
}  // namespace echofed
