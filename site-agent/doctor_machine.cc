// The doctor's checks of this machine: the training device (GPU driver,
// LibTorch build), free disk, the site's data against the cohort rules,
// and an estimate of one round's time from timed synthetic steps.

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/plan_util.h"
#include "models/classifier.h"
#include "models/torch_compat.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/cohort.h"
#include "site-agent/data/manifest.h"
#include "site-agent/doctor.h"
#include "site-agent/doctor_internal.h"
#include "site-agent/training/dataset.h"
#include "site-agent/training/trainer.h"
#include "torch/torch.h"

namespace echofed {
namespace {

using doctor_internal::Fail;
using doctor_internal::Pass;
using doctor_internal::ReadableBytes;
using doctor_internal::ReadableSeconds;
using doctor_internal::Warn;

constexpr char kCudaBuildFix[] =
    "build the agent against a CUDA-enabled LibTorch (cmake "
    "-DTorch_DIR=<libtorch>/share/cmake/Torch, see README) or set device: "
    "\"cpu\"";

}  // namespace

// --- Device -----------------------------------------------------------------

std::vector<GpuInfo> ProbeNvidiaGpus() {
  // The driver API through dlopen: present on any machine with the NVIDIA
  // driver, whether or not this LibTorch build has CUDA. The library stays
  // loaded; unloading the driver mid-process is not supported by it.
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return {};
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  using GetFn = int (*)(int*, int);
  using NameFn = int (*)(char*, int, int);
  using MemoryFn = int (*)(size_t*, int);
  auto init = reinterpret_cast<InitFn>(dlsym(driver, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(driver, "cuDeviceGetCount"));
  auto get = reinterpret_cast<GetFn>(dlsym(driver, "cuDeviceGet"));
  auto name = reinterpret_cast<NameFn>(dlsym(driver, "cuDeviceGetName"));
  auto memory =
      reinterpret_cast<MemoryFn>(dlsym(driver, "cuDeviceTotalMem_v2"));
  std::vector<GpuInfo> gpus;
  int devices = 0;
  if (init == nullptr || count == nullptr || get == nullptr ||
      name == nullptr || memory == nullptr || init(0) != 0 ||
      count(&devices) != 0) {
    return gpus;
  }
  for (int ordinal = 0; ordinal < devices; ++ordinal) {
    int device = 0;
    if (get(&device, ordinal) != 0) continue;
    char text[256] = {};
    size_t bytes = 0;
    GpuInfo info;
    if (name(text, sizeof(text) - 1, device) == 0) info.name = text;
    if (memory(&bytes, device) == 0) {
      info.total_memory_bytes = static_cast<int64_t>(bytes);
    }
    gpus.push_back(std::move(info));
  }
  return gpus;
}

TorchBuildInfo ProbeTorchBuild() {
  TorchBuildInfo info;
  info.version = torch_compat::kTorchVersion;
  // True only when the CUDA part of LibTorch (libtorch_cuda) is linked in;
  // neither call touches the GPU.
  if (at::Context::hasCUDART()) {
    try {
      const int64_t version = at::Context::versionCUDART();  // 12040: 12.4
      info.cuda_version =
          absl::StrCat(version / 1000, ".", version % 1000 / 10);
    } catch (const c10::Error&) {
      info.cuda_version = "(version unknown)";
    }
  }
  return info;
}

DoctorCheck CheckDevice(const std::string& requested, bool torch_cuda_available,
                        const std::vector<GpuInfo>& gpus, int cpu_threads,
                        const TorchBuildInfo& torch) {
  auto describe = [&](size_t index) {
    if (index >= gpus.size()) return std::string("a CUDA GPU");
    return absl::StrCat(gpus[index].name, ", ",
                        ReadableBytes(gpus[index].total_memory_bytes));
  };
  // "; LibTorch 2.6.0 with CUDA 12.4" after every verdict.
  const std::string build =
      torch.version.empty()
          ? std::string()
          : absl::StrCat("; LibTorch ", torch.version,
                         torch.cuda_version.empty()
                             ? ", CPU-only"
                             : absl::StrCat(" with CUDA ", torch.cuda_version));
  // A CUDA build that sees no GPU the driver lists: the driver, not the
  // build, is what to fix.
  const bool driver_mismatch =
      !torch_cuda_available && !torch.cuda_version.empty() && !gpus.empty();
  const std::string driver_detail = absl::StrCat(
      "this LibTorch has CUDA but cannot use ", describe(0),
      " (NVIDIA driver older than its CUDA, or CUDA_VISIBLE_DEVICES)");
  const std::string driver_fix = absl::StrCat(
      "install an NVIDIA driver that supports CUDA ", torch.cuda_version,
      " (nvidia-smi shows the newest CUDA the driver supports) and check "
      "CUDA_VISIBLE_DEVICES in the agent's environment");
  std::string cpu = absl::StrCat("CPU, ", cpu_threads, " LibTorch threads");
  if (requested == "cpu") {
    return Pass(
        "device",
        absl::StrCat(cpu,
                     gpus.empty() ? ""
                                  : absl::StrCat(" (device: cpu in the "
                                                 "config; ",
                                                 describe(0), " unused)"),
                     build));
  }
  if (requested.empty() || requested == "auto") {
    if (torch_cuda_available) {
      return Pass("device", absl::StrCat("CUDA: ", describe(0), build));
    }
    if (driver_mismatch) {
      return Warn("device",
                  absl::StrCat(driver_detail, "; training on ", cpu, build),
                  driver_fix);
    }
    if (!gpus.empty()) {
      return Warn("device",
                  absl::StrCat("this LibTorch has no CUDA: ", describe(0),
                               " stays unused; training on ", cpu, build),
                  kCudaBuildFix);
    }
    return Pass("device", absl::StrCat(cpu, " (no CUDA GPU found)", build));
  }
  if (requested.rfind("cuda", 0) == 0) {
    size_t index = 0;
    if (requested.size() > 4) {
      if (requested[4] != ':' ||
          !absl::SimpleAtoi(requested.substr(5), &index)) {
        return Fail("device", absl::StrCat("bad device '", requested, "'"),
                    "set device: \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"");
      }
    }
    if (driver_mismatch) {
      return Fail("device",
                  absl::StrCat("the config asks for ", requested, ", but ",
                               driver_detail, build),
                  driver_fix);
    }
    if (!torch_cuda_available) {
      return Fail("device",
                  absl::StrCat("the config asks for ", requested, ", but ",
                               gpus.empty()
                                   ? "no CUDA GPU is visible"
                                   : absl::StrCat("this LibTorch has no CUDA (",
                                                  describe(0), " present)"),
                               build),
                  torch.cuda_version.empty()
                      ? std::string(kCudaBuildFix)
                      : "install the NVIDIA driver (nvidia-smi must list the "
                        "GPU) or set device: \"cpu\"");
    }
    if (!gpus.empty() && index >= gpus.size()) {
      return Fail("device",
                  absl::StrCat("the config asks for ", requested, ", but ",
                               gpus.size(), " GPU(s) are visible", build),
                  "set device: \"cuda:0\" (or \"auto\")");
    }
    return Pass("device", absl::StrCat("CUDA: ", describe(index), build));
  }
  return Fail("device", absl::StrCat("bad device '", requested, "'"),
              "set device: \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"");
}

// --- Disk -------------------------------------------------------------------

DoctorCheck CheckDiskSpace(const std::string& path, int64_t available_bytes,
                           const DoctorOptions& options) {
  std::string name = absl::StrCat("disk ", path);
  std::string detail = absl::StrCat(ReadableBytes(available_bytes), " free");
  std::string fix =
      absl::StrCat("free space on the file system of ", path, " (at least ",
                   ReadableBytes(options.disk_warning_bytes), ")");
  if (available_bytes < options.disk_failure_bytes) {
    return Fail(name, detail, fix);
  }
  if (available_bytes < options.disk_warning_bytes) {
    return Warn(name, detail, fix);
  }
  return Pass(name, detail);
}

// --- Site data --------------------------------------------------------------

DoctorCheck CheckSiteData(const std::string& data_dir, const Plan* plan,
                          const std::string& site, SiteDataCounts* counts) {
  constexpr char kName[] = "site data";
  if (data_dir.empty()) {
    return Fail(kName, "no data_dir in the config",
                "set data_dir to the folder holding manifest.csv");
  }
  absl::StatusOr<SiteInputs> inputs = LoadSiteInputs(data_dir);
  if (!inputs.ok()) {
    return Fail(kName, std::string(inputs.status().message()),
                "point data_dir at the folder holding manifest.csv (README, "
                "Site data), readable by the agent's user");
  }
  std::vector<std::string> classes;
  if (plan != nullptr) {
    classes.assign(plan->class_names().begin(), plan->class_names().end());
  } else {
    // As check-data does without a plan: every label present is a class.
    std::set<std::string> labels;
    for (const ImageRecord& record : inputs->manifest.records) {
      labels.insert(record.label);
    }
    if (inputs->clinical) labels = {"NB", "GNB", "GN"};
    classes.assign(labels.begin(), labels.end());
  }
  CohortOptions cohort_options;
  cohort_options.class_names = classes;
  Cohort cohort = SelectCohort(inputs->manifest,
                               inputs->clinical ? &*inputs->clinical : nullptr,
                               cohort_options);
  const CohortFlow& flow = cohort.flow;
  counts->screened_patients = flow.screened;
  counts->included_patients = flow.included;
  counts->included_images = flow.included_images;
  Plan::Role role = Plan::TRAIN;
  if (plan != nullptr) role = RoleInPlan(*plan, site);
  if (role == Plan::TRAIN) {
    Plan defaults = plan != nullptr ? *plan : Plan();
    ApplyPlanDefaults(&defaults);
    std::vector<ImageRecord> included = cohort.Records();
    std::set<std::string> training = TrainingPatients(
        included, defaults.train_fraction(), defaults.split_seed());
    for (const ImageRecord& record : included) {
      ++(training.count(record.patient_id) ? counts->train_images
                                           : counts->validation_images);
    }
  } else {
    counts->validation_images = flow.included_images;
  }

  std::string detail = absl::StrCat(
      "screened ", flow.screened, " patients, included ", flow.included,
      " patients / ", flow.included_images, " images (", counts->train_images,
      " train, ", counts->validation_images, " validation)");
  std::string check_data = absl::StrCat(
      "run `echofed-agent check-data ", data_dir,
      plan != nullptr ? absl::StrCat(" --classes ", absl::StrJoin(classes, ","))
                      : "",
      "` for the reasons, patient by patient");
  if (flow.included == 0) {
    return Fail(kName, detail, check_data);
  }
  if (plan != nullptr && role == Plan::ROLE_UNSPECIFIED) {
    return Warn(
        kName,
        absl::StrCat(detail, "; but the plan names no site '", site, "'"),
        "ask the coordinating centre to list this site in the plan's "
        "sites");
  }
  size_t problems = inputs->manifest.errors.size() +
                    static_cast<size_t>(flow.unreadable_images) +
                    (inputs->clinical ? inputs->clinical->errors.size() : 0);
  if (problems > 0) {
    return Warn(kName,
                absl::StrCat(detail, "; ", problems,
                             " manifest/clinical lines or images with errors"),
                check_data);
  }
  return Pass(kName, detail);
}

// --- Round time -------------------------------------------------------------

DoctorCheck EstimateRoundTime(const Plan& given_plan,
                              const SiteDataCounts& data,
                              const std::string& device_name,
                              const DoctorOptions& options) {
  constexpr char kName[] = "round time";
  Plan plan = given_plan;
  ApplyPlanDefaults(&plan);
  absl::StatusOr<torch::Device> resolved = ResolveDevice(device_name);
  torch::Device device = resolved.ok() ? *resolved : torch::Device(torch::kCPU);
  ModelOptions model_options;
  model_options.name = plan.model();
  model_options.num_classes = std::max(plan.class_names_size(), 2);
  model_options.heads.assign(plan.heads().begin(), plan.heads().end());
  model_options.clinical_features =
      static_cast<int>(ClinicalFeatureNames().size());
  absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> created =
      CreateClassifier(model_options);
  if (!created.ok()) {
    return Fail(kName,
                absl::StrCat("the plan's model: ", created.status().message()),
                "this agent is older than the plan: install the study's "
                "agent version");
  }
  ImageClassifierImpl& model = **created;
  model.to(device);
  model.train();
  const int batch = std::max(plan.batch_size(), 1);
  const int size = PreprocessingFromPlan(plan).image_size;
  // Synthetic input of the plan's shape: the cost of a step depends on
  // shapes, not on pixel values, and no patient image is needed.
  torch::Tensor images = torch::randn({batch, 1, size, size}).to(device);
  torch::Tensor labels =
      torch::randint(model_options.num_classes, {batch}, torch::kLong)
          .to(device);
  torch::Tensor clinical =
      torch::randn({batch, model_options.clinical_features}).to(device);
  torch::optim::SGD optimizer(model.parameters(),
                              torch::optim::SGDOptions(0.001).momentum(0.9));
  auto step = [&] {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        model.Predict(images, clinical).subtype, labels);
    loss.backward();
    optimizer.step();
    // item() waits for the device, so CUDA steps are timed to their end.
    return loss.item<float>();
  };
  try {
    step();  // warm-up: allocations and kernel selection
    absl::Time start = absl::Now();
    int timed = 0;
    while (timed < options.max_timed_batches &&
           (timed == 0 || absl::Now() - start < options.timing_budget)) {
      step();
      ++timed;
    }
    double step_seconds = absl::ToDoubleSeconds(absl::Now() - start) / timed;
    model.eval();
    absl::Time eval_start = absl::Now();
    {
      torch::NoGradGuard no_grad;
      model.Predict(images, clinical).subtype.sum().item<float>();
    }
    double forward_seconds = absl::ToDoubleSeconds(absl::Now() - eval_start);
    int64_t train_batches = (data.train_images + batch - 1) / batch;
    int64_t eval_batches = (data.validation_images + batch - 1) / batch;
    // The test-time flip scores every validation batch twice.
    const int eval_passes = UsesTestTimeFlip(plan) ? 2 : 1;
    double round_seconds = plan.local_epochs() * train_batches * step_seconds +
                           eval_passes * eval_batches * forward_seconds;
    std::string detail = absl::StrFormat(
        "about %s per round (estimate: %d epoch(s) x %d batches at %.2f s "
        "plus %d evaluation batches; %s, %d px, batch %d on %s, timed over %d "
        "synthetic steps; transfers and image decoding not included)",
        ReadableSeconds(round_seconds), plan.local_epochs(), train_batches,
        step_seconds, eval_batches, plan.model(), size, batch, device.str(),
        timed);
    if (plan.round_deadline_seconds() > 0 &&
        round_seconds > plan.round_deadline_seconds()) {
      return Warn(kName,
                  absl::StrCat(detail,
                               "; longer than the plan's round "
                               "deadline of ",
                               plan.round_deadline_seconds(), " s"),
                  "train on a GPU (device: \"auto\" with a CUDA LibTorch), or "
                  "ask the coordinating centre for a longer "
                  "round_deadline_seconds");
    }
    return Pass(kName, detail);
  } catch (const c10::Error& error) {
    return Fail(kName,
                absl::StrCat("a training step of ", plan.model(),
                             " failed: ", error.what_without_backtrace()),
                "check the device's memory (a smaller batch_size in the plan) "
                "and the LibTorch installation");
  }
}
}  // namespace echofed
