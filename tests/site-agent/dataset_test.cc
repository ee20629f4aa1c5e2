#include "site-agent/dataset.h"

#include <filesystem>

#include "common/files.h"
#include "gtest/gtest.h"
#include "site-agent/image_io.h"
#include "site-agent/synthetic_cohort.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

GrayImage Gradient(int width, int height) {
  GrayImage image;
  image.width = width;
  image.height = height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.pixels.push_back(static_cast<uint8_t>((x * 7 + y * 3) % 256));
    }
  }
  return image;
}

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(MakeDirectories(dir_.Join("site/images")).ok());
    ASSERT_TRUE(WritePng(dir_.Join("site/images/a.png"), Gradient(40, 30)).ok());
    ASSERT_TRUE(WriteJpeg(dir_.Join("site/images/b.jpg"), Gradient(50, 50), 90).ok());
  }
  void WriteManifest(const std::string& content) {
    ASSERT_TRUE(WriteFileAtomically(dir_.Join("site/manifest.csv"), content).ok());
  }
  TempDir dir_;
};

TEST_F(DatasetTest, ReadsManifestAndImages) {
  WriteManifest("patient_id,image,label\nP1,images/a.png,NB\nP2,images/b.jpg,GN\n");
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_TRUE(manifest->errors.empty());
  ASSERT_EQ(manifest->records.size(), 2u);
  ImageSet set = LoadImageSet(manifest->records, {"NB", "GNB", "GN"}, 32);
  EXPECT_TRUE(set.errors.empty());
  ASSERT_EQ(set.size(), 2);
  EXPECT_EQ(set.images.sizes(), (std::vector<int64_t>{2, 1, 32, 32}));
  EXPECT_EQ(set.labels[1].item<int64_t>(), 2);
  // Each image is standardised.
  EXPECT_NEAR(set.images[0].mean().item<double>(), 0.0, 1e-4);
}

TEST_F(DatasetTest, EachBadLineIsAnErrorNotACrash) {
  std::filesystem::create_symlink("/etc", dir_.Join("site/escape"));
  WriteManifest(
      "patient_id,image,label\n"
      "P1,images/a.png,NB\n"
      "P2,../outside.png,NB\n"          // leaves the folder
      "P3,/etc/passwd,NB\n"             // absolute
      "P4,escape/passwd,NB\n"           // through a link
      "P5,images/a.png,GN\n"            // listed twice
      "P6\n"                            // too few columns
      "P7,images/b.jpg,\n"              // no label
      "P8,images/missing.png,GN\n");    // fine here, unreadable later
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->records.size(), 2u);
  EXPECT_EQ(manifest->errors.size(), 6u);
  ImageSet set = LoadImageSet(manifest->records, {"NB", "GN"}, 32);
  EXPECT_EQ(set.size(), 1);
  ASSERT_EQ(set.errors.size(), 1u);
  EXPECT_NE(set.errors[0].message.find("missing.png"), std::string::npos);
}

TEST_F(DatasetTest, PatientWithConflictingLabelsIsExcluded) {
  WriteManifest("patient_id,image,label\nP1,images/a.png,NB\nP1,images/b.jpg,GN\n");
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ASSERT_TRUE(manifest.ok());
  EXPECT_TRUE(manifest->records.empty());
  EXPECT_EQ(manifest->errors.size(), 2u);
}

TEST_F(DatasetTest, MissingHeaderColumnsOrFileAreClearErrors) {
  WriteManifest("id,file,class\nP1,images/a.png,NB\n");
  EXPECT_EQ(LoadManifest(dir_.Join("site")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadManifest(dir_.Join("nowhere")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DatasetTest, LabelOutsideThePlanIsReported) {
  WriteManifest("patient_id,image,label\nP1,images/a.png,lymphoma\n");
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ImageSet set = LoadImageSet(manifest->records, {"NB", "GNB", "GN"}, 32);
  EXPECT_EQ(set.size(), 0);
  ASSERT_EQ(set.errors.size(), 1u);
  EXPECT_NE(set.errors[0].message.find("lymphoma"), std::string::npos);
}

TEST(ImageIoTest, CorruptInputsAreErrors) {
  TempDir dir;
  ASSERT_TRUE(WritePng(dir.Join("ok.png"), Gradient(20, 20)).ok());
  std::string png = *ReadFileToString(dir.Join("ok.png"));
  ASSERT_TRUE(WriteJpeg(dir.Join("ok.jpg"), Gradient(64, 64), 90).ok());
  std::string jpeg = *ReadFileToString(dir.Join("ok.jpg"));
  EXPECT_TRUE(DecodeGrayImage(png, "ok").ok());
  EXPECT_TRUE(DecodeGrayImage(jpeg, "ok").ok());
  for (const auto& [bytes, what] : std::vector<std::pair<std::string, std::string>>{
           {png.substr(0, png.size() / 2), "truncated png"},
           {jpeg.substr(0, jpeg.size() / 2), "truncated jpeg"},
           {"hello, I am a text file\n", "text"},
           {"", "empty"},
           {std::string("\x89PNG\r\n\x1a\n") + std::string(30, '\0'), "png header only"},
       }) {
    absl::StatusOr<GrayImage> image = DecodeGrayImage(bytes, what);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << what;
  }
}

std::vector<ImageRecord> Patients(int count, const std::string& label) {
  std::vector<ImageRecord> records;
  for (int i = 0; i < count; ++i) {
    std::string id = label + std::to_string(i);
    records.push_back({id, id + "_0.png", label});
    records.push_back({id, id + "_1.png", label});
  }
  return records;
}

TEST(SplitTest, PatientLevelStratifiedAndStable) {
  std::vector<ImageRecord> records = Patients(70, "NB");
  std::vector<ImageRecord> gn = Patients(10, "GN");
  records.insert(records.end(), gn.begin(), gn.end());
  std::set<std::string> training = TrainingPatients(records, 0.7, 42);
  int nb = 0, gn_count = 0;
  for (const std::string& id : training) (id[0] == 'N' ? nb : gn_count)++;
  EXPECT_EQ(nb, 49);
  EXPECT_EQ(gn_count, 7);
  EXPECT_EQ(training, TrainingPatients(records, 0.7, 42));
  EXPECT_NE(training, TrainingPatients(records, 0.7, 43));
  // Adding patients moves few of the others.
  std::vector<ImageRecord> more = records;
  std::vector<ImageRecord> extra = Patients(75, "NB");
  more.insert(more.end(), extra.begin() + 140, extra.end());
  std::set<std::string> grown = TrainingPatients(more, 0.7, 42);
  int moved = 0;
  for (const ImageRecord& record : records) {
    moved += training.count(record.patient_id) != grown.count(record.patient_id);
  }
  EXPECT_LE(moved, 2 * 5);  // images, i.e. at most a handful of patients
}

TEST(SyntheticCohortTest, WritesReadableSitesWithEverySubtype) {
  TempDir dir;
  SyntheticCohortOptions options;
  options.out_dir = dir.path();
  options.sites = 2;
  options.patients_per_site = 12;
  options.image_size = 48;
  ASSERT_TRUE(WriteSyntheticCohort(options).ok());
  for (const std::string& site : SyntheticSiteNames(2)) {
    absl::StatusOr<SiteManifest> manifest = LoadManifest(dir.Join(site));
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_TRUE(manifest->errors.empty());
    ImageSet set = LoadImageSet(manifest->records, {"NB", "GNB", "GN"}, 32);
    EXPECT_TRUE(set.errors.empty());
    EXPECT_EQ(set.patients, 12);
    for (int64_t label = 0; label < 3; ++label) {
      EXPECT_GT((set.labels == label).sum().item<int64_t>(), 0) << site;
    }
  }
}

}  // namespace
}  // namespace echofed
