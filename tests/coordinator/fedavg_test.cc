#include "coordinator/fedavg.h"

#include <cmath>
#include <cstring>

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::MakeBundle;
using testing::TempDir;

float FloatAt(const TensorBundle& bundle, int tensor, int index) {
  float value;
  std::memcpy(&value, bundle.data[tensor].data() + 4 * index, 4);
  return value;
}

int64_t IntAt(const TensorBundle& bundle, int tensor) {
  int64_t value;
  std::memcpy(&value, bundle.data[tensor].data(), 8);
  return value;
}

TEST(FedAvgTest, WeightedByUpdateWeight) {
  TensorBundle layout = MakeBundle("m", 0.0f);
  FedAvgAggregator aggregator(layout.manifest);
  TensorBundle a = MakeBundle("m", 1.0f), b = MakeBundle("m", 4.0f);
  BundleSource source_a(&a), source_b(&b);
  ASSERT_TRUE(aggregator.Fold(source_a, 30).ok());
  ASSERT_TRUE(aggregator.Fold(source_b, 10).ok());
  absl::StatusOr<TensorBundle> average = aggregator.Average();
  ASSERT_TRUE(average.ok()) << average.status();
  // (30 * 1 + 10 * 4) / 40 = 1.75
  for (int t = 0; t < 3; ++t) EXPECT_FLOAT_EQ(FloatAt(*average, t, 7), 1.75f);
  // Integer buffers are averaged and rounded: (30 * 1 + 10 * 4) / 40 -> 2.
  EXPECT_EQ(IntAt(*average, 3), 2);
  EXPECT_EQ(aggregator.contributions(), 2);
  EXPECT_DOUBLE_EQ(aggregator.total_weight(), 40);
}

// The first update writes the (never zero-filled) sum: the result has the
// bits of adding it to zeros, negative zero included (0 + -0 = +0).
TEST(FedAvgTest, FirstUpdateLandsAsIfAddedToZeros) {
  TensorBundle layout = MakeBundle("m", 0.0f);
  FedAvgAggregator aggregator(layout.manifest);
  TensorBundle update = MakeBundle("m", -0.0f);
  BundleSource source(&update);
  ASSERT_TRUE(aggregator.Fold(source, 3).ok());
  absl::StatusOr<TensorBundle> average = aggregator.Average();
  ASSERT_TRUE(average.ok()) << average.status();
  EXPECT_FALSE(std::signbit(FloatAt(*average, 0, 0)));
  // A second aggregator, a second round: fresh sums again.
  FedAvgAggregator next(layout.manifest);
  TensorBundle half = MakeBundle("m", 0.5f);
  BundleSource half_source(&half);
  ASSERT_TRUE(next.Fold(half_source, 2).ok());
  EXPECT_FLOAT_EQ(FloatAt(*next.Average(), 2, 5), 0.5f);
}

TEST(FedAvgTest, AverageOfLargeTensorsSpansBlocks) {
  // 600k floats per tensor: several 1 MiB blocks.
  TensorBundle layout = MakeBundle("m", 0.0f, 2, 600000);
  FedAvgAggregator aggregator(layout.manifest);
  TensorBundle a = MakeBundle("m", 2.0f, 2, 600000);
  TensorBundle b = MakeBundle("m", 6.0f, 2, 600000);
  BundleSource source_a(&a), source_b(&b);
  ASSERT_TRUE(aggregator.Fold(source_a, 1).ok());
  ASSERT_TRUE(aggregator.Fold(source_b, 1).ok());
  TempDir dir;
  absl::StatusOr<std::string> digest =
      aggregator.WriteAverage(dir.Join("avg.efm"));
  ASSERT_TRUE(digest.ok()) << digest.status();
  TensorBundle read = *(*ModelFileReader::Open(dir.Join("avg.efm")))->ReadAll();
  EXPECT_FLOAT_EQ(FloatAt(read, 0, 0), 4.0f);
  EXPECT_FLOAT_EQ(FloatAt(read, 1, 599999), 4.0f);
}

TEST(FedAvgTest, MismatchedUpdateIsRefusedAndNotCounted) {
  TensorBundle layout = MakeBundle("m", 0.0f, 3, 10);
  FedAvgAggregator aggregator(layout.manifest);
  TensorBundle wrong = MakeBundle("m", 1.0f, 3, 12);
  BundleSource source(&wrong);
  EXPECT_EQ(aggregator.Fold(source, 5).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(aggregator.contributions(), 0);
  EXPECT_FALSE(aggregator.Average().ok());
}

TEST(FedAvgTest, NonPositiveWeightIsRefused) {
  TensorBundle layout = MakeBundle("m", 0.0f);
  FedAvgAggregator aggregator(layout.manifest);
  BundleSource source(&layout);
  EXPECT_FALSE(aggregator.Fold(source, 0).ok());
  EXPECT_FALSE(aggregator.Fold(source, -3).ok());
}

}  // namespace
}  // namespace echofed
