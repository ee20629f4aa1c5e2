// The hospital integration end to end, against a real PACS on loopback
// (Orthanc, over DIMSE and over DICOMweb) and the real echofed-agent
// program: pull a cohort, pull again (nothing fetched twice), kill a pull
// and resume it, a rejected association, and a diagnosis stored back into
// the patient's study and read back from the PACS item by item.

#include <dirent.h>
#include <signal.h>

#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/files.h"
#include "common/sha256.h"
#include "common/subprocess.h"
#include "common/tensor_bundle.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/csv.h"
#include "site-agent/data/manifest.h"
#include "site-agent/data/synthetic_cohort.h"
#include "site-agent/pacs/pacs_client.h"
#include "site-agent/pacs/pseudonym.h"
#include "tests/testing/dcmqrscp_server.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/orthanc_server.h"

namespace echofed {
namespace {

using ::echofed::testing::OrthancMissing;
using ::echofed::testing::OrthancOptions;
using ::echofed::testing::OrthancServer;
using ::echofed::testing::TempDir;

// kDimseMove: DIMSE with retrieve "c-move" into the agent's own storage
// SCP; only the pull runs with it, since searches, store and failures are
// those of kDimse.
enum class Protocol { kDimse, kDimseMove, kDicomWeb };

std::string ProtocolName(const ::testing::TestParamInfo<Protocol>& info) {
  switch (info.param) {
    case Protocol::kDimse:
      return "Dimse";
    case Protocol::kDimseMove:
      return "DimseMove";
    case Protocol::kDicomWeb:
      return "DicomWeb";
  }
  return "";
}

struct AgentRun {
  int code = -1;
  std::string output;
};

int CountFiles(const std::string& folder, const std::string& suffix) {
  int count = 0;
  std::error_code error;
  for (std::filesystem::recursive_directory_iterator it(folder, error), end;
       !error && it != end; it.increment(error)) {
    if (it->is_regular_file() &&
        absl::EndsWith(it->path().filename().string(), suffix)) {
      ++count;
    }
  }
  return count;
}

class PacsIntegrationTest : public ::testing::TestWithParam<Protocol> {
 protected:
  void SetUp() override {
    if (std::string why = OrthancMissing(GetParam() == Protocol::kDicomWeb);
        !why.empty()) {
      GTEST_SKIP() << why;
    }
    OrthancOptions options;
    if (GetParam() == Protocol::kDimseMove) {
      move_port_ = testing::PickFreePort();
      options.modalities = {{"ECHOFED", "127.0.0.1", move_port_}};
    } else {
      options.modalities = {{"ECHOFED"}};
    }
    absl::StatusOr<std::unique_ptr<OrthancServer>> orthanc =
        OrthancServer::Start(options);
    ASSERT_TRUE(orthanc.ok()) << orthanc.status();
    orthanc_ = std::move(*orthanc);

    // Two DICOM hospitals of the synthetic cohort (uncompressed and JPEG
    // baseline in YBR colour) are the PACS's content; their manifests and
    // clinical tables make the worklist, as a study coordinator would from the
    // hospital's registry.
    SyntheticCohortOptions cohort;
    cohort.out_dir = dir_.Join("cohort");
    cohort.sites = 3;  // site-1 and site-3 write DICOM
    cohort.patients_per_site = 15;
    cohort.image_size = 64;
    ASSERT_TRUE(WriteSyntheticCohort(cohort).ok());
    // The worklist: each patient's PatientID and label, and the site's
    // clinical columns as they are.
    std::string worklist;
    for (const char* site : {"site-1", "site-3"}) {
      const std::string site_dir = dir_.Join(absl::StrCat("cohort/", site));
      absl::StatusOr<SiteManifest> manifest = LoadManifest(site_dir);
      ASSERT_TRUE(manifest.ok()) << manifest.status();
      std::map<std::string, std::string> label_of;
      for (const ImageRecord& record : manifest->records) {
        absl::StatusOr<std::string> bytes = ReadFileToString(record.image_path);
        ASSERT_TRUE(bytes.ok());
        absl::StatusOr<std::string> uploaded = orthanc_->Upload(*bytes);
        ASSERT_TRUE(uploaded.ok()) << uploaded.status();
        ++images_;
        if (label_of.emplace(record.patient_id, record.label).second) {
          patients_.push_back(record.patient_id);
        }
      }
      absl::StatusOr<std::string> clinical =
          ReadFileToString(site_dir + "/clinical.csv");
      ASSERT_TRUE(clinical.ok());
      std::vector<std::string> lines = CsvLines(*clinical);
      ASSERT_TRUE(absl::StartsWith(lines[0], "patient_id,"));
      if (worklist.empty()) {
        worklist = absl::StrCat("patient_id,label", lines[0].substr(10), "\n");
      }
      for (size_t i = 1; i < lines.size(); ++i) {
        size_t comma = lines[i].find(',');
        const std::string id = lines[i].substr(0, comma);
        if (label_of.count(id) == 0) continue;  // a row without images
        absl::StrAppend(&worklist, id, ",", label_of[id],
                        lines[i].substr(comma), "\n");
      }
    }
    worklist_path_ = dir_.Join("cohort.csv");
    ASSERT_TRUE(WriteFileAtomically(worklist_path_, worklist).ok());
    config_path_ = WriteConfig(orthanc_->ae_title());
  }

  std::string WriteConfig(const std::string& called_ae_title) {
    std::string pacs;
    if (GetParam() == Protocol::kDimse) {
      pacs = absl::StrFormat(
          "pacs { peer_ae_title: \"%s\" host: \"127.0.0.1\" port: %d "
          "own_ae_title: \"ECHOFED\" timeout_seconds: 10 }\n",
          called_ae_title, orthanc_->dicom_port());
    } else if (GetParam() == Protocol::kDimseMove) {
      pacs = absl::StrFormat(
          "pacs { peer_ae_title: \"%s\" host: \"127.0.0.1\" port: %d "
          "own_ae_title: \"ECHOFED\" timeout_seconds: 10 "
          "retrieve: \"c-move\" move_port: %d }\n",
          called_ae_title, orthanc_->dicom_port(), move_port_);
    } else {
      pacs =
          absl::StrFormat("pacs { dicomweb_url: \"%s\" timeout_seconds: 10 }\n",
                          orthanc_->dicomweb_url());
    }
    std::string path =
        dir_.Join(absl::StrCat("agent-", called_ae_title, ".textproto"));
    std::string text = absl::StrCat(
        "coordinator_address: \"127.0.0.1:1\"\n"
        "data_dir: \"data\"\n"
        "state_dir: \"state\"\n",
        pacs);
    EXPECT_TRUE(WriteFileAtomically(path, text).ok());
    return path;
  }

  AgentRun Agent(const std::vector<std::string>& arguments,
                 absl::Duration timeout = absl::Seconds(240)) {
    std::vector<std::string> argv = {testing::BinaryPath("echofed-agent")};
    argv.insert(argv.end(), arguments.begin(), arguments.end());
    const std::string log = dir_.Join(absl::StrCat("agent-", ++runs_, ".log"));
    absl::StatusOr<Subprocess> process = Subprocess::Start(argv, log);
    EXPECT_TRUE(process.ok()) << process.status();
    AgentRun run;
    if (!process.ok()) return run;
    std::optional<int> code = process->Wait(timeout);
    run.code = code ? *code : -1;
    absl::StatusOr<std::string> text = ReadFileToString(log);
    run.output = text.ok() ? *text : "";
    return run;
  }

  AgentRun Pull() {
    return Agent({"pacs", "pull", "--config", config_path_, "--worklist",
                  worklist_path_});
  }

  std::string DataDir() const { return dir_.Join("data"); }

  // Skips the tests that C-MOVE would not change.
  bool PullOnly() const { return GetParam() == Protocol::kDimseMove; }

  TempDir dir_;
  int move_port_ = 0;
  std::unique_ptr<OrthancServer> orthanc_;
  std::vector<std::string> patients_;
  int images_ = 0;
  int runs_ = 0;
  std::string worklist_path_;
  std::string config_path_;
};

TEST_P(PacsIntegrationTest, PullsTheCohortOnceAndUnderPseudonyms) {
  AgentRun first = Pull();
  ASSERT_EQ(first.code, 0) << first.output;
  EXPECT_TRUE(absl::StrContains(
      first.output, absl::StrCat(patients_.size(),
                                 " patient(s) in the manifest, 0 left out")))
      << first.output;
  EXPECT_TRUE(absl::StrContains(
      first.output, absl::StrCat(images_, " fetched now, 0 already here")))
      << first.output;
  EXPECT_EQ(CountFiles(DataDir() + "/pacs", ".dcm"), images_);

  // The manifest and clinical table are the site's, under pseudonyms: no
  // PatientID in them or in what the pull printed.
  absl::StatusOr<SiteManifest> manifest = LoadManifest(DataDir());
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_TRUE(manifest->errors.empty());
  EXPECT_EQ(static_cast<int>(manifest->records.size()), images_);
  absl::StatusOr<std::string> key_bytes =
      ReadFileToString(dir_.Join("state/pseudonym.key"));
  ASSERT_TRUE(key_bytes.ok());
  absl::StatusOr<PseudonymKey> key = PseudonymKey::FromBytes(*key_bytes);
  ASSERT_TRUE(key.ok());
  std::set<std::string> ids;
  for (const ImageRecord& record : manifest->records) {
    ids.insert(record.patient_id);
  }
  std::set<std::string> expected;
  for (const std::string& patient : patients_) {
    expected.insert(key->Pseudonym(patient));
  }
  EXPECT_EQ(ids, expected);
  absl::StatusOr<std::string> manifest_text =
      ReadFileToString(DataDir() + "/manifest.csv");
  absl::StatusOr<std::string> clinical_text =
      ReadFileToString(DataDir() + "/clinical.csv");
  ASSERT_TRUE(manifest_text.ok() && clinical_text.ok());
  for (const std::string& patient : patients_) {
    for (const std::string* text :
         {&*manifest_text, &*clinical_text, &first.output}) {
      EXPECT_FALSE(absl::StrContains(*text, patient)) << patient;
    }
  }

  // The site's data check reads what the pull wrote.
  AgentRun check = Agent(
      {"check-data", DataDir(), "--excluded-out", dir_.Join("excluded.csv")});
  EXPECT_EQ(check.code, 0) << check.output;

  // Site IT's pre-flight check sees the PACS too (the coordinator of this
  // config is not there: those checks fail, this one passes).
  AgentRun doctor =
      Agent({"doctor", "--config", config_path_, "--threads", "1"});
  EXPECT_TRUE(absl::StrContains(doctor.output, "PASS  PACS")) << doctor.output;
  EXPECT_TRUE(absl::StrContains(doctor.output, "pseudonym key in place"))
      << doctor.output;

  AgentRun second = Pull();
  ASSERT_EQ(second.code, 0) << second.output;
  EXPECT_TRUE(absl::StrContains(
      second.output, absl::StrCat("0 fetched now, ", images_, " already here")))
      << second.output;
}

TEST_P(PacsIntegrationTest, KilledPullResumesWhereItStopped) {
  if (PullOnly()) GTEST_SKIP() << "as with retrieve \"c-get\"";
  const std::string pacs_dir = DataDir() + "/pacs";
  std::vector<std::string> argv = {testing::BinaryPath("echofed-agent"),
                                   "pacs",
                                   "pull",
                                   "--config",
                                   config_path_,
                                   "--worklist",
                                   worklist_path_};
  absl::StatusOr<Subprocess> pull =
      Subprocess::Start(argv, dir_.Join("killed.log"));
  ASSERT_TRUE(pull.ok()) << pull.status();
  // Killed (no chance to clean up) as soon as the first instance is on disk.
  absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (CountFiles(pacs_dir, ".dcm") == 0 && pull->running() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  pull->Signal(SIGKILL);
  pull->Wait(absl::Seconds(10));
  const int on_disk = CountFiles(pacs_dir, ".dcm");
  ASSERT_GT(on_disk, 0) << "the pull wrote nothing before it was killed";
  ASSERT_LT(on_disk, images_) << "the pull finished before it could be killed";

  AgentRun resumed = Pull();
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  EXPECT_TRUE(absl::StrContains(
      resumed.output, absl::StrCat(images_ - on_disk, " fetched now, ", on_disk,
                                   " already here")))
      << "on disk before: " << on_disk << "\n"
      << resumed.output;
  EXPECT_EQ(CountFiles(pacs_dir, ".dcm"), images_);
  EXPECT_EQ(CountFiles(pacs_dir, ".tmp"), 0);
  absl::StatusOr<SiteManifest> manifest = LoadManifest(DataDir());
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(static_cast<int>(manifest->records.size()), images_);
}

TEST_P(PacsIntegrationTest, PacsDownOrRefusingIsAClearErrorAndChangesNothing) {
  if (PullOnly()) GTEST_SKIP() << "as with retrieve \"c-get\"";
  if (GetParam() == Protocol::kDimse) {
    config_path_ = WriteConfig("NOT_THE_PACS");
    AgentRun rejected = Pull();
    EXPECT_EQ(rejected.code, 1) << rejected.output;
    EXPECT_TRUE(absl::StrContains(rejected.output, "NOT_THE_PACS"))
        << rejected.output;
    EXPECT_FALSE(std::filesystem::exists(DataDir() + "/manifest.csv"));
    config_path_ = WriteConfig(orthanc_->ae_title());
  }
  orthanc_->Kill();
  absl::Time start = absl::Now();
  AgentRun down = Pull();
  EXPECT_EQ(down.code, 1) << down.output;
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << down.output;
  EXPECT_TRUE(absl::StrContains(down.output, "127.0.0.1")) << down.output;
  EXPECT_FALSE(std::filesystem::exists(DataDir() + "/manifest.csv"));
}

// A model file for the diagnosis: freshly initialised, since what is
// checked here is where its outputs go, not how good they are.
std::string WriteModel(const Plan& plan, const std::string& path) {
  ModelOptions options;
  options.name = plan.model();
  options.num_classes = plan.class_names_size();
  options.heads.assign(plan.heads().begin(), plan.heads().end());
  options.clinical_features = static_cast<int>(ClinicalFeatureNames().size());
  torch::manual_seed(5);
  absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> model =
      CreateClassifier(options);
  EXPECT_TRUE(model.ok()) << model.status();
  absl::StatusOr<TensorBundle> bundle = ExportState(**model, plan.model());
  EXPECT_TRUE(bundle.ok()) << bundle.status();
  absl::StatusOr<std::string> digest = WriteModelFile(path, *bundle);
  EXPECT_TRUE(digest.ok()) << digest.status();
  return HexDigest(*digest);
}

TEST_P(PacsIntegrationTest, DiagnosisGoesIntoThePatientsStudy) {
  if (PullOnly()) GTEST_SKIP() << "as with retrieve \"c-get\"";
  AgentRun pulled = Pull();
  ASSERT_EQ(pulled.code, 0) << pulled.output;
  absl::StatusOr<SiteManifest> manifest = LoadManifest(DataDir());
  ASSERT_TRUE(manifest.ok());
  const ImageRecord& image = manifest->records.front();

  Plan plan;
  plan.set_name("pacs test plan");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  plan.set_model("resnet_small_fusion");
  plan.set_image_size(64);
  for (Plan::Head head :
       {Plan::SUBTYPE, Plan::HIGH_RISK, Plan::BONE_MARROW, Plan::RESPONSE}) {
    plan.add_heads(head);
  }
  const std::string plan_path = dir_.Join("plan.textproto");
  ASSERT_TRUE(WriteFileAtomically(plan_path, ToTextProto(plan)).ok());
  const std::string digest = WriteModel(plan, dir_.Join("model.efm"));

  const int before = *orthanc_->CountInstances();
  AgentRun diagnosed = Agent({"diagnose",
                              "--model",
                              dir_.Join("model.efm"),
                              "--plan",
                              plan_path,
                              "--image",
                              image.image_path,
                              "--patient",
                              image.patient_id,
                              "--clinical",
                              DataDir() + "/clinical.csv",
                              "--out",
                              dir_.Join("out"),
                              "--round",
                              "7",
                              "--threads",
                              "1",
                              "--to-pacs",
                              "--config",
                              config_path_});
  ASSERT_EQ(diagnosed.code, 0) << diagnosed.output;
  EXPECT_TRUE(absl::StrContains(diagnosed.output, "stored in the PACS"))
      << diagnosed.output;
  EXPECT_EQ(*orthanc_->CountInstances(), before + 2);  // SR + Grad-CAM

  // A pull for modality OT finds the overlay and leaves it out: the
  // agent's own results are never training data.
  absl::StatusOr<std::string> config_text = ReadFileToString(config_path_);
  ASSERT_TRUE(config_text.ok());
  config_path_ = dir_.Join("agent-ot.textproto");
  ASSERT_TRUE(WriteFileAtomically(
                  config_path_,
                  absl::StrReplaceAll(
                      *config_text, {{"timeout_seconds: 10",
                                      "timeout_seconds: 10 modality: \"OT\""}}))
                  .ok());
  AgentRun ot_pull = Agent({"pacs", "pull", "--config", config_path_,
                            "--worklist", worklist_path_, "--replace-tables"});
  EXPECT_TRUE(absl::StrContains(ot_pull.output, "is an echofed result"))
      << ot_pull.output;
  EXPECT_TRUE(absl::StrContains(ot_pull.output, "0 patient(s) in the manifest"))
      << ot_pull.output;

  // Read back from the PACS, as a viewer would find it: the SR series of
  // the patient's study.
  absl::StatusOr<std::string> source = ReadFileToString(image.image_path);
  ASSERT_TRUE(source.ok());
  DcmInputBufferStream source_stream;
  source_stream.setBuffer(source->data(), source->size());
  source_stream.setEos();
  DcmFileFormat source_file;
  source_file.transferInit();
  ASSERT_TRUE(source_file.read(source_stream).good());
  source_file.transferEnd();
  OFString patient_id, study_uid;
  source_file.getDataset()->findAndGetOFString(DCM_PatientID, patient_id);
  source_file.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, study_uid);

  absl::StatusOr<std::unique_ptr<PacsClient>> client = [&] {
    PacsConfig config;
    if (GetParam() == Protocol::kDimse) {
      config.set_peer_ae_title(orthanc_->ae_title());
      config.set_host("127.0.0.1");
      config.set_port(orthanc_->dicom_port());
      config.set_own_ae_title("ECHOFED");
    } else {
      config.set_dicomweb_url(orthanc_->dicomweb_url());
    }
    config.set_timeout_seconds(10);
    return NewPacsClient(config);
  }();
  ASSERT_TRUE(client.ok()) << client.status();
  PacsPatientQuery query;
  query.patient_id = patient_id.c_str();
  query.modality = "SR";
  absl::StatusOr<std::vector<PacsInstance>> reports =
      (*client)->FindInstances(query);
  ASSERT_TRUE(reports.ok()) << reports.status();
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].study_instance_uid, study_uid.c_str());
  // The Grad-CAM overlay is a Secondary Capture (modality OT) in the same
  // study, where a viewer lists it beside the images.
  query.modality = "OT";
  absl::StatusOr<std::vector<PacsInstance>> overlays =
      (*client)->FindInstances(query);
  ASSERT_TRUE(overlays.ok()) << overlays.status();
  ASSERT_EQ(overlays->size(), 1u);
  EXPECT_EQ((*overlays)[0].study_instance_uid, study_uid.c_str());
  EXPECT_EQ((*overlays)[0].sop_class_uid, "1.2.840.10008.5.1.4.1.1.7");
  absl::StatusOr<std::string> sr_bytes =
      (*client)->RetrieveInstance((*reports)[0]);
  ASSERT_TRUE(sr_bytes.ok()) << sr_bytes.status();

  DcmInputBufferStream stream;
  stream.setBuffer(sr_bytes->data(), sr_bytes->size());
  stream.setEos();
  DcmFileFormat file;
  file.transferInit();
  ASSERT_TRUE(file.read(stream).good());
  file.transferEnd();
  DSRDocument document;
  ASSERT_EQ(document.read(*file.getDataset()), EC_Normal);
  EXPECT_EQ(document.getDocumentType(), DSRTypes::DT_ComprehensiveSR);
  OFString value;
  document.getPatientID(value);
  EXPECT_EQ(std::string(value.c_str()), patient_id.c_str());
  document.getStudyInstanceUID(value);
  EXPECT_EQ(std::string(value.c_str()), study_uid.c_str());

  // Every content item by its concept's meaning, as TEXT or NUM value.
  std::map<std::string, std::string> items;
  DSRDocumentTree& tree = document.getTree();
  if (tree.gotoRoot() > 0) {
    do {
      const DSRContentItem& node = tree.getCurrentContentItem();
      std::string meaning = node.getConceptName().getCodeMeaning().c_str();
      if (node.getValueType() == DSRTypes::VT_Text) {
        items[meaning] = node.getStringValue().c_str();
      } else if (node.getValueType() == DSRTypes::VT_Num) {
        items[meaning] = node.getNumericValue().getNumericValue().c_str();
      }
    } while (tree.iterate() > 0);
  }
  auto item = [&](const std::string& meaning) {
    auto it = items.find(meaning);
    return it == items.end() ? std::string("<missing>") : it->second;
  };
  // ... equal to what the agent wrote in the site's own JSON report.
  absl::StatusOr<std::string> json_text = ReadFileToString(
      dir_.Join(absl::StrCat("out/", image.patient_id, "-diagnose.json")));
  ASSERT_TRUE(json_text.ok()) << json_text.status();
  google::protobuf::Struct json;
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(*json_text, &json).ok());
  const auto& subtype = json.fields().at("subtype").struct_value();
  for (const char* name : {"NB", "GNB", "GN"}) {
    double percent = 0;
    ASSERT_TRUE(absl::SimpleAtod(
        item(absl::StrCat("Probability of subtype ", name)), &percent))
        << name << ": " << item(absl::StrCat("Probability of subtype ", name));
    EXPECT_NEAR(percent,
                100 * subtype.fields()
                          .at("probabilities")
                          .struct_value()
                          .fields()
                          .at(name)
                          .number_value(),
                0.006)
        << name;
  }
  double high_risk = 0;
  ASSERT_TRUE(
      absl::SimpleAtod(item("Probability of high-risk disease"), &high_risk));
  EXPECT_NEAR(high_risk,
              100 * json.fields()
                        .at("high_risk")
                        .struct_value()
                        .fields()
                        .at("probability")
                        .number_value(),
              0.006);
  for (const char* head : {"Probability of bone marrow metastasis",
                           "Probability of good response to treatment"}) {
    EXPECT_NE(item(head), "<missing>") << head;
  }
  EXPECT_NE(item("INRG pretreatment risk group (rule)"), "<missing>");
  EXPECT_EQ(item("Model file SHA-256 digest"), digest);
  EXPECT_EQ(item("Federated global round of the model"), "7");
  EXPECT_TRUE(absl::StrContains(item("Decision support statement"),
                                "Decision support only"));
}

INSTANTIATE_TEST_SUITE_P(Protocols, PacsIntegrationTest,
                         ::testing::Values(Protocol::kDimse,
                                           Protocol::kDimseMove,
                                           Protocol::kDicomWeb),
                         ProtocolName);

}  // namespace
}  // namespace echofed
