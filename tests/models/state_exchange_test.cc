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
