// The DIMSE PacsClient against Orthanc (tests/testing/orthanc_server.h), a
// PACS written by others: it picks the storage context that matches how it
// holds an instance, so compressed objects come back as they were stored.
// Skipped without Debian's orthanc package.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/pacs/dimse_client.h"
#include "tests/testing/orthanc_server.h"

namespace echofed {
namespace {

using ::echofed::testing::OrthancMissing;
using ::echofed::testing::OrthancOptions;
using ::echofed::testing::OrthancServer;

GrayImage Gradient(int seed) {
  GrayImage image;
  image.width = 40;
  image.height = 32;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < image.width; ++x) {
      image.pixels.push_back(static_cast<uint8_t>(x * 4 + y * 2 + seed));
    }
  }
  return image;
}

DicomWriteOptions Patient(const std::string& id, const std::string& accession,
                          int instance_number, DicomEncoding encoding) {
  DicomWriteOptions options;
  options.encoding = encoding;
  options.patient_id = id;
  options.accession_number = accession;
  options.study_date = "20240212";
  options.instance_number = instance_number;
  options.study_instance_uid = DeterministicDicomUid("orthanc/" + accession);
  options.series_instance_uid =
      DeterministicDicomUid("orthanc/series/" + accession);
  options.sop_instance_uid = DeterministicDicomUid(
      absl::StrCat("orthanc/sop/", accession, "/", instance_number));
  return options;
}

class DimseOrthancTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string missing = OrthancMissing(/*dicomweb=*/false);
        !missing.empty()) {
      GTEST_SKIP() << missing;
    }
    OrthancOptions options;
    options.dicomweb = false;
    absl::StatusOr<std::unique_ptr<OrthancServer>> server =
        OrthancServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    // PAT101: one uncompressed and one JPEG baseline image in one series.
    for (const auto& [number, encoding] :
         {std::pair{1, DicomEncoding::kExplicitLittleEndian},
          std::pair{2, DicomEncoding::kJpegBaseline}}) {
      absl::StatusOr<std::string> bytes = EncodeDicomUltrasound(
          Gradient(number), Patient("PAT101", "ACC101", number, encoding));
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      ASSERT_TRUE(server_->Upload(*bytes).ok());
    }
  }

  PacsConfig Config(const std::string& own_ae_title = "ECHOFED") const {
    PacsConfig config;
    config.set_host("127.0.0.1");
    config.set_port(static_cast<uint32_t>(server_->dicom_port()));
    config.set_peer_ae_title(server_->ae_title());
    config.set_own_ae_title(own_ae_title);
    config.set_timeout_seconds(10);
    return config;
  }

  std::unique_ptr<PacsClient> Client() {
    absl::StatusOr<std::unique_ptr<PacsClient>> client =
        NewDimsePacsClient(Config());
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  std::unique_ptr<OrthancServer> server_;
};

TEST_F(DimseOrthancTest, FindsAndRetrievesAsStored) {
  std::unique_ptr<PacsClient> client = Client();
  ASSERT_TRUE(client->Echo().ok());
  PacsPatientQuery query;
  query.accession_number = "ACC101";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 2u);
  EXPECT_EQ((*found)[0].patient_id, "PAT101");
  EXPECT_EQ((*found)[0].instance_number, 1);
  EXPECT_EQ((*found)[1].instance_number, 2);
  EXPECT_EQ((*found)[0].modality, "US");

  DicomImageInfo info;
  absl::StatusOr<std::string> bytes = client->RetrieveInstance((*found)[0]);
  ASSERT_TRUE(bytes.ok()) << bytes.status() << "\n" << server_->ReadLog();
  absl::StatusOr<GrayImage> image = DecodeDicomGray(*bytes, "first", &info);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->pixels, Gradient(1).pixels);

  bytes = client->RetrieveInstance((*found)[1]);
  ASSERT_TRUE(bytes.ok()) << bytes.status() << "\n" << server_->ReadLog();
  image = DecodeDicomGray(*bytes, "second", &info);
  ASSERT_TRUE(image.ok()) << image.status();
  // Sent as Orthanc holds it, not transcoded.
  EXPECT_EQ(info.transfer_syntax_uid, "1.2.840.10008.1.2.4.50");
  EXPECT_EQ(image->width, 40);
}

TEST_F(DimseOrthancTest, StoredFileIsFoundByPatientId) {
  std::unique_ptr<PacsClient> client = Client();
  absl::StatusOr<std::string> bytes = EncodeDicomUltrasound(
      Gradient(7),
      Patient("PAT102", "ACC102", 1, DicomEncoding::kExplicitLittleEndian));
  ASSERT_TRUE(bytes.ok());
  absl::Status stored = client->Store({*bytes});
  ASSERT_TRUE(stored.ok()) << stored << "\n" << server_->ReadLog();
  PacsPatientQuery query;
  query.patient_id = "PAT102";
  absl::StatusOr<std::vector<PacsInstance>> found =
      client->FindInstances(query);
  ASSERT_TRUE(found.ok()) << found.status();
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].accession_number, "ACC102");
}

TEST_F(DimseOrthancTest, UnknownCallingAeTitleIsPermissionDenied) {
  absl::StatusOr<std::unique_ptr<PacsClient>> client =
      NewDimsePacsClient(Config("STRANGER"));
  ASSERT_TRUE(client.ok());
  absl::Status status = (*client)->Echo();
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "association rejected"))
      << status;
}

TEST_F(DimseOrthancTest, KilledPacsIsUnavailable) {
  std::unique_ptr<PacsClient> client = Client();
  ASSERT_TRUE(client->Echo().ok());
  server_->Kill();
  const absl::Time start = absl::Now();
  PacsPatientQuery query;
  query.patient_id = "PAT101";
  absl::Status status = client->FindInstances(query).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace echofed
