#include "coordinator/masked_sum.h"

#include <cmath>
#include <cstring>
#include <random>

#include "common/half.h"
#include "coordinator/fedavg.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

// A model with a float32 weight, a float16 tensor and an integer counter,
// filled with random values.
TensorBundle RandomModel(std::mt19937& random, double scale) {
  std::normal_distribution<float> normal(0.0f, static_cast<float>(scale));
  TensorBundle bundle;
  bundle.manifest.set_model_name("test_model");
  auto add = [&](const std::string& name, DType dtype, int count) {
    TensorSpec* spec = bundle.manifest.add_tensors();
    spec->set_name(name);
    spec->set_dtype(dtype);
    spec->add_shape(count);
    size_t element = *DTypeSize(dtype);
    std::string bytes(count * element, '\0');
    for (int k = 0; k < count; ++k) {
      double value = dtype == INT64 ? std::round(std::fabs(normal(random)) * 50)
                                    : normal(random);
      DoubleToElement(dtype, value, bytes.data() + k * element);
    }
    bundle.data.push_back(std::move(bytes));
  };
  add("conv.weight", FLOAT32, 1000);
  add("head.bias", FLOAT16, 7);
  add("bn.num_batches_tracked", INT64, 1);
  EXPECT_TRUE(SealBundle(&bundle).ok());
  return bundle;
}

double ValueAt(const TensorBundle& bundle, int tensor, int index) {
  DType dtype = bundle.manifest.tensors(tensor).dtype();
  return ElementToDouble(
      dtype, bundle.data[tensor].data() + index * *DTypeSize(dtype));
}

struct Site {
  std::string name;
  MaskingKey key;
  TensorBundle update;
  double weight;
};

std::vector<Site> MakeSites(const TensorBundle& global, std::mt19937& random) {
  std::vector<Site> sites;
  const double weights[] = {120, 35, 300, 8};
  for (int i = 0; i < 4; ++i) {
    // A local model: the global one plus a change.
    TensorBundle local = RandomModel(random, 0.05);
    for (int t = 0; t < 2; ++t) {
      DType dtype = global.manifest.tensors(t).dtype();
      size_t element = *DTypeSize(dtype);
      for (size_t k = 0; k < global.data[t].size() / element; ++k) {
        DoubleToElement(dtype, ValueAt(global, t, k) + ValueAt(local, t, k),
                        local.data[t].data() + k * element);
      }
    }
    EXPECT_TRUE(SealBundle(&local).ok());
    sites.push_back({"site-" + std::to_string(i), *MaskingKey::Generate(),
                     std::move(local), weights[i]});
  }
  return sites;
}

std::vector<TensorBundle> MaskAll(std::vector<Site>& sites,
                                  const TensorBundle& global, int attempt) {
  std::vector<MaskingPeerKey> cohort;
  for (const Site& site : sites) {
    cohort.push_back({site.name, site.key.public_key()});
  }
  std::vector<TensorBundle> masked;
  for (Site& site : sites) {
    absl::StatusOr<UpdateMasker> masker =
        UpdateMasker::Create(site.key, site.name, cohort, "run", 1, attempt, 2);
    EXPECT_TRUE(masker.ok()) << masker.status();
    absl::StatusOr<TensorBundle> bundle =
        masker->Mask(site.update, global, site.weight);
    EXPECT_TRUE(bundle.ok()) << bundle.status();
    masked.push_back(std::move(*bundle));
  }
  return masked;
}

TEST(MaskedSumTest, SumOfTheWholeCohortIsTheFedAvgOfTheUpdates) {
  std::mt19937 random(7);
  TensorBundle global = RandomModel(random, 1.0);
  std::vector<Site> sites = MakeSites(global, random);
  std::vector<TensorBundle> masked = MaskAll(sites, global, 1);

  MaskedSum sum(global.manifest);
  FedAvgAggregator plain(global.manifest);
  double total = 0;
  for (size_t i = 0; i < sites.size(); ++i) {
    BundleSource masked_source(&masked[i]);
    ASSERT_TRUE(sum.Add(masked_source).ok());
    BundleSource plain_source(&sites[i].update);
    ASSERT_TRUE(plain.Fold(plain_source, sites[i].weight).ok());
    total += sites[i].weight;
  }
  EXPECT_EQ(sum.count(), 4);
  BundleSource global_source(&global);
  absl::StatusOr<TensorBundle> secure = sum.Average(global_source, total);
  absl::StatusOr<TensorBundle> expected = plain.Average();
  ASSERT_TRUE(secure.ok()) << secure.status();
  ASSERT_TRUE(expected.ok()) << expected.status();
  ASSERT_EQ(ModelDigest(secure->manifest).empty(), false);
  for (int k = 0; k < 1000; ++k) {
    ASSERT_NEAR(ValueAt(*secure, 0, k), ValueAt(*expected, 0, k), 1e-6) << k;
  }
  for (int k = 0; k < 7; ++k) {
    // float16: within one unit in the last place of values near 1.
    ASSERT_NEAR(ValueAt(*secure, 1, k), ValueAt(*expected, 1, k), 2e-3) << k;
  }
  EXPECT_EQ(ValueAt(*secure, 2, 0), ValueAt(*expected, 2, 0));
  EXPECT_EQ(secure->manifest.tensors(1).dtype(), FLOAT16);
}

TEST(MaskedSumTest, AnIncompleteCohortSumsToNoise) {
  std::mt19937 random(11);
  TensorBundle global = RandomModel(random, 1.0);
  std::vector<Site> sites = MakeSites(global, random);
  std::vector<TensorBundle> masked = MaskAll(sites, global, 1);
  // Site 3 dropped out after masking: its pair masks stay in the sum.
  MaskedSum sum(global.manifest);
  double total = 0;
  for (int i = 0; i < 3; ++i) {
    BundleSource source(&masked[i]);
    ASSERT_TRUE(sum.Add(source).ok());
    total += sites[i].weight;
  }
  BundleSource global_source(&global);
  absl::StatusOr<TensorBundle> noise = sum.Average(global_source, total);
  ASSERT_TRUE(noise.ok());
  int plausible = 0;
  for (int k = 0; k < 1000; ++k) {
    if (std::fabs(ValueAt(*noise, 0, k) - ValueAt(global, 0, k)) < 1.0) {
      ++plausible;
    }
  }
  EXPECT_LT(plausible, 5);

  // Masking again with fresh keys without site 3 gives the survivors' mean.
  sites.pop_back();
  for (Site& site : sites) site.key = *MaskingKey::Generate();
  std::vector<TensorBundle> again = MaskAll(sites, global, 2);
  MaskedSum redo(global.manifest);
  FedAvgAggregator plain(global.manifest);
  for (size_t i = 0; i < sites.size(); ++i) {
    BundleSource source(&again[i]);
    ASSERT_TRUE(redo.Add(source).ok());
    BundleSource plain_source(&sites[i].update);
    ASSERT_TRUE(plain.Fold(plain_source, sites[i].weight).ok());
  }
  absl::StatusOr<TensorBundle> secure = redo.Average(global_source, total);
  absl::StatusOr<TensorBundle> expected = plain.Average();
  ASSERT_TRUE(secure.ok() && expected.ok());
  for (int k = 0; k < 1000; ++k) {
    ASSERT_NEAR(ValueAt(*secure, 0, k), ValueAt(*expected, 0, k), 1e-6) << k;
  }
}

TEST(MaskedSumTest, RefusesUploadsOfAnotherLayout) {
  std::mt19937 random(3);
  TensorBundle global = RandomModel(random, 1.0);
  MaskedSum sum(global.manifest);
  // An unmasked model (float dtypes) is not a masked upload.
  BundleSource plain(&global);
  EXPECT_TRUE(absl::IsInvalidArgument(sum.Add(plain)));
  BundleSource global_source(&global);
  EXPECT_TRUE(
      absl::IsFailedPrecondition(sum.Average(global_source, 1.0).status()));
}

}  // namespace
}  // namespace echofed
