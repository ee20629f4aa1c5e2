// Model quality on real ultrasound (issue 4): ../shared/data/busi-sites as
// four hospitals, sites a, b, c training (each with its own 7:3 patient
// split), site d external validation. Trains, with the same code, model,
// initial weights and budget (rounds x local epochs):
//   - federated: FedAvg, FedProx, FedBN (and any other strategy asked for),
//     with the coordinator's own strategy code over model files;
//   - centralised: the pooled training data of a, b, c in one place;
//   - each training site alone;
// and prints macro one-vs-rest AUC, accuracy and macro-F1 on the pooled
// internal validation sets and on the external site.
//
// The federation runs in one process (no sockets): transport is measured by
// federation_bench; here only the learning matters, and every number comes
// from the trainer, evaluator and aggregators the real processes use.
//
//   ./build/bin/quality_bench                      # README's table
//   ./build/bin/quality_bench --rounds 2 --epochs 1  # quick look

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/metrics.h"
#include "common/plan_util.h"
#include "coordinator/strategy.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "site-agent/cohort.h"
#include "site-agent/dataset.h"
#include "site-agent/trainer.h"

namespace echofed {
namespace {

struct SiteData {
  std::string name;
  ImageSet train, validation;
};

struct Settings {
  std::string data_dir;
  std::string model = "resnet_small";
  int size = 96;
  int rounds = 15;
  int epochs = 2;
  int batch = 16;
  double learning_rate = 1e-3;
  std::string configs = "fedavg,fedprox,fedbn,central,site-a,site-b,site-c";
  uint64_t seed = 42;
  int threads = 0;
};

const std::vector<std::string> kClasses = {"benign", "malignant", "normal"};

absl::StatusOr<SiteData> LoadSite(const Settings& settings,
                                  const std::string& name, bool training) {
  absl::StatusOr<SiteInputs> inputs =
      LoadSiteInputs(settings.data_dir + "/" + name);
  if (!inputs.ok()) return inputs.status();
  CohortOptions options;
  options.class_names = kClasses;
  Cohort cohort = SelectCohort(inputs->manifest, nullptr, options);
  std::vector<ImageRecord> records = cohort.Records(), train, validation;
  if (training) {
    std::set<std::string> patients = TrainingPatients(records, 0.7, 2026);
    for (const ImageRecord& record : records) {
      (patients.count(record.patient_id) ? train : validation)
          .push_back(record);
    }
  } else {
    validation = records;
  }
  Preprocessing preprocessing;
  preprocessing.image_size = settings.size;
  SiteData site;
  site.name = name;
  site.train = LoadImageSet(train, kClasses, preprocessing);
  site.validation = LoadImageSet(validation, kClasses, preprocessing);
  return site;
}

ImageSet Concatenate(const std::vector<const ImageSet*>& sets) {
  ImageSet all;
  std::vector<torch::Tensor> images, labels;
  for (const ImageSet* set : sets) {
    if (set->size() == 0) continue;
    images.push_back(set->images);
    labels.push_back(set->labels);
    all.patients += set->patients;
    all.patient_ids.insert(all.patient_ids.end(), set->patient_ids.begin(),
                           set->patient_ids.end());
  }
  all.images = torch::cat(images);
  all.labels = torch::cat(labels);
  return all;
}

std::shared_ptr<ImageClassifierImpl> NewModel(const Settings& settings) {
  torch::manual_seed(settings.seed);
  return *CreateClassifier({settings.model, 3});
}

TrainOptions Training(const Settings& settings, int round) {
  Plan plan;
  plan.set_learning_rate(settings.learning_rate);
  plan.set_rounds(settings.rounds);
  plan.set_schedule(Plan::COSINE);
  TrainOptions options;
  options.trainer = Plan::ADAMW;
  options.class_count = 3;
  options.epochs = settings.epochs;
  options.batch_size = settings.batch;
  options.learning_rate = ScheduledLearningRate(plan, round);
  options.seed = settings.seed * 1000003 + round;
  return options;
}

struct Scores {
  EvalAggregate internal, external;
  double seconds = 0;
};

EvalAggregate Evaluate(ImageClassifierImpl& model, const ImageSet& data,
                       EvalSplit split) {
  return EvaluateLocal(model, data, 3, split, torch::kCPU);
}

// A model trained on `train` alone for rounds x epochs.
Scores TrainAlone(const Settings& settings, const ImageSet& train,
                  const std::vector<SiteData>& sites,
                  const SiteData& external) {
  absl::Time start = absl::Now();
  auto model = NewModel(settings);
  for (int round = 1; round <= settings.rounds; ++round) {
    if (!TrainLocal(*model, train, Training(settings, round)).ok()) break;
  }
  Scores scores;
  for (const SiteData& site : sites) {
    AddAggregate(Evaluate(*model, site.validation, INTERNAL_VALIDATION),
                 &scores.internal)
        .IgnoreError();
  }
  scores.external = Evaluate(*model, external.validation, EXTERNAL_VALIDATION);
  scores.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return scores;
}

absl::StatusOr<Scores> Federate(const Settings& settings,
                                Plan::Strategy strategy, DType wire,
                                const std::vector<SiteData>& sites,
                                const SiteData& external) {
  absl::Time start = absl::Now();
  Plan plan;
  plan.set_strategy(strategy);
  ApplyPlanDefaults(&plan);
  std::string dir = absl::StrCat(
      std::filesystem::temp_directory_path().string(), "/echofed-quality-",
      getpid(), "-", Plan::Strategy_Name(strategy));
  std::filesystem::create_directories(dir);
  auto model = NewModel(settings);
  absl::StatusOr<TensorBundle> initial =
      ExportState(*model, settings.model, wire);
  if (!initial.ok()) return initial.status();
  std::string global = dir + "/model_0.efm";
  if (absl::StatusOr<std::string> written = WriteModelFile(global, *initial);
      !written.ok()) {
    return written.status();
  }
  std::vector<NamedTensors> local_batch_norm(sites.size());
  auto load_global = [&](size_t site, bool keep_local) -> absl::Status {
    absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
        ModelFileReader::Open(global);
    if (!reader.ok()) return reader.status();
    absl::StatusOr<TensorBundle> bundle = (*reader)->ReadAll();
    if (!bundle.ok()) return bundle.status();
    if (absl::Status status = ImportState(*bundle, *model); !status.ok()) {
      return status;
    }
    if (keep_local && strategy == Plan::FEDBN &&
        !local_batch_norm[site].empty()) {
      return RestoreNamedTensors(local_batch_norm[site], *model);
    }
    return absl::OkStatus();
  };
  for (int round = 1; round <= settings.rounds; ++round) {
    RoundContext context{initial->manifest, round, global, dir};
    std::unique_ptr<RoundAggregator> aggregator =
        CreateRoundAggregator(plan, context);
    for (size_t s = 0; s < sites.size(); ++s) {
      if (absl::Status status = load_global(s, true); !status.ok()) {
        return status;
      }
      TrainOptions options = Training(settings, round);
      if (strategy == Plan::FEDPROX) options.proximal_mu = plan.proximal_mu();
      absl::StatusOr<TrainResult> trained =
          TrainLocal(*model, sites[s].train, options);
      if (!trained.ok()) return trained.status();
      if (strategy == Plan::FEDBN) {
        local_batch_norm[s] = CopyBatchNormState(*model);
      }
      absl::StatusOr<TensorBundle> update =
          ExportState(*model, settings.model, wire);
      if (!update.ok()) return update.status();
      BundleSource source(&*update);
      if (absl::Status status = aggregator->Add(
              source, static_cast<double>(trained->num_samples));
          !status.ok()) {
        return status;
      }
    }
    std::fprintf(stderr, "  %s round %d/%d done\n",
                 Plan::Strategy_Name(strategy).c_str(), round, settings.rounds);
    std::string next = absl::StrCat(dir, "/model_", round, ".efm");
    if (absl::StatusOr<std::string> digest = aggregator->WriteModel(next);
        !digest.ok()) {
      return digest.status();
    }
    global = next;
  }
  Scores scores;
  for (size_t s = 0; s < sites.size(); ++s) {
    if (absl::Status status = load_global(s, true); !status.ok()) {
      return status;
    }
    AddAggregate(Evaluate(*model, sites[s].validation, INTERNAL_VALIDATION),
                 &scores.internal)
        .IgnoreError();
  }
  if (absl::Status status = load_global(0, false); !status.ok()) return status;
  scores.external = Evaluate(*model, external.validation, EXTERNAL_VALIDATION);
  std::filesystem::remove_all(dir);
  scores.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return scores;
}

std::string Row(const std::string& name, const Scores& scores) {
  MetricsSummary internal = Summarize(scores.internal);
  MetricsSummary external = Summarize(scores.external);
  return absl::StrFormat(
      "| %-12s | %.3f | %5.1f%% | %.3f | %.3f | %5.1f%% | %.3f | %6.0f |", name,
      internal.macro_auc, 100 * Accuracy(scores.internal),
      MacroF1(scores.internal), external.macro_auc,
      100 * Accuracy(scores.external), MacroF1(scores.external),
      scores.seconds);
}

int Main(int argc, char** argv) {
  Settings settings;
  CLI::App app{"echofed model quality on busi-sites (issue 4)"};
  app.add_option("--data", settings.data_dir,
                 "busi-sites folder (default ../shared/data/busi-sites)");
  app.add_option("--model", settings.model, "model registry name");
  app.add_option("--size", settings.size, "image size");
  app.add_option("--rounds", settings.rounds, "federated rounds");
  app.add_option("--epochs", settings.epochs, "local epochs per round");
  app.add_option("--batch", settings.batch, "batch size");
  app.add_option("--lr", settings.learning_rate, "AdamW learning rate");
  app.add_option("--configs", settings.configs,
                 "comma-separated: fedavg fedprox fedbn fedadam fedyogi "
                 "median trimmed_mean central site-a site-b site-c; "
                 "<strategy>+half sends float16");
  app.add_option("--seed", settings.seed, "initialisation seed");
  app.add_option("--threads", settings.threads,
                 "intra-op threads (default: every core)");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(settings.threads > 0
                             ? settings.threads
                             : static_cast<int>(std::max(
                                   1u, std::thread::hardware_concurrency())));
  if (settings.data_dir.empty()) {
    for (std::string candidate :
         {std::string("../shared/data/busi-sites"),
          std::string(ECHOFED_SOURCE_DIR) + "/../shared/data/busi-sites"}) {
      if (std::filesystem::exists(candidate + "/site-a/manifest.csv")) {
        settings.data_dir = candidate;
        break;
      }
    }
  }
  if (settings.data_dir.empty() ||
      !std::filesystem::exists(settings.data_dir + "/site-a/manifest.csv")) {
    std::printf(
        "SKIPPED: busi-sites not found (../shared/data/busi-sites); pass "
        "--data\n");
    return 0;
  }
  std::vector<SiteData> sites;
  for (const char* name : {"site-a", "site-b", "site-c"}) {
    absl::StatusOr<SiteData> site = LoadSite(settings, name, true);
    if (!site.ok()) {
      std::fprintf(stderr, "%s: %s\n", name,
                   std::string(site.status().message()).c_str());
      return 1;
    }
    std::printf("%s: %lld training, %lld internal validation images\n", name,
                static_cast<long long>(site->train.size()),
                static_cast<long long>(site->validation.size()));
    sites.push_back(std::move(*site));
  }
  absl::StatusOr<SiteData> external = LoadSite(settings, "site-d", false);
  if (!external.ok()) {
    std::fprintf(stderr, "site-d: %s\n",
                 std::string(external.status().message()).c_str());
    return 1;
  }
  std::printf("site-d: %lld external validation images\n",
              static_cast<long long>(external->validation.size()));
  std::printf(
      "model %s, %dx%d, %d rounds x %d local epochs, batch %d, AdamW lr %g "
      "(cosine), %d threads\n\n",
      settings.model.c_str(), settings.size, settings.size, settings.rounds,
      settings.epochs, settings.batch, settings.learning_rate,
      at::get_num_threads());
  std::printf(
      "| training     | internal AUC | acc | F1 | external AUC | acc | F1 | "
      "s |\n|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  std::vector<const ImageSet*> pooled;
  for (const SiteData& site : sites) pooled.push_back(&site.train);
  ImageSet central = Concatenate(pooled);
  for (absl::string_view config : absl::StrSplit(settings.configs, ',')) {
    std::string name(config);
    Scores scores;
    if (name == "central") {
      scores = TrainAlone(settings, central, sites, *external);
    } else if (name.rfind("site-", 0) == 0) {
      auto site =
          std::find_if(sites.begin(), sites.end(),
                       [&](const SiteData& s) { return s.name == name; });
      if (site == sites.end()) {
        std::fprintf(stderr, "unknown config %s\n", name.c_str());
        return 2;
      }
      scores = TrainAlone(settings, site->train, sites, *external);
    } else {
      Plan::Strategy strategy;
      // "<strategy>+half": float16 on the wire (plan wire_precision HALF).
      std::string upper = name;
      DType wire = FLOAT32;
      if (absl::EndsWith(upper, "+half")) {
        upper.resize(upper.size() - 5);
        wire = FLOAT16;
      }
      for (char& c : upper) c = static_cast<char>(std::toupper(c));
      if (!Plan::Strategy_Parse(upper, &strategy) ||
          strategy == Plan::STRATEGY_UNSPECIFIED) {
        std::fprintf(stderr, "unknown config %s\n", name.c_str());
        return 2;
      }
      absl::StatusOr<Scores> federated =
          Federate(settings, strategy, wire, sites, *external);
      if (!federated.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(),
                     std::string(federated.status().message()).c_str());
        return 1;
      }
      scores = *federated;
    }
    std::printf("%s\n", Row(name, scores).c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace echofed

int main(int argc, char** argv) { return echofed::Main(argc, argv); }
