// The DICOM reader (site-agent/data/dicom_reader.h) against what could
// break it: objects that are not images or not DICOM, a codec it does not
// decode, and malformed files (several found by tests/fuzz), each refused
// with the right code, never a crash, a hang or invented pixels, and never
// with the patient's identifiers in the message or on stderr; and decodes
// on several threads at once.

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrlerp.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmjpeg/djrploss.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"
#include "tests/site-agent/data/dicom_reader_test_fixture.h"

namespace echofed {
namespace {

using ::echofed::testing::Builder;
using ::echofed::testing::ColourPicture;
using ::echofed::testing::DicomReaderTest;
using ::echofed::testing::ExpectNoIdentifiers;
using ::echofed::testing::Gradient8;
using ::echofed::testing::Interleave;
using ::echofed::testing::kPatientId;
using ::echofed::testing::Rgb;

TEST_F(DicomReaderTest, NoPixelDataIsRefused) {
  Builder().Image(16, 16, 1, 8, 8, "MONOCHROME2").Save(Path("nopixels.dcm"));
  absl::Status status = ReadError(Path("nopixels.dcm"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "no Pixel Data")) << status;
}

TEST_F(DicomReaderTest, StructuredReportIsRefusedAsNonImage) {
  Builder(UID_BasicTextSRStorage, "SR")
      .Set(DCM_ValueType, "CONTAINER")
      .Save(Path("report.dcm"));
  absl::Status status = ReadError(Path("report.dcm"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "Basic Text SR Storage"))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "not an image")) << status;
}

// Encapsulated pixel data of junk in the given syntax.
void SaveJunkEncapsulated(Builder& builder, E_TransferSyntax xfer,
                          const std::string& path) {
  auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
  sequence->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty offset table
  auto* fragment = new DcmPixelItem(DCM_PixelItemTag);
  const std::vector<uint8_t> junk(64, 0x5A);
  ASSERT_TRUE(fragment->putUint8Array(junk.data(), junk.size()).good());
  sequence->insert(fragment);
  auto* pixel_data = new DcmPixelData(DCM_PixelData);
  pixel_data->putOriginalRepresentation(xfer, nullptr, sequence);
  ASSERT_TRUE(builder.dataset()->insert(pixel_data).good());
  builder.Save(path, xfer);
}

TEST_F(DicomReaderTest, JunkDeclaredAsJpegTwoThousandIsCorruptAndNamed) {
  Builder builder;
  builder.Image(16, 16, 1, 8, 8, "MONOCHROME2");
  SaveJunkEncapsulated(builder, EXS_JPEG2000, Path("j2k.dcm"));
  DicomImageInfo info;
  absl::StatusOr<GrayImage> image = ReadDicomGray(Path("j2k.dcm"), &info);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(image.status().message(),
                                "JPEG 2000 pixel data is corrupt"))
      << image.status();
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEG2000TransferSyntax);
  ExpectNoIdentifiers(image.status());
}

TEST_F(DicomReaderTest, VideoSyntaxIsUnimplementedAndNamed) {
  // Refused by transfer syntax, before any decoding is tried.
  Builder builder;
  builder.Image(16, 16, 3, 8, 8, "YBR_PARTIAL_420");
  SaveJunkEncapsulated(builder, EXS_MPEG4HighProfileLevel4_1, Path("mp4.dcm"));
  DicomImageInfo info;
  absl::StatusOr<GrayImage> image = ReadDicomGray(Path("mp4.dcm"), &info);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kUnimplemented);
  for (const char* part : {"MPEG-4", UID_MPEG4HighProfileLevel4_1TransferSyntax,
                           "YBR_PARTIAL_420", "video", "export"}) {
    EXPECT_TRUE(absl::StrContains(image.status().message(), part))
        << part << ": " << image.status();
  }
  ExpectNoIdentifiers(image.status());
  // The generic entry point says the same.
  EXPECT_EQ(ReadGrayImage(Path("mp4.dcm")).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(DicomReaderTest, TextFileNamedDcmIsNotDicom) {
  ASSERT_TRUE(
      WriteFileAtomically(Path("notes.dcm"), "patient notes, not an image\n")
          .ok());
  absl::Status status = ReadError(Path("notes.dcm"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "not a DICOM")) << status;
  absl::Status generic = ReadGrayImage(Path("notes.dcm")).status();
  EXPECT_EQ(generic.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(generic.message(), "DICOM")) << generic;
}

TEST_F(DicomReaderTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadDicomGray(Path("absent.dcm")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DicomReaderTest, TruncatedFilesAreErrorsNotCrashes) {
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("whole.dcm"));
  DJ_RPLossy quality(90);
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("whole-jpeg.dcm"), EXS_JPEGProcess1, &quality);
  for (const char* name : {"whole.dcm", "whole-jpeg.dcm"}) {
    absl::StatusOr<std::string> bytes = ReadFileToString(Path(name));
    ASSERT_TRUE(bytes.ok());
    // Inside the pixel data, inside the header, just after "DICM".
    for (size_t keep : {bytes->size() - 700, size_t{300}, size_t{132}}) {
      absl::StatusOr<GrayImage> image =
          DecodeDicomGray(bytes->substr(0, keep), name);
      ASSERT_FALSE(image.ok()) << name << " cut at " << keep;
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
          << image.status();
      ExpectNoIdentifiers(image.status());
    }
  }
}

TEST_F(DicomReaderTest, CorruptJpegStreamIsAnError) {
  DJ_RPLossy quality(90);
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("jpeg.dcm"), EXS_JPEGProcess1, &quality);
  absl::StatusOr<std::string> bytes = ReadFileToString(Path("jpeg.dcm"));
  ASSERT_TRUE(bytes.ok());
  // Overwrite the JPEG headers after SOI (tables, frame header) with junk,
  // keeping every DICOM length intact.
  const size_t soi = bytes->find("\xFF\xD8\xFF");
  ASSERT_NE(soi, std::string::npos);
  std::string corrupt = *bytes;
  for (size_t i = soi + 2; i < soi + 2 + 200 && i < corrupt.size(); ++i) {
    corrupt[i] = static_cast<char>(0x11);
  }
  absl::StatusOr<GrayImage> image = DecodeDicomGray(corrupt, "corrupt");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  ExpectNoIdentifiers(image.status());
}

TEST_F(DicomReaderTest, StandaloneMarkerAmongJpegHeadersIsRefusedNotHung) {
  // A TEM marker where the quantisation table's marker was, its length
  // left behind: DCMTK's header scan loops forever on this (found by
  // tests/fuzz/image_fuzz); the reader must refuse it first.
  DJ_RPLossy quality(90);
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("jpeg.dcm"), EXS_JPEGProcess1, &quality);
  absl::StatusOr<std::string> bytes = ReadFileToString(Path("jpeg.dcm"));
  ASSERT_TRUE(bytes.ok());
  const size_t table = bytes->find(std::string("\xFF\xDB\x00\x43", 4));
  ASSERT_NE(table, std::string::npos);
  std::string corrupt = *bytes;
  corrupt[table + 1] = '\x01';
  absl::StatusOr<GrayImage> image = DecodeDicomGray(corrupt, "tem");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(image.status().message().find("unexpected marker"),
            std::string::npos)
      << image.status();
}

TEST_F(DicomReaderTest, BitsAllocatedThatDisagreesWithTheJpegIsRefused) {
  // DicomImage sizes the frame buffer from Bits Allocated, DCMTK's JPEG
  // decoder fills one byte per 8-bit sample: with Bits Allocated 136 (found
  // by tests/fuzz/dicom_fuzz) or 16 the rest of the buffer was never written
  // and came back as pixels, different from one decode to the next.
  struct Case {
    const char* name;
    int samples;
    const char* photometric;
    Uint16 bits_allocated;
  };
  for (const Case& c :
       {Case{"ybr-136", 3, "RGB", 136}, Case{"ybr-16", 3, "RGB", 16},
        Case{"mono-136", 1, "MONOCHROME2", 136},
        Case{"mono-16", 1, "MONOCHROME2", 16}}) {
    SCOPED_TRACE(c.name);
    const Rgb rgb = ColourPicture(16, 12);
    DJ_RPLossy quality(90);
    Builder builder;
    builder.Image(16, 12, c.samples, 8, 8, c.photometric)
        .Pixels8(c.samples == 3 ? Interleave(rgb) : Gradient8(16, 12))
        .Save(Path("right.dcm"), EXS_JPEGProcess1, &quality);
    // The stream stays 8-bit; only the header changes.
    builder.SetU16(DCM_BitsAllocated, c.bits_allocated)
        .Save(Path("wrong.dcm"), EXS_JPEGProcess1, &quality);
    absl::StatusOr<std::string> bytes = ReadFileToString(Path("wrong.dcm"));
    ASSERT_TRUE(bytes.ok());
    for (DicomDecodePath path :
         {DicomDecodePath::kAuto, DicomDecodePath::kDcmtkOnly}) {
      absl::StatusOr<GrayImage> image =
          DecodeDicomGray(*bytes, "wrong-bits", nullptr, path);
      EXPECT_FALSE(image.ok()) << "decoded pixels it never read";
      if (image.ok()) continue;
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StrContains(
          image.status().message(),
          absl::StrCat("Bits Allocated 8; the DICOM header says ",
                       c.bits_allocated)))
          << image.status();
      ExpectNoIdentifiers(image.status());
    }
    // The object as written, Bits Allocated 8, still decodes.
    ReadOk(Path("right.dcm"), 16, 12);
  }
}

TEST_F(DicomReaderTest, ImpossibleDimensionsAreRefused) {
  Builder()
      .Image(16, 0, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(16, 2))
      .Save(Path("zero.dcm"));
  absl::Status zero = ReadError(Path("zero.dcm"));
  EXPECT_EQ(zero.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(zero.message(), "no pixels")) << zero;

  Builder()
      .Image(16, kMaxImageSide + 1, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(16, 2))
      .Save(Path("huge.dcm"));
  absl::Status huge = ReadError(Path("huge.dcm"));
  EXPECT_EQ(huge.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(huge.message(), "exceeds")) << huge;

  // Each side allowed, the total not (12000 x 12000 > kMaxImagePixels).
  Builder()
      .Image(12000, 12000, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(16, 2))
      .Save(Path("too-many-pixels.dcm"));
  absl::Status too_many = ReadError(Path("too-many-pixels.dcm"));
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(too_many.message(), "in all")) << too_many;

  // Declares more pixels than it holds.
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(16, 16))
      .Save(Path("short.dcm"));
  absl::Status short_data = ReadError(Path("short.dcm"));
  EXPECT_EQ(short_data.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(short_data.message(), "Pixel Data holds"))
      << short_data;
}

TEST_F(DicomReaderTest, NothingIdentifyingReachesStderr) {
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("whole.dcm"));
  absl::StatusOr<std::string> bytes = ReadFileToString(Path("whole.dcm"));
  ASSERT_TRUE(bytes.ok());
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(
      DecodeDicomGray(bytes->substr(0, bytes->size() / 2), "cut").ok());
  EXPECT_TRUE(DecodeDicomGray(*bytes, "whole").ok());
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(absl::StrContains(printed, "Janet")) << printed;
  EXPECT_FALSE(absl::StrContains(printed, kPatientId)) << printed;
}

// The agent loads images on several threads: decoding shares DCMTK's codec
// registry and dictionary, which must hold up under concurrent use.
TEST_F(DicomReaderTest, ConcurrentDecodesAgree) {
  DJ_RPLossy quality(90);
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("jpeg.dcm"), EXS_JPEGProcess1, &quality);
  DcmRLERepresentationParameter rle;
  Builder()
      .Image(64, 64, 1, 8, 8, "MONOCHROME2")
      .Pixels8(Gradient8(64, 64))
      .Save(Path("rle.dcm"), EXS_RLELossless, &rle);
  std::vector<std::string> files;
  for (const char* name : {"jpeg.dcm", "rle.dcm"}) {
    absl::StatusOr<std::string> bytes = ReadFileToString(Path(name));
    ASSERT_TRUE(bytes.ok());
    files.push_back(*bytes);
  }
  std::vector<std::vector<uint8_t>> reference;
  for (const std::string& bytes : files) {
    absl::StatusOr<GrayImage> image = DecodeDicomGray(bytes, "reference");
    ASSERT_TRUE(image.ok()) << image.status();
    reference.push_back(image->pixels);
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 25; ++round) {
        for (size_t f = 0; f < files.size(); ++f) {
          absl::StatusOr<GrayImage> image = DecodeDicomGray(files[f], "t");
          if (!image.ok() || image->pixels != reference[f]) ++mismatches;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace echofed
