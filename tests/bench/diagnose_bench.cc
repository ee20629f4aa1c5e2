// Per-patient latency of `echofed-agent diagnose` (CPU by default; --device
// cuda[:N] puts the model on a GPU, as `diagnose --device` does): one image,
// the model already loaded, from the image file to the finished report data
// (decode, crop/resize/normalise, forward pass with every head, Grad-CAM's
// backward pass and maps). Rendering the HTML page (PNG + base64 of image
// and overlay) is timed separately. Issue 6's target: under 200 ms for one
// 224x224 image with the default fusion model (resnet18_fusion).
//
//   ./build/bin/diagnose_bench                      # 224 px, 30 runs/format
//   ./build/bin/diagnose_bench --threads 1 --iterations 50
//   ./build/bin/diagnose_bench --device cuda      # on the GPU machine
//
// On CUDA every part's time is complete: Diagnose copies each output back
// to the host (a synchronisation) before the part's clock stops.
//
// Weights are freshly initialised (latency does not depend on their
// values); the images are the synthetic cohort's, one per archive format.

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/tensor_bundle.h"
#include "models/state_exchange.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/manifest.h"
#include "site-agent/data/synthetic_cohort.h"
#include "site-agent/diagnosis/diagnose.h"
#include "site-agent/training/trainer.h"
#include "torch/torch.h"

namespace {

double Percentile(std::vector<double> values, double q) {
  std::sort(values.begin(), values.end());
  if (values.empty()) return 0;
  double rank = q * (values.size() - 1);
  size_t lo = static_cast<size_t>(rank);
  size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (rank - lo) * (values[hi] - values[lo]);
}

int Fail(const absl::Status& status) {
  std::cerr << "diagnose_bench: " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"per-patient latency of diagnose (CPU or GPU)"};
  // --help shows each default.
  app.option_defaults()->always_capture_default();
  std::string model_name = "resnet18_fusion";
  int size = 224;
  int iterations = 30;
  int warmup = 3;
  int threads = 0;
  int formats = 4;
  std::string device_name = "cpu";
  app.add_option("--model", model_name, "registry model");
  app.add_option("--size", size, "image side and plan image_size (pixels)");
  app.add_option("--iterations", iterations, "timed runs per format");
  app.add_option("--warmup", warmup, "untimed runs per format");
  app.add_option("--threads", threads, "LibTorch CPU threads (0: default)");
  app.add_option("--formats", formats,
                 "how many archive formats (1-4: DICOM, JPEG, DICOM JPEG, "
                 "PNG)");
  app.add_option("--device", device_name, "cpu, cuda, cuda:N or auto");
  CLI11_PARSE(app, argc, argv);
  absl::StatusOr<torch::Device> device = echofed::ResolveDevice(device_name);
  if (!device.ok()) return Fail(device.status());
  if (threads > 0) {
    torch::set_num_threads(threads);
    torch::set_num_interop_threads(1);
  }
  formats = std::clamp(formats, 1, 4);

  char pattern[] = "/tmp/echofed-diagnose-bench-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    std::cerr << "diagnose_bench: cannot make a temporary folder\n";
    return 1;
  }
  const std::string dir = pattern;
  struct Cleanup {
    std::string dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};

  echofed::SyntheticCohortOptions cohort;
  cohort.out_dir = dir + "/cohort";
  cohort.sites = formats;
  cohort.patients_per_site = 3;
  cohort.image_size = size;
  if (absl::Status status = echofed::WriteSyntheticCohort(cohort);
      !status.ok()) {
    return Fail(status);
  }

  echofed::Plan plan;
  plan.set_name("diagnose bench");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  plan.set_model(model_name);
  plan.set_image_size(size);
  plan.add_heads(echofed::Plan::SUBTYPE);
  if (echofed::IsFusionModel(model_name)) {
    for (echofed::Plan::Head head :
         {echofed::Plan::HIGH_RISK, echofed::Plan::BONE_MARROW,
          echofed::Plan::RESPONSE, echofed::Plan::PROGNOSIS}) {
      plan.add_heads(head);
    }
  }
  echofed::ModelOptions model_options;
  model_options.name = model_name;
  model_options.num_classes = 3;
  model_options.heads.assign(plan.heads().begin(), plan.heads().end());
  model_options.clinical_features =
      static_cast<int>(echofed::ClinicalFeatureNames().size());
  torch::manual_seed(1);
  auto created = echofed::CreateClassifier(model_options);
  if (!created.ok()) return Fail(created.status());
  auto bundle = echofed::ExportState(**created, model_name);
  if (!bundle.ok()) return Fail(bundle.status());
  const std::string model_path = dir + "/model.efm";
  if (auto digest = echofed::WriteModelFile(model_path, *bundle);
      !digest.ok()) {
    return Fail(digest.status());
  }
  created->reset();
  const absl::Time load_start = absl::Now();
  echofed::DiagnosticModelOptions load_options;
  load_options.device = *device;
  auto model = echofed::DiagnosticModel::Load(model_path, plan, load_options);
  if (!model.ok()) return Fail(model.status());
  const double load_ms = absl::ToDoubleMilliseconds(absl::Now() - load_start);

  std::cout << absl::StrFormat(
      "diagnose latency, one %dx%d image per patient, %s (%.1fM parameters), "
      "%d LibTorch threads, device %s, model loaded once (%.0f ms)\n\n",
      size, size, model_name,
      [&] {
        double n = 0;
        for (const auto& t : bundle->manifest.tensors()) {
          double e = 1;
          for (int64_t d : t.shape()) e *= static_cast<double>(d);
          n += e;
        }
        return n / 1e6;
      }(),
      torch::get_num_threads(), device->str(), load_ms);
  std::cout << absl::StrFormat(
      "%-22s %9s %9s | %8s %8s %8s | %11s %9s\n", "image format", "median ms",
      "p90 ms", "decode", "fwd+bwd", "CAM maps", "no Grad-CAM", "HTML page");
  const char* kFormatNames[] = {"DICOM (uncompressed)", "JPEG",
                                "DICOM (JPEG, YBR)", "PNG"};
  bool all_met = true;
  for (int site = 1; site <= formats; ++site) {
    const std::string site_dir = absl::StrCat(dir, "/cohort/site-", site);
    auto manifest = echofed::LoadManifest(site_dir);
    if (!manifest.ok()) return Fail(manifest.status());
    const echofed::ImageRecord& first = manifest->records.front();
    echofed::PatientInput patient;
    patient.patient_id = first.patient_id;
    patient.images = {first};
    auto clinical = echofed::LoadPatientClinical(site_dir + "/clinical.csv",
                                                 first.patient_id);
    if (!clinical.ok()) return Fail(clinical.status());
    patient.clinical = *clinical;

    std::vector<double> total, decode, forward, saliency, html, plain;
    for (int i = 0; i < warmup + iterations; ++i) {
      echofed::DiagnoseTimings timings;
      auto report = (*model)->Diagnose(patient, {}, &timings);
      if (!report.ok()) return Fail(report.status());
      const absl::Time html_start = absl::Now();
      auto page = echofed::DiagnosticReportHtml(*report);
      if (!page.ok()) return Fail(page.status());
      const double html_ms =
          absl::ToDoubleMilliseconds(absl::Now() - html_start);
      // The same patient without Grad-CAM (forward pass only, no grad):
      // what the saliency maps cost.
      echofed::DiagnoseOptions no_saliency;
      no_saliency.saliency = false;
      echofed::DiagnoseTimings plain_timings;
      if (auto without =
              (*model)->Diagnose(patient, no_saliency, &plain_timings);
          !without.ok()) {
        return Fail(without.status());
      }
      if (i < warmup) continue;
      plain.push_back(plain_timings.total_ms);
      total.push_back(timings.total_ms);
      decode.push_back(timings.decode_ms);
      forward.push_back(timings.model_ms);
      saliency.push_back(timings.saliency_ms);
      html.push_back(html_ms);
    }
    const double median = Percentile(total, 0.5);
    all_met = all_met && median < 200;
    std::cout << absl::StrFormat(
        "%-22s %9.1f %9.1f | %8.1f %8.1f %8.1f | %11.1f %9.1f\n",
        kFormatNames[site - 1], median, Percentile(total, 0.9),
        Percentile(decode, 0.5), Percentile(forward, 0.5),
        Percentile(saliency, 0.5), Percentile(plain, 0.5),
        Percentile(html, 0.5));
  }
  std::cout << absl::StrFormat(
      "\nmedian and p90 of the total over %d runs per format (after %d "
      "warm-up). Parts (medians): decode + crop/resize/normalise; forward "
      "pass with every head plus Grad-CAM's backward pass; the maps "
      "(upsampling, normalising). 'no Grad-CAM': the same diagnosis "
      "without saliency. The HTML page (PNG + base64) is extra.\ntarget: under "
      "200 ms per patient (decode + model + "
      "Grad-CAM): %s\n",
      iterations, warmup, all_met ? "met" : "NOT met");
  return 0;
}
