// Model quality on real ultrasound (issues 4 and 15): ../shared/data/busi-sites
// as four hospitals, sites a, b, c training (each with its own 7:3 patient
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
//   ./build/bin/quality_bench --test-time-flip both  # each model scored
//       with and without the test-time flip: paired rows
//   ./build/bin/quality_bench --average-last 10,20  # each model also scored
//       as the mean of its last 10 and 20 end-of-round weights: paired rows
//   ./build/bin/quality_bench --mixup 0.2  # the plan's mixup_alpha
//   ./build/bin/quality_bench --label-smoothing 0.1  # not in the plan

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
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
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "site-agent/data/cohort.h"
#include "site-agent/training/dataset.h"
#include "site-agent/training/host_allocator.h"
#include "site-agent/training/trainer.h"

namespace echofed {
namespace {

struct SiteData {
  std::string name;
  ImageSet train, validation;
};

// The training recipe: every knob a plan has, so that each suspect of
// issue 15 can be switched alone (tests/bench/quality_ablation.sh). The
// defaults are the measured best on busi-sites at 128 px (README, "Model
// quality").
struct Settings {
  std::string data_dir;
  std::string reference_dir;
  std::string model = "resnet18_narrow";
  int size = 128;
  int rounds = 40;
  int epochs = 1;
  int batch = 16;
  double learning_rate = 2e-3;
  double weight_decay = 1e-2;
  std::string normalization = "per_image";  // fixed_range, dataset
  std::string augmentation = "strong";      // mild, none
  std::string schedule = "round";           // run, constant
  bool keep_optimizer = true;
  std::string configs = "fedavg,fedprox,fedbn,central,site-a,site-b,site-c";
  uint64_t seed = 0;
  // The training sites' patient split: echofed's hash split with this
  // seed (what a federation's plan does with split_seed), or, when the file
  // is given, exactly the patients it lists (CSV site,patient_id: those are
  // training, the site's others internal validation), e.g. the reference's
  // scikit-learn split, to compare pipelines on the same patients.
  uint64_t split_seed = 2026;
  std::string training_patients_file;
  int seeds = 1;
  int threads = 0;
  std::string label;
  std::string device = "cpu";
  // Test-time horizontal flip at evaluation: "off", "on", or "both" (each
  // trained model evaluated both ways: paired rows, "<config> +flip").
  std::string test_time_flip = "off";  // the plan's default
  // Weight averaging along the trajectory: besides the final model, each
  // model is also scored as the mean of its end-of-round states over the
  // last N rounds, for every N listed (paired rows "<config> +avgN").
  std::vector<int> average_last;
  // Label smoothing: a training regulariser not in the plan (TrainOptions),
  // measured here.
  double label_smoothing = 0;
  double mixup_alpha = 0;  // the plan's mixup_alpha
};

// The plan's training options for `round`, with the bench's label
// smoothing.
TrainOptions RecipeTrainOptions(const Settings& settings, const Plan& plan,
                                int round) {
  TrainOptions options = TrainOptionsFromPlan(plan, round);
  options.label_smoothing = settings.label_smoothing;
  return options;
}

const std::vector<std::string> kClasses = {"benign", "malignant", "normal"};

Plan RecipePlan(const Settings& settings, Plan::Strategy strategy,
                uint64_t seed) {
  Plan plan;
  for (const std::string& name : kClasses) plan.add_class_names(name);
  plan.set_model(settings.model);
  plan.set_image_size(settings.size);
  plan.set_rounds(settings.rounds);
  plan.set_local_epochs(settings.epochs);
  plan.set_batch_size(settings.batch);
  plan.set_learning_rate(settings.learning_rate);
  plan.set_weight_decay(settings.weight_decay);
  plan.set_trainer(Plan::ADAMW);
  plan.set_strategy(strategy);
  plan.set_schedule(settings.schedule == "run"     ? Plan::COSINE_OVER_RUN
                    : settings.schedule == "round" ? Plan::COSINE
                                                   : Plan::CONSTANT);
  plan.set_augment(settings.augmentation != "none");
  plan.set_augmentation(settings.augmentation == "strong" ? Plan::STRONG
                                                          : Plan::MILD);
  plan.set_keep_optimizer_state(settings.keep_optimizer);
  plan.set_normalization(settings.normalization == "per_image"
                             ? Plan::PER_IMAGE_ZSCORE
                             : Plan::FIXED_RANGE);
  plan.set_mixup_alpha(settings.mixup_alpha);
  plan.set_seed(seed);
  ApplyPlanDefaults(&plan);
  return plan;
}

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
    std::set<std::string> patients;
    if (settings.training_patients_file.empty()) {
      patients = TrainingPatients(records, 0.7, settings.split_seed);
    } else {
      std::ifstream file(settings.training_patients_file);
      if (!file) {
        return absl::NotFoundError(
            absl::StrCat("cannot read ", settings.training_patients_file));
      }
      std::string line;
      while (std::getline(file, line)) {
        std::vector<std::string> fields = absl::StrSplit(line, ',');
        if (fields.size() == 2 && fields[0] == name) {
          patients.insert(fields[1]);
        }
      }
      if (patients.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(settings.training_patients_file,
                         ": no training patients of ", name));
      }
    }
    for (const ImageRecord& record : records) {
      (patients.count(record.patient_id) ? train : validation)
          .push_back(record);
    }
  } else {
    validation = records;
  }
  Preprocessing preprocessing =
      PreprocessingFromPlan(RecipePlan(settings, Plan::FEDAVG, 0));
  SiteData site;
  site.name = name;
  site.train = LoadImageSet(train, kClasses, preprocessing);
  site.validation = LoadImageSet(validation, kClasses, preprocessing);
  return site;
}

// normalization=dataset: the pooled mean and standard deviation of the
// training sites' training images, as a federation would compute it from
// each site's pixel count, sum and sum of squares (the reference's
// normalisation). Applied on top of FIXED_RANGE, which is an affine map of
// the pixel values, so the result is exactly the pooled z-score.
void NormaliseWithPooledStatistics(std::vector<SiteData>& sites,
                                   SiteData& external) {
  double count = 0, sum = 0, sum_squares = 0;
  for (const SiteData& site : sites) {
    torch::Tensor x = site.train.images.to(torch::kFloat64);
    count += static_cast<double>(x.numel());
    sum += x.sum().item<double>();
    sum_squares += (x * x).sum().item<double>();
  }
  const double mean = sum / count;
  const double std = std::sqrt(sum_squares / count - mean * mean);
  auto apply = [&](ImageSet& set) {
    if (set.size() > 0) set.images = (set.images - mean) / std;
  };
  for (SiteData& site : sites) {
    apply(site.train);
    apply(site.validation);
  }
  apply(external.validation);
  std::printf("pooled intensity mean %.4f, std %.4f (of the -1..1 range)\n",
              mean, std);
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
    all.frames.insert(all.frames.end(), set->frames.begin(), set->frames.end());
  }
  all.images = torch::cat(images);
  all.labels = torch::cat(labels);
  return all;
}

std::shared_ptr<ImageClassifierImpl> NewModel(const Plan& plan) {
  torch::manual_seed(plan.seed());
  return *CreateClassifier({plan.model(), 3});
}

// Image- and patient-level aggregates of one evaluation set.
struct SetScores {
  EvalAggregate images, patients;
};

// One way of scoring a trained model: with or without the test-time flip,
// and the final weights (average_last 0) or the mean of the end-of-round
// weights over the last `average_last` rounds.
struct EvalMode {
  bool flip = false;
  int average_last = 0;
  std::string Suffix(const std::vector<EvalMode>& all) const {
    std::string suffix;
    bool flips = false;
    for (const EvalMode& mode : all) flips |= mode.flip != all[0].flip;
    if (flips && flip) suffix += " +flip";
    if (average_last > 0) absl::StrAppend(&suffix, " +avg", average_last);
    return suffix;
  }
};

// The evaluations --test-time-flip and --average-last ask for.
std::vector<EvalMode> EvalModes(const Settings& settings) {
  std::vector<bool> flips = {settings.test_time_flip == "on"};
  if (settings.test_time_flip == "both") flips = {false, true};
  std::vector<int> averages = {0};
  for (int n : settings.average_last) averages.push_back(n);
  std::vector<EvalMode> modes;
  for (int average : averages) {
    for (bool flip : flips) modes.push_back({flip, average});
  }
  return modes;
}

// One trained model's scores, one per EvalMode.
struct Scores {
  std::vector<SetScores> internal, external;
  double seconds = 0;
  explicit Scores(size_t modes) : internal(modes), external(modes) {}
};

// The running mean of a model's floating state (parameters and batch-norm
// statistics) at the end of each of the last `rounds` rounds: stochastic
// weight averaging along the cosine-per-round schedule's low points.
// Integer buffers (batch-norm step counts) keep their last value.
class TrajectoryAverage {
 public:
  TrajectoryAverage(int rounds, int total_rounds)
      : rounds_(rounds), first_round_(std::max(1, total_rounds - rounds + 1)) {}
  int rounds() const { return rounds_; }
  void AddIfDue(ImageClassifierImpl& model, int round) {
    if (round < first_round_) return;
    torch::NoGradGuard no_grad;
    ++count_;
    auto add = [&](const std::string& name, const torch::Tensor& value) {
      torch::Tensor& sum = sums_[name];
      if (!value.is_floating_point()) {
        sum = value.detach().clone();
      } else if (!sum.defined()) {
        sum = value.detach().to(torch::kFloat64).clone();
      } else {
        sum.add_(value.detach().to(torch::kFloat64));
      }
    };
    for (const auto& item : model.named_parameters()) {
      add(item.key(), item.value());
    }
    for (const auto& item : model.named_buffers()) {
      add(item.key(), item.value());
    }
  }
  void LoadInto(ImageClassifierImpl& model) const {
    torch::NoGradGuard no_grad;
    auto load = [&](const std::string& name, torch::Tensor target) {
      const torch::Tensor& sum = sums_.at(name);
      target.copy_(target.is_floating_point() ? sum / count_ : sum);
    };
    for (const auto& item : model.named_parameters()) {
      load(item.key(), item.value());
    }
    for (const auto& item : model.named_buffers()) {
      load(item.key(), item.value());
    }
  }

 private:
  int rounds_, first_round_, count_ = 0;
  std::map<std::string, torch::Tensor> sums_;
};

std::vector<TrajectoryAverage> Averages(const std::vector<EvalMode>& modes,
                                        int total_rounds) {
  std::vector<TrajectoryAverage> averages;
  std::set<int> seen;
  for (const EvalMode& mode : modes) {
    if (mode.average_last > 0 && seen.insert(mode.average_last).second) {
      averages.emplace_back(mode.average_last, total_rounds);
    }
  }
  return averages;
}

// Scores `model` on `data` in every mode whose average_last is
// `average_last`.
void Evaluate(ImageClassifierImpl& model, const ImageSet& data, EvalSplit split,
              torch::Device device, const std::vector<EvalMode>& modes,
              int average_last, std::vector<SetScores>& into) {
  for (size_t m = 0; m < modes.size(); ++m) {
    if (modes[m].average_last != average_last) continue;
    EvaluationOptions options;
    options.class_count = 3;
    options.split = split;
    options.device = device;
    options.test_time_flip = modes[m].flip;
    LocalEvaluation evaluation = EvaluateModel(model, data, options);
    SetScores& set = into[m];
    if (set.images.class_count() == 0) {
      set.images = evaluation.subtype;
      set.patients = evaluation.patient_subtype;
      continue;
    }
    AddAggregate(evaluation.subtype, &set.images).IgnoreError();
    AddAggregate(evaluation.patient_subtype, &set.patients).IgnoreError();
  }
}

// A model trained on `train` alone for rounds x epochs, with the same
// schedule (and optimiser kept across rounds as the plan says).
absl::StatusOr<Scores> TrainAlone(const Settings& settings, const Plan& plan,
                                  torch::Device device,
                                  const std::vector<EvalMode>& modes,
                                  const ImageSet& train,
                                  const std::vector<SiteData>& sites,
                                  const SiteData& external) {
  absl::Time start = absl::Now();
  auto model = NewModel(plan);
  std::vector<TrajectoryAverage> averages = Averages(modes, plan.rounds());
  std::string optimizer_state;
  for (int round = 1; round <= plan.rounds(); ++round) {
    TrainOptions options = RecipeTrainOptions(settings, plan, round);
    options.device = device;
    if (plan.keep_optimizer_state()) options.optimizer_state = &optimizer_state;
    absl::StatusOr<TrainResult> trained = TrainLocal(*model, train, options);
    if (!trained.ok()) return trained.status();
    for (TrajectoryAverage& average : averages) {
      average.AddIfDue(*model, round);
    }
  }
  Scores scores(modes.size());
  auto evaluate = [&](int average_last) {
    for (const SiteData& site : sites) {
      Evaluate(*model, site.validation, INTERNAL_VALIDATION, device, modes,
               average_last, scores.internal);
    }
    Evaluate(*model, external.validation, EXTERNAL_VALIDATION, device, modes,
             average_last, scores.external);
  };
  evaluate(0);
  for (const TrajectoryAverage& average : averages) {
    average.LoadInto(*model);
    evaluate(average.rounds());
  }
  scores.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return scores;
}

absl::StatusOr<Scores> Federate(const Settings& settings, const Plan& plan,
                                DType wire, torch::Device device,
                                const std::vector<EvalMode>& modes,
                                const std::vector<SiteData>& sites,
                                const SiteData& external) {
  absl::Time start = absl::Now();
  const Plan::Strategy strategy = plan.strategy();
  std::string dir = absl::StrCat(
      std::filesystem::temp_directory_path().string(), "/echofed-quality-",
      getpid(), "-", Plan::Strategy_Name(strategy));
  std::filesystem::create_directories(dir);
  auto model = NewModel(plan);
  absl::StatusOr<TensorBundle> initial =
      ExportState(*model, plan.model(), wire);
  if (!initial.ok()) return initial.status();
  std::string global = dir + "/model_0.efm";
  if (absl::StatusOr<std::string> written = WriteModelFile(global, *initial);
      !written.ok()) {
    return written.status();
  }
  std::vector<TrajectoryAverage> averages = Averages(modes, plan.rounds());
  std::vector<NamedTensors> local_batch_norm(sites.size());
  // Each site's own optimiser state, as each agent keeps it.
  std::vector<std::string> optimizer_states(sites.size());
  // The global model into `model`, or with `average`, the mean of the
  // global models along the trajectory.
  auto load_global = [&](size_t site, bool keep_local,
                         const TrajectoryAverage* average =
                             nullptr) -> absl::Status {
    if (average != nullptr) {
      average->LoadInto(*model);
    } else {
      absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
          ModelFileReader::Open(global);
      if (!reader.ok()) return reader.status();
      absl::StatusOr<TensorBundle> bundle = (*reader)->ReadAll();
      if (!bundle.ok()) return bundle.status();
      if (absl::Status status = ImportState(*bundle, *model); !status.ok()) {
        return status;
      }
    }
    if (keep_local && strategy == Plan::FEDBN &&
        !local_batch_norm[site].empty()) {
      return RestoreNamedTensors(local_batch_norm[site], *model);
    }
    return absl::OkStatus();
  };
  for (int round = 1; round <= plan.rounds(); ++round) {
    RoundContext context{initial->manifest, round, global, dir};
    std::unique_ptr<RoundAggregator> aggregator =
        CreateRoundAggregator(plan, context);
    for (size_t s = 0; s < sites.size(); ++s) {
      if (absl::Status status = load_global(s, true); !status.ok()) {
        return status;
      }
      TrainOptions options = RecipeTrainOptions(settings, plan, round);
      options.device = device;
      if (plan.keep_optimizer_state()) {
        options.optimizer_state = &optimizer_states[s];
      }
      absl::StatusOr<TrainResult> trained =
          TrainLocal(*model, sites[s].train, options);
      if (!trained.ok()) return trained.status();
      if (strategy == Plan::FEDBN) {
        local_batch_norm[s] = CopyBatchNormState(*model);
      }
      absl::StatusOr<TensorBundle> update =
          ExportState(*model, plan.model(), wire);
      if (!update.ok()) return update.status();
      BundleSource source(&*update);
      if (absl::Status status = aggregator->Add(
              source, static_cast<double>(trained->num_samples));
          !status.ok()) {
        return status;
      }
    }
    if (round % 10 == 0 || round == plan.rounds()) {
      std::fprintf(stderr, "  %s round %d/%d done\n",
                   Plan::Strategy_Name(strategy).c_str(), round, plan.rounds());
    }
    std::string next = absl::StrCat(dir, "/model_", round, ".efm");
    if (absl::StatusOr<std::string> digest = aggregator->WriteModel(next);
        !digest.ok()) {
      return digest.status();
    }
    global = next;
    if (!averages.empty()) {
      if (absl::Status status = load_global(0, false); !status.ok()) {
        return status;
      }
      for (TrajectoryAverage& average : averages) {
        average.AddIfDue(*model, round);
      }
    }
  }
  Scores scores(modes.size());
  auto evaluate = [&](const TrajectoryAverage* average) -> absl::Status {
    const int average_last = average == nullptr ? 0 : average->rounds();
    for (size_t s = 0; s < sites.size(); ++s) {
      if (absl::Status status = load_global(s, true, average); !status.ok()) {
        return status;
      }
      Evaluate(*model, sites[s].validation, INTERNAL_VALIDATION, device, modes,
               average_last, scores.internal);
    }
    if (absl::Status status = load_global(0, false, average); !status.ok()) {
      return status;
    }
    Evaluate(*model, external.validation, EXTERNAL_VALIDATION, device, modes,
             average_last, scores.external);
    return absl::OkStatus();
  };
  if (absl::Status status = evaluate(nullptr); !status.ok()) return status;
  for (const TrajectoryAverage& average : averages) {
    if (absl::Status status = evaluate(&average); !status.ok()) return status;
  }
  std::filesystem::remove_all(dir);
  scores.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  return scores;
}

// The columns of a row, one value per seed.
constexpr int kColumns = 7;
using Values = std::array<double, kColumns>;

Values Columns(const Scores& scores, size_t mode) {
  const SetScores& internal = scores.internal[mode];
  const SetScores& external = scores.external[mode];
  return {Summarize(internal.images).macro_auc,
          Summarize(internal.patients).macro_auc,
          Summarize(external.images).macro_auc,
          Summarize(external.patients).macro_auc,
          100 * Accuracy(external.images),
          MacroF1(external.images),
          scores.seconds};
}

// "mean ± sd" (sample sd; one value: the value alone).
std::string MeanSd(const std::vector<double>& values, const char* format) {
  double mean = 0;
  for (double v : values) mean += v;
  mean /= values.size();
  std::string text = absl::StrFormat(format, mean);
  if (values.size() < 2) return text;
  double squares = 0;
  for (double v : values) squares += (v - mean) * (v - mean);
  const double sd = std::sqrt(squares / (values.size() - 1));
  return absl::StrCat(text, " ± ", absl::StrFormat(format, sd));
}

std::string Row(const std::string& name, const std::vector<Values>& seeds) {
  const char* formats[kColumns] = {"%.3f", "%.3f", "%.3f", "%.3f",
                                   "%.1f", "%.3f", "%.0f"};
  std::string row = absl::StrFormat("| %-28s | %d |", name, seeds.size());
  for (int c = 0; c < kColumns; ++c) {
    std::vector<double> column;
    for (const Values& values : seeds) {
      if (!std::isnan(values[c])) column.push_back(values[c]);
    }
    absl::StrAppend(
        &row, " ",
        column.empty() ? std::string("-") : MeanSd(column, formats[c]), " |");
  }
  return row;
}

// The reference's results (../shared/reference/busi-pytorch/results, its
// own JSON) for `regime` at this size: one Values per seed file found.
std::vector<Values> ReferenceRows(const std::string& dir,
                                  const std::string& regime, int size) {
  std::vector<Values> rows;
  if (dir.empty()) return rows;
  for (int seed = 0; seed < 100; ++seed) {
    std::string path =
        absl::StrCat(dir, "/", regime, "_", size, "_seed", seed, ".json");
    std::ifstream in(path);
    if (!in) continue;
    std::stringstream text;
    text << in.rdbuf();
    google::protobuf::Struct result;
    if (!google::protobuf::util::JsonStringToMessage(text.str(), &result)
             .ok()) {
      std::fprintf(stderr, "%s: not JSON\n", path.c_str());
      continue;
    }
    auto number = [&](const std::string& set, const std::string& field) {
      auto found = result.fields().find(set);
      if (found == result.fields().end()) return std::nan("");
      const auto& inner = found->second.struct_value().fields();
      auto value = inner.find(field);
      return value == inner.end() ? std::nan("") : value->second.number_value();
    };
    auto settings = result.fields().find("settings");
    double seconds = std::nan("");
    if (settings != result.fields().end()) {
      auto train = settings->second.struct_value().fields().find("train_s");
      if (train != settings->second.struct_value().fields().end()) {
        seconds = train->second.number_value();
      }
    }
    rows.push_back({number("internal", "auc_macro_ovr"),
                    number("internal", "patient_auc_macro_ovr"),
                    number("site_d", "auc_macro_ovr"),
                    number("site_d", "patient_auc_macro_ovr"),
                    100 * number("site_d", "acc"), number("site_d", "f1_macro"),
                    seconds});
  }
  return rows;
}

std::string FindShared(const std::string& relative, const std::string& probe) {
  for (std::string candidate :
       {std::string("../shared/") + relative,
        std::string(ECHOFED_SOURCE_DIR) + "/../shared/" + relative}) {
    if (std::filesystem::exists(candidate + "/" + probe)) return candidate;
  }
  return "";
}

int Main(int argc, char** argv) {
  Settings settings;
  CLI::App app{"echofed model quality on busi-sites (issue 15)"};
  // --help shows each default.
  app.option_defaults()->always_capture_default();
  app.add_option("--data", settings.data_dir,
                 "busi-sites folder (default ../shared/data/busi-sites)");
  app.add_option("--reference", settings.reference_dir,
                 "busi-pytorch results folder (default "
                 "../shared/reference/busi-pytorch/results)");
  app.add_option("--model", settings.model, "model registry name");
  app.add_option("--size", settings.size, "image size");
  app.add_option("--rounds", settings.rounds, "federated rounds");
  app.add_option("--epochs", settings.epochs, "local epochs per round");
  app.add_option("--batch", settings.batch, "batch size");
  app.add_option("--lr", settings.learning_rate, "AdamW learning rate");
  app.add_option("--weight-decay", settings.weight_decay,
                 "AdamW (decoupled) weight decay");
  app.add_option("--normalization", settings.normalization,
                 "fixed_range, per_image or dataset (pooled z-score)");
  app.add_option("--augmentation", settings.augmentation,
                 "mild, strong or none");
  app.add_option("--schedule", settings.schedule,
                 "run (cosine over the run, per batch), round (cosine per "
                 "round, to lr/20) or constant");
  app.add_option("--keep-optimizer", settings.keep_optimizer,
                 "sites keep their optimiser state across rounds (1/0)");
  app.add_option("--configs", settings.configs,
                 "comma-separated: fedavg fedprox fedbn fedadam fedyogi "
                 "median trimmed_mean central site-a site-b site-c; "
                 "<strategy>+half sends float16");
  app.add_option("--seed", settings.seed, "first initialisation seed");
  app.add_option("--split-seed", settings.split_seed,
                 "seed of the training sites' 7:3 patient split (the "
                 "plan's split_seed; default 2026)");
  app.add_option("--training-patients", settings.training_patients_file,
                 "CSV site,patient_id of the training patients (e.g. the "
                 "reference's split); overrides --split-seed");
  app.add_option("--seeds", settings.seeds,
                 "seeds per row (seed, seed+1, ...): mean ± sd");
  app.add_option("--label", settings.label,
                 "prefix of the row names (ablation tables)");
  app.add_option("--threads", settings.threads,
                 "intra-op threads (default: every core)");
  app.add_option("--device", settings.device,
                 "cpu (default), cuda, cuda:N or auto");
  app.add_option("--test-time-flip", settings.test_time_flip,
                 "score each image with the mean of it and its mirror: on, "
                 "off, or both (every model evaluated both ways, paired "
                 "rows '<config> +flip'); default off, as the plan's")
      ->check(CLI::IsMember({"on", "off", "both"}));
  app.add_option("--label-smoothing", settings.label_smoothing,
                 "cross-entropy label smoothing (0: off)");
  app.add_option("--mixup", settings.mixup_alpha,
                 "the plan's mixup_alpha: each batch mixed with itself, "
                 "weights from Beta(a, a) (0: off)");
  app.add_option("--average-last", settings.average_last,
                 "also score each model as the mean of its end-of-round "
                 "weights over the last N rounds, for each N given (paired "
                 "rows '<config> +avgN')")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  TuneHostAllocatorForTraining();  // as the agent does
  absl::StatusOr<torch::Device> device = ResolveDevice(settings.device);
  if (!device.ok()) {
    std::fprintf(stderr, "%s\n",
                 std::string(device.status().message()).c_str());
    return 2;
  }
  torch::set_num_threads(settings.threads > 0
                             ? settings.threads
                             : static_cast<int>(std::max(
                                   1u, std::thread::hardware_concurrency())));
  if (settings.data_dir.empty()) {
    settings.data_dir = FindShared("data/busi-sites", "site-a/manifest.csv");
  }
  if (settings.data_dir.empty() ||
      !std::filesystem::exists(settings.data_dir + "/site-a/manifest.csv")) {
    std::printf(
        "SKIPPED: busi-sites not found (../shared/data/busi-sites); pass "
        "--data\n");
    return 0;
  }
  if (settings.reference_dir.empty()) {
    settings.reference_dir = FindShared("reference/busi-pytorch/results", "");
  }
  if (settings.normalization != "fixed_range" &&
      settings.normalization != "per_image" &&
      settings.normalization != "dataset") {
    std::fprintf(stderr, "unknown --normalization %s\n",
                 settings.normalization.c_str());
    return 2;
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
  if (settings.normalization == "dataset") {
    NormaliseWithPooledStatistics(sites, *external);
  }
  std::printf(
      "model %s, %dx%d, %d rounds x %d local epochs, batch %d, AdamW lr %g "
      "wd %g, schedule %s, normalisation %s, augmentation %s, optimiser "
      "state %s, test-time flip %s, label smoothing %g, mixup %g, %d "
      "threads, %s\n\n",
      settings.model.c_str(), settings.size, settings.size, settings.rounds,
      settings.epochs, settings.batch, settings.learning_rate,
      settings.weight_decay, settings.schedule.c_str(),
      settings.normalization.c_str(), settings.augmentation.c_str(),
      settings.keep_optimizer ? "kept" : "reset",
      settings.test_time_flip.c_str(), settings.label_smoothing,
      settings.mixup_alpha, at::get_num_threads(), device->str().c_str());
  std::printf(
      "| training | seeds | internal AUC | internal patient AUC | site-d AUC "
      "| site-d patient AUC | site-d acc %% | site-d F1 | s |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);
  std::vector<const ImageSet*> pooled;
  for (const SiteData& site : sites) pooled.push_back(&site.train);
  ImageSet central = Concatenate(pooled);
  const std::string prefix =
      settings.label.empty() ? "" : absl::StrCat(settings.label, " ");
  for (absl::string_view config : absl::StrSplit(settings.configs, ',')) {
    std::string name(config);
    const std::vector<EvalMode> modes = EvalModes(settings);
    // Per evaluation mode, one row of values per seed.
    std::vector<std::vector<Values>> per_seed(modes.size());
    for (int k = 0; k < settings.seeds; ++k) {
      const uint64_t seed = settings.seed + static_cast<uint64_t>(k);
      absl::StatusOr<Scores> scores;
      if (name == "central") {
        scores = TrainAlone(settings, RecipePlan(settings, Plan::FEDAVG, seed),
                            *device, modes, central, sites, *external);
      } else if (name.rfind("site-", 0) == 0) {
        auto site =
            std::find_if(sites.begin(), sites.end(),
                         [&](const SiteData& s) { return s.name == name; });
        if (site == sites.end()) {
          std::fprintf(stderr, "unknown config %s\n", name.c_str());
          return 2;
        }
        scores = TrainAlone(settings, RecipePlan(settings, Plan::FEDAVG, seed),
                            *device, modes, site->train, sites, *external);
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
        scores = Federate(settings, RecipePlan(settings, strategy, seed), wire,
                          *device, modes, sites, *external);
      }
      if (!scores.ok()) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(),
                     std::string(scores.status().message()).c_str());
        return 1;
      }
      for (size_t m = 0; m < modes.size(); ++m) {
        per_seed[m].push_back(Columns(*scores, m));
        std::fprintf(stderr, "  %s%s seed %llu: site-d AUC %.3f\n",
                     name.c_str(), modes[m].Suffix(modes).c_str(),
                     static_cast<unsigned long long>(seed),
                     per_seed[m].back()[2]);
      }
    }
    for (size_t m = 0; m < modes.size(); ++m) {
      std::printf(
          "%s\n",
          Row(absl::StrCat(prefix, name, modes[m].Suffix(modes)), per_seed[m])
              .c_str());
    }
    std::fflush(stdout);
  }
  // The reference beside it, from its own results (never re-implemented).
  bool header = false;
  for (absl::string_view config : absl::StrSplit(settings.configs, ',')) {
    std::string regime(config);
    if (absl::StartsWith(regime, "site-")) regime = "site_" + regime.substr(5);
    std::vector<Values> rows =
        ReferenceRows(settings.reference_dir, regime, settings.size);
    if (rows.empty()) continue;
    if (!header) {
      std::printf("\nreference (busi-pytorch results, %s):\n",
                  settings.reference_dir.c_str());
      header = true;
    }
    std::printf("%s\n", Row(absl::StrCat("reference ", regime), rows).c_str());
  }
  return 0;
}

}  // namespace
}  // namespace echofed

int main(int argc, char** argv) { return echofed::Main(argc, argv); }
