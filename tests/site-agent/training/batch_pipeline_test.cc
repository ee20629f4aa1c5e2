#include "site-agent/training/batch_pipeline.h"

#include <atomic>
#include <chrono>
#include <set>
#include <stdexcept>

#include "gtest/gtest.h"
#include "models/torch_compat.h"
#include "site-agent/training/trainer.h"

namespace echofed {
namespace {

// Images with structure (so that augmentation and training do something),
// three classes.
ImageSet RandomSet(int64_t n, int size) {
  torch::manual_seed(5);
  ImageSet data;
  data.images = torch::randn({n, 1, size, size});
  data.labels = torch::arange(n, torch::kInt64).remainder(3);
  return data;
}

std::vector<TrainBatch> Drain(BatchPipeline& pipeline) {
  std::vector<TrainBatch> batches;
  for (;;) {
    absl::StatusOr<std::optional<TrainBatch>> next = pipeline.Next();
    EXPECT_TRUE(next.ok()) << next.status();
    if (!next.ok() || !next->has_value()) return batches;
    batches.push_back(std::move(**next));
  }
}

torch::Tensor Flat(ImageClassifierImpl& model) {
  std::vector<torch::Tensor> pieces;
  for (const torch::Tensor& p : model.parameters()) {
    pieces.push_back(p.detach().flatten());
  }
  for (const torch::Tensor& b : model.buffers()) {
    if (b.is_floating_point()) pieces.push_back(b.detach().flatten());
  }
  return torch::cat(pieces);
}

TEST(BatchPipelineTest, PlanCoversEveryImageOncePerEpochFromTheSeedAlone) {
  int per_epoch = 0;
  std::vector<BatchSpec> specs = PlanBatches(21, 4, 2, 7, &per_epoch);
  EXPECT_EQ(per_epoch, 6);
  // 21 = 5 * 4 + 1: the lone trailing image of each epoch is left out.
  ASSERT_EQ(specs.size(), 10u);
  std::set<int64_t> first_epoch;
  for (const BatchSpec& spec : specs) {
    if (spec.epoch != 1) continue;
    for (int64_t i = 0; i < spec.rows.size(0); ++i) {
      first_epoch.insert(spec.rows[i].item<int64_t>());
    }
  }
  EXPECT_EQ(first_epoch.size(), 20u);
  std::vector<BatchSpec> again = PlanBatches(21, 4, 2, 7);
  std::vector<BatchSpec> other = PlanBatches(21, 4, 2, 8);
  bool differs = false;
  std::set<uint64_t> seeds;
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_TRUE(torch::equal(specs[i].rows, again[i].rows));
    EXPECT_EQ(specs[i].seed, again[i].seed);
    differs = differs || !torch::equal(specs[i].rows, other[i].rows);
    seeds.insert(specs[i].seed);
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(seeds.size(), specs.size());
  // The epochs are shuffled differently.
  EXPECT_FALSE(torch::equal(specs[0].rows, specs[5].rows));
}

TEST(BatchPipelineTest, SameBatchesWhateverTheWorkersAndDepth) {
  ImageSet data = RandomSet(40, 16);
  BatchAssembly assembly;
  assembly.augmentation = Plan::STRONG;
  std::vector<std::vector<TrainBatch>> runs;
  for (auto [workers, depth] :
       std::vector<std::pair<int, int>>{{0, 1}, {1, 2}, {3, 2}, {4, 4}}) {
    BatchPipelineOptions options;
    options.workers = workers;
    options.depth = depth;
    BatchPipeline pipeline(
        PlanBatches(data.size(), 6, 2, 99),
        [&](const BatchSpec& spec) {
          return AssembleBatch(data, spec, assembly);
        },
        options);
    runs.push_back(Drain(pipeline));
  }
  ASSERT_EQ(runs[0].size(), 14u);
  for (size_t run = 1; run < runs.size(); ++run) {
    ASSERT_EQ(runs[run].size(), runs[0].size());
    for (size_t b = 0; b < runs[0].size(); ++b) {
      EXPECT_EQ(runs[run][b].epoch, runs[0][b].epoch);
      EXPECT_EQ(runs[run][b].index, runs[0][b].index);
      EXPECT_TRUE(torch::equal(runs[run][b].images, runs[0][b].images))
          << "run " << run << " batch " << b;
      EXPECT_TRUE(torch::equal(runs[run][b].labels, runs[0][b].labels));
    }
  }
  // Augmented: not the gathered images themselves.
  const TrainBatch& first = runs[0][0];
  EXPECT_FALSE(torch::allclose(
      first.images,
      data.images.index_select(0, PlanBatches(data.size(), 6, 2, 99)[0].rows)));
}

TEST(BatchPipelineTest, AFailedBatchEndsTheRunInOrder) {
  for (bool throws : {false, true}) {
    for (int workers : {0, 1, 3}) {
      std::atomic<int> made{0};
      BatchPipelineOptions options;
      options.workers = workers;
      BatchPipeline pipeline(
          PlanBatches(100, 2, 1, 1),
          [&](const BatchSpec& spec) -> absl::StatusOr<TrainBatch> {
            ++made;
            if (spec.index == 3) {
              if (throws) throw std::runtime_error("disk on fire");
              return absl::DataLossError("disk on fire");
            }
            TrainBatch batch;
            batch.index = spec.index;
            return batch;
          },
          options);
      for (int b = 0; b < 3; ++b) {
        absl::StatusOr<std::optional<TrainBatch>> next = pipeline.Next();
        ASSERT_TRUE(next.ok() && next->has_value()) << next.status();
        EXPECT_EQ((*next)->index, b);
      }
      absl::StatusOr<std::optional<TrainBatch>> failed = pipeline.Next();
      ASSERT_FALSE(failed.ok());
      EXPECT_NE(failed.status().message().find("disk on fire"),
                std::string::npos);
      EXPECT_EQ(failed.status().code(), throws ? absl::StatusCode::kInternal
                                               : absl::StatusCode::kDataLoss);
      EXPECT_FALSE(pipeline.Next().ok());
      // The workers stopped well short of the 50 batches.
      EXPECT_LT(made.load(), 12) << workers << " workers";
    }
  }
}

TEST(BatchPipelineTest, StopsPromptlyWithWorkersBlockedOnAFullQueue) {
  BatchPipelineOptions options;
  options.workers = 2;
  options.depth = 2;
  std::atomic<int> made{0};
  const auto start = std::chrono::steady_clock::now();
  {
    BatchPipeline pipeline(
        PlanBatches(1000, 2, 1, 1),
        [&](const BatchSpec&) -> absl::StatusOr<TrainBatch> {
          ++made;
          return TrainBatch();
        },
        options);
    ASSERT_TRUE(pipeline.Next().ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    // Bounded: the one taken, and at most `depth` ahead of it.
    EXPECT_LE(made.load(), 3);
    pipeline.Stop();
    EXPECT_EQ(pipeline.Next().status().code(), absl::StatusCode::kCancelled);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TrainOptions SmallRun() {
  TrainOptions options;
  options.class_count = 3;
  options.epochs = 2;
  options.batch_size = 8;
  options.learning_rate = 0.02;
  options.seed = 17;
  return options;
}

TEST(BatchPipelineTest, SameWeightsWithThePipelineOnAndOff) {
  ImageSet data = RandomSet(36, 16);
  std::vector<torch::Tensor> weights;
  for (int workers : {0, 1, 3}) {
    torch::manual_seed(4);
    auto model = *CreateClassifier({"small_cnn", 3});
    TrainOptions options = SmallRun();
    options.loader_workers = workers;
    absl::StatusOr<TrainResult> result = TrainLocal(*model, data, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->steps, 10);  // 2 epochs of 5 batches (the last of 4)
    EXPECT_GE(result->train_seconds, result->data_wait_seconds);
    weights.push_back(Flat(*model));
  }
  EXPECT_TRUE(torch::equal(weights[0], weights[1]));
  EXPECT_TRUE(torch::equal(weights[0], weights[2]));
}

TEST(BatchPipelineTest, ABatchThatCannotBeAssembledFailsTheTraining) {
  ImageSet data = RandomSet(20, 8);
  // Clinical rows for only half the images: gathering fails mid-epoch.
  data.clinical = torch::zeros({10, 4});
  torch::manual_seed(4);
  auto model = *CreateClassifier({"small_cnn", 3});
  for (int workers : {0, 2}) {
    TrainOptions options = SmallRun();
    options.loader_workers = workers;
    absl::StatusOr<TrainResult> result = TrainLocal(*model, data, options);
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInternal);
    EXPECT_NE(result.status().message().find("assembling training batch"),
              std::string::npos)
        << result.status();
  }
}

TEST(BatchPipelineTest, ChannelsLastOnCpuTrainsTheSameModel) {
  ImageSet data = RandomSet(24, 32);
  std::vector<torch::Tensor> weights;
  for (bool channels_last : {false, true}) {
    torch::manual_seed(4);
    auto model = *CreateClassifier({"resnet_small", 3});
    TrainOptions options = SmallRun();
    options.epochs = 1;
    options.channels_last = channels_last;
    ASSERT_TRUE(TrainLocal(*model, data, options).ok());
    // The exchanged state is back in the default layout.
    for (const torch::Tensor& parameter : model->parameters()) {
      EXPECT_TRUE(parameter.is_contiguous());
    }
    weights.push_back(Flat(*model));
  }
  EXPECT_TRUE(torch::allclose(weights[0], weights[1], 1e-3, 1e-4));
}

TEST(BatchPipelineTest, DeterministicModeSetsAndRestoresTheSwitches) {
  torch_compat::DeterminismState before = torch_compat::CurrentDeterminism();
  ASSERT_FALSE(before.deterministic_algorithms);
  ImageSet data = RandomSet(24, 16);
  std::vector<torch::Tensor> weights;
  for (int run = 0; run < 2; ++run) {
    torch::manual_seed(4);
    auto model = *CreateClassifier({"small_cnn", 3});
    TrainOptions options = SmallRun();
    options.deterministic = true;
    bool seen_deterministic = true;
    options.on_progress = [&](const TrainProgress&) {
      torch_compat::DeterminismState now = torch_compat::CurrentDeterminism();
      seen_deterministic = seen_deterministic && now.deterministic_cudnn &&
                           !now.benchmark_cudnn &&
                           now.deterministic_algorithms && now.warn_only;
    };
    ASSERT_TRUE(TrainLocal(*model, data, options).ok());
    EXPECT_TRUE(seen_deterministic);
    weights.push_back(Flat(*model));
  }
  EXPECT_TRUE(torch::equal(weights[0], weights[1]));
  torch_compat::DeterminismState after = torch_compat::CurrentDeterminism();
  EXPECT_EQ(after.deterministic_algorithms, before.deterministic_algorithms);
  EXPECT_EQ(after.deterministic_cudnn, before.deterministic_cudnn);
  EXPECT_EQ(after.benchmark_cudnn, before.benchmark_cudnn);

  Plan plan;
  plan.set_local_epochs(1);
  plan.set_batch_size(8);
  EXPECT_FALSE(TrainOptionsFromPlan(plan, 1).deterministic);
  plan.set_deterministic(true);
  EXPECT_TRUE(TrainOptionsFromPlan(plan, 1).deterministic);
}

}  // namespace
}  // namespace echofed
