#include "models/state_exchange.h"

#include "gtest/gtest.h"
#include "models/classifier.h"

namespace echofed {
namespace {

std::shared_ptr<ImageClassifierImpl> NewModel(uint64_t seed, int classes = 3) {
  torch::manual_seed(seed);
  return *CreateClassifier({"small_cnn", classes});
}

TEST(StateExchangeTest, ExportImportRoundTripIsExact) {
  auto source = NewModel(1);
  auto target = NewModel(2);
  absl::StatusOr<TensorBundle> state = ExportState(*source, "small_cnn");
  ASSERT_TRUE(state.ok()) << state.status();
  // Parameters and BatchNorm buffers, including the int64 step counter.
  bool has_counter = false;
  for (const TensorSpec& spec : state->manifest.tensors()) {
    if (spec.dtype() == INT64) has_counter = true;
  }
  EXPECT_TRUE(has_counter);
  ASSERT_TRUE(ImportState(*state, *target).ok());
  torch::Tensor input = torch::randn({2, 1, 64, 64});
  source->eval();
  target->eval();
  EXPECT_TRUE(torch::equal(source->forward(input), target->forward(input)));
}

TEST(StateExchangeTest, SameSeedGivesSameInitialModel) {
  absl::StatusOr<TensorBundle> a = ExportState(*NewModel(7), "small_cnn");
  absl::StatusOr<TensorBundle> b = ExportState(*NewModel(7), "small_cnn");
  EXPECT_EQ(ModelDigest(a->manifest), ModelDigest(b->manifest));
}

TEST(StateExchangeTest, MismatchedStateIsRefused) {
  absl::StatusOr<TensorBundle> three =
      ExportState(*NewModel(1, 3), "small_cnn");
  auto two = NewModel(1, 2);
  absl::Status status = ImportState(*three, *two);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("head"), std::string::npos) << status;
}

TEST(StateExchangeTest, UnknownModelNameIsNotFound) {
  EXPECT_EQ(CreateClassifier({"no_such_model", 3}).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace echofed

namespace echofed {
namespace {

TEST(StateExchangeTest, HalfPrecisionWireHalvesFloatTensorsAndLoadsBack) {
  auto source = NewModel(1);
  absl::StatusOr<TensorBundle> full = ExportState(*source, "small_cnn");
  absl::StatusOr<TensorBundle> half =
      ExportState(*source, "small_cnn", FLOAT16);
  ASSERT_TRUE(full.ok() && half.ok());
  size_t full_bytes = 0, half_bytes = 0;
  for (int i = 0; i < full->manifest.tensors_size(); ++i) {
    full_bytes += full->data[i].size();
    half_bytes += half->data[i].size();
    const DType dtype = half->manifest.tensors(i).dtype();
    EXPECT_TRUE(dtype == FLOAT16 || dtype == INT64) << dtype;
  }
  EXPECT_LT(half_bytes, full_bytes * 0.51);
  auto target = NewModel(2);
  ASSERT_TRUE(ImportState(*half, *target).ok());
  torch::Tensor input = torch::randn({2, 1, 64, 64});
  source->eval();
  target->eval();
  // Weights rounded to 11 significant bits: close, not equal.
  EXPECT_TRUE(torch::allclose(source->forward(input), target->forward(input),
                              1e-2, 1e-2));
}

}  // namespace
}  // namespace echofed
