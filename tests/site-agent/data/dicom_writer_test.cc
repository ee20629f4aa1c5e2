#include "site-agent/data/dicom_writer.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

// Not square, so that a swap of rows and columns shows; smooth with some
// texture, so that lossy JPEG stays close but is not trivially exact.
GrayImage Phantom(int width = 64, int height = 48) {
  GrayImage image;
  image.width = width;
  image.height = height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const double value = 40 + 150.0 * x / (width - 1) +
                           30 * std::sin(0.3 * x) * std::cos(0.2 * y) +
                           20.0 * y / (height - 1);
      image.pixels.push_back(
          static_cast<uint8_t>(std::clamp(value, 0.0, 255.0)));
    }
  }
  return image;
}

DicomWriteOptions Identified(DicomEncoding encoding,
                             DicomPhotometric photometric) {
  DicomWriteOptions options;
  options.encoding = encoding;
  options.photometric = photometric;
  options.jpeg_quality = 95;
  options.spacing_x_mm = 0.25;
  options.spacing_y_mm = 0.3;
  options.patient_id = "S9P0042";
  options.patient_name = "SYNTHETIC^S9P0042";
  options.patient_birth_date = "20200214";
  options.patient_sex = "F";
  options.study_date = "20240301";
  options.study_time = "101500";
  options.accession_number = "SYN900042";
  options.institution_name = "SYNTHETIC HOSPITAL site-9";
  options.manufacturer = "echofed phantom";
  options.study_instance_uid = DeterministicDicomUid("test/study");
  options.series_instance_uid = DeterministicDicomUid("test/series");
  options.sop_instance_uid = DeterministicDicomUid("test/image");
  return options;
}

int MaxAbsDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  int worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::abs(int{a[i]} - int{b[i]}));
  }
  return worst;
}

double MeanAbsDiff(const std::vector<uint8_t>& a,
                   const std::vector<uint8_t>& b) {
  double sum = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    sum += std::abs(int{a[i]} - int{b[i]});
  }
  return a.empty() ? 0 : sum / a.size();
}

std::string Get(DcmItem* item, const DcmTagKey& key) {
  OFString value;
  if (item->findAndGetOFStringArray(key, value).bad()) return "<absent>";
  return value.c_str();
}

struct Case {
  const char* name;
  DicomEncoding encoding;
  DicomPhotometric photometric;
  const char* transfer_syntax;
  const char* stored_photometric;
  bool lossless;
};

const Case kCases[] = {
    {"uncompressed_mono2", DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome2, UID_LittleEndianExplicitTransferSyntax,
     "MONOCHROME2", true},
    {"uncompressed_mono1", DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome1, UID_LittleEndianExplicitTransferSyntax,
     "MONOCHROME1", true},
    {"rle_mono2", DicomEncoding::kRleLossless, DicomPhotometric::kMonochrome2,
     UID_RLELosslessTransferSyntax, "MONOCHROME2", true},
    {"rle_mono1", DicomEncoding::kRleLossless, DicomPhotometric::kMonochrome1,
     UID_RLELosslessTransferSyntax, "MONOCHROME1", true},
    {"jpegls_mono2", DicomEncoding::kJpegLsLossless,
     DicomPhotometric::kMonochrome2, UID_JPEGLSLosslessTransferSyntax,
     "MONOCHROME2", true},
    {"jpegls_mono1", DicomEncoding::kJpegLsLossless,
     DicomPhotometric::kMonochrome1, UID_JPEGLSLosslessTransferSyntax,
     "MONOCHROME1", true},
    {"jpeg_mono2", DicomEncoding::kJpegBaseline, DicomPhotometric::kMonochrome2,
     UID_JPEGProcess1TransferSyntax, "MONOCHROME2", false},
    {"jpeg_mono1", DicomEncoding::kJpegBaseline, DicomPhotometric::kMonochrome1,
     UID_JPEGProcess1TransferSyntax, "MONOCHROME1", false},
    {"jpeg_ybr422", DicomEncoding::kJpegBaseline, DicomPhotometric::kYbrFull422,
     UID_JPEGProcess1TransferSyntax, "YBR_FULL_422", false},
};

class DicomWriterRoundTrip : public ::testing::TestWithParam<Case> {
 protected:
  TempDir dir_;
};

TEST_P(DicomWriterRoundTrip, DecodesToTheSamePixelsWithHeader) {
  const Case& c = GetParam();
  const GrayImage image = Phantom();
  const DicomWriteOptions options = Identified(c.encoding, c.photometric);
  const std::string path = dir_.Join(absl::StrCat(c.name, ".dcm"));
  ASSERT_TRUE(WriteDicomUltrasound(path, image, options).ok());

  DicomImageInfo info;
  absl::StatusOr<GrayImage> decoded = ReadDicomGray(path, &info);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, image.width);
  EXPECT_EQ(decoded->height, image.height);
  EXPECT_EQ(info.transfer_syntax_uid, c.transfer_syntax);
  EXPECT_EQ(info.photometric, c.stored_photometric);
  EXPECT_EQ(info.sop_class_uid, UID_UltrasoundImageStorage);
  EXPECT_EQ(info.modality, "US");
  EXPECT_EQ(info.rows, 48);
  EXPECT_EQ(info.columns, 64);
  EXPECT_EQ(info.frames, 1);
  ASSERT_TRUE(info.spacing_x_mm.has_value());
  ASSERT_TRUE(info.spacing_y_mm.has_value());
  EXPECT_NEAR(*info.spacing_x_mm, 0.25, 1e-9);
  EXPECT_NEAR(*info.spacing_y_mm, 0.3, 1e-9);
  if (c.lossless) {
    EXPECT_EQ(decoded->pixels, image.pixels);
  } else {
    // Quality 95 on a smooth picture: small errors, none gross (a colour
    // conversion or inversion mistake would be off by tens).
    EXPECT_LT(MeanAbsDiff(decoded->pixels, image.pixels), 1.5);
    EXPECT_LE(MaxAbsDiff(decoded->pixels, image.pixels), 12);
  }

  // The header as any DICOM tool sees it.
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(path.c_str()).good());
  DcmDataset* ds = file.getDataset();
  EXPECT_EQ(Get(ds, DCM_PatientID), "S9P0042");
  EXPECT_EQ(Get(ds, DCM_PatientName), "SYNTHETIC^S9P0042");
  EXPECT_EQ(Get(ds, DCM_PatientBirthDate), "20200214");
  EXPECT_EQ(Get(ds, DCM_PatientSex), "F");
  EXPECT_EQ(Get(ds, DCM_StudyDate), "20240301");
  EXPECT_EQ(Get(ds, DCM_StudyTime), "101500");
  EXPECT_EQ(Get(ds, DCM_AccessionNumber), "SYN900042");
  EXPECT_EQ(Get(ds, DCM_InstitutionName), "SYNTHETIC HOSPITAL site-9");
  EXPECT_EQ(Get(ds, DCM_Modality), "US");
  EXPECT_EQ(Get(ds, DCM_SOPClassUID), UID_UltrasoundImageStorage);
  EXPECT_EQ(Get(ds, DCM_StudyInstanceUID), options.study_instance_uid);
  EXPECT_EQ(Get(ds, DCM_SeriesInstanceUID), options.series_instance_uid);
  // Lossy compression keeps the instance's identity: it is how the scanner
  // stored it, not a derived copy.
  EXPECT_EQ(Get(ds, DCM_SOPInstanceUID), options.sop_instance_uid);
  // DCMTK marks lossy-compressed pixels DERIVED, as PS3.3 asks.
  EXPECT_EQ(Get(ds, DCM_ImageType),
            c.lossless ? "ORIGINAL\\PRIMARY" : "DERIVED\\PRIMARY");
  EXPECT_FALSE(ds->tagExists(DCM_SourceImageSequence));
  EXPECT_EQ(Get(ds, DCM_LossyImageCompression), c.lossless ? "<absent>" : "01");
  DcmMetaInfo* meta = file.getMetaInfo();
  EXPECT_EQ(Get(meta, DCM_MediaStorageSOPClassUID), UID_UltrasoundImageStorage);
  EXPECT_EQ(Get(meta, DCM_MediaStorageSOPInstanceUID),
            options.sop_instance_uid);
  EXPECT_EQ(Get(meta, DCM_TransferSyntaxUID), c.transfer_syntax);

  // And the raw bytes hold the identifiers in clear, as a real file would;
  // this is what privacy tests search for in anything leaving a site.
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(absl::StrContains(*bytes, "SYNTHETIC^S9P0042"));
}

TEST_P(DicomWriterRoundTrip, SameInputGivesTheSameBytes) {
  const Case& c = GetParam();
  const DicomWriteOptions options = Identified(c.encoding, c.photometric);
  absl::StatusOr<std::string> first = EncodeDicomUltrasound(Phantom(), options);
  absl::StatusOr<std::string> second =
      EncodeDicomUltrasound(Phantom(), options);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(*first == *second);
  // An odd-length codestream is padded with 0x00 after its EOI (PS3.5
  // A.4), not with whatever byte the encoder's buffer held: that byte made
  // JPEG-LS files differ between processes.
  if (c.encoding != DicomEncoding::kExplicitLittleEndian &&
      c.encoding != DicomEncoding::kRleLossless) {
    const std::string end_of_pixels("\xFE\xFF\xDD\xE0", 4);
    EXPECT_TRUE(absl::StrContains(
                    *first, std::string("\xFF\xD9\x00", 3) + end_of_pixels) ||
                absl::StrContains(*first, "\xFF\xD9" + end_of_pixels));
  }
  // In memory, the same content as on disk.
  absl::StatusOr<GrayImage> decoded = DecodeDicomGray(*first, "memory");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
}

INSTANTIATE_TEST_SUITE_P(Encodings, DicomWriterRoundTrip,
                         ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

// DCMTK 3.6.7's JPEG-LS encoder overflows its output buffer on images that
// do not compress; the writer refuses them (before, the heap was corrupted
// and the synthetic cohort crashed at 64 sites).
TEST(DicomWriterTest, IncompressibleImageIsRefusedForJpegLsNotEncoded) {
  GrayImage noise;
  noise.width = 256;
  noise.height = 256;
  uint32_t state = 12345;
  for (int i = 0; i < noise.width * noise.height; ++i) {
    state = state * 1664525u + 1013904223u;
    noise.pixels.push_back(static_cast<uint8_t>(state >> 24));
  }
  DicomWriteOptions options;
  options.encoding = DicomEncoding::kJpegLsLossless;
  absl::StatusOr<std::string> encoded = EncodeDicomUltrasound(noise, options);
  EXPECT_EQ(encoded.status().code(), absl::StatusCode::kFailedPrecondition)
      << encoded.status();
  // Other syntaxes take it; JPEG-LS takes an ordinary image.
  options.encoding = DicomEncoding::kRleLossless;
  EXPECT_TRUE(EncodeDicomUltrasound(noise, options).ok());
  options.encoding = DicomEncoding::kJpegLsLossless;
  EXPECT_TRUE(EncodeDicomUltrasound(Phantom(), options).ok());
}

TEST(DicomWriterTest, WithoutSpacingNoRegionIsWritten) {
  TempDir dir;
  DicomWriteOptions options;
  options.patient_id = "X";
  const std::string path = dir.Join("plain.dcm");
  ASSERT_TRUE(WriteDicomUltrasound(path, Phantom(), options).ok());
  DicomImageInfo info;
  absl::StatusOr<GrayImage> decoded = ReadDicomGray(path, &info);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_FALSE(info.spacing_x_mm.has_value());
  EXPECT_FALSE(info.spacing_y_mm.has_value());
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(path.c_str()).good());
  EXPECT_FALSE(file.getDataset()->tagExists(DCM_SequenceOfUltrasoundRegions));
  // Fresh UIDs when none are given.
  EXPECT_FALSE(Get(file.getDataset(), DCM_SOPInstanceUID).empty());
}

TEST(DicomWriterTest, SecondaryCaptureIsNotUltrasound) {
  TempDir dir;
  DicomWriteOptions options;
  options.secondary_capture = true;
  options.spacing_x_mm = 0.25;
  options.spacing_y_mm = 0.25;
  const std::string path = dir.Join("sc.dcm");
  ASSERT_TRUE(WriteDicomUltrasound(path, Phantom(), options).ok());
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(path.c_str()).good());
  DcmDataset* dataset = file.getDataset();
  EXPECT_EQ(Get(dataset, DCM_SOPClassUID), UID_SecondaryCaptureImageStorage);
  EXPECT_EQ(Get(file.getMetaInfo(), DCM_MediaStorageSOPClassUID),
            UID_SecondaryCaptureImageStorage);
  EXPECT_EQ(Get(dataset, DCM_Modality), "OT");
  EXPECT_EQ(Get(dataset, DCM_ConversionType), "WSD");
  EXPECT_FALSE(dataset->tagExists(DCM_SequenceOfUltrasoundRegions));
  absl::StatusOr<GrayImage> decoded = ReadDicomGray(path);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->pixels, Phantom().pixels);
}

TEST(DicomWriterTest, FreshUidsDifferBetweenCalls) {
  DicomWriteOptions options;
  absl::StatusOr<std::string> a = EncodeDicomUltrasound(Phantom(), options);
  absl::StatusOr<std::string> b = EncodeDicomUltrasound(Phantom(), options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(*a == *b);
}

TEST(DicomWriterTest, RefusesWhatItCannotWrite) {
  GrayImage broken = Phantom();
  broken.pixels.pop_back();
  EXPECT_EQ(EncodeDicomUltrasound(broken, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeDicomUltrasound(GrayImage(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);

  DicomWriteOptions ybr_rle;
  ybr_rle.encoding = DicomEncoding::kRleLossless;
  ybr_rle.photometric = DicomPhotometric::kYbrFull422;
  absl::Status status = EncodeDicomUltrasound(Phantom(), ybr_rle).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "YBR_FULL_422")) << status;

  DicomWriteOptions quality;
  quality.encoding = DicomEncoding::kJpegBaseline;
  quality.jpeg_quality = 0;
  EXPECT_EQ(EncodeDicomUltrasound(Phantom(), quality).status().code(),
            absl::StatusCode::kInvalidArgument);

  DicomWriteOptions spacing;
  spacing.spacing_x_mm = -0.1;
  EXPECT_EQ(EncodeDicomUltrasound(Phantom(), spacing).status().code(),
            absl::StatusCode::kInvalidArgument);

  TempDir dir;
  absl::Status written =
      WriteDicomUltrasound(dir.Join("broken.dcm"), broken, {});
  EXPECT_TRUE(absl::StrContains(written.message(), "broken.dcm")) << written;
  EXPECT_FALSE(ReadFileToString(dir.Join("broken.dcm")).ok());
}

TEST(DicomWriterTest, DeterministicUidsAreValidAndDistinct) {
  const std::string uid = DeterministicDicomUid("site-1/S1P0001/study");
  EXPECT_EQ(uid, DeterministicDicomUid("site-1/S1P0001/study"));
  EXPECT_NE(uid, DeterministicDicomUid("site-1/S1P0001/series"));
  EXPECT_TRUE(absl::StartsWith(uid, "2.25.")) << uid;
  EXPECT_LE(uid.size(), 64u);  // DICOM's UI limit
  const std::string digits = uid.substr(5);
  EXPECT_FALSE(digits.empty());
  EXPECT_NE(digits[0], '0');  // no leading zero in a UID component
  EXPECT_EQ(digits.find_first_not_of("0123456789"), std::string::npos) << uid;
}

// Speckled like B-mode, the hard case for JPEG: every 8x8 block carries
// high-frequency energy, so IDCT rounding differences would show.
GrayImage Speckled(int width, int height, uint32_t seed) {
  GrayImage image;
  image.width = width;
  image.height = height;
  uint32_t state = seed;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      state = state * 1664525u + 1013904223u;
      const double noise = static_cast<double>(state >> 8) / (1u << 24);
      const double tissue = 60 + 90.0 * x / width - 30.0 * y / height;
      image.pixels.push_back(static_cast<uint8_t>(
          std::clamp(tissue * (0.4 + 1.2 * noise), 0.0, 255.0)));
    }
  }
  return image;
}

// DecodeDicomGray hands 8-bit JPEG baseline to libjpeg-turbo (the fast
// path); DCMTK's own decoder must give the same gray values.
TEST(DicomWriterTest, FastJpegPathMatchesDcmtk) {
  for (const DicomPhotometric photometric :
       {DicomPhotometric::kMonochrome2, DicomPhotometric::kMonochrome1,
        DicomPhotometric::kYbrFull422}) {
    for (const int quality : {75, 95}) {
      DicomWriteOptions options =
          Identified(DicomEncoding::kJpegBaseline, photometric);
      options.jpeg_quality = quality;
      // Odd sizes: partial MCUs at the right and bottom edges.
      const GrayImage image = Speckled(203, 157, 17u + quality);
      absl::StatusOr<std::string> bytes = EncodeDicomUltrasound(image, options);
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      absl::StatusOr<GrayImage> fast = DecodeDicomGray(*bytes, "fast");
      absl::StatusOr<GrayImage> dcmtk = DecodeDicomGray(
          *bytes, "dcmtk", nullptr, DicomDecodePath::kDcmtkOnly);
      ASSERT_TRUE(fast.ok()) << fast.status();
      ASSERT_TRUE(dcmtk.ok()) << dcmtk.status();
      ASSERT_EQ(fast->width, 203);
      ASSERT_EQ(fast->height, 157);
      if (photometric == DicomPhotometric::kYbrFull422) {
        // Y taken directly versus YCbCr -> RGB -> luma in DCMTK.
        EXPECT_LE(MaxAbsDiff(fast->pixels, dcmtk->pixels), 2)
            << "quality " << quality;
        EXPECT_LT(MeanAbsDiff(fast->pixels, dcmtk->pixels), 0.5)
            << "quality " << quality;
      } else {
        EXPECT_TRUE(fast->pixels == dcmtk->pixels)
            << "quality " << quality << ", max difference "
            << MaxAbsDiff(fast->pixels, dcmtk->pixels);
      }
    }
  }
}

// The synthetic cohort and the benchmark write from whichever thread runs
// them; encoder registration and encoding must hold up when raced.
TEST(DicomWriterTest, ConcurrentEncodesAgree) {
  std::vector<DicomWriteOptions> options;
  for (const Case& c : kCases) {
    options.push_back(Identified(c.encoding, c.photometric));
  }
  std::atomic<int> failures{0};
  std::vector<std::vector<std::string>> results(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (const DicomWriteOptions& o : options) {
        absl::StatusOr<std::string> bytes = EncodeDicomUltrasound(Phantom(), o);
        if (!bytes.ok()) {
          ++failures;
          continue;
        }
        results[t].push_back(*bytes);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  for (int t = 1; t < 4; ++t) EXPECT_TRUE(results[t] == results[0]);
}

}  // namespace
}  // namespace echofed
