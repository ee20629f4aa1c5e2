// The DICOMweb client against a real PACS: Debian's Orthanc with its
// DICOMweb plugin on loopback (tests/testing/orthanc_server.h), seeded with
// synthetic ultrasound objects of three patients and one secondary capture
// that the modality filter must skip. Skipped without Orthanc.

#include "site-agent/pacs/dicomweb_client.h"

#include <algorithm>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/dicom_writer.h"
#include "tests/testing/orthanc_server.h"

namespace echofed {
namespace {

using testing::OrthancOptions;
using testing::OrthancServer;
using testing::TempDir;

constexpr char kUser[] = "site-agent";
constexpr char kPassword[] = "pacs:secret";  // a colon after the first

struct Seeded {
  std::string file;
  GrayImage image;
  PacsInstance instance;  // what a search should answer
};

bool Before(const PacsInstance& a, const PacsInstance& b) {
  return std::tie(a.study_instance_uid, a.series_instance_uid,
                  a.instance_number, a.sop_instance_uid) <
         std::tie(b.study_instance_uid, b.series_instance_uid,
                  b.instance_number, b.sop_instance_uid);
}

// A small image that differs from object to object.
GrayImage Pattern(int seed) {
  GrayImage image{16, 12, {}};
  for (int i = 0; i < image.width * image.height; ++i) {
    image.pixels.push_back(static_cast<uint8_t>((i * 7 + seed * 31) % 256));
  }
  return image;
}

Seeded MakeObject(const std::string& patient_id, const std::string& accession,
                  const std::string& study, const std::string& study_date,
                  const std::string& series, int instance_number,
                  bool secondary_capture = false) {
  static int seed = 0;
  Seeded seeded;
  seeded.image = Pattern(++seed);
  DicomWriteOptions options;
  options.patient_id = patient_id;
  options.patient_name = "SYNTHETIC^" + patient_id;
  options.accession_number = accession;
  options.study_date = study_date;
  options.study_time = "101500";
  options.secondary_capture = secondary_capture;
  options.instance_number = instance_number;
  options.series_number = secondary_capture ? 99 : 1;
  options.study_instance_uid = DeterministicDicomUid("study/" + study);
  options.series_instance_uid = DeterministicDicomUid("series/" + series);
  options.sop_instance_uid = DeterministicDicomUid(
      absl::StrCat("instance/", series, "/", instance_number));
  seeded.file = *EncodeDicomUltrasound(seeded.image, options);
  PacsInstance& instance = seeded.instance;
  instance.patient_id = patient_id;
  instance.accession_number = accession;
  instance.study_instance_uid = options.study_instance_uid;
  instance.series_instance_uid = options.series_instance_uid;
  instance.sop_instance_uid = options.sop_instance_uid;
  instance.sop_class_uid = secondary_capture ? "1.2.840.10008.5.1.4.1.1.7"
                                             : "1.2.840.10008.5.1.4.1.1.6.1";
  instance.modality = secondary_capture ? "OT" : "US";
  instance.study_date = study_date;
  instance.instance_number = instance_number;
  return seeded;
}

void ExpectSameInstances(std::vector<PacsInstance> expected,
                         const std::vector<PacsInstance>& found) {
  std::sort(expected.begin(), expected.end(), Before);
  ASSERT_EQ(found.size(), expected.size());
  for (size_t i = 0; i < found.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("instance ", i));
    EXPECT_EQ(found[i].patient_id, expected[i].patient_id);
    EXPECT_EQ(found[i].accession_number, expected[i].accession_number);
    EXPECT_EQ(found[i].study_instance_uid, expected[i].study_instance_uid);
    EXPECT_EQ(found[i].series_instance_uid, expected[i].series_instance_uid);
    EXPECT_EQ(found[i].sop_instance_uid, expected[i].sop_instance_uid);
    EXPECT_EQ(found[i].sop_class_uid, expected[i].sop_class_uid);
    EXPECT_EQ(found[i].modality, expected[i].modality);
    EXPECT_EQ(found[i].study_date, expected[i].study_date);
    EXPECT_EQ(found[i].instance_number, expected[i].instance_number);
  }
}

class DicomWebClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!testing::OrthancMissing().empty()) return;
    OrthancOptions options;
    options.users = {{kUser, kPassword}};
    auto started = OrthancServer::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    orthanc_ = started->release();
    seeded_ = new std::vector<Seeded>{
        // PAT-A: two studies; the first holds a secondary capture too, and
        // its ultrasound instances were stored out of order.
        MakeObject("PAT-A", "ACC-A1", "a1", "20230105", "a1-us", 2),
        MakeObject("PAT-A", "ACC-A1", "a1", "20230105", "a1-us", 1),
        MakeObject("PAT-A", "ACC-A1", "a1", "20230105", "a1-sc", 1, true),
        MakeObject("PAT-A", "ACC-A2", "a2", "20240310", "a2-us", 1),
        MakeObject("PAT-B", "ACC-B1", "b1", "20230620", "b1-us", 1),
        // Characters a query may hold as they are, as in hospital IDs.
        // (Orthanc 1.10 does not decode percent-escapes in QIDO-RS keys,
        // so IDs with '&', '+', '=' or spaces cannot be found there.)
        MakeObject("4595/2021:C(1)", "ACC/2022-1", "c1", "20220101", "c1-us",
                   1),
    };
    for (const Seeded& seeded : *seeded_) {
      absl::StatusOr<std::string> id = orthanc_->Upload(seeded.file);
      ASSERT_TRUE(id.ok()) << id.status();
    }
  }

  static void TearDownTestSuite() {
    delete orthanc_;
    orthanc_ = nullptr;
    delete seeded_;
    seeded_ = nullptr;
  }

  void SetUp() override {
    if (std::string why = testing::OrthancMissing(); !why.empty()) {
      GTEST_SKIP() << why;
    }
    ASSERT_NE(orthanc_, nullptr);
    client_ = NewClient(absl::StrCat(kUser, ":", kPassword, "\n"));
    ASSERT_NE(client_, nullptr);
  }

  // A client of the suite's Orthanc with these credentials ("" for none).
  std::unique_ptr<PacsClient> NewClient(const std::string& credentials,
                                        const DicomWebOptions& options = {}) {
    PacsConfig config;
    config.set_dicomweb_url(orthanc_->dicomweb_url() + "/");
    config.set_timeout_seconds(10);
    if (!credentials.empty()) {
      const std::string path = folder_.Join("credentials");
      EXPECT_TRUE(WriteFileAtomically(path, credentials, 0600).ok());
      config.set_dicomweb_credentials_file(path);
    }
    absl::StatusOr<std::unique_ptr<PacsClient>> client =
        NewDicomWebPacsClient(config, options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(*client) : nullptr;
  }

  // The seeded instances of these studies (by accession number).
  static std::vector<PacsInstance> Expected(
      const std::vector<std::string>& accessions,
      bool with_secondary_capture = false) {
    std::vector<PacsInstance> instances;
    for (const Seeded& seeded : *seeded_) {
      const PacsInstance& instance = seeded.instance;
      if (std::find(accessions.begin(), accessions.end(),
                    instance.accession_number) == accessions.end()) {
        continue;
      }
      if (instance.modality != "US" && !with_secondary_capture) continue;
      instances.push_back(instance);
    }
    return instances;
  }

  static OrthancServer* orthanc_;
  static std::vector<Seeded>* seeded_;
  TempDir folder_;
  std::unique_ptr<PacsClient> client_;
};

OrthancServer* DicomWebClientTest::orthanc_ = nullptr;
std::vector<Seeded>* DicomWebClientTest::seeded_ = nullptr;

PacsPatientQuery ByPatient(const std::string& patient_id) {
  PacsPatientQuery query;
  query.patient_id = patient_id;
  return query;
}

PacsPatientQuery ByAccession(const std::string& accession) {
  PacsPatientQuery query;
  query.accession_number = accession;
  return query;
}

TEST_F(DicomWebClientTest, EchoAndDescribe) {
  EXPECT_TRUE(client_->Echo().ok()) << client_->Echo();
  EXPECT_EQ(client_->Describe(), "DICOMweb " + orthanc_->dicomweb_url());
}

TEST_F(DicomWebClientTest, FindsByPatientIdOnlyUltrasoundSorted) {
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_->FindInstances(ByPatient("PAT-A"));
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-A1", "ACC-A2"}), *found);
  for (const PacsInstance& instance : *found) {
    EXPECT_EQ(instance.modality, "US");
  }
}

TEST_F(DicomWebClientTest, FindsEveryModalityWhenAsked) {
  PacsPatientQuery query = ByPatient("PAT-A");
  query.modality = "";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-A1", "ACC-A2"}, true), *found);
}

// Pages of one or two results: PAT-A's two studies, the first study's two
// series and the ultrasound series' two instances each take several
// requests with limit and offset, and nothing is lost or repeated.
TEST_F(DicomWebClientTest, PagesThroughMoreResultsThanOnePage) {
  for (int page_size : {1, 2}) {
    SCOPED_TRACE(absl::StrCat("page size ", page_size));
    std::unique_ptr<PacsClient> client = NewClient(
        absl::StrCat(kUser, ":", kPassword, "\n"), DicomWebOptions{page_size});
    ASSERT_NE(client, nullptr);
    PacsPatientQuery query = ByPatient("PAT-A");
    query.modality = "";
    absl::StatusOr<std::vector<PacsInstance>> found =
        client->FindInstances(query);
    ASSERT_TRUE(found.ok()) << found.status();
    ExpectSameInstances(Expected({"ACC-A1", "ACC-A2"}, true), *found);
  }
}

TEST_F(DicomWebClientTest, FindsByAccessionNumber) {
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_->FindInstances(ByAccession("ACC-B1"));
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-B1"}), *found);

  found = client_->FindInstances(ByAccession("ACC-A2"));
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-A2"}), *found);
}

TEST_F(DicomWebClientTest, IdentifiersWithPunctuation) {
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_->FindInstances(ByPatient("4595/2021:C(1)"));
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC/2022-1"}), *found);
  found = client_->FindInstances(ByAccession("ACC/2022-1"));
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC/2022-1"}), *found);
  // Escaped, not sent as query syntax: no other patient matches.
  found = client_->FindInstances(ByPatient("PAT-A&PatientID=PAT-B"));
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(found->empty());
}

TEST_F(DicomWebClientTest, StudyDateRange) {
  PacsPatientQuery query = ByPatient("PAT-A");
  query.study_date_from = "20240101";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-A2"}), *found);

  query.study_date_from = "";
  query.study_date_to = "20231231";
  found = client_->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-A1"}), *found);

  query.study_date_from = "20230105";
  query.study_date_to = "20230105";
  found = client_->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances(Expected({"ACC-A1"}), *found);

  query.study_date_from = "20250101";
  query.study_date_to = "";
  found = client_->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(found->empty());
}

TEST_F(DicomWebClientTest, NoMatchIsAnEmptyList) {
  for (const PacsPatientQuery& query :
       {ByPatient("NOBODY"), ByPatient("PAT"), ByAccession("ACC-A")}) {
    absl::StatusOr<std::vector<PacsInstance>> found =
        client_->FindInstances(query);
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_TRUE(found->empty());
  }
}

TEST_F(DicomWebClientTest, RefusesQueriesItCannotMakeExact) {
  PacsPatientQuery both = ByPatient("PAT-A");
  both.accession_number = "ACC-A1";
  PacsPatientQuery bad_date = ByPatient("PAT-A");
  bad_date.study_date_from = "2023-01-01";
  for (const PacsPatientQuery& query :
       {both, PacsPatientQuery(), ByPatient("PAT-*"), ByPatient("PAT-?"),
        ByAccession("A\\B"), bad_date}) {
    EXPECT_EQ(client_->FindInstances(query).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(DicomWebClientTest, RetrievesTheStoredObject) {
  for (const Seeded& seeded : *seeded_) {
    SCOPED_TRACE(seeded.instance.sop_instance_uid);
    absl::StatusOr<std::string> file =
        client_->RetrieveInstance(seeded.instance);
    ASSERT_TRUE(file.ok()) << file.status();
    // Read back with DCMTK: the same object, the same pixels.
    const std::string path = folder_.Join("retrieved.dcm");
    ASSERT_TRUE(WriteFileAtomically(path, *file).ok());
    DcmFileFormat dicom;
    ASSERT_TRUE(dicom.loadFile(path.c_str()).good());
    OFString sop_instance_uid;
    ASSERT_TRUE(dicom.getDataset()
                    ->findAndGetOFString(DCM_SOPInstanceUID, sop_instance_uid)
                    .good());
    EXPECT_EQ(sop_instance_uid.c_str(), seeded.instance.sop_instance_uid);
    absl::StatusOr<GrayImage> image = DecodeDicomGray(
        *file, "retrieved", nullptr, DicomDecodePath::kDcmtkOnly);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, seeded.image.width);
    EXPECT_EQ(image->height, seeded.image.height);
    EXPECT_EQ(image->pixels, seeded.image.pixels);
  }
}

TEST_F(DicomWebClientTest, RetrieveOfAMissingInstanceIsNotFound) {
  PacsInstance missing = (*seeded_)[0].instance;
  missing.sop_instance_uid = DeterministicDicomUid("never stored");
  absl::StatusOr<std::string> file = client_->RetrieveInstance(missing);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound) << file.status();
  missing.sop_instance_uid = "1.2/../../x";
  EXPECT_EQ(client_->RetrieveInstance(missing).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DicomWebClientTest, StoresNewObjectsThatAreThenFound) {
  const std::vector<Seeded> stored = {
      MakeObject("PAT-S", "ACC-S1", "s1", "20240601", "s1-us", 1),
      MakeObject("PAT-S", "ACC-S1", "s1", "20240601", "s1-sc", 1, true),
  };
  absl::Status status = client_->Store({stored[0].file, stored[1].file});
  ASSERT_TRUE(status.ok()) << status;
  PacsPatientQuery query = ByPatient("PAT-S");
  query.modality = "";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ExpectSameInstances({stored[0].instance, stored[1].instance}, *found);
  absl::StatusOr<std::string> file =
      client_->RetrieveInstance(stored[1].instance);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(client_->Store({}).ok());
}

TEST_F(DicomWebClientTest, StoreOfDamagedObjectsIsRefused) {
  std::string damaged(128, '\0');
  damaged += "DICMnot a data set at all";
  absl::Status status = client_->Store({damaged});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "refused")) << status;
  EXPECT_EQ(client_->Store({"not DICOM"}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DicomWebClientTest, WrongOrMissingCredentialsArePermissionDenied) {
  for (const std::string& credentials :
       {absl::StrCat(kUser, ":wrong"), std::string()}) {
    std::unique_ptr<PacsClient> client = NewClient(credentials);
    ASSERT_NE(client, nullptr);
    absl::Status echo = client->Echo();
    EXPECT_EQ(echo.code(), absl::StatusCode::kPermissionDenied) << echo;
    EXPECT_TRUE(absl::StrContains(echo.message(), "dicomweb_credentials_file"))
        << echo;
    EXPECT_EQ(client->FindInstances(ByPatient("PAT-A")).status().code(),
              absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(client->RetrieveInstance((*seeded_)[0].instance).status().code(),
              absl::StatusCode::kPermissionDenied);
    EXPECT_EQ(client->Store({(*seeded_)[0].file}).code(),
              absl::StatusCode::kPermissionDenied);
  }
}

TEST(DicomWebClientPacsDownTest, StoppedPacsIsUnavailableWithinTheTimeout) {
  if (std::string why = testing::OrthancMissing(); !why.empty()) {
    GTEST_SKIP() << why;
  }
  auto orthanc = OrthancServer::Start();
  ASSERT_TRUE(orthanc.ok()) << orthanc.status();
  PacsConfig config;
  config.set_dicomweb_url((*orthanc)->dicomweb_url());
  config.set_timeout_seconds(3);
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDicomWebPacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->Echo().ok());

  (*orthanc)->Kill();
  const absl::Time start = absl::Now();
  absl::Status echo = (*client)->Echo();
  EXPECT_EQ(echo.code(), absl::StatusCode::kUnavailable) << echo;
  EXPECT_TRUE(absl::StrContains(echo.message(), (*orthanc)->dicomweb_url()))
      << echo;
  EXPECT_EQ((*client)->FindInstances(ByPatient("PAT-A")).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_LT(absl::Now() - start, absl::Seconds(4));
}

}  // namespace
}  // namespace echofed
