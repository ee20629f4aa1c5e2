#include "tests/testing/orthanc_server.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_writer.h"

namespace echofed::testing {
namespace {

constexpr char kEchoScu[] = "/usr/bin/echoscu";

std::string SmallUltrasound() {
  GrayImage image{8, 4, std::vector<uint8_t>(32, 7)};
  DicomWriteOptions options;
  options.patient_id = "FIXTURE-1";
  return *EncodeDicomUltrasound(image, options);
}

// DCMTK's echoscu from `calling` to `called`; its exit code.
int Echo(const OrthancServer& orthanc, const std::string& calling,
         const std::string& called, const TempDir& folder) {
  absl::StatusOr<Subprocess> echo =
      Subprocess::Start({kEchoScu, "-aet", calling, "-aec", called, "-to", "10",
                         "127.0.0.1", absl::StrCat(orthanc.dicom_port())},
                        folder.Join("echoscu.log"));
  if (!echo.ok()) return -1;
  return echo->Wait(absl::Seconds(30)).value_or(-1);
}

TEST(OrthancServerTest, StartsStoresAndGoesDownWhenKilled) {
  if (std::string why = OrthancMissing(); !why.empty()) GTEST_SKIP() << why;
  OrthancOptions options;
  options.users = {{"site", "secret"}};
  auto orthanc = OrthancServer::Start(options);
  ASSERT_TRUE(orthanc.ok()) << orthanc.status();
  OrthancServer& server = **orthanc;
  EXPECT_NE(server.http_port(), 8042);
  EXPECT_NE(server.dicom_port(), 4242);
  EXPECT_NE(server.http_port(), server.dicom_port());

  absl::StatusOr<std::string> id = server.Upload(SmallUltrasound());
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_FALSE(id->empty());
  EXPECT_EQ(server.CountInstances().value_or(-1), 1);
  absl::StatusOr<std::string> studies =
      server.Get("/dicom-web/studies?PatientID=FIXTURE-1");
  ASSERT_TRUE(studies.ok()) << studies.status();
  EXPECT_NE(studies->find("FIXTURE-1"), std::string::npos) << *studies;

  server.Kill();
  EXPECT_FALSE(server.running());
  EXPECT_EQ(server.Get("/system").status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(OrthancServerTest, TwoServersGetDifferentPorts) {
  if (std::string why = OrthancMissing(); !why.empty()) GTEST_SKIP() << why;
  auto first = OrthancServer::Start();
  auto second = OrthancServer::Start();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_NE((*first)->http_port(), (*second)->http_port());
  EXPECT_NE((*first)->dicom_port(), (*second)->dicom_port());
}

TEST(OrthancServerTest, AcceptsOnlyKnownCallingAndOwnCalledAeTitle) {
  if (std::string why = OrthancMissing(false); !why.empty()) {
    GTEST_SKIP() << why;
  }
  if (!std::filesystem::exists(kEchoScu)) {
    GTEST_SKIP() << kEchoScu << " (Debian package dcmtk) is not installed";
  }
  OrthancOptions options;
  options.dicomweb = false;
  options.ae_title = "TEST_PACS";
  options.modalities = {{"KNOWN_AE"}};
  auto orthanc = OrthancServer::Start(options);
  ASSERT_TRUE(orthanc.ok()) << orthanc.status();
  TempDir folder;
  EXPECT_EQ(Echo(**orthanc, "KNOWN_AE", "TEST_PACS", folder), 0)
      << (*orthanc)->ReadLog();
  EXPECT_NE(Echo(**orthanc, "STRANGER", "TEST_PACS", folder), 0);
  EXPECT_NE(Echo(**orthanc, "KNOWN_AE", "OTHER_PACS", folder), 0);
}

}  // namespace
}  // namespace echofed::testing
