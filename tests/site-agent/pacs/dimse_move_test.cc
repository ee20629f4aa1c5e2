// Retrieve by C-MOVE (retrieve: "c-move"): the client's own storage SCP on
// move_port receives what dcmqrscp and Orthanc send to its AE title.
// Skipped without Debian's dcmtk (and, for the Orthanc cases, orthanc)
// packages.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/pacs/dimse_client.h"
#include "tests/testing/dcmqrscp_server.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/orthanc_server.h"

namespace echofed {
namespace {

using ::echofed::testing::DcmqrscpServer;
using ::echofed::testing::DcmtkToolsMissing;
using ::echofed::testing::OrthancMissing;
using ::echofed::testing::OrthancOptions;
using ::echofed::testing::OrthancServer;
using ::echofed::testing::PickFreePort;
using ::echofed::testing::TempDir;

GrayImage Phantom(int seed) {
  GrayImage image;
  image.width = 36;
  image.height = 20;
  for (int i = 0; i < image.width * image.height; ++i) {
    image.pixels.push_back(static_cast<uint8_t>((i * 5 + seed * 29) % 256));
  }
  return image;
}

struct Seeded {
  std::string bytes;
  PacsInstance instance;
  int seed = 0;
};

Seeded MakeUltrasound(const std::string& patient_id, int number,
                      DicomEncoding encoding) {
  DicomWriteOptions options;
  options.encoding = encoding;
  options.patient_id = patient_id;
  options.accession_number = "ACC-" + patient_id;
  options.study_date = "20240115";
  options.instance_number = number;
  options.study_instance_uid = DeterministicDicomUid("move/" + patient_id);
  options.series_instance_uid =
      DeterministicDicomUid("move/series/" + patient_id);
  options.sop_instance_uid =
      DeterministicDicomUid(absl::StrCat("move/sop/", patient_id, "/", number));
  Seeded seeded;
  seeded.seed = number;
  seeded.bytes = *EncodeDicomUltrasound(Phantom(number), options);
  PacsInstance& instance = seeded.instance;
  instance.patient_id = patient_id;
  instance.study_instance_uid = options.study_instance_uid;
  instance.series_instance_uid = options.series_instance_uid;
  instance.sop_instance_uid = options.sop_instance_uid;
  instance.sop_class_uid = UID_UltrasoundImageStorage;
  instance.modality = "US";
  instance.instance_number = number;
  return seeded;
}

// The retrieved file holds the seeded instance: UIDs in data set and meta
// header, and the pixels.
void ExpectSameInstance(const std::string& bytes, const Seeded& seeded) {
  DcmFileFormat file;
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), bytes.size());
  stream.setEos();
  file.transferInit();
  ASSERT_TRUE(file.read(stream).good());
  file.transferEnd();
  OFString value;
  file.getDataset()->findAndGetOFString(DCM_SOPInstanceUID, value);
  EXPECT_EQ(value.c_str(), seeded.instance.sop_instance_uid);
  file.getDataset()->findAndGetOFString(DCM_StudyInstanceUID, value);
  EXPECT_EQ(value.c_str(), seeded.instance.study_instance_uid);
  file.getDataset()->findAndGetOFString(DCM_SeriesInstanceUID, value);
  EXPECT_EQ(value.c_str(), seeded.instance.series_instance_uid);
  file.getMetaInfo()->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, value);
  EXPECT_EQ(value.c_str(), seeded.instance.sop_instance_uid);
  absl::StatusOr<GrayImage> image = DecodeDicomGray(bytes, "retrieved");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, Phantom(seeded.seed).width);
  if (DecodeDicomGray(seeded.bytes, "seeded").ok()) {
    EXPECT_EQ(image->pixels, DecodeDicomGray(seeded.bytes, "seeded")->pixels);
  }
}

std::unique_ptr<PacsClient> MoveClient(PacsConfig config, int move_port) {
  config.set_retrieve("c-move");
  config.set_move_port(static_cast<uint32_t>(move_port));
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient(config);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

class DimseMoveDcmqrscpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    move_port_ = PickFreePort();
    DcmqrscpServer::Options options;
    options.move_destinations = {{"ECHOFED", move_port_}};
    absl::StatusOr<std::unique_ptr<DcmqrscpServer>> server =
        DcmqrscpServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    first_ = MakeUltrasound("PAT201", 1, DicomEncoding::kExplicitLittleEndian);
    second_ = MakeUltrasound("PAT201", 2, DicomEncoding::kExplicitLittleEndian);
    ASSERT_TRUE(server_->Seed({first_.bytes, second_.bytes}).ok());
  }

  // storescu as another program on the network: its association to our
  // SCP must be rejected. It runs while the client serves C-MOVEs (the SCP
  // answers only then), and its log says why it was turned away.
  std::string Intrude(PacsClient& client, const std::string& calling_ae,
                      const std::string& called_ae) {
    const std::string file = scratch_.Join("intruder.dcm");
    EXPECT_TRUE(WriteFileAtomically(file, first_.bytes, 0600).ok());
    const std::string log = scratch_.Join(calling_ae + ".log");
    absl::StatusOr<Subprocess> intruder = Subprocess::Start(
        {"/usr/bin/storescu", "-aet", calling_ae, "-aec", called_ae,
         "127.0.0.1", std::to_string(move_port_), file},
        log);
    EXPECT_TRUE(intruder.ok()) << intruder.status();
    if (!intruder.ok()) return "";
    std::optional<int> exit_code;
    for (int i = 0; i < 50 && !exit_code.has_value(); ++i) {
      absl::StatusOr<std::string> bytes =
          client.RetrieveInstance(second_.instance);
      EXPECT_TRUE(bytes.ok()) << bytes.status();
      exit_code = intruder->Wait(absl::Milliseconds(100));
    }
    EXPECT_TRUE(exit_code.has_value());
    EXPECT_NE(exit_code.value_or(0), 0);
    return *ReadFileToString(log);
  }

  int move_port_ = 0;
  TempDir scratch_;
  std::unique_ptr<DcmqrscpServer> server_;
  Seeded first_, second_;
};

TEST_F(DimseMoveDcmqrscpTest, RetrievesTheSeededInstances) {
  std::unique_ptr<PacsClient> client =
      MoveClient(server_->Config(), move_port_);
  PacsPatientQuery query;
  query.patient_id = "PAT201";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 2u);
  for (const Seeded* seeded : {&first_, &second_, &first_}) {
    absl::StatusOr<std::string> bytes =
        client->RetrieveInstance(seeded->instance);
    ASSERT_TRUE(bytes.ok()) << bytes.status() << "\n" << server_->Log();
    ExpectSameInstance(*bytes, *seeded);
  }
}

TEST_F(DimseMoveDcmqrscpTest, UnknownInstanceIsNotFound) {
  std::unique_ptr<PacsClient> client =
      MoveClient(server_->Config(), move_port_);
  PacsInstance missing = first_.instance;
  missing.sop_instance_uid = DeterministicDicomUid("no such instance");
  absl::Status status = client->RetrieveInstance(missing).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
}

TEST_F(DimseMoveDcmqrscpTest, UnknownMoveDestinationIsFailedPrecondition) {
  // dcmqrscp accepts any calling AE title here, but maps only ECHOFED to a
  // host and port.
  std::unique_ptr<PacsClient> client =
      MoveClient(server_->Config("NOTREGISTERED"), move_port_);
  absl::Status status = client->RetrieveInstance(first_.instance).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(
      status.message(),
      "the PACS does not know AE title NOTREGISTERED as a move destination: "
      "register it with host and port"))
      << status;
}

TEST_F(DimseMoveDcmqrscpTest, RejectsAssociationsFromOtherAeTitles) {
  std::unique_ptr<PacsClient> client =
      MoveClient(server_->Config(), move_port_);
  ASSERT_TRUE(client->RetrieveInstance(first_.instance).ok());
  const std::string wrong_calling = Intrude(*client, "INTRUDER", "ECHOFED");
  EXPECT_TRUE(absl::StrContains(wrong_calling, "Calling AE Title Not Recog"))
      << wrong_calling;
  const std::string wrong_called = Intrude(*client, server_->ae_title(), "X");
  EXPECT_TRUE(absl::StrContains(wrong_called, "Called AE Title Not Recog"))
      << wrong_called;
  // Still serving the PACS.
  absl::StatusOr<std::string> bytes = client->RetrieveInstance(first_.instance);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ExpectSameInstance(*bytes, first_);
}

TEST_F(DimseMoveDcmqrscpTest, TakenMovePortIsFailedPrecondition) {
  const int blocker = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(blocker, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  address.sin_port = htons(static_cast<uint16_t>(move_port_));
  ASSERT_EQ(
      ::bind(blocker, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
      0);
  ASSERT_EQ(::listen(blocker, 1), 0);
  std::unique_ptr<PacsClient> client =
      MoveClient(server_->Config(), move_port_);
  absl::Status status = client->RetrieveInstance(first_.instance).status();
  ::close(blocker);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "pacs.move_port")) << status;
}

TEST(DimseMoveConfigTest, NeedsAMovePortAndNoTls) {
  PacsConfig config;
  config.set_host("127.0.0.1");
  config.set_port(104);
  config.set_peer_ae_title("PACS");
  config.set_retrieve("c-move");
  EXPECT_EQ(NewDimsePacsClient(config).status().code(),
            absl::StatusCode::kInvalidArgument);
  config.set_move_port(11112);
  config.mutable_tls()->set_ca_cert("/nonexistent/ca.pem");
  absl::Status status = NewDimsePacsClient(config).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "TLS")) << status;
}

class DimseMoveOrthancTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = OrthancMissing(/*dicomweb=*/false);
        !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    move_port_ = PickFreePort();
    OrthancOptions options;
    options.dicomweb = false;
    // ECHOFED is known with our port; ELSEWHERE may call but is no move
    // destination Orthanc can reach.
    options.modalities = {{"ECHOFED", "127.0.0.1", move_port_}};
    options.accept_unknown_ae_titles = true;
    absl::StatusOr<std::unique_ptr<OrthancServer>> server =
        OrthancServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    plain_ = MakeUltrasound("PAT301", 1, DicomEncoding::kExplicitLittleEndian);
    jpeg_ = MakeUltrasound("PAT301", 2, DicomEncoding::kJpegBaseline);
    ASSERT_TRUE(server_->Upload(plain_.bytes).ok());
    ASSERT_TRUE(server_->Upload(jpeg_.bytes).ok());
  }

  PacsConfig Config(const std::string& own_ae_title) const {
    PacsConfig config;
    config.set_host("127.0.0.1");
    config.set_port(static_cast<uint32_t>(server_->dicom_port()));
    config.set_peer_ae_title(server_->ae_title());
    config.set_own_ae_title(own_ae_title);
    config.set_timeout_seconds(10);
    return config;
  }

  int move_port_ = 0;
  std::unique_ptr<OrthancServer> server_;
  Seeded plain_, jpeg_;
};

TEST_F(DimseMoveOrthancTest, RetrievesAsStored) {
  std::unique_ptr<PacsClient> client =
      MoveClient(Config("ECHOFED"), move_port_);
  PacsPatientQuery query;
  query.patient_id = "PAT301";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 2u);
  const absl::Time start = absl::Now();
  for (const Seeded* seeded : {&plain_, &jpeg_, &plain_, &jpeg_}) {
    absl::StatusOr<std::string> bytes =
        client->RetrieveInstance(seeded->instance);
    ASSERT_TRUE(bytes.ok()) << bytes.status() << "\n" << server_->ReadLog();
    ExpectSameInstance(*bytes, *seeded);
  }
  // Each move is a round trip or two, not a wait for a timeout.
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  DicomImageInfo info;
  absl::StatusOr<std::string> bytes = client->RetrieveInstance(jpeg_.instance);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_TRUE(DecodeDicomGray(*bytes, "jpeg", &info).ok());
  EXPECT_EQ(info.transfer_syntax_uid, "1.2.840.10008.1.2.4.50");
}

// Orthanc 1.10 answers a destination it does not know with a bare 0xC000
// (no 0xA801, no error comment): the message points at the registration.
TEST_F(DimseMoveOrthancTest, UnknownMoveDestinationNamesTheRegistration) {
  std::unique_ptr<PacsClient> client =
      MoveClient(Config("ELSEWHERE"), move_port_);
  absl::Status status = client->RetrieveInstance(plain_.instance).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_TRUE(
      absl::StrContains(status.message(),
                        "check that the PACS knows AE title ELSEWHERE as a "
                        "move destination with this host and port"))
      << status;
}

}  // namespace
}  // namespace echofed
