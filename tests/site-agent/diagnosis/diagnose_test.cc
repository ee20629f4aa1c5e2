#include "site-agent/diagnosis/diagnose.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "common/plan_util.h"
#include "common/sha256.h"
#include "common/tensor_bundle.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "models/state_exchange.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/manifest.h"
#include "site-agent/data/synthetic_cohort.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

constexpr Plan::Head kAllHeads[] = {Plan::SUBTYPE, Plan::HIGH_RISK,
                                    Plan::BONE_MARROW, Plan::RESPONSE,
                                    Plan::PROGNOSIS};

Plan FusionPlan(bool all_heads) {
  Plan plan;
  plan.set_name("diagnose test plan");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  plan.set_model("resnet_small_fusion");
  plan.set_image_size(64);
  if (all_heads) {
    for (Plan::Head head : kAllHeads) plan.add_heads(head);
  } else {
    plan.add_heads(Plan::SUBTYPE);
  }
  return plan;
}

// A freshly initialised model for `plan`, written as a model file; returns
// its hex digest.
std::string WriteModel(const Plan& plan, const std::string& path) {
  ModelOptions options;
  options.name = plan.model();
  options.num_classes = plan.class_names_size();
  options.heads.assign(plan.heads().begin(), plan.heads().end());
  options.clinical_features = static_cast<int>(ClinicalFeatureNames().size());
  torch::manual_seed(11);
  auto model = CreateClassifier(options);
  EXPECT_TRUE(model.ok()) << model.status();
  auto bundle = ExportState(**model, plan.model());
  EXPECT_TRUE(bundle.ok()) << bundle.status();
  auto digest = WriteModelFile(path, *bundle);
  EXPECT_TRUE(digest.ok()) << digest.status();
  return HexDigest(*digest);
}

class DiagnoseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    SyntheticCohortOptions cohort;
    cohort.out_dir = dir_->Join("cohort");
    cohort.sites = 2;  // DICOM and JPEG
    cohort.patients_per_site = 4;
    cohort.image_size = 64;
    ASSERT_TRUE(WriteSyntheticCohort(cohort).ok());
    digest_ =
        new std::string(WriteModel(FusionPlan(true), dir_->Join("model.efm")));
  }
  static void TearDownTestSuite() {
    delete dir_;
    delete digest_;
  }

  static std::string SiteDir(int site) {
    return dir_->Join(absl::StrCat("cohort/site-", site));
  }

  // The patient's images from the site manifest, and its clinical row.
  static PatientInput Patient(int site, const std::string& id) {
    PatientInput patient;
    patient.patient_id = id;
    auto manifest = LoadManifest(SiteDir(site));
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    for (const ImageRecord& record : manifest->records) {
      if (record.patient_id == id) patient.images.push_back(record);
    }
    auto clinical = LoadPatientClinical(SiteDir(site) + "/clinical.csv", id);
    EXPECT_TRUE(clinical.ok()) << clinical.status();
    if (clinical.ok()) patient.clinical = *clinical;
    return patient;
  }

  static std::unique_ptr<DiagnosticModel> Load(
      DiagnosticModelOptions options = {}) {
    auto model = DiagnosticModel::Load(dir_->Join("model.efm"),
                                       FusionPlan(true), options);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? std::move(*model) : nullptr;
  }

  static testing::TempDir* dir_;
  static std::string* digest_;
};

testing::TempDir* DiagnoseTest::dir_ = nullptr;
std::string* DiagnoseTest::digest_ = nullptr;

TEST_F(DiagnoseTest, OnePatientGivesEverySection) {
  std::unique_ptr<DiagnosticModel> model = Load();
  ASSERT_NE(model, nullptr);
  PatientInput patient = Patient(1, "S1P0001");
  ASSERT_FALSE(patient.images.empty());
  auto report = model->Diagnose(patient);
  ASSERT_TRUE(report.ok()) << report.status();

  ASSERT_EQ(report->subtype_probabilities.size(), 3u);
  double sum = std::accumulate(report->subtype_probabilities.begin(),
                               report->subtype_probabilities.end(), 0.0);
  EXPECT_NEAR(sum, 1.0, 1e-6);
  auto top = std::max_element(report->subtype_probabilities.begin(),
                              report->subtype_probabilities.end());
  EXPECT_EQ(report->predicted_class,
            top - report->subtype_probabilities.begin());

  ASSERT_EQ(report->images.size(), patient.images.size());
  for (const ImageResult& image : report->images) {
    auto decoded = ReadGrayImage(patient.images.front().image_path);
    ASSERT_TRUE(decoded.ok());
    ASSERT_TRUE(image.saliency.has_value()) << report->saliency_note;
    const SaliencyMap& map = *image.saliency;
    EXPECT_EQ(map.width, image.image.width);
    EXPECT_EQ(map.height, image.image.height);
    EXPECT_EQ(map.width, decoded->width);
    EXPECT_EQ(map.height, decoded->height);
    ASSERT_EQ(map.values.size(), static_cast<size_t>(map.width) * map.height);
    float peak = 0;
    for (float v : map.values) {
      ASSERT_GE(v, 0.0f);
      ASSERT_LE(v, 1.0f);
      peak = std::max(peak, v);
    }
    EXPECT_GT(peak, 0.0f);
    EXPECT_FALSE(map.all_zero);
    double image_sum = std::accumulate(image.subtype_probabilities.begin(),
                                       image.subtype_probabilities.end(), 0.0);
    EXPECT_NEAR(image_sum, 1.0, 1e-6);
  }

  for (const BinaryHeadResult* head :
       {&report->high_risk, &report->bone_marrow, &report->good_response}) {
    EXPECT_TRUE(head->available);
    EXPECT_GE(head->probability, 0.0);
    EXPECT_LE(head->probability, 1.0);
  }
  EXPECT_TRUE(report->prognosis.available);
  EXPECT_TRUE(std::isfinite(report->prognosis.risk_score));
  // No baseline given: no curve, and the report says why.
  EXPECT_FALSE(report->prognosis.baseline.has_value());
  EXPECT_TRUE(report->prognosis.curve.empty());
  EXPECT_TRUE(
      absl::StrContains(report->prognosis.curve_note, "No baseline hazard"));

  // The INRG rule is the rule engine's answer on the same record.
  InrgClassification expected = ClassifyInrgRisk(*patient.clinical);
  EXPECT_EQ(report->inrg.classifiable, expected.classifiable);
  EXPECT_EQ(report->inrg.cell_letter, expected.cell_letter);
  EXPECT_TRUE(report->has_clinical_record);
  EXPECT_FALSE(report->clinical_inputs.empty());

  EXPECT_EQ(report->provenance.model_digest_hex, *digest_);
  EXPECT_EQ(report->provenance.model_name, "resnet_small_fusion");
  EXPECT_EQ(report->provenance.plan_name, "diagnose test plan");
  EXPECT_FALSE(report->provenance.generated_at.empty());
}

TEST_F(DiagnoseTest, TestTimeFlipFollowsThePlanWithAndWithoutSaliency) {
  // test_time_flip: true scores each image with its mirror too (as the
  // sites' validation did); false scores the images as shown. Saliency
  // maps do not change the scores.
  PatientInput patient = Patient(1, "S1P0001");
  auto diagnose = [&](bool flip, bool saliency) {
    Plan plan = FusionPlan(true);
    plan.set_test_time_flip(flip);
    auto model = DiagnosticModel::Load(dir_->Join("model.efm"), plan, {});
    EXPECT_TRUE(model.ok()) << model.status();
    DiagnoseOptions options;
    options.saliency = saliency;
    auto report = (*model)->Diagnose(patient, options);
    EXPECT_TRUE(report.ok()) << report.status();
    return report->images;
  };
  auto flipped = diagnose(true, true);
  auto flipped_plain = diagnose(true, false);
  auto unflipped = diagnose(false, false);
  auto unflipped_saliency = diagnose(false, true);
  ASSERT_EQ(flipped.size(), patient.images.size());
  double largest_change = 0;
  for (size_t i = 0; i < flipped.size(); ++i) {
    for (size_t c = 0; c < 3; ++c) {
      EXPECT_NEAR(flipped[i].subtype_probabilities[c],
                  flipped_plain[i].subtype_probabilities[c], 1e-9);
      EXPECT_NEAR(unflipped[i].subtype_probabilities[c],
                  unflipped_saliency[i].subtype_probabilities[c], 1e-9);
      largest_change = std::max(
          largest_change, std::abs(flipped[i].subtype_probabilities[c] -
                                   unflipped[i].subtype_probabilities[c]));
    }
  }
  EXPECT_GT(largest_change, 1e-6);
  // Off unless the plan asks (measured not to help; README).
  Plan defaults = FusionPlan(true);
  EXPECT_FALSE(UsesTestTimeFlip(defaults));
  ApplyPlanDefaults(&defaults);
  EXPECT_FALSE(defaults.test_time_flip());
}

TEST_F(DiagnoseTest, WritesJsonAndSelfContainedHtml) {
  DiagnosticModelOptions options;
  options.global_round = 3;
  std::unique_ptr<DiagnosticModel> model = Load(options);
  ASSERT_NE(model, nullptr);
  auto report = model->Diagnose(Patient(2, "S2P0002"));
  ASSERT_TRUE(report.ok()) << report.status();
  const std::string out = dir_->Join("reports");
  auto files = WriteDiagnosticReport(*report, out);
  ASSERT_TRUE(files.ok()) << files.status();

  for (const std::string& path : {files->json, files->html}) {
    struct stat info;
    ASSERT_EQ(stat(path.c_str(), &info), 0) << path;
    EXPECT_EQ(info.st_mode & 0777, 0600u) << path;
  }
  EXPECT_EQ(files->saliency_pngs.size(), report->images.size());

  auto json = ReadFileToString(files->json);
  ASSERT_TRUE(json.ok());
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &parsed).ok())
      << *json;
  const auto& fields = parsed.fields();
  EXPECT_EQ(fields.at("statement").string_value(), kDecisionSupportStatement);
  EXPECT_EQ(fields.at("patient_id").string_value(), "S2P0002");
  const auto& probabilities = fields.at("subtype")
                                  .struct_value()
                                  .fields()
                                  .at("probabilities")
                                  .struct_value()
                                  .fields();
  double sum = 0;
  for (const char* name : {"NB", "GNB", "GN"}) {
    sum += probabilities.at(name).number_value();
  }
  EXPECT_NEAR(sum, 1.0, 1e-4);
  const auto& provenance = fields.at("provenance").struct_value().fields();
  EXPECT_EQ(provenance.at("model_digest_sha256").string_value(), *digest_);
  EXPECT_EQ(provenance.at("global_round").number_value(), 3);
  EXPECT_TRUE(fields.at("high_risk")
                  .struct_value()
                  .fields()
                  .at("available")
                  .bool_value());
  EXPECT_TRUE(fields.at("prognosis")
                  .struct_value()
                  .fields()
                  .at("efs_curve")
                  .has_null_value());

  auto html = ReadFileToString(files->html);
  ASSERT_TRUE(html.ok());
  EXPECT_TRUE(absl::StrContains(*html, kDecisionSupportStatement));
  EXPECT_TRUE(absl::StrContains(*html, *digest_));
  EXPECT_TRUE(absl::StrContains(*html, "data:image/png;base64,"));
  EXPECT_TRUE(absl::StrContains(*html, "Grad-CAM"));
  // Self-contained: nothing fetched from elsewhere.
  EXPECT_FALSE(absl::StrContains(*html, "http://"));
  EXPECT_FALSE(absl::StrContains(*html, "https://"));
  EXPECT_FALSE(absl::StrContains(*html, "<script"));
}

TEST_F(DiagnoseTest, RefusesAModelWithAnotherDigest) {
  DiagnosticModelOptions options;
  options.expected_digest_hex = std::string(64, 'a');
  auto model =
      DiagnosticModel::Load(dir_->Join("model.efm"), FusionPlan(true), options);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(model.status().message(), "digest"));

  options.expected_digest_hex = absl::AsciiStrToUpper(*digest_);
  EXPECT_TRUE(
      DiagnosticModel::Load(dir_->Join("model.efm"), FusionPlan(true), options)
          .ok());
  options.expected_digest_hex = "abc";
  EXPECT_EQ(
      DiagnosticModel::Load(dir_->Join("model.efm"), FusionPlan(true), options)
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(DiagnoseTest, RefusesADamagedModelFile) {
  auto bytes = ReadFileToString(dir_->Join("model.efm"));
  ASSERT_TRUE(bytes.ok());
  std::string damaged = *bytes;
  damaged[100] ^= 0x40;  // inside the first tensor
  ASSERT_TRUE(WriteFileAtomically(dir_->Join("damaged.efm"), damaged).ok());
  auto model =
      DiagnosticModel::Load(dir_->Join("damaged.efm"), FusionPlan(true));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(DiagnoseTest, RefusesAPlanForAnotherModel) {
  Plan plan = FusionPlan(true);
  plan.set_model("resnet18_fusion");
  auto model = DiagnosticModel::Load(dir_->Join("model.efm"), plan);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(model.status().message(), "resnet18_fusion"));

  plan = FusionPlan(true);
  plan.add_class_names("other");
  model = DiagnosticModel::Load(dir_->Join("model.efm"), plan);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(DiagnoseTest, AModelWithoutTheHeadsSaysSo) {
  const std::string path = dir_->Join("subtype-only.efm");
  WriteModel(FusionPlan(false), path);
  // With a plan that asks for heads the model lacks: a clear refusal.
  auto refused = DiagnosticModel::Load(path, FusionPlan(true));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "heads"))
      << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "HIGH_RISK"));
  // The other way round too: the full model under a subtype-only plan.
  EXPECT_FALSE(
      DiagnosticModel::Load(dir_->Join("model.efm"), FusionPlan(false)).ok());

  // With its own plan: the heads' sections say they are not available.
  auto model = DiagnosticModel::Load(path, FusionPlan(false));
  ASSERT_TRUE(model.ok()) << model.status();
  auto report = (*model)->Diagnose(Patient(1, "S1P0002"));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->high_risk.available);
  EXPECT_FALSE(report->bone_marrow.available);
  EXPECT_FALSE(report->good_response.available);
  EXPECT_FALSE(report->prognosis.available);
  auto html = DiagnosticReportHtml(*report);
  ASSERT_TRUE(html.ok());
  EXPECT_TRUE(absl::StrContains(*html, kNotAvailableFromModel));
  std::string json = DiagnosticReportJson(*report);
  EXPECT_TRUE(absl::StrContains(json, kNotAvailableFromModel));
}

TEST_F(DiagnoseTest, RefusesMissingOrUnreadableImages) {
  std::unique_ptr<DiagnosticModel> model = Load();
  ASSERT_NE(model, nullptr);
  PatientInput patient = Patient(1, "S1P0001");
  ImageRecord missing;
  missing.image_path = dir_->Join("no-such-image.dcm");
  patient.images.push_back(missing);
  auto report = model->Diagnose(patient);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(report.status().message(), "no-such-image"));

  ASSERT_TRUE(
      WriteFileAtomically(dir_->Join("garbage.jpg"), "not an image").ok());
  patient = Patient(1, "S1P0001");
  ImageRecord garbage;
  garbage.image_path = dir_->Join("garbage.jpg");
  patient.images.push_back(garbage);
  report = model->Diagnose(patient);
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);

  patient.images.clear();
  EXPECT_EQ(model->Diagnose(patient).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DiagnoseTest, WithoutAClinicalRecordTheReportSaysSo) {
  std::unique_ptr<DiagnosticModel> model = Load();
  ASSERT_NE(model, nullptr);
  PatientInput patient = Patient(1, "S1P0003");
  patient.clinical.reset();
  auto report = model->Diagnose(patient);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->has_clinical_record);
  EXPECT_FALSE(report->inrg.classifiable);
  ASSERT_FALSE(report->warnings.empty());
  EXPECT_TRUE(
      absl::StrContains(report->warnings.front(), "No clinical record"));
}

TEST(PatientClinicalTest, RefusesOutOfRangeValuesAndUnknownPatients) {
  const std::string csv =
      "patient_id,age_months,inrg_stage,mycn\n"
      "P1,30,L2,not_amplified\n"
      "P2,999,M,amplified\n";
  auto ok = ParsePatientClinical(csv, "clinical.csv", "P1");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok->age_months, 30);

  auto out_of_range = ParsePatientClinical(csv, "clinical.csv", "P2");
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_EQ(out_of_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(out_of_range.status().message(), "line 3"))
      << out_of_range.status();

  EXPECT_EQ(ParsePatientClinical(csv, "clinical.csv", "P9").status().code(),
            absl::StatusCode::kNotFound);
  // Two rows and no patient named: ambiguous.
  EXPECT_EQ(ParsePatientClinical(csv, "clinical.csv", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PatientClinicalTest, ReadsOneRowOfJson) {
  auto record = ParsePatientClinical(
      R"({"patient_id": "P7", "age_months": 14, "inrg_stage": "MS",
          "mycn": "not_amplified", "chr11q": null, "ldh": 512.5,
          "bone_marrow_metastasis": true})",
      "p7.json", "");
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_EQ(record->patient_id, "P7");
  EXPECT_EQ(*record->age_months, 14);
  EXPECT_EQ(*record->ldh, 512.5);
  EXPECT_FALSE(record->chr11q_aberration.has_value());
  EXPECT_TRUE(*record->bone_marrow_metastasis);

  EXPECT_EQ(ParsePatientClinical(R"({"patient_id": "P7", "age_months": -4})",
                                 "p7.json", "P7")
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParsePatientClinical("[1, 2]", "p7.json", "").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(BreslowTest, MatchesAHandComputedEstimate) {
  // Equal risk scores: Breslow reduces to Nelson-Aalen. Times 1..6, the
  // third censored: H = 1/6, +1/5, (censored), +1/3, +1/2, +1/1.
  std::vector<SurvivalCase> cases = {{0, 1, true}, {0, 2, true}, {0, 3, false},
                                     {0, 4, true}, {0, 5, true}, {0, 6, true}};
  auto baseline = EstimateBreslowBaseline(cases, std::string(64, 'b'), "test");
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  ASSERT_EQ(baseline->months.size(), 5u);
  const double expected[] = {1.0 / 6, 1.0 / 6 + 1.0 / 5,
                             1.0 / 6 + 1.0 / 5 + 1.0 / 3,
                             1.0 / 6 + 1.0 / 5 + 1.0 / 3 + 1.0 / 2,
                             1.0 / 6 + 1.0 / 5 + 1.0 / 3 + 1.0 / 2 + 1.0};
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(baseline->cumulative_hazard[i], expected[i], 1e-12);
  }
  EXPECT_EQ(baseline->events, 5);
  EXPECT_DOUBLE_EQ(baseline->max_follow_up_months, 6);
  EXPECT_NEAR(*SurvivalAt(*baseline, 0, 0.5), 1.0, 1e-12);
  EXPECT_NEAR(*SurvivalAt(*baseline, 0, 3.5), std::exp(-expected[1]), 1e-12);
  // A higher risk score lowers the curve: S = S0^exp(r).
  EXPECT_NEAR(*SurvivalAt(*baseline, std::log(2.0), 3.5),
              std::exp(-2 * expected[1]), 1e-12);
  EXPECT_FALSE(SurvivalAt(*baseline, 0, 7).has_value());
  std::vector<SurvivalPoint> curve = SurvivalCurve(*baseline, 0);
  EXPECT_EQ(curve.front().survival, 1.0);
  for (size_t i = 1; i < curve.size(); ++i) {
    EXPECT_LE(curve[i].survival, curve[i - 1].survival);
  }

  // Round trip through the file form.
  auto parsed =
      ParseBaselineHazard(FormatBaselineHazard(*baseline), "baseline.csv");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->months, baseline->months);
  EXPECT_EQ(parsed->cumulative_hazard, baseline->cumulative_hazard);
  EXPECT_EQ(parsed->model_digest_hex, baseline->model_digest_hex);
  EXPECT_EQ(parsed->source, "test");
  EXPECT_FALSE(
      ParseBaselineHazard("months,cumulative_hazard\n1,0.1\n", "x").ok());

  // Too few events: no baseline rather than a noisy one.
  cases.resize(3);
  EXPECT_EQ(EstimateBreslowBaseline(cases, std::string(64, 'b'), "test")
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(DiagnoseTest, UsesABaselineOfThisModelOnly) {
  std::unique_ptr<DiagnosticModel> model = Load();
  ASSERT_NE(model, nullptr);
  std::vector<SurvivalCase> cases;
  for (int i = 0; i < 10; ++i) {
    cases.push_back({0.1 * i, 6.0 + 6 * i, i % 2 == 0});
  }
  auto baseline = EstimateBreslowBaseline(cases, *digest_, "test cohort");
  ASSERT_TRUE(baseline.ok()) << baseline.status();
  DiagnoseOptions options;
  options.saliency = false;
  options.baseline = &*baseline;
  auto report = model->Diagnose(Patient(1, "S1P0001"), options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->prognosis.baseline.has_value());
  EXPECT_FALSE(report->prognosis.curve.empty());
  EXPECT_FALSE(report->images.front().saliency.has_value());
  auto html = DiagnosticReportHtml(*report);
  ASSERT_TRUE(html.ok());
  EXPECT_TRUE(absl::StrContains(*html, "<svg"));

  baseline->model_digest_hex = std::string(64, 'c');
  EXPECT_EQ(model->Diagnose(Patient(1, "S1P0001"), options).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(DiagnoseTest, BatchWritesOneRowPerPatient) {
  std::unique_ptr<DiagnosticModel> model = Load();
  ASSERT_NE(model, nullptr);
  BatchOptions options;
  options.data_dir = SiteDir(1);
  options.out_dir = dir_->Join("batch");
  auto result = DiagnoseBatch(*model, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->patients, 4);
  EXPECT_EQ(result->diagnosed + result->failed, 4);
  struct stat info;
  ASSERT_EQ(stat(result->csv_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  auto csv = ReadFileToString(result->csv_path);
  ASSERT_TRUE(csv.ok());
  std::vector<std::string> lines =
      absl::StrSplit(*csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_TRUE(absl::StartsWith(lines[0], "patient_id,images,recorded_label"));
  EXPECT_TRUE(absl::StrContains(lines[1], "S1P0001"));
  EXPECT_FALSE(result->baseline_note.empty());
}

}  // namespace
}  // namespace echofed
