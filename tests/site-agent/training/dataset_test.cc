#include "site-agent/training/dataset.h"

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/plan_util.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"
#include "site-agent/data/synthetic_cohort.h"
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
    ASSERT_TRUE(
        WritePng(dir_.Join("site/images/a.png"), Gradient(40, 30)).ok());
    ASSERT_TRUE(
        WriteJpeg(dir_.Join("site/images/b.jpg"), Gradient(50, 50), 90).ok());
  }
  void WriteManifest(const std::string& content) {
    ASSERT_TRUE(
        WriteFileAtomically(dir_.Join("site/manifest.csv"), content).ok());
  }
  TempDir dir_;
};

TEST_F(DatasetTest, ReadsManifestAndImages) {
  WriteManifest(
      "patient_id,image,label\nP1,images/a.png,NB\nP2,images/b.jpg,GN\n");
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
      "P2,../outside.png,NB\n"        // leaves the folder
      "P3,/etc/passwd,NB\n"           // absolute
      "P4,escape/passwd,NB\n"         // through a link
      "P5,images/a.png,GN\n"          // listed twice
      "P6\n"                          // too few columns
      "P7,images/b.jpg,\n"            // no label
      "P8,images/missing.png,GN\n");  // fine here, unreadable later
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->records.size(), 2u);
  EXPECT_EQ(manifest->errors.size(), 6u);
  ImageSet set = LoadImageSet(manifest->records, {"NB", "GN"}, 32);
  EXPECT_EQ(set.size(), 1);
  ASSERT_EQ(set.errors.size(), 1u);
  EXPECT_NE(set.errors[0].message.find("missing.png"), std::string::npos);
}

TEST_F(DatasetTest, RoiBoxOrMaskCropsTheImage) {
  // A mask marking columns 10..19 and rows 5..14 of the 40x30 image.
  GrayImage mask;
  mask.width = 40;
  mask.height = 30;
  mask.pixels.assign(40 * 30, 0);
  for (int y = 5; y < 15; ++y) {
    for (int x = 10; x < 20; ++x) mask.pixels[y * 40 + x] = 255;
  }
  ASSERT_TRUE(WritePng(dir_.Join("site/images/a_mask.png"), mask).ok());
  GrayImage empty = mask;
  std::fill(empty.pixels.begin(), empty.pixels.end(), 0);
  ASSERT_TRUE(WritePng(dir_.Join("site/images/empty_mask.png"), empty).ok());
  // The same picture under a second name (an image may be listed once).
  ASSERT_TRUE(WritePng(dir_.Join("site/images/a2.png"), Gradient(40, 30)).ok());
  WriteManifest(
      "patient_id,image,label,roi_x,roi_y,roi_w,roi_h,roi_mask\n"
      "P1,images/a.png,NB,10,5,10,10,\n"
      "P2,images/a2.png,NB,,,,,images/a_mask.png\n"
      "P3,images/b.jpg,NB,,,,,images/empty_mask.png\n"
      "P4,images/b.jpg,NB,1,1,5,5,images/a_mask.png\n"  // both: error
      "P5,images/b.jpg,NB,,,,,../../mask.png\n");       // escapes
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(manifest->errors.size(), 2u);
  ASSERT_EQ(manifest->records.size(), 3u);
  Preprocessing preprocessing;
  preprocessing.image_size = 12;
  preprocessing.roi_margin = 0;
  preprocessing.normalization = Plan::FIXED_RANGE;
  ImageSet set = LoadImageSet(manifest->records, {"NB"}, preprocessing);
  ASSERT_EQ(set.size(), 2);  // the empty mask is an error
  ASSERT_EQ(set.errors.size(), 1u);
  EXPECT_NE(set.errors[0].message.find("empty"), std::string::npos);
  // Box and mask select the same region: identical crops.
  EXPECT_TRUE(torch::allclose(set.images[0], set.images[1]));
  // The crop holds only the gradient's values there: (x*7+y*3)%256 for
  // x in 10..19, y in 5..14 lies within 85..190, so within -0.34..0.5.
  EXPECT_GT(set.images.min().item<double>(), -0.4);
  EXPECT_LT(set.images.max().item<double>(), 0.55);
}

// A cine loop of `values.size()` constant 8-bit frames, written with DCMTK.
void WriteCineLoop(const std::string& path, int width, int height,
                   const std::vector<uint8_t>& values) {
  DcmFileFormat file;
  DcmDataset* ds = file.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, UID_UltrasoundMultiframeImageStorage);
  ds->putAndInsertString(DCM_SOPInstanceUID, "2.25.4711");
  ds->putAndInsertString(DCM_Modality, "US");
  ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(width));
  ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(height));
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds->putAndInsertUint16(DCM_BitsAllocated, 8);
  ds->putAndInsertUint16(DCM_BitsStored, 8);
  ds->putAndInsertUint16(DCM_HighBit, 7);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  ds->putAndInsertString(DCM_NumberOfFrames,
                         std::to_string(values.size()).c_str());
  std::vector<uint8_t> pixels;
  for (uint8_t value : values) {
    pixels.insert(pixels.end(), static_cast<size_t>(width) * height, value);
  }
  ASSERT_TRUE(
      ds->putAndInsertUint8Array(DCM_PixelData, pixels.data(), pixels.size())
          .good());
  ASSERT_TRUE(file.saveFile(path.c_str(), EXS_LittleEndianExplicit).good());
}

TEST_F(DatasetTest, CineLoopFramesBecomeImagesOfTheirPatient) {
  WriteCineLoop(dir_.Join("site/images/loop.dcm"), 20, 16,
                {10, 50, 90, 130, 170});
  WriteManifest(
      "patient_id,image,label\nP1,images/loop.dcm,NB\nP2,images/a.png,GN\n");
  absl::StatusOr<SiteManifest> manifest = LoadManifest(dir_.Join("site"));
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  Plan plan;
  plan.set_image_size(16);
  plan.set_normalization(Plan::FIXED_RANGE);
  plan.set_frame_selection(Plan::EVERY_KTH_FRAME);
  plan.set_frame_step(2);
  ImageSet set = LoadImageSet(manifest->records, {"NB", "GN"},
                              PreprocessingFromPlan(plan));
  EXPECT_TRUE(set.errors.empty());
  ASSERT_EQ(set.size(), 4);
  EXPECT_EQ(set.patients, 2);
  EXPECT_EQ(set.patient_ids,
            (std::vector<std::string>{"P1", "P1", "P1", "P2"}));
  EXPECT_EQ(set.frames, (std::vector<int>{0, 2, 4, 0}));
  EXPECT_EQ(set.labels[2].item<int64_t>(), 0);
  // Frames 0, 2 and 4, each its own constant image.
  for (const auto& [index, value] :
       {std::pair{0, 10}, std::pair{1, 90}, std::pair{2, 170}}) {
    EXPECT_NEAR(set.images[index].mean().item<double>(), value / 127.5 - 1.0,
                1e-5);
  }
  // The split assigns patients (TrainingPatients on the manifest's
  // records), and every frame carries its record's patient.
  plan.set_frame_selection(Plan::MIDDLE_FRAME);
  set = LoadImageSet(manifest->records, {"NB", "GN"},
                     PreprocessingFromPlan(plan));
  EXPECT_EQ(set.frames, (std::vector<int>{2, 0}));
  plan.set_frame_selection(Plan::ALL_FRAMES);
  set = LoadImageSet(manifest->records, {"NB", "GN"},
                     PreprocessingFromPlan(plan));
  EXPECT_EQ(set.frames, (std::vector<int>{0, 1, 2, 3, 4, 0}));
}

TEST(PlanFramesTest, StepDefaultsToOneAndIsBounded) {
  Plan plan;
  for (const char* name : {"NB", "GN"}) plan.add_class_names(name);
  plan.add_sites()->set_site("site-a");
  plan.mutable_sites(0)->set_role(Plan::TRAIN);
  ApplyPlanDefaults(&plan);
  EXPECT_EQ(plan.frame_step(), 1u);
  EXPECT_EQ(plan.frame_selection(), Plan::MIDDLE_FRAME);
  EXPECT_TRUE(ValidatePlan(plan).ok()) << ValidatePlan(plan);
  plan.set_frame_selection(Plan::EVERY_KTH_FRAME);
  plan.set_frame_step(10001);
  EXPECT_TRUE(absl::StrContains(ValidatePlan(plan).message(), "frame_step"))
      << ValidatePlan(plan);
  plan.set_frame_step(0);
  EXPECT_FALSE(ValidatePlan(plan).ok());
}

TEST_F(DatasetTest, PatientWithConflictingLabelsIsExcluded) {
  WriteManifest(
      "patient_id,image,label\nP1,images/a.png,NB\nP1,images/b.jpg,GN\n");
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
  for (const auto& [bytes, what] :
       std::vector<std::pair<std::string, std::string>>{
           {png.substr(0, png.size() / 2), "truncated png"},
           {jpeg.substr(0, jpeg.size() / 2), "truncated jpeg"},
           {"hello, I am a text file\n", "text"},
           {"", "empty"},
           {std::string("\x89PNG\r\n\x1a\n") + std::string(30, '\0'),
            "png header only"},
       }) {
    absl::StatusOr<GrayImage> image = DecodeGrayImage(bytes, what);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
        << what;
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
    moved +=
        training.count(record.patient_id) != grown.count(record.patient_id);
  }
  EXPECT_LE(moved, 2 * 5);  // images, i.e. at most a handful of patients
}

// How each virtual hospital archives its images (synthetic_cohort.h).
struct ExpectedArchive {
  const char* kind;  // "DICOM", "JPEG" or "PNG", by content
  const char* transfer_syntax;
  const char* photometric;
};

const ExpectedArchive kExpectedArchives[] = {
    {"DICOM", "1.2.840.10008.1.2.1", "MONOCHROME2"},      // explicit VR LE
    {"JPEG", "", ""},                                     // .jpg files
    {"DICOM", "1.2.840.10008.1.2.4.50", "YBR_FULL_422"},  // JPEG baseline
    {"PNG", "", ""},                                      // .png files
    {"DICOM", "1.2.840.10008.1.2.5", "MONOCHROME1"},      // RLE lossless
    {"DICOM", "1.2.840.10008.1.2.4.80", "MONOCHROME2"},   // JPEG-LS lossless
};

std::string KindOf(const std::string& bytes) {
  if (bytes.rfind("\x89PNG\r\n\x1a\n", 0) == 0) return "PNG";
  if (bytes.rfind("\xFF\xD8\xFF", 0) == 0) return "JPEG";
  if (LooksLikeDicom(bytes)) return "DICOM";
  return "unknown";
}

TEST(SyntheticCohortTest, WritesReadableSitesWithEverySubtype) {
  TempDir dir;
  SyntheticCohortOptions options;
  options.out_dir = dir.path();
  options.sites = 6;
  options.patients_per_site = 12;
  options.image_size = 48;
  ASSERT_TRUE(WriteSyntheticCohort(options).ok());
  const std::vector<std::string> sites = SyntheticSiteNames(6);
  std::set<std::string> archives;
  for (size_t s = 0; s < sites.size(); ++s) {
    const std::string& site = sites[s];
    const ExpectedArchive& want = kExpectedArchives[s];
    absl::StatusOr<SiteManifest> manifest = LoadManifest(dir.Join(site));
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_TRUE(manifest->errors.empty());
    ASSERT_FALSE(manifest->records.empty());
    for (const ImageRecord& record : manifest->records) {
      absl::StatusOr<std::string> bytes = ReadFileToString(record.image_path);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      const std::string kind = KindOf(*bytes);
      EXPECT_EQ(kind, want.kind) << record.image_path;
      if (kind != "DICOM") {
        absl::StatusOr<GrayImage> image = DecodeGrayImage(*bytes, site);
        ASSERT_TRUE(image.ok()) << image.status();
        EXPECT_EQ(image->width, 48);
        archives.insert(kind);
        continue;
      }
      DicomImageInfo info;
      absl::StatusOr<GrayImage> image =
          DecodeDicomGray(*bytes, record.image_path, &info);
      ASSERT_TRUE(image.ok()) << image.status();
      EXPECT_EQ(image->width, 48);
      EXPECT_EQ(image->height, 48);
      EXPECT_EQ(info.transfer_syntax_uid, want.transfer_syntax)
          << record.image_path;
      EXPECT_EQ(info.photometric, want.photometric) << record.image_path;
      EXPECT_EQ(info.modality, "US");
      EXPECT_EQ(info.sop_class_uid, "1.2.840.10008.5.1.4.1.1.6.1");
      ASSERT_TRUE(info.spacing_x_mm.has_value()) << record.image_path;
      ASSERT_TRUE(info.spacing_y_mm.has_value()) << record.image_path;
      EXPECT_GT(*info.spacing_x_mm, 0.1);  // mm, a 40-64 mm field of view
      EXPECT_LT(*info.spacing_x_mm, 2.0);
      // Recognisable identifiers in the header, for the privacy tests.
      EXPECT_TRUE(absl::StrContains(
          *bytes, absl::StrCat("SYNTHETIC^", record.patient_id)))
          << record.image_path;
      archives.insert(absl::StrCat(kind, " ", info.transfer_syntax_uid, " ",
                                   info.photometric));
    }
    ImageSet set = LoadImageSet(manifest->records, {"NB", "GNB", "GN"}, 32);
    EXPECT_TRUE(set.errors.empty());
    EXPECT_EQ(set.size(), static_cast<int64_t>(manifest->records.size()));
    EXPECT_EQ(set.patients, 12);
    for (int64_t label = 0; label < 3; ++label) {
      EXPECT_GT((set.labels == label).sum().item<int64_t>(), 0) << site;
    }
  }
  // Six hospitals, six different ways of storing an image.
  EXPECT_EQ(archives.size(), 6u);
}

TEST(SyntheticCohortTest, SameSeedWritesTheSameFiles) {
  TempDir first, second;
  SyntheticCohortOptions options;
  options.sites = 7;  // every archive once
  options.patients_per_site = 4;
  options.image_size = 40;
  options.out_dir = first.path();
  ASSERT_TRUE(WriteSyntheticCohort(options).ok());
  options.out_dir = second.path();
  ASSERT_TRUE(WriteSyntheticCohort(options).ok());
  size_t compared = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(first.path())) {
    if (!entry.is_regular_file()) continue;
    const std::string relative =
        std::filesystem::relative(entry.path(), first.path()).string();
    absl::StatusOr<std::string> a = ReadFileToString(entry.path().string());
    absl::StatusOr<std::string> b = ReadFileToString(second.Join(relative));
    ASSERT_TRUE(a.ok() && b.ok()) << relative;
    EXPECT_TRUE(*a == *b) << relative << " differs between runs";
    ++compared;
  }
  EXPECT_GT(compared, 7u * 6);
}

}  // namespace
}  // namespace echofed

namespace echofed {
namespace {

// Real ultrasound from ../shared/data/busi-sites: the JPEG and PNG sites
// (the DICOM sites are covered in dicom_reader_test). Every listed image
// must decode, at the size the dataset's README gives, and the counts must
// match it.
TEST(BusiSitesTest, JpegAndPngSitesDecodeCompletely) {
  std::string root = testing::BusiSitesDir();
  if (root.empty()) {
    GTEST_SKIP()
        << "../shared/data/busi-sites is absent; real-data check skipped";
  }
  struct Expected {
    const char* site;
    int images, patients, side;
  };
  for (const Expected& expected :
       {Expected{"site-b", 152, 121, 256}, Expected{"site-d", 75, 62, 224}}) {
    absl::StatusOr<SiteManifest> manifest =
        LoadManifest(root + "/" + expected.site);
    ASSERT_TRUE(manifest.ok()) << manifest.status();
    EXPECT_TRUE(manifest->errors.empty()) << expected.site;
    EXPECT_EQ(static_cast<int>(manifest->records.size()), expected.images);
    EXPECT_EQ(Summarize(*manifest, 5).patients(), expected.patients);
    for (const ImageRecord& record : manifest->records) {
      absl::StatusOr<GrayImage> image = ReadGrayImage(record.image_path);
      ASSERT_TRUE(image.ok()) << image.status();
      EXPECT_EQ(image->width, expected.side) << record.image_path;
      EXPECT_EQ(image->height, expected.side) << record.image_path;
    }
  }
}

}  // namespace
}  // namespace echofed
