// The DIMSE PacsClient against real DICOM peers from Debian's dcmtk
// package: dcmqrscp (an archive with C-FIND, C-GET and C-STORE) and
// storescp over TLS. Skipped when the programs are not installed.

#include "site-agent/pacs/dimse_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/dicom_writer.h"
#include "tests/testing/dcmqrscp_server.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::DcmqrscpServer;
using ::echofed::testing::DcmtkToolsMissing;
using ::echofed::testing::StorescpServer;
using ::echofed::testing::TempDir;

GrayImage Phantom(int seed) {
  GrayImage image;
  image.width = 32;
  image.height = 24;
  for (int i = 0; i < image.width * image.height; ++i) {
    image.pixels.push_back(static_cast<uint8_t>((i * 7 + seed * 31) % 256));
  }
  return image;
}

// One seeded object and what the archive should answer about it.
struct Seeded {
  std::string bytes;
  PacsInstance instance;
  int seed = 0;
};

Seeded MakeUltrasound(const std::string& patient_id,
                      const std::string& accession, const std::string& date,
                      const std::string& series_key, int instance_number,
                      int seed) {
  DicomWriteOptions options;
  options.patient_id = patient_id;
  options.patient_name = absl::StrCat("SYNTHETIC^", patient_id);
  options.accession_number = accession;
  options.study_date = date;
  options.study_time = "101500";
  options.instance_number = instance_number;
  options.study_instance_uid = DeterministicDicomUid("study/" + accession);
  options.series_instance_uid = DeterministicDicomUid("series/" + series_key);
  options.sop_instance_uid =
      DeterministicDicomUid(absl::StrCat("sop/", series_key, "/", seed));
  Seeded seeded;
  seeded.bytes = *EncodeDicomUltrasound(Phantom(seed), options);
  seeded.seed = seed;
  PacsInstance& instance = seeded.instance;
  instance.patient_id = patient_id;
  instance.accession_number = accession;
  instance.study_instance_uid = options.study_instance_uid;
  instance.series_instance_uid = options.series_instance_uid;
  instance.sop_instance_uid = options.sop_instance_uid;
  instance.sop_class_uid = UID_UltrasoundImageStorage;
  instance.modality = "US";
  instance.study_date = date;
  instance.instance_number = instance_number;
  return seeded;
}

// The same kind of object recast as a Secondary Capture in a series of
// modality OT, which a search for ultrasound must not return.
Seeded MakeSecondaryCapture(const Seeded& from, const std::string& series_key,
                            const TempDir& dir) {
  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(from.bytes.data(), from.bytes.size());
  stream.setEos();
  file.transferInit();
  EXPECT_TRUE(file.read(stream).good());
  file.transferEnd();
  Seeded seeded = from;
  seeded.instance.series_instance_uid =
      DeterministicDicomUid("series/" + series_key);
  seeded.instance.sop_instance_uid = DeterministicDicomUid("sop/" + series_key);
  seeded.instance.sop_class_uid = UID_SecondaryCaptureImageStorage;
  seeded.instance.modality = "OT";
  DcmDataset* dataset = file.getDataset();
  dataset->putAndInsertString(DCM_SOPClassUID,
                              UID_SecondaryCaptureImageStorage);
  dataset->putAndInsertString(DCM_SOPInstanceUID,
                              seeded.instance.sop_instance_uid.c_str());
  dataset->putAndInsertString(DCM_SeriesInstanceUID,
                              seeded.instance.series_instance_uid.c_str());
  dataset->putAndInsertString(DCM_Modality, "OT");
  dataset->putAndInsertString(DCM_ConversionType, "WSD");
  file.getMetaInfo()->clear();
  const std::string path = dir.Join(series_key + ".dcm");
  EXPECT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
  seeded.bytes = *ReadFileToString(path);
  return seeded;
}

class DimseClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    absl::StatusOr<std::unique_ptr<DcmqrscpServer>> server =
        DcmqrscpServer::Start({});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);

    // PAT001: a 2023 study with two US images (stored out of order) and a
    // Secondary Capture series, and a 2024 study with one image; PAT002:
    // one study.
    us_2023_b_ = MakeUltrasound("PAT001", "ACC001", "20230105", "p1s1", 2, 1);
    us_2023_a_ = MakeUltrasound("PAT001", "ACC001", "20230105", "p1s1", 1, 2);
    us_2024_ = MakeUltrasound("PAT001", "ACC002", "20240310", "p1s2", 1, 3);
    other_patient_ =
        MakeUltrasound("PAT002", "ACC003", "20230601", "p2s1", 1, 4);
    secondary_ = MakeSecondaryCapture(us_2023_a_, "p1sc", scratch_);
    ASSERT_TRUE(server_
                    ->Seed({us_2023_b_.bytes, us_2023_a_.bytes, us_2024_.bytes,
                            other_patient_.bytes, secondary_.bytes})
                    .ok());
  }

  std::unique_ptr<PacsClient> Client(const PacsConfig& config) {
    absl::StatusOr<std::unique_ptr<PacsClient>> client =
        NewDimsePacsClient(config);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }
  std::unique_ptr<PacsClient> Client() { return Client(server_->Config()); }

  static std::vector<std::string> SopUids(
      const std::vector<PacsInstance>& instances) {
    std::vector<std::string> uids;
    for (const PacsInstance& instance : instances) {
      uids.push_back(instance.sop_instance_uid);
    }
    return uids;
  }

  TempDir scratch_;
  std::unique_ptr<DcmqrscpServer> server_;
  Seeded us_2023_a_, us_2023_b_, us_2024_, other_patient_, secondary_;
};

TEST_F(DimseClientTest, EchoAndDescribe) {
  std::unique_ptr<PacsClient> client = Client();
  absl::Status echoed = client->Echo();
  EXPECT_TRUE(echoed.ok()) << echoed << "\n" << server_->Log();
  EXPECT_EQ(client->Describe(),
            absl::StrCat("AE 'PACS' at 127.0.0.1:", server_->port()));
  // The association is reused, and still answers.
  EXPECT_TRUE(client->Echo().ok());
}

TEST_F(DimseClientTest, FindsAPatientsUltrasoundInstancesInOrder) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.patient_id = "PAT001";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status() << server_->Log();
  EXPECT_EQ(SopUids(*found),
            (std::vector<std::string>{us_2023_a_.instance.sop_instance_uid,
                                      us_2023_b_.instance.sop_instance_uid,
                                      us_2024_.instance.sop_instance_uid}));
  const PacsInstance& first = (*found)[0];
  const PacsInstance& want = us_2023_a_.instance;
  EXPECT_EQ(first.patient_id, "PAT001");
  EXPECT_EQ(first.accession_number, "ACC001");
  EXPECT_EQ(first.study_instance_uid, want.study_instance_uid);
  EXPECT_EQ(first.series_instance_uid, want.series_instance_uid);
  EXPECT_EQ(first.modality, "US");
  EXPECT_EQ(first.study_date, "20230105");
  EXPECT_EQ(first.instance_number, 1);
  EXPECT_EQ((*found)[1].instance_number, 2);
  // dcmqrscp returns the SOP Class UID at image level; the contract allows
  // an empty one for archives that do not.
  if (!first.sop_class_uid.empty()) {
    EXPECT_EQ(first.sop_class_uid, UID_UltrasoundImageStorage);
  }
}

TEST_F(DimseClientTest, FindsByAccessionNumber) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.accession_number = "ACC002";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(SopUids(*found),
            std::vector<std::string>{us_2024_.instance.sop_instance_uid});
  EXPECT_EQ((*found)[0].patient_id, "PAT001");
}

TEST_F(DimseClientTest, RestrictsToTheStudyDateRange) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.patient_id = "PAT001";
  query.study_date_from = "20240101";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(SopUids(*found),
            std::vector<std::string>{us_2024_.instance.sop_instance_uid});
  query.study_date_from = "";
  query.study_date_to = "20231231";
  found = client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->size(), 2u);
  query.study_date_from = "20230106";
  found = client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(found->empty());
}

TEST_F(DimseClientTest, ModalityFilterLeavesOutOtherSeries) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.patient_id = "PAT001";
  query.modality = "";  // any modality: the Secondary Capture too
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 4u);
  bool saw_secondary = false;
  for (const PacsInstance& instance : *found) {
    if (instance.sop_instance_uid == secondary_.instance.sop_instance_uid) {
      saw_secondary = true;
      EXPECT_EQ(instance.modality, "OT");
    }
  }
  EXPECT_TRUE(saw_secondary);
  query.modality = "OT";
  found = client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(SopUids(*found),
            std::vector<std::string>{secondary_.instance.sop_instance_uid});
}

TEST_F(DimseClientTest, UnknownPatientIsAnEmptyList) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.patient_id = "NOBODY";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_TRUE(found->empty());
}

TEST_F(DimseClientTest, RefusesQueriesThatCouldMatchOtherPatients) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.patient_id = "PAT*";
  EXPECT_EQ(client->FindInstances(query).status().code(),
            absl::StatusCode::kInvalidArgument);
  query.patient_id = "";
  EXPECT_EQ(client->FindInstances(query).status().code(),
            absl::StatusCode::kInvalidArgument);
  query.patient_id = "PAT001";
  query.accession_number = "ACC001";
  EXPECT_EQ(client->FindInstances(query).status().code(),
            absl::StatusCode::kInvalidArgument);
  query.accession_number = "";
  query.study_date_from = "2023-01-01";
  EXPECT_EQ(client->FindInstances(query).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DimseClientTest, RetrievesTheSeededInstance) {
  std::unique_ptr<PacsClient> client = Client();
  PacsPatientQuery query;
  query.patient_id = "PAT002";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 1u);
  absl::StatusOr<std::string> bytes = client->RetrieveInstance((*found)[0]);
  ASSERT_TRUE(bytes.ok()) << bytes.status() << "\n" << server_->Log();
  DicomImageInfo info;
  absl::StatusOr<GrayImage> image = DecodeDicomGray(*bytes, "retrieved", &info);
  ASSERT_TRUE(image.ok()) << image.status();
  const GrayImage expected = Phantom(other_patient_.seed);
  EXPECT_EQ(image->width, expected.width);
  EXPECT_EQ(image->height, expected.height);
  EXPECT_EQ(image->pixels, expected.pixels);
  EXPECT_EQ(info.sop_class_uid, UID_UltrasoundImageStorage);

  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(bytes->data(), bytes->size());
  stream.setEos();
  file.transferInit();
  ASSERT_TRUE(file.read(stream).good());
  file.transferEnd();
  OFString value;
  file.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, value);
  EXPECT_EQ(value.c_str(), other_patient_.instance.sop_instance_uid);
  file.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, value);
  EXPECT_EQ(value.c_str(), other_patient_.instance.study_instance_uid);
  file.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, value);
  EXPECT_EQ(value.c_str(), other_patient_.instance.sop_instance_uid);
  file.getMetaInfo()->findAndGetOFString(DCM_TransferSyntaxUID, value);
  EXPECT_FALSE(value.empty());

  // A second retrieve runs on the same association.
  bytes = client->RetrieveInstance(us_2024_.instance);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  image = DecodeDicomGray(*bytes, "retrieved");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->pixels, Phantom(us_2024_.seed).pixels);
}

TEST_F(DimseClientTest, RetrieveOfAnUnknownInstanceIsNotFound) {
  std::unique_ptr<PacsClient> client = Client();
  PacsInstance missing = us_2024_.instance;
  missing.sop_instance_uid = DeterministicDicomUid("no such instance");
  absl::StatusOr<std::string> bytes = client->RetrieveInstance(missing);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kNotFound)
      << bytes.status();
  EXPECT_TRUE(
      absl::StrContains(bytes.status().message(), missing.sop_instance_uid))
      << bytes.status();
}

TEST_F(DimseClientTest, StoredFileCanBeFoundAndRetrieved) {
  std::unique_ptr<PacsClient> client = Client();
  Seeded report = MakeUltrasound("PAT003", "ACC004", "20240501", "p3s1", 1, 5);
  ASSERT_TRUE(client->Store({report.bytes}).ok()) << server_->Log();
  PacsPatientQuery query;
  query.patient_id = "PAT003";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(SopUids(*found),
            std::vector<std::string>{report.instance.sop_instance_uid});
  absl::StatusOr<std::string> bytes = client->RetrieveInstance((*found)[0]);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(DecodeDicomGray(*bytes, "retrieved")->pixels,
            Phantom(report.seed).pixels);
}

TEST_F(DimseClientTest, StoreRefusesWhatIsNotDicom) {
  std::unique_ptr<PacsClient> client = Client();
  absl::Status status = client->Store({"not a DICOM file"});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
}

TEST_F(DimseClientTest, WrongCalledAeTitleIsPermissionDenied) {
  PacsConfig config = server_->Config();
  config.set_peer_ae_title("WRONGAE");
  std::unique_ptr<PacsClient> client = Client(config);
  absl::Status status = client->Echo();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "called AE title 'WRONGAE' not recognised"))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                absl::StrCat("127.0.0.1:", server_->port())))
      << status;
}

TEST_F(DimseClientTest, KilledPacsIsAnErrorNotAHang) {
  std::unique_ptr<PacsClient> client = Client();
  ASSERT_TRUE(client->Echo().ok());  // leaves an association open
  server_->Kill();
  const absl::Time start = absl::Now();
  PacsPatientQuery query;
  query.patient_id = "PAT001";
  absl::Status status = client->FindInstances(query).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(DimseClientTest, HungPacsTimesOut) {
  PacsConfig config = server_->Config();
  config.set_timeout_seconds(2);
  std::unique_ptr<PacsClient> client = Client(config);
  ASSERT_TRUE(client->Echo().ok());
  server_->Freeze();
  const absl::Time start = absl::Now();
  PacsPatientQuery query;
  query.patient_id = "PAT001";
  absl::Status status = client->FindInstances(query).status();
  const absl::Duration took = absl::Now() - start;
  server_->Thaw();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "within 2 s")) << status;
  EXPECT_LT(took, absl::Seconds(8));
}

TEST(DimseClientCallingAeTest, UnknownCallingAeTitleIsPermissionDenied) {
  if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
    GTEST_SKIP() << missing;
  }
  DcmqrscpServer::Options options;
  options.allowed_peers = {"ECHOFED"};
  absl::StatusOr<std::unique_ptr<DcmqrscpServer>> server =
      DcmqrscpServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  absl::StatusOr<std::unique_ptr<PacsClient>> known =
      NewDimsePacsClient((*server)->Config("ECHOFED"));
  ASSERT_TRUE(known.ok());
  EXPECT_TRUE((*known)->Echo().ok()) << (*server)->Log();
  absl::StatusOr<std::unique_ptr<PacsClient>> stranger =
      NewDimsePacsClient((*server)->Config("STRANGER"));
  ASSERT_TRUE(stranger.ok());
  absl::Status status = (*stranger)->Echo();
  // dcmqrscp gives "called AE title not recognised" for a calling AE title
  // it does not know; the message passes on what the PACS said.
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                "association rejected by PACS at 127.0.0.1:"))
      << status;
}

// dcmqrscp sends an instance on the first storage context it accepted for
// its SOP class and cannot transcode: a JPEG object offered on our
// uncompressed context fails as a sub-operation.
TEST(DimseClientSubOperationTest, FailedSubOperationIsDataLoss) {
  if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
    GTEST_SKIP() << missing;
  }
  DcmqrscpServer::Options options;
  options.extra_arguments = {"+xy"};  // accept JPEG baseline for storage
  absl::StatusOr<std::unique_ptr<DcmqrscpServer>> server =
      DcmqrscpServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  DicomWriteOptions write;
  write.encoding = DicomEncoding::kJpegBaseline;
  write.patient_id = "PAT005";
  write.accession_number = "ACC005";
  write.study_date = "20240101";
  absl::StatusOr<std::string> jpeg = EncodeDicomUltrasound(Phantom(5), write);
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  absl::Status seeded = (*server)->Seed({*jpeg});
  ASSERT_TRUE(seeded.ok()) << seeded;
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient((*server)->Config());
  ASSERT_TRUE(client.ok());
  PacsPatientQuery query;
  query.patient_id = "PAT005";
  absl::StatusOr<std::vector<PacsInstance>> found =
      (*client)->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 1u);
  absl::StatusOr<std::string> bytes = (*client)->RetrieveInstance((*found)[0]);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kDataLoss)
      << bytes.status();
  EXPECT_TRUE(
      absl::StrContains(bytes.status().message(), "1 failed sub-operation"))
      << bytes.status();
}

// A SOP class the archive does not store: no presentation context for it.
TEST_F(DimseClientTest, StoreOfAClassThePacsRefusesIsFailedPrecondition) {
  std::unique_ptr<PacsClient> client = Client();
  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(us_2024_.bytes.data(), us_2024_.bytes.size());
  stream.setEos();
  file.transferInit();
  ASSERT_TRUE(file.read(stream).good());
  file.transferEnd();
  file.getDataset()->putAndInsertString(DCM_SOPClassUID, "1.2.3.4.5.6.7");
  file.getMetaInfo()->clear();
  const std::string path = scratch_.Join("private.dcm");
  ASSERT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
  absl::Status status = client->Store({*ReadFileToString(path)});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

TEST(DimseClientNetworkTest, NothingListeningIsUnavailableAtOnce) {
  PacsConfig config;
  config.set_host("127.0.0.1");
  config.set_port(static_cast<uint32_t>(testing::PickFreePort()));
  config.set_peer_ae_title("PACS");
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::Status status = (*client)->Echo();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "connection refused"))
      << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

TEST(DimseClientNetworkTest, SilentPeerTimesOut) {
  // A socket that listens but never accepts: the kernel completes the TCP
  // handshake, and the association request is never answered.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), length), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length),
            0);
  PacsConfig config;
  config.set_host("127.0.0.1");
  config.set_port(ntohs(address.sin_port));
  config.set_peer_ae_title("PACS");
  config.set_timeout_seconds(1);
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::Status status = (*client)->Echo();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "no answer from")) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  ::close(fd);
}

// DICOM over TLS against storescp (dcmqrscp has no TLS): the hospital CA,
// the PACS's certificate for 127.0.0.1 and the agent's client certificate.
class DimseClientTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    const TlsMaterial server = pki_.Coordinator();
    absl::StatusOr<std::unique_ptr<StorescpServer>> started =
        StorescpServer::Start(
            {"TLSPACS", server.ca_cert, server.cert, server.key});
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = *std::move(started);
  }

  PacsConfig Config(const TlsMaterial& client) {
    PacsConfig config;
    config.set_host("127.0.0.1");
    config.set_port(static_cast<uint32_t>(server_->port()));
    config.set_peer_ae_title(server_->ae_title());
    config.set_timeout_seconds(5);
    TlsFiles* tls = config.mutable_tls();
    tls->set_ca_cert(dir_.Join("ca.pem"));
    tls->set_cert(dir_.Join("cert.pem"));
    tls->set_key(dir_.Join("key.pem"));
    EXPECT_TRUE(WriteFileAtomically(tls->ca_cert(), client.ca_cert, 0600).ok());
    EXPECT_TRUE(WriteFileAtomically(tls->cert(), client.cert, 0600).ok());
    EXPECT_TRUE(WriteFileAtomically(tls->key(), client.key, 0600).ok());
    return config;
  }

  testing::TestPki pki_;
  TempDir dir_;
  std::unique_ptr<StorescpServer> server_;
};

TEST_F(DimseClientTlsTest, EchoesAndStoresOverTls) {
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient(Config(pki_.Participant("site-a", Role::kSite)));
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE(absl::EndsWith((*client)->Describe(), "(TLS)"));
  absl::Status status = (*client)->Echo();
  ASSERT_TRUE(status.ok()) << status << "\n" << server_->Log();
  Seeded report = MakeUltrasound("PAT009", "ACC009", "20240601", "tls", 1, 9);
  status = (*client)->Store({report.bytes});
  ASSERT_TRUE(status.ok()) << status << "\n" << server_->Log();
  client->reset();  // releases the association; storescp has the file
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (server_->ReceivedFiles().empty() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(server_->ReceivedFiles().size(), 1u);
  absl::StatusOr<GrayImage> image = ReadDicomGray(server_->ReceivedFiles()[0]);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->pixels, Phantom(report.seed).pixels);
}

TEST_F(DimseClientTlsTest, UntrustedPacsCertificateFailsTheHandshake) {
  // The agent trusts another CA than the one that signed the PACS.
  absl::StatusOr<std::unique_ptr<PacsClient>> client = NewDimsePacsClient(
      Config(testing::TestPki::FromOtherCa("site-a", Role::kSite)));
  ASSERT_TRUE(client.ok()) << client.status();
  absl::Status status = (*client)->Echo();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(),
                                absl::StrCat("TLS handshake with 127.0.0.1:",
                                             server_->port(), " failed: ")))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "certificate")) << status;
}

TEST_F(DimseClientTlsTest, PlainDicomToATlsPortIsAnError) {
  PacsConfig config = Config(pki_.Participant("site-a", Role::kSite));
  config.clear_tls();
  config.set_timeout_seconds(2);
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient(config);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::Status status = (*client)->Echo();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(6));
}

TEST(DimseClientConfigTest, RejectsIncompleteConfigs) {
  PacsConfig config;
  config.set_host("127.0.0.1");
  config.set_port(104);
  config.set_peer_ae_title("PACS");
  EXPECT_TRUE(NewDimsePacsClient(config).ok());
  PacsConfig bad = config;
  bad.clear_host();
  EXPECT_EQ(NewDimsePacsClient(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = config;
  bad.set_port(70000);
  EXPECT_EQ(NewDimsePacsClient(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = config;
  bad.set_peer_ae_title("A_TITLE_FAR_TOO_LONG");
  EXPECT_EQ(NewDimsePacsClient(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = config;
  bad.set_retrieve("c-teleport");
  EXPECT_EQ(NewDimsePacsClient(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = config;
  bad.mutable_tls()->set_cert("client.pem");
  EXPECT_EQ(NewDimsePacsClient(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad = config;
  bad.mutable_tls()->set_ca_cert("/nonexistent/ca.pem");
  EXPECT_EQ(NewDimsePacsClient(bad).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace echofed
