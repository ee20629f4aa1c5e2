// echofed-agent: the site daemon and its site-side commands.
//   run         join the coordinator and work through training tasks
//   synth       write the built-in synthetic cohort (demo, tests)
//   check-data  read the site's manifest and images, print what qualifies
//   diagnose    run the trained model on one patient (report) or on the
//               whole local cohort (batch CSV); results stay at the site,
//               or go into the patient's study in the hospital PACS
//   pacs        echo, pull a cohort from the hospital PACS, pseudonyms
//   doctor      pre-flight checks for site IT: kit, coordinator, clock,
//               device, disk, data, estimated round time

#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/log.h"
#include "common/plan_util.h"
#include "proto/config.pb.h"
#include "site-agent/agent.h"
#include "site-agent/coordinator_client.h"
#include "site-agent/data/cohort.h"
#include "site-agent/data/synthetic_cohort.h"
#include "site-agent/diagnosis/diagnose.h"
#include "site-agent/diagnosis/report_dicom.h"
#include "site-agent/doctor.h"
#include "site-agent/pacs/pacs_client.h"
#include "site-agent/pacs/pacs_commands.h"
#include "site-agent/pacs/pseudonym.h"
#include "site-agent/training/dataset.h"
#include "site-agent/training/host_allocator.h"
#include "site-agent/training/trainer.h"
#include "torch/torch.h"

namespace {

echofed::Agent* g_agent = nullptr;

void StopOnSignal(int) {
  if (g_agent != nullptr) g_agent->Stop();
}

int RunAgent(const std::string& config_path, bool exit_after_run, int threads) {
  echofed::AgentConfig config;
  if (absl::Status status = echofed::LoadTextProto(config_path, &config);
      !status.ok()) {
    echofed::LogError(status.message());
    return 2;
  }
  echofed::TlsFiles files;
  files.set_ca_cert(
      echofed::ResolveRelativeTo(config_path, config.tls().ca_cert()));
  files.set_cert(echofed::ResolveRelativeTo(config_path, config.tls().cert()));
  files.set_key(echofed::ResolveRelativeTo(config_path, config.tls().key()));
  absl::StatusOr<echofed::TlsMaterial> tls = echofed::LoadTlsMaterial(files);
  if (!tls.ok()) {
    echofed::LogError(config_path, ": tls: ", tls.status().message());
    return 2;
  }
  if (config.coordinator_address().empty() || config.data_dir().empty()) {
    echofed::LogError(config_path,
                      ": coordinator_address and data_dir are required");
    return 2;
  }
  if (threads > 0) {
    torch::set_num_threads(threads);
    torch::set_num_interop_threads(1);
  }
  echofed::CoordinatorConnection connection{config.coordinator_address(),
                                            config.coordinator_name(), *tls};
  echofed::AgentOptions options;
  options.tls = std::move(*tls);
  options.data_dir = echofed::ResolveRelativeTo(config_path, config.data_dir());
  if (!config.device().empty()) options.device = config.device();
  if (config.min_cell_count() < 0) {
    echofed::LogError(config_path,
                      ": min_cell_count must not be negative (0: the "
                      "default, 5)");
    return 2;
  }
  if (config.min_cell_count() > 0) {
    options.min_cell_count = config.min_cell_count();
  }
  if (!(config.max_epsilon() >= 0) || std::isinf(config.max_epsilon())) {
    echofed::LogError(config_path,
                      ": max_epsilon must be a finite number >= 0 (0: no "
                      "privacy budget required)");
    return 2;
  }
  options.max_epsilon = config.max_epsilon();
  if (!config.state_dir().empty()) {
    options.state_dir =
        echofed::ResolveRelativeTo(config_path, config.state_dir());
  }
  if (!config.initial_checkpoint().empty()) {
    options.initial_checkpoint =
        echofed::ResolveRelativeTo(config_path, config.initial_checkpoint());
  }
  options.exit_after_run = exit_after_run;
  // The log goes to stderr, so that is where a person would see the line.
  options.progress_on_terminal = isatty(STDERR_FILENO) == 1;
  echofed::Agent agent(std::move(options),
                       echofed::NewGrpcCoordinatorClient(connection));
  g_agent = &agent;
  std::signal(SIGTERM, StopOnSignal);
  std::signal(SIGINT, StopOnSignal);
  absl::Status status = agent.Run();
  g_agent = nullptr;
  if (!status.ok()) {
    echofed::LogError(status.ToString());
    return 1;
  }
  return 0;
}

int CheckData(const std::string& data_dir, std::vector<std::string> classes,
              std::string exclusions_path) {
  absl::StatusOr<echofed::SiteInputs> inputs =
      echofed::LoadSiteInputs(data_dir);
  if (!inputs.ok()) {
    std::cerr << "check-data: " << inputs.status().message() << "\n";
    return 1;
  }
  if (classes.empty()) {
    // Without a plan, every label present is a class.
    std::set<std::string> labels;
    for (const echofed::ImageRecord& record : inputs->manifest.records) {
      labels.insert(record.label);
    }
    if (inputs->clinical) labels = {"NB", "GNB", "GN"};
    classes.assign(labels.begin(), labels.end());
  }
  std::cout << "data folder: " << inputs->manifest.data_dir << "\n"
            << "classes: " << absl::StrJoin(classes, ", ") << "\n"
            << "clinical table: "
            << (inputs->clinical ? "clinical.csv" : "none") << "\n\n";
  for (const echofed::RecordError& error : inputs->manifest.errors) {
    std::cout << "manifest.csv line " << error.line << ": " << error.message
              << "\n";
  }
  if (inputs->clinical) {
    for (const echofed::ClinicalRowError& error : inputs->clinical->errors) {
      std::cout << "clinical.csv line " << error.line << ": " << error.message
                << "\n";
    }
  }
  echofed::CohortOptions options;
  options.class_names = classes;
  echofed::Cohort cohort = echofed::SelectCohort(
      inputs->manifest, inputs->clinical ? &*inputs->clinical : nullptr,
      options);
  std::cout << "\n" << echofed::FormatFlow(cohort.flow);
  if (exclusions_path.empty()) {
    exclusions_path =
        "echofed-excluded-" +
        std::filesystem::path(inputs->manifest.data_dir).filename().string() +
        ".csv";
  }
  absl::Status written =
      echofed::WriteExclusions(exclusions_path, cohort.exclusions);
  if (!written.ok()) {
    std::cerr << "check-data: " << written.message() << "\n";
    return 1;
  }
  std::cout
      << "\nexcluded patients with reasons: " << exclusions_path
      << " (mode 0600; it identifies patients and must stay at the site)\n";
  return cohort.flow.included > 0 ? 0 : 3;
}

struct DiagnoseFlags {
  std::string model_path;
  std::string plan_path;
  std::vector<std::string> images;
  std::string clinical_path;
  std::string patient_id;
  std::string out_dir;
  std::string expected_digest;
  std::string baseline_path;
  std::string data_dir;
  std::string device = "cpu";
  int round = -1;
  int threads = 0;
  bool allow_missing_clinical = false;
  // The agent config whose pacs block receives the SR and Grad-CAM images.
  bool to_pacs = false;
  std::string config_path;
};

// The report as DICOM (a Comprehensive SR and a Grad-CAM Secondary Capture
// per image) in the patient's study, written beside the other report files
// and stored in the PACS.
int SendToPacs(const DiagnoseFlags& flags, const echofed::Plan& plan,
               const echofed::DiagnosticReport& report,
               echofed::DicomStudyContext context) {
  auto fail = [](const absl::Status& status) {
    std::cerr << "diagnose --to-pacs: " << status.message() << "\n";
    return 1;
  };
  absl::StatusOr<bool> same = echofed::IsSamePatient(
      flags.config_path, report.patient_id, context.patient_id);
  if (!same.ok()) return fail(same.status());
  if (!*same) {
    std::cerr << "diagnose --to-pacs: the images belong to another patient "
                 "than --patient (neither the same id nor its pseudonym at "
                 "this site); nothing was stored\n";
    return 1;
  }
  // The model saw the middle frame of a cine loop (the plan's default), so
  // that is the frame the results refer to.
  if (plan.frame_selection() == echofed::Plan::MIDDLE_FRAME) {
    for (echofed::DicomInstanceRef& image : context.images) {
      if (image.number_of_frames > 1) {
        image.referenced_frame = image.number_of_frames / 2 + 1;
      }
    }
  }
  echofed::DiagnosisDicomOptions options;
  // IsSamePatient vouched for a pseudonym of the images' Patient ID.
  options.require_matching_patient_id = false;
  absl::StatusOr<echofed::DiagnosisDicomFiles> files =
      echofed::WriteDiagnosisDicom(report, context, flags.out_dir, options);
  if (!files.ok()) return fail(files.status());
  if (absl::Status stored =
          echofed::StoreInPacs(flags.config_path, files->All());
      !stored.ok()) {
    std::cerr << "diagnose --to-pacs: " << stored.message()
              << "\n(the objects are kept in " << flags.out_dir
              << "; nothing in the PACS was changed by a refused store)\n";
    return 1;
  }
  std::cout << "stored in the PACS, in the patient's study: the structured "
               "report and "
            << files->gradcam.size() << " Grad-CAM image(s)\n";
  return 0;
}

int Diagnose(const DiagnoseFlags& flags) {
  auto fail = [](const absl::Status& status) {
    std::cerr << "diagnose: " << status.message() << "\n";
    return 1;
  };
  if (flags.threads > 0) {
    torch::set_num_threads(flags.threads);
    torch::set_num_interop_threads(1);
  }
  const bool batch = !flags.data_dir.empty();
  if (batch && (!flags.images.empty() || !flags.clinical_path.empty() ||
                !flags.patient_id.empty())) {
    std::cerr << "diagnose: --data (batch) takes the site folder's "
                 "manifest.csv and clinical.csv; leave out --image, "
                 "--clinical and --patient\n";
    return 2;
  }
  if (flags.to_pacs && (batch || flags.config_path.empty())) {
    std::cerr << "diagnose: --to-pacs takes one patient's DICOM images "
                 "(--image) and the agent config with the PACS (--config)\n";
    return 2;
  }
  if (!batch && flags.images.empty()) {
    std::cerr << "diagnose: give the patient's images (--image, repeatable) "
                 "or a site folder (--data)\n";
    return 2;
  }
  // Before the model runs: results can go to the PACS only for DICOM
  // images of one patient's study.
  std::optional<echofed::DicomStudyContext> study;
  if (flags.to_pacs) {
    absl::StatusOr<echofed::DicomStudyContext> context =
        echofed::ReadStudyContextForImages(flags.images);
    if (!context.ok()) return fail(context.status());
    study = std::move(*context);
  }
  absl::StatusOr<echofed::Plan> plan =
      echofed::LoadDiagnosticPlan(flags.plan_path);
  if (!plan.ok()) return fail(plan.status());
  echofed::DiagnosticModelOptions model_options;
  model_options.expected_digest_hex = flags.expected_digest;
  if (flags.round >= 0) model_options.global_round = flags.round;
  absl::StatusOr<torch::Device> device = echofed::ResolveDevice(flags.device);
  if (!device.ok()) return fail(device.status());
  model_options.device = *device;
  absl::StatusOr<std::unique_ptr<echofed::DiagnosticModel>> model =
      echofed::DiagnosticModel::Load(flags.model_path, *plan, model_options);
  if (!model.ok()) return fail(model.status());

  if (batch) {
    echofed::BatchOptions options;
    options.data_dir = flags.data_dir;
    options.out_dir = flags.out_dir;
    absl::StatusOr<echofed::BatchResult> result =
        echofed::DiagnoseBatch(**model, options);
    if (!result.ok()) return fail(result.status());
    std::cout << result->diagnosed << " of " << result->patients
              << " patients diagnosed, " << result->failed
              << " refused (reason in the row)\n"
              << result->baseline_note << "\n"
              << "rows: " << result->csv_path
              << " (mode 0600; it identifies patients and must stay at the "
                 "site)\n";
    return result->failed == 0 ? 0 : 3;
  }

  echofed::PatientInput patient;
  patient.patient_id = flags.patient_id;
  for (const std::string& path : flags.images) {
    echofed::ImageRecord record;
    record.patient_id = flags.patient_id;
    record.image_path = path;
    patient.images.push_back(record);
  }
  if (!flags.clinical_path.empty()) {
    absl::StatusOr<echofed::ClinicalRecord> record =
        echofed::LoadPatientClinical(flags.clinical_path, flags.patient_id);
    if (!record.ok()) return fail(record.status());
    if (patient.patient_id.empty()) patient.patient_id = record->patient_id;
    patient.clinical = std::move(*record);
  } else if ((*model)->uses_clinical() && !flags.allow_missing_clinical) {
    std::cerr << "diagnose: model " << (*model)->plan().model()
              << " reads the clinical record: give --clinical (and "
                 "--patient), or --allow-missing-clinical to run it with "
                 "every clinical input missing\n";
    return 2;
  }
  if (patient.patient_id.empty()) {
    std::cerr << "diagnose: name the patient (--patient)\n";
    return 2;
  }
  std::optional<echofed::BaselineHazard> baseline;
  if (!flags.baseline_path.empty()) {
    absl::StatusOr<std::string> text =
        echofed::ReadFileToString(flags.baseline_path);
    if (!text.ok()) return fail(text.status());
    absl::StatusOr<echofed::BaselineHazard> parsed =
        echofed::ParseBaselineHazard(*text, flags.baseline_path);
    if (!parsed.ok()) return fail(parsed.status());
    baseline = std::move(*parsed);
  }
  echofed::DiagnoseOptions options;
  options.baseline = baseline ? &*baseline : nullptr;
  echofed::DiagnoseTimings timings;
  absl::StatusOr<echofed::DiagnosticReport> report =
      (*model)->Diagnose(patient, options, &timings);
  if (!report.ok()) return fail(report.status());
  absl::StatusOr<echofed::DiagnosticReportFiles> files =
      echofed::WriteDiagnosticReport(*report, flags.out_dir);
  if (!files.ok()) return fail(files.status());
  const echofed::DiagnosticReport& r = *report;
  std::cout << "patient " << r.patient_id << ": "
            << r.class_names[r.predicted_class]
            << absl::StrFormat(" %.1f%%",
                               100 * r.subtype_probabilities[r.predicted_class])
            << ", INRG rule " << echofed::DescribeInrg(r.inrg) << "\n";
  for (const std::string& warning : r.warnings) {
    std::cout << "warning: " << warning << "\n";
  }
  std::cout << "report: " << files->html << "\n        " << files->json
            << "\n(decision support, not a diagnosis; mode 0600, stays at "
               "the site; "
            << absl::StrFormat("%.0f ms", timings.total_ms) << ")\n";
  if (study) return SendToPacs(flags, *plan, r, std::move(*study));
  return 0;
}

struct DoctorFlags {
  std::string config_path;
  std::string plan_path;
  std::vector<std::string> state_dirs;
  int threads = 0;
};

// The hospital PACS, when the config has one: the block is valid, the PACS
// answers and accepts this agent, and the pseudonym key (if it exists yet)
// is private.
echofed::DoctorCheck PacsCheck(const std::string& config_path) {
  const char kName[] = "PACS";
  absl::StatusOr<echofed::PacsSettings> settings =
      echofed::LoadPacsSettings(config_path);
  if (!settings.ok()) {
    return {kName, echofed::CheckOutcome::kFail,
            std::string(settings.status().message()),
            "fix the pacs block (deploy/examples/agent.textproto)"};
  }
  absl::StatusOr<std::unique_ptr<echofed::PacsClient>> client =
      echofed::NewPacsClient(settings->pacs);
  if (!client.ok()) {
    return {kName, echofed::CheckOutcome::kFail,
            std::string(client.status().message()),
            "fix the pacs block (deploy/examples/agent.textproto)"};
  }
  if (absl::Status echo = (*client)->Echo(); !echo.ok()) {
    return {kName, echofed::CheckOutcome::kFail,
            absl::StrCat((*client)->Describe(), ": ", echo.message()),
            "check host and port, the firewall, and that the PACS knows "
            "this agent's AE title (or DICOMweb credentials)"};
  }
  const std::string& key = settings->pseudonym_key_file;
  if (!key.empty() && std::filesystem::exists(key)) {
    absl::StatusOr<echofed::PseudonymKey> loaded =
        echofed::PseudonymKey::LoadOrCreate(key);
    if (!loaded.ok()) {
      return {kName, echofed::CheckOutcome::kFail,
              std::string(loaded.status().message()),
              "restore the key from the site's backup with mode 0600"};
    }
  }
  return {kName, echofed::CheckOutcome::kPass,
          absl::StrCat((*client)->Describe(), " answers",
                       key.empty() ? "; pseudonyms off"
                       : std::filesystem::exists(key)
                           ? "; pseudonym key in place"
                           : "; the pseudonym key is created by the first "
                             "pull")};
}

int Doctor(const DoctorFlags& flags) {
  echofed::AgentConfig config;
  if (absl::Status status = echofed::LoadTextProto(flags.config_path, &config);
      !status.ok()) {
    std::cout << echofed::FormatCheck(
        {"config", echofed::CheckOutcome::kFail, std::string(status.message()),
         "fix the agent's config (deploy/examples/agent.textproto documents "
         "every field)"});
    return 1;
  }
  if (flags.threads > 0) {
    torch::set_num_threads(flags.threads);
    torch::set_num_interop_threads(1);
  }
  echofed::DoctorOptions options;
  options.config_path = flags.config_path;
  options.coordinator_address = config.coordinator_address();
  options.coordinator_name = config.coordinator_name();
  auto resolve = [&](const std::string& path) {
    return path.empty() ? path
                        : echofed::ResolveRelativeTo(flags.config_path, path);
  };
  options.tls.set_ca_cert(resolve(config.tls().ca_cert()));
  options.tls.set_cert(resolve(config.tls().cert()));
  options.tls.set_key(resolve(config.tls().key()));
  options.data_dir = resolve(config.data_dir());
  if (!config.device().empty()) options.device = config.device();
  options.disk_paths = flags.state_dirs;
  if (options.disk_paths.empty()) {
    // Under systemd the unit's StateDirectory; by hand, where it runs.
    const char* state = std::getenv("STATE_DIRECTORY");
    options.disk_paths.push_back(state != nullptr ? state : ".");
  }
  std::vector<echofed::DoctorCheck> early;
  if (!flags.plan_path.empty()) {
    absl::StatusOr<echofed::Plan> plan =
        echofed::LoadDiagnosticPlan(flags.plan_path);
    absl::Status problem = plan.status();
    if (problem.ok()) problem = echofed::ValidatePlan(*plan);
    if (problem.ok()) {
      options.plan = *plan;
    } else {
      early.push_back({"plan", echofed::CheckOutcome::kFail,
                       std::string(problem.message()),
                       "pass the study's plan.textproto as the coordinating "
                       "centre sent it"});
    }
  }
  std::cout << "echofed-agent doctor: " << flags.config_path << "\n";
  int counts[3] = {0, 0, 0};
  auto print = [&counts](const echofed::DoctorCheck& check) {
    std::cout << echofed::FormatCheck(check) << std::flush;
    ++counts[static_cast<int>(check.outcome)];
  };
  for (const echofed::DoctorCheck& check : early) print(check);
  // Each line as soon as its check is done: the network timeouts and the
  // timing run take seconds.
  options.on_check = print;
  echofed::DoctorReport report = echofed::RunDoctor(options);
  bool pacs_failed = false;
  if (config.has_pacs()) {
    echofed::DoctorCheck pacs = PacsCheck(flags.config_path);
    pacs_failed = pacs.outcome == echofed::CheckOutcome::kFail;
    print(pacs);
  }
  std::cout << "\n"
            << counts[0] << " passed, " << counts[1] << " warnings, "
            << counts[2] << " failed\n";
  return report.failed() || !early.empty() || pacs_failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // First thing: the settings hold for every allocation after this call
  // (host_allocator.h says why).
  echofed::TuneHostAllocatorForTraining();
  CLI::App app{"echofed site agent"};
  app.require_subcommand(1);

  CLI::App* run = app.add_subcommand("run", "join the coordinator and train");
  std::string config_path;
  bool exit_after_run = false;
  int threads = 0;
  run->add_option("-c,--config", config_path, "AgentConfig textproto")
      ->required();
  run->add_flag("--exit-after-run", exit_after_run,
                "leave once a run this site took part in has ended");
  run->add_option("--threads", threads, "LibTorch CPU threads (0: default)");

  CLI::App* synth = app.add_subcommand(
      "synth", "write the built-in SYNTHETIC neuroblastic-tumour cohort");
  echofed::SyntheticCohortOptions synth_options;
  synth->add_option("-o,--out", synth_options.out_dir, "output folder")
      ->required();
  synth->add_option("--sites", synth_options.sites, "virtual hospitals");
  synth->add_option("--patients", synth_options.patients_per_site,
                    "patients per hospital");
  synth->add_option("--image-size", synth_options.image_size,
                    "pixels per side");
  synth->add_option("--seed", synth_options.seed, "random seed");

  CLI::App* check = app.add_subcommand(
      "check-data", "read the manifest and every image; print what qualifies");
  std::string data_dir;
  std::vector<std::string> classes;
  std::string exclusions_path;
  check->add_option("data_dir", data_dir, "site data folder")->required();
  check
      ->add_option("--classes", classes,
                   "the plan's classes (default: NB,GNB,GN with a clinical "
                   "table, else every label present)")
      ->delimiter(',');
  check->add_option("--excluded-out", exclusions_path,
                    "where to write the excluded patients (site-local file)");

  CLI::App* diagnose = app.add_subcommand(
      "diagnose",
      "run the trained model on one patient (JSON + HTML report) or on a "
      "whole site folder (--data: one CSV row per patient)");
  DiagnoseFlags diagnose_flags;
  diagnose
      ->add_option("--model", diagnose_flags.model_path,
                   "model file (.efm, from `echofed model download`)")
      ->required();
  diagnose
      ->add_option("--plan", diagnose_flags.plan_path,
                   "the plan textproto the model was trained with")
      ->required();
  diagnose->add_option("--image", diagnose_flags.images,
                       "an ultrasound image of the patient (DICOM, JPEG, "
                       "PNG); repeat for several");
  diagnose->add_option("--clinical", diagnose_flags.clinical_path,
                       "clinical.csv (with --patient), or one row as CSV or "
                       "JSON (*.json)");
  diagnose->add_option("--patient", diagnose_flags.patient_id,
                       "patient id (the clinical row's patient_id)");
  diagnose
      ->add_option("--out", diagnose_flags.out_dir,
                   "folder for the report files (site-local)")
      ->required();
  diagnose->add_option("--expected-digest", diagnose_flags.expected_digest,
                       "SHA-256 of the model as `echofed model download` "
                       "printed it; refuse any other model");
  diagnose->add_option("--round", diagnose_flags.round,
                       "global round of the model, for provenance");
  diagnose->add_option("--baseline-hazard", diagnose_flags.baseline_path,
                       "baseline hazard for the EFS curve (batch mode "
                       "writes one from the site's cohort)");
  diagnose->add_option("--data", diagnose_flags.data_dir,
                       "batch mode: site folder with manifest.csv and "
                       "clinical.csv");
  diagnose->add_flag("--allow-missing-clinical",
                     diagnose_flags.allow_missing_clinical,
                     "run a fusion model without a clinical record");
  diagnose->add_flag("--to-pacs", diagnose_flags.to_pacs,
                     "also store the report in the patient's study in the "
                     "PACS: a DICOM structured report and the Grad-CAM "
                     "images (needs DICOM --image files and --config)");
  diagnose->add_option("-c,--config", diagnose_flags.config_path,
                       "AgentConfig textproto with the pacs block (for "
                       "--to-pacs)");
  diagnose->add_option("--device", diagnose_flags.device,
                       "cpu (default), cuda or auto");
  diagnose->add_option("--threads", diagnose_flags.threads,
                       "LibTorch CPU threads (0: default)");

  CLI::App* doctor = app.add_subcommand(
      "doctor",
      "pre-flight checks: kit, coordinator (DNS, TCP, mutual TLS, clock "
      "skew), device, disk, site data, estimated time per round");
  DoctorFlags doctor_flags;
  doctor
      ->add_option("-c,--config", doctor_flags.config_path,
                   "AgentConfig textproto (as for `run`)")
      ->required();
  doctor->add_option("--plan", doctor_flags.plan_path,
                     "the study's plan textproto: classes for the data "
                     "check, model for the round-time estimate");
  doctor->add_option("--state-dir", doctor_flags.state_dirs,
                     "folder the agent writes to, for the disk check "
                     "(repeatable; default: $STATE_DIRECTORY or .)");
  doctor->add_option("--threads", doctor_flags.threads,
                     "LibTorch CPU threads (0: default)");

  CLI::App* pacs = app.add_subcommand(
      "pacs", "the hospital PACS: echo, pull a cohort, pseudonyms");
  pacs->require_subcommand(1);
  std::string pacs_config;
  CLI::App* pacs_echo = pacs->add_subcommand(
      "echo", "check that the PACS answers and accepts this agent");
  pacs_echo
      ->add_option("-c,--config", pacs_config,
                   "AgentConfig textproto with the pacs block")
      ->required();
  CLI::App* pacs_pull = pacs->add_subcommand(
      "pull",
      "fetch the worklist's patients' ultrasound images into data_dir and "
      "write manifest.csv (and clinical.csv); run again to resume");
  echofed::PacsPullFlags pull_flags;
  pacs_pull
      ->add_option("-c,--config", pull_flags.config_path,
                   "AgentConfig textproto with the pacs block")
      ->required();
  pacs_pull
      ->add_option("--worklist", pull_flags.worklist_path,
                   "cohort.csv: patient_id or accession_number, label, and "
                   "optional clinical columns (README, \"Hospital "
                   "integration\")")
      ->required();
  pacs_pull->add_flag("--replace-tables", pull_flags.replace_tables,
                      "overwrite a manifest.csv / clinical.csv the last "
                      "pull did not write");
  CLI::App* pacs_pseudonyms = pacs->add_subcommand(
      "pseudonyms",
      "print the pseudonym of each worklist row that names a patient_id "
      "(site-local output, for going back to the patient)");
  std::string pseudonyms_worklist;
  pacs_pseudonyms
      ->add_option("-c,--config", pacs_config,
                   "AgentConfig textproto with the pacs block")
      ->required();
  pacs_pseudonyms->add_option("--worklist", pseudonyms_worklist, "cohort.csv")
      ->required();

  CLI11_PARSE(app, argc, argv);
  echofed::SetLogComponent("agent");

  if (run->parsed()) return RunAgent(config_path, exit_after_run, threads);
  if (synth->parsed()) {
    absl::Status status = echofed::WriteSyntheticCohort(synth_options);
    if (!status.ok()) {
      std::cerr << status.message() << "\n";
      return 1;
    }
    std::cout << "wrote " << synth_options.sites << " SYNTHETIC hospitals to "
              << synth_options.out_dir << "\n";
    return 0;
  }
  if (check->parsed()) return CheckData(data_dir, classes, exclusions_path);
  if (diagnose->parsed()) return Diagnose(diagnose_flags);
  if (doctor->parsed()) return Doctor(doctor_flags);
  if (pacs_echo->parsed()) return echofed::RunPacsEcho(pacs_config, std::cout);
  if (pacs_pull->parsed()) return echofed::RunPacsPull(pull_flags, std::cout);
  if (pacs_pseudonyms->parsed()) {
    return echofed::RunPacsPseudonyms(pacs_config, pseudonyms_worklist,
                                      std::cout);
  }
  return 2;
}
