// The cohort pull's bookkeeping (what is fetched, resumed, left out,
// written) against a PACS in memory that serves real DICOM objects from the
// project's writer. The same pull against real PACSs (Orthanc, dcmqrscp)
// over the network is in pacs_integration_test.cc.

#include "site-agent/pacs/pull.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/data/manifest.h"
#include "site-agent/pacs/pseudonym.h"
#include "site-agent/pacs/worklist.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::TempDir;

constexpr char kUsImage[] = "1.2.840.10008.5.1.4.1.1.6.1";
constexpr char kBasicTextSr[] = "1.2.840.10008.5.1.4.1.1.88.11";

GrayImage Gradient(int seed) {
  GrayImage image;
  image.width = 32;
  image.height = 24;
  image.pixels.resize(image.width * image.height);
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    image.pixels[i] = static_cast<uint8_t>((i * 7 + seed * 31) % 251);
  }
  return image;
}

// A PACS in memory: instances with their Part 10 bytes, a count of
// retrieves, and switches for the failures a real one shows.
class InMemoryPacs : public PacsClient {
 public:
  void AddImage(const std::string& patient_id, const std::string& accession,
                int study, int instance_number) {
    DicomWriteOptions options;
    options.patient_id = patient_id;
    options.patient_name = "TEST^" + patient_id;
    options.accession_number = accession;
    options.instance_number = instance_number;
    options.study_instance_uid =
        DeterministicDicomUid(absl::StrCat(patient_id, "/study", study));
    options.series_instance_uid =
        DeterministicDicomUid(absl::StrCat(patient_id, "/series", study));
    options.sop_instance_uid = DeterministicDicomUid(
        absl::StrCat(patient_id, "/", study, "/", instance_number));
    absl::StatusOr<std::string> bytes =
        EncodeDicomUltrasound(Gradient(instance_number), options);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    PacsInstance instance{patient_id,
                          accession,
                          options.study_instance_uid,
                          options.series_instance_uid,
                          options.sop_instance_uid,
                          kUsImage,
                          "US",
                          "20240101",
                          instance_number};
    Add(instance, *bytes);
  }
  void Add(const PacsInstance& instance, const std::string& bytes) {
    instances_.push_back(instance);
    bytes_[instance.sop_instance_uid] = bytes;
  }

  std::string Describe() const override { return "PACS in memory"; }
  absl::Status Echo() override {
    return down_ ? absl::UnavailableError("connection refused")
                 : absl::OkStatus();
  }
  absl::StatusOr<std::vector<PacsInstance>> FindInstances(
      const PacsPatientQuery& query) override {
    if (down_) return absl::UnavailableError("connection refused");
    std::vector<PacsInstance> found;
    for (const PacsInstance& instance : instances_) {
      bool match = query.patient_id.empty()
                       ? instance.accession_number == query.accession_number
                       : instance.patient_id == query.patient_id;
      if (match &&
          (query.modality.empty() || query.modality == instance.modality)) {
        found.push_back(instance);
      }
    }
    return found;
  }
  absl::StatusOr<std::string> RetrieveInstance(
      const PacsInstance& instance) override {
    if (down_) return absl::UnavailableError("connection refused");
    ++retrieves_;
    if (fail_retrieve_of_.count(instance.sop_instance_uid) > 0) {
      return absl::DataLossError("the C-GET completed with 0 instances");
    }
    if (on_retrieve_) on_retrieve_();
    return bytes_.at(instance.sop_instance_uid);
  }
  absl::Status Store(const std::vector<std::string>&) override {
    return absl::UnimplementedError("not used here");
  }

  int retrieves_ = 0;
  bool down_ = false;
  std::set<std::string> fail_retrieve_of_;
  std::function<void()> on_retrieve_;
  std::vector<PacsInstance> instances_;

 private:
  std::map<std::string, std::string> bytes_;
};

class PullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pacs_.AddImage("HOSP-0001", "ACC-1", 1, 1);
    pacs_.AddImage("HOSP-0001", "ACC-1", 1, 2);
    pacs_.AddImage("HOSP-0002", "ACC-2", 1, 1);
    pacs_.AddImage("HOSP-0003", "ACC-3", 1, 1);
    absl::StatusOr<PseudonymKey> key =
        PseudonymKey::LoadOrCreate(state_.Join("pseudonym.key"));
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = *key;
    absl::StatusOr<Worklist> worklist = ParseWorklist(
        "patient_id,accession_number,label,age_months,sex\n"
        "HOSP-0001,,NB,14,F\n"
        ",ACC-2,GN,60,M\n"
        "HOSP-0003,,GNB,30,\n",
        "cohort.csv");
    ASSERT_TRUE(worklist.ok()) << worklist.status();
    worklist_ = *worklist;
    options_.data_dir = data_.path();
    options_.pseudonym_key = &key_;
    options_.progress = [this](const std::string& line) {
      log_ += line + "\n";
    };
  }

  std::string Read(const std::string& name) {
    absl::StatusOr<std::string> text = ReadFileToString(data_.Join(name));
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }

  TempDir data_, state_;
  InMemoryPacs pacs_;
  PseudonymKey key_ = *PseudonymKey::FromBytes(std::string(32, 'k'));
  Worklist worklist_;
  PullOptions options_;
  std::string log_;
};

TEST_F(PullTest, WritesManifestAndClinicalUnderPseudonyms) {
  absl::StatusOr<PullResult> result = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->patients_complete, 3);
  EXPECT_EQ(result->patients_left_out, 0);
  EXPECT_EQ(result->instances_fetched, 4);
  EXPECT_FALSE(result->stopped_early);
  EXPECT_TRUE(result->problems.empty());

  absl::StatusOr<SiteManifest> manifest = LoadManifest(data_.path());
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_TRUE(manifest->errors.empty()) << manifest->errors[0].message;
  ASSERT_EQ(manifest->records.size(), 4u);
  EXPECT_EQ(manifest->records[0].patient_id, key_.Pseudonym("HOSP-0001"));
  EXPECT_EQ(manifest->records[0].label, "NB");
  EXPECT_EQ(manifest->records[2].patient_id, key_.Pseudonym("HOSP-0002"));
  EXPECT_EQ(manifest->records[2].label, "GN");

  absl::StatusOr<ClinicalTable> clinical =
      LoadClinicalCsv(data_.Join("clinical.csv"));
  ASSERT_TRUE(clinical.ok()) << clinical.status();
  EXPECT_TRUE(clinical->errors.empty());
  ASSERT_EQ(clinical->records.count(key_.Pseudonym("HOSP-0002")), 1u);
  EXPECT_EQ(clinical->records.at(key_.Pseudonym("HOSP-0002")).age_months, 60);

  // No PatientID or accession number in anything the pull wrote or said,
  // beyond the images themselves.
  for (const std::string& text :
       {Read("manifest.csv"), Read("clinical.csv"), log_}) {
    EXPECT_FALSE(absl::StrContains(text, "HOSP-")) << text;
    EXPECT_FALSE(absl::StrContains(text, "ACC-")) << text;
  }
  struct stat info;
  ASSERT_EQ(stat(data_.Join("manifest.csv").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST_F(PullTest, SecondPullFetchesNothingTwice) {
  ASSERT_TRUE(PullCohort(pacs_, worklist_, options_).ok());
  std::string first_manifest = Read("manifest.csv");
  pacs_.retrieves_ = 0;
  absl::StatusOr<PullResult> again = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(pacs_.retrieves_, 0);
  EXPECT_EQ(again->instances_fetched, 0);
  EXPECT_EQ(again->instances_already_present, 4);
  EXPECT_EQ(Read("manifest.csv"), first_manifest);

  // A new image in the PACS: only it is fetched.
  pacs_.AddImage("HOSP-0003", "ACC-3", 1, 2);
  absl::StatusOr<PullResult> third = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(pacs_.retrieves_, 1);
  EXPECT_EQ(third->instances_already_present, 4);
}

TEST_F(PullTest, StoppedPullResumesWithoutLosingPatients) {
  ASSERT_TRUE(PullCohort(pacs_, worklist_, options_).ok());
  // Some images vanish from disk (a disk replaced, a folder removed), and
  // the next pull is stopped after its first retrieve.
  std::filesystem::remove_all(
      data_.Join("pacs/" + key_.Pseudonym("HOSP-0001")));
  bool stop = false;
  options_.stop_requested = [&stop] { return stop; };
  pacs_.on_retrieve_ = [&stop] { stop = true; };
  absl::StatusOr<PullResult> stopped = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_TRUE(stopped->stopped_early);
  EXPECT_EQ(stopped->resume_line, 2);
  EXPECT_EQ(stopped->stop_reason, "stopped on request");
  // Patient 1 is incomplete, so out; patients 2 and 3 were not reached and
  // are carried over from the manifest of the last pull.
  absl::StatusOr<SiteManifest> manifest = LoadManifest(data_.path());
  ASSERT_TRUE(manifest.ok());
  std::set<std::string> patients;
  for (const ImageRecord& record : manifest->records) {
    patients.insert(record.patient_id);
  }
  EXPECT_EQ(patients, (std::set<std::string>{key_.Pseudonym("HOSP-0002"),
                                             key_.Pseudonym("HOSP-0003")}));
  absl::StatusOr<ClinicalTable> clinical =
      LoadClinicalCsv(data_.Join("clinical.csv"));
  ASSERT_TRUE(clinical.ok());
  EXPECT_EQ(clinical->records.size(), 2u);

  options_.stop_requested = nullptr;
  pacs_.on_retrieve_ = nullptr;
  pacs_.retrieves_ = 0;
  absl::StatusOr<PullResult> resumed = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(resumed.ok());
  EXPECT_FALSE(resumed->stopped_early);
  EXPECT_EQ(resumed->patients_complete, 3);
  EXPECT_EQ(pacs_.retrieves_, 1);  // the one image not fetched before
}

TEST_F(PullTest, PatientInterruptedByANewImageKeepsItsRows) {
  ASSERT_TRUE(PullCohort(pacs_, worklist_, options_).ok());
  // A new image of patient 1 arrives in the PACS, and the next pull is
  // stopped while fetching it: patient 1 stays in the manifest with the
  // images it had.
  pacs_.AddImage("HOSP-0001", "ACC-1", 1, 3);
  // Listed first, so the stop comes before the patient's other images.
  std::rotate(pacs_.instances_.rbegin(), pacs_.instances_.rbegin() + 1,
              pacs_.instances_.rend());
  bool stop = false;
  options_.stop_requested = [&stop] { return stop; };
  pacs_.on_retrieve_ = [&stop] { stop = true; };
  absl::StatusOr<PullResult> stopped = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(stopped.ok());
  EXPECT_TRUE(stopped->stopped_early);
  EXPECT_EQ(stopped->patients_complete, 3);
  absl::StatusOr<SiteManifest> manifest = LoadManifest(data_.path());
  ASSERT_TRUE(manifest.ok());
  EXPECT_TRUE(manifest->errors.empty());
  EXPECT_EQ(manifest->records.size(), 4u);
}

TEST_F(PullTest, FailedRetrieveLeavesOutThatPatientOnly) {
  pacs_.fail_retrieve_of_.insert(DeterministicDicomUid("HOSP-0001/1/2"));
  absl::StatusOr<PullResult> result = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->patients_complete, 2);
  EXPECT_EQ(result->patients_left_out, 1);
  ASSERT_FALSE(result->problems.empty());
  EXPECT_EQ(result->problems[0].line, 2);
  EXPECT_EQ(result->problems[0].patient, key_.Pseudonym("HOSP-0001"));
  EXPECT_TRUE(absl::StrContains(result->problems[0].message, "0 instances"))
      << result->problems[0].message;
  // The next pull fetches only the missing instance and completes.
  pacs_.fail_retrieve_of_.clear();
  pacs_.retrieves_ = 0;
  absl::StatusOr<PullResult> again = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->patients_complete, 3);
  EXPECT_EQ(pacs_.retrieves_, 1);
}

TEST_F(PullTest, NonImagesAndUndecodableObjectsAreReportedNotUsed) {
  PacsInstance report = pacs_.instances_[0];
  report.sop_instance_uid = "1.2.3.4.5";
  report.sop_class_uid = kBasicTextSr;
  pacs_.Add(report, "not fetched at all");
  PacsInstance broken = pacs_.instances_[0];
  broken.sop_instance_uid = "1.2.3.4.6";
  broken.instance_number = 9;
  pacs_.Add(broken, std::string(128, '\0') + "DICM" + "garbage");
  absl::StatusOr<PullResult> result = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->instances_not_images, 1);
  EXPECT_EQ(result->instances_undecodable, 1);
  EXPECT_EQ(result->patients_complete, 3);  // patient 1 keeps 2 good images
  std::string messages;
  for (const PullProblem& problem : result->problems) {
    EXPECT_FALSE(problem.patient_left_out) << problem.message;
    messages += problem.message + "\n";
  }
  EXPECT_TRUE(absl::StrContains(messages, "is not an image")) << messages;
  EXPECT_TRUE(absl::StrContains(messages, "cannot be used")) << messages;
}

TEST_F(PullTest, RowsTheWorklistOrThePacsCannotResolveAreListed) {
  absl::StatusOr<Worklist> worklist = ParseWorklist(
      "patient_id,accession_number,label\n"
      "HOSP-0001,,NB\n"
      "HOSP-9999,,GN\n"  // not in the PACS
      ",ACC-1,NB\n",     // the same patient as line 2
      "cohort.csv");
  ASSERT_TRUE(worklist.ok());
  absl::StatusOr<PullResult> result = PullCohort(pacs_, *worklist, options_);
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->patients_complete, 0);
  EXPECT_EQ(result->patients_left_out, 3);
  ASSERT_GE(result->problems.size(), 3u);
  EXPECT_TRUE(absl::StrContains(result->problems[0].message,
                                "the same patient as worklist line 4"));
  EXPECT_TRUE(
      absl::StrContains(result->problems[1].message, "no US instances"));
  EXPECT_TRUE(absl::StrContains(result->problems.back().message,
                                "the same patient as worklist line 2"));
}

TEST_F(PullTest, PacsDownStopsAndSaysWhere) {
  pacs_.down_ = true;
  absl::StatusOr<PullResult> result = PullCohort(pacs_, worklist_, options_);
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->stopped_early);
  EXPECT_EQ(result->resume_line, 2);
  EXPECT_TRUE(absl::StrContains(result->stop_reason, "stopped answering"))
      << result->stop_reason;
  EXPECT_EQ(pacs_.retrieves_, 0);
}

TEST_F(PullTest, HandMadeManifestIsNotOverwritten) {
  ASSERT_TRUE(WriteFileAtomically(data_.Join("manifest.csv"),
                                  "patient_id,image,label\nx,a.png,NB\n")
                  .ok());
  absl::StatusOr<PullResult> refused = PullCohort(pacs_, worklist_, options_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(
      absl::StrContains(refused.status().message(), "--replace-tables"));
  EXPECT_EQ(pacs_.retrieves_, 0);
  options_.replace_existing_tables = true;
  ASSERT_TRUE(PullCohort(pacs_, worklist_, options_).ok());
  // Its own manifest it overwrites freely; an edit makes it refuse again.
  options_.replace_existing_tables = false;
  ASSERT_TRUE(PullCohort(pacs_, worklist_, options_).ok());
  ASSERT_TRUE(WriteFileAtomically(data_.Join("manifest.csv"),
                                  Read("manifest.csv") + "y,b.png,GN\n")
                  .ok());
  EXPECT_FALSE(PullCohort(pacs_, worklist_, options_).ok());
}

TEST(PseudonymKeyTest, CreatedPrivateStableAndRefusedWhenExposed) {
  TempDir dir;
  const std::string path = dir.Join("state/pseudonym.key");
  absl::StatusOr<PseudonymKey> created = PseudonymKey::LoadOrCreate(path);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created());
  struct stat info;
  ASSERT_EQ(stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  EXPECT_EQ(info.st_size, kPseudonymKeyBytes);

  absl::StatusOr<PseudonymKey> loaded = PseudonymKey::LoadOrCreate(path);
  ASSERT_TRUE(loaded.ok());
  EXPECT_FALSE(loaded->created());
  const std::string pseudonym = created->Pseudonym("12345678");
  EXPECT_EQ(loaded->Pseudonym("12345678"), pseudonym);
  EXPECT_NE(loaded->Pseudonym("12345679"), pseudonym);
  EXPECT_EQ(pseudonym.size(), 21u);
  EXPECT_EQ(pseudonym[0], 'P');
  // Another site's key gives other pseudonyms for the same PatientID.
  absl::StatusOr<PseudonymKey> other =
      PseudonymKey::FromBytes(std::string(32, 'x'));
  EXPECT_NE(other->Pseudonym("12345678"), pseudonym);

  ASSERT_EQ(chmod(path.c_str(), 0644), 0);
  absl::StatusOr<PseudonymKey> exposed = PseudonymKey::LoadOrCreate(path);
  EXPECT_EQ(exposed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(exposed.status().message(), "chmod 600"));

  ASSERT_TRUE(WriteFileAtomically(path, "short", 0600).ok());
  EXPECT_EQ(PseudonymKey::LoadOrCreate(path).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(WorklistTest, ColumnsAndRowsAreChecked) {
  EXPECT_FALSE(ParseWorklist("patient_id,label,age_in_months\n", "w").ok());
  EXPECT_FALSE(ParseWorklist("label,sex\n", "w").ok());
  EXPECT_FALSE(ParseWorklist("patient_id,sex\n", "w").ok());
  absl::StatusOr<Worklist> worklist = ParseWorklist(
      "patient_id,accession_number,label,sex\n"
      "A1,,NB,F\n"
      "A2,ACC9,NB,F\n"  // both identifiers
      ",,NB,F\n"        // neither
      "A3,,,M\n"        // no label
      "A*,,NB,M\n"      // a wildcard
      "A4,,GN,M\n"
      "A4,,GN,M\n",  // twice
      "w");
  ASSERT_TRUE(worklist.ok()) << worklist.status();
  ASSERT_EQ(worklist->entries.size(), 1u);
  EXPECT_EQ(worklist->entries[0].patient_id, "A1");
  EXPECT_EQ(worklist->entries[0].clinical.at("sex"), "F");
  EXPECT_EQ(worklist->clinical_columns, std::vector<std::string>{"sex"});
  ASSERT_EQ(worklist->errors.size(), 6u);
  EXPECT_EQ(worklist->errors[0].line, 3);
  EXPECT_EQ(worklist->errors[4].line, 7);
  EXPECT_TRUE(absl::StrContains(worklist->errors[4].message, "lines 7, 8"));
  // Messages never repeat the identifiers themselves.
  for (const WorklistRowError& error : worklist->errors) {
    EXPECT_FALSE(absl::StrContains(error.message, "A4")) << error.message;
  }
}

}  // namespace
}  // namespace echofed
