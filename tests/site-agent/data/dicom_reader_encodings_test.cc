// The DICOM reader (site-agent/data/dicom_reader.h) on the encodings that
// hospital archives hold beyond the common ones: JPEG 2000 and HTJ2K
// (encoded here with OpenJPEG from synthetic images), segmented palette
// lookup tables, data sets without a file meta header, and the choice of a
// cine loop's frames.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcvrus.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"
#include "tests/site-agent/data/dicom_reader_test_fixture.h"
#include "tests/testing/j2k_encoder.h"

namespace echofed {
namespace {

using ::echofed::testing::Builder;
using ::echofed::testing::ColourPicture;
using ::echofed::testing::DicomReaderTest;
using ::echofed::testing::EncodeJ2k;
using ::echofed::testing::Gradient8;
using ::echofed::testing::Interleave;
using ::echofed::testing::J2kSource;
using ::echofed::testing::PutEncapsulatedFrames;
using ::echofed::testing::Rgb;
using ::echofed::testing::SaveDeclaring;

constexpr char kHtj2kLossless[] = "1.2.840.10008.1.2.4.201";
constexpr char kHtj2k[] = "1.2.840.10008.1.2.4.203";

std::string Encode(const J2kSource& source) {
  std::string error;
  std::string codestream = EncodeJ2k(source, &error);
  EXPECT_FALSE(codestream.empty()) << error;
  return codestream;
}

J2kSource Mono8(int width, int height) {
  J2kSource source;
  source.width = width;
  source.height = height;
  for (uint8_t value : Gradient8(width, height)) {
    source.samples.push_back(value);
  }
  return source;
}

J2kSource Colour8(const Rgb& rgb, int width, int height) {
  J2kSource source;
  source.width = width;
  source.height = height;
  source.components = 3;
  for (uint8_t value : Interleave(rgb)) source.samples.push_back(value);
  return source;
}

// 12 bits stored in 16, signed: a ramp from -2000 to 2000 along x.
std::vector<int16_t> SignedRamp(int width, int height) {
  std::vector<int16_t> pixels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      pixels.push_back(static_cast<int16_t>(-2000 + x * 4000 / (width - 1)));
    }
  }
  return pixels;
}

double MeanAbsDiff(const std::vector<uint8_t>& a,
                   const std::vector<uint8_t>& b) {
  EXPECT_EQ(a.size(), b.size());
  double sum = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    sum += std::abs(int{a[i]} - int{b[i]});
  }
  return a.empty() ? 0 : sum / a.size();
}

// A JPEG 2000 object of the given pixel module around `frames`.
std::string SaveJ2k(Builder& builder, const std::string& path,
                    const std::vector<std::string>& frames,
                    E_TransferSyntax xfer = EXS_JPEG2000LosslessOnly,
                    const char* uid = nullptr, int fragments_per_frame = 1) {
  EXPECT_TRUE(PutEncapsulatedFrames(builder.dataset(), xfer, frames,
                                    fragments_per_frame));
  if (uid == nullptr) return builder.Save(path, xfer);
  EXPECT_TRUE(SaveDeclaring(builder.file(), path, xfer, uid)) << path;
  return path;
}

TEST_F(DicomReaderTest, JpegTwoThousandLosslessIsExact) {
  Builder builder;
  builder.Image(40, 30, 1, 8, 8, "MONOCHROME2");
  SaveJ2k(builder, Path("j2k.dcm"), {Encode(Mono8(40, 30))});
  DicomImageInfo info;
  EXPECT_EQ(ReadOk(Path("j2k.dcm"), 40, 30, &info).pixels, Gradient8(40, 30));
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEG2000LosslessOnlyTransferSyntax);
}

TEST_F(DicomReaderTest, JpegTwoThousandLossyIsClose) {
  J2kSource source = Mono8(64, 48);
  source.lossy = true;
  Builder builder;
  builder.Image(64, 48, 1, 8, 8, "MONOCHROME2");
  SaveJ2k(builder, Path("j2k-lossy.dcm"), {Encode(source)}, EXS_JPEG2000);
  GrayImage image = ReadOk(Path("j2k-lossy.dcm"), 64, 48);
  EXPECT_LT(MeanAbsDiff(image.pixels, Gradient8(64, 48)), 4.0);
}

// Wider samples are windowed as the uncompressed object is: the two decode
// to the same 8-bit image.
TEST_F(DicomReaderTest, JpegTwoThousandSixteenAndSignedTwelveBitMatchNative) {
  std::vector<uint16_t> ramp;
  J2kSource sixteen;
  sixteen.width = 61;
  sixteen.height = 4;
  sixteen.precision = 16;
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 61; ++x) {
      ramp.push_back(static_cast<uint16_t>(1000 + x * 1000));
      sixteen.samples.push_back(ramp.back());
    }
  }
  Builder()
      .Image(61, 4, 1, 16, 16, "MONOCHROME2")
      .Pixels16(ramp)
      .Save(Path("native16.dcm"));
  Builder j2k16;
  j2k16.Image(61, 4, 1, 16, 16, "MONOCHROME2");
  SaveJ2k(j2k16, Path("j2k16.dcm"), {Encode(sixteen)});
  EXPECT_EQ(ReadOk(Path("j2k16.dcm"), 61, 4).pixels,
            ReadOk(Path("native16.dcm"), 61, 4).pixels);

  const std::vector<int16_t> signed_ramp = SignedRamp(50, 6);
  J2kSource twelve;
  twelve.width = 50;
  twelve.height = 6;
  twelve.precision = 12;
  twelve.is_signed = true;
  twelve.samples.assign(signed_ramp.begin(), signed_ramp.end());
  std::vector<uint16_t> raw(signed_ramp.begin(), signed_ramp.end());
  Builder()
      .Image(50, 6, 1, 16, 12, "MONOCHROME2")
      .SetU16(DCM_PixelRepresentation, 1)
      .Pixels16(raw)
      .Save(Path("native12s.dcm"));
  Builder j2k12;
  j2k12.Image(50, 6, 1, 16, 12, "MONOCHROME2")
      .SetU16(DCM_PixelRepresentation, 1);
  SaveJ2k(j2k12, Path("j2k12s.dcm"), {Encode(twelve)});
  EXPECT_EQ(ReadOk(Path("j2k12s.dcm"), 50, 6).pixels,
            ReadOk(Path("native12s.dcm"), 50, 6).pixels);
}

// Colour ultrasound: lossless with the reversible colour transform
// (YBR_RCT) gives exactly what the RGB original gives; lossy YBR_ICT comes
// close; without a transform the components are RGB as stored.
TEST_F(DicomReaderTest, JpegTwoThousandColourBecomesLuma) {
  const Rgb rgb = ColourPicture(48, 32);
  Builder()
      .Image(48, 32, 3, 8, 8, "RGB")
      .Pixels8(Interleave(rgb))
      .Save(Path("rgb.dcm"));
  const std::vector<uint8_t> reference = ReadOk(Path("rgb.dcm"), 48, 32).pixels;

  Builder rct;
  rct.Image(48, 32, 3, 8, 8, "YBR_RCT");
  SaveJ2k(rct, Path("rct.dcm"), {Encode(Colour8(rgb, 48, 32))});
  DicomImageInfo info;
  EXPECT_EQ(ReadOk(Path("rct.dcm"), 48, 32, &info).pixels, reference);
  EXPECT_EQ(info.photometric, "YBR_RCT");

  J2kSource plain = Colour8(rgb, 48, 32);
  plain.colour_transform = false;
  Builder as_rgb;
  as_rgb.Image(48, 32, 3, 8, 8, "RGB");
  SaveJ2k(as_rgb, Path("j2k-rgb.dcm"), {Encode(plain)});
  EXPECT_EQ(ReadOk(Path("j2k-rgb.dcm"), 48, 32).pixels, reference);

  J2kSource lossy = Colour8(rgb, 48, 32);
  lossy.lossy = true;
  Builder ict;
  ict.Image(48, 32, 3, 8, 8, "YBR_ICT");
  SaveJ2k(ict, Path("ict.dcm"), {Encode(lossy)}, EXS_JPEG2000);
  EXPECT_LT(MeanAbsDiff(ReadOk(Path("ict.dcm"), 48, 32).pixels, reference),
            3.0);
}

TEST_F(DicomReaderTest, HighThroughputSyntaxesAndJp2GoThroughOpenJpeg) {
  // OpenJPEG 2.5 has no HT encoder, so these hold Part 1 codestreams, which
  // an HTJ2K decoder reads too: the test is that the syntaxes, unknown to
  // DCMTK 3.6.7, reach the decoder and are named.
  for (const char* uid : {kHtj2kLossless, kHtj2k}) {
    Builder builder;
    builder.Image(32, 16, 1, 8, 8, "MONOCHROME2");
    SaveJ2k(builder, Path("htj2k.dcm"), {Encode(Mono8(32, 16))},
            EXS_JPEG2000LosslessOnly, uid);
    DicomImageInfo info;
    EXPECT_EQ(ReadOk(Path("htj2k.dcm"), 32, 16, &info).pixels,
              Gradient8(32, 16));
    EXPECT_EQ(info.transfer_syntax_uid, uid);
    EXPECT_TRUE(absl::StartsWith(info.transfer_syntax_name,
                                 "High-Throughput JPEG 2000"))
        << info.transfer_syntax_name;
  }
  J2kSource jp2 = Mono8(32, 16);
  jp2.jp2 = true;
  Builder builder;
  builder.Image(32, 16, 1, 8, 8, "MONOCHROME2");
  SaveJ2k(builder, Path("jp2.dcm"), {Encode(jp2)});
  EXPECT_EQ(ReadOk(Path("jp2.dcm"), 32, 16).pixels, Gradient8(32, 16));
}

TEST_F(DicomReaderTest, JpegTwoThousandCineLoopFramesSpanningFragments) {
  // Two fragments a frame and an empty offset table: frames are found by
  // their codestream's start.
  std::vector<std::string> frames;
  for (int value : {20, 120, 220}) {
    J2kSource source;
    source.width = 24;
    source.height = 16;
    source.samples.assign(24 * 16, value);
    frames.push_back(Encode(source));
  }
  Builder builder(UID_UltrasoundMultiframeImageStorage);
  builder.Image(24, 16, 1, 8, 8, "MONOCHROME2").Set(DCM_NumberOfFrames, "3");
  SaveJ2k(builder, Path("cine-j2k.dcm"), frames, EXS_JPEG2000LosslessOnly,
          nullptr, 2);
  for (int frame : {0, 1, 2}) {
    DicomImageInfo info;
    absl::StatusOr<GrayImage> image =
        ReadDicomGray(Path("cine-j2k.dcm"), &info, frame);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(info.frames, 3);
    EXPECT_EQ(info.frame_used, frame);
    EXPECT_EQ(
        image->pixels,
        std::vector<uint8_t>(24 * 16, static_cast<uint8_t>(20 + 100 * frame)));
  }
}

TEST_F(DicomReaderTest, JpegTwoThousandThatDisagreesWithTheHeaderIsRefused) {
  struct Case {
    const char* name;
    int columns, samples, bits_stored;
    Uint16 representation;
    const char* expected;
  };
  for (const Case& c : {
           Case{"size", 20, 1, 8, 0, "the DICOM header says 20x12"},
           Case{"samples", 16, 3, 8, 0, "Samples per Pixel 3"},
           Case{"precision", 16, 1, 6, 0, "Bits Stored 6"},
           Case{"sign", 16, 1, 8, 1, "Pixel Representation 1"},
       }) {
    SCOPED_TRACE(c.name);
    Builder builder;
    builder
        .Image(c.columns, 12, c.samples, 8, c.bits_stored,
               c.samples == 3 ? "RGB" : "MONOCHROME2")
        .SetU16(DCM_PixelRepresentation, c.representation);
    SaveJ2k(builder, Path("wrong.dcm"), {Encode(Mono8(16, 12))});
    absl::Status status = ReadError(Path("wrong.dcm"));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(status.message(), c.expected)) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "JPEG 2000")) << status;
  }
}

TEST_F(DicomReaderTest, TruncatedJpegTwoThousandIsAnError) {
  std::string codestream = Encode(Mono8(64, 64));
  for (size_t keep : {codestream.size() / 2, size_t{60}, size_t{10}}) {
    Builder builder;
    builder.Image(64, 64, 1, 8, 8, "MONOCHROME2");
    SaveJ2k(builder, Path("cut.dcm"),
            {codestream.substr(0, keep & ~size_t{1})});
    absl::Status status = ReadError(Path("cut.dcm"));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << keep;
    EXPECT_TRUE(absl::StrContains(status.message(), "JPEG 2000")) << status;
  }
}

// Red i * 257, green (255 - i) * 257, blue 0, as plain 16-bit tables or as
// segments: discrete and linear, and for blue an indirect copy of a linear
// segment.
void PutPalette(DcmDataset* ds, bool segmented) {
  const Uint16 descriptor[3] = {256, 0, 16};
  for (const DcmTagKey& tag : {DCM_RedPaletteColorLookupTableDescriptor,
                               DCM_GreenPaletteColorLookupTableDescriptor,
                               DCM_BluePaletteColorLookupTableDescriptor}) {
    auto* element = new DcmUnsignedShort(DcmTag(tag, EVR_US));
    ASSERT_TRUE(element->putUint16Array(descriptor, 3).good());
    ASSERT_TRUE(ds->insert(element, OFTrue).good());
  }
  if (segmented) {
    const std::vector<uint16_t> red = {0, 1, 0, 1, 255, 65535};
    const std::vector<uint16_t> green = {0, 1, 65535, 1, 255, 0};
    // The indirect segment's byte offset 6 is word 3: the linear segment.
    const std::vector<uint16_t> blue = {0, 1, 0, 1, 127, 0, 2,
                                        1, 6, 0, 0, 1,   0};
    for (const auto& [tag, table] :
         {std::pair{DCM_SegmentedRedPaletteColorLookupTableData, &red},
          std::pair{DCM_SegmentedGreenPaletteColorLookupTableData, &green},
          std::pair{DCM_SegmentedBluePaletteColorLookupTableData, &blue}}) {
      ASSERT_TRUE(ds->putAndInsertUint16Array(tag, table->data(), table->size())
                      .good());
    }
    return;
  }
  std::vector<uint16_t> red, green, blue(256, 0);
  for (int i = 0; i < 256; ++i) {
    red.push_back(static_cast<uint16_t>(i * 257));
    green.push_back(static_cast<uint16_t>((255 - i) * 257));
  }
  for (const auto& [tag, table] :
       {std::pair{DCM_RedPaletteColorLookupTableData, &red},
        std::pair{DCM_GreenPaletteColorLookupTableData, &green},
        std::pair{DCM_BluePaletteColorLookupTableData, &blue}}) {
    ASSERT_TRUE(
        ds->putAndInsertUint16Array(tag, table->data(), table->size()).good());
  }
}

TEST_F(DicomReaderTest, SegmentedPaletteEqualsItsPlainTable) {
  const std::vector<uint8_t> indices = Gradient8(20, 10);
  Builder plain;
  plain.Image(20, 10, 1, 8, 8, "PALETTE COLOR");
  PutPalette(plain.dataset(), false);
  plain.Pixels8(indices).Save(Path("plain.dcm"));
  Builder segmented;
  segmented.Image(20, 10, 1, 8, 8, "PALETTE COLOR");
  PutPalette(segmented.dataset(), true);
  segmented.Pixels8(indices).Save(Path("segmented.dcm"));
  // And as an old archive holds it: implicit VR, no meta header.
  segmented.SaveDatasetOnly(Path("segmented-bare.dcm"));

  const std::vector<uint8_t> expected =
      ReadOk(Path("plain.dcm"), 20, 10).pixels;
  EXPECT_EQ(ReadOk(Path("segmented.dcm"), 20, 10).pixels, expected);
  EXPECT_EQ(ReadOk(Path("segmented-bare.dcm"), 20, 10).pixels, expected);
}

TEST_F(DicomReaderTest, BrokenSegmentedPaletteSaysWhat) {
  Builder builder;
  builder.Image(20, 10, 1, 8, 8, "PALETTE COLOR");
  PutPalette(builder.dataset(), true);
  // Green now expands to 255 entries of the 256 the descriptor gives.
  const std::vector<uint16_t> short_green = {0, 1, 65535, 1, 254, 0};
  ASSERT_TRUE(builder.dataset()
                  ->putAndInsertUint16Array(
                      DCM_SegmentedGreenPaletteColorLookupTableData,
                      short_green.data(), short_green.size())
                  .good());
  builder.Pixels8(Gradient8(20, 10)).Save(Path("short.dcm"));
  absl::Status status = ReadError(Path("short.dcm"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "green palette")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "expands to 255")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "truncated")) << status;
}

TEST_F(DicomReaderTest, DataSetWithoutMetaHeaderIsRead) {
  const std::vector<uint8_t> pixels = Gradient8(24, 12);
  Builder builder;
  builder.Image(24, 12, 1, 8, 8, "MONOCHROME2").Pixels8(pixels);
  builder.SaveDatasetOnly(Path("bare-implicit.dcm"));
  builder.SaveDatasetOnly(Path("bare-explicit.dcm"), EXS_LittleEndianExplicit);
  for (const char* name : {"bare-implicit.dcm", "bare-explicit.dcm"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> bytes = ReadFileToString(Path(name));
    ASSERT_TRUE(bytes.ok());
    EXPECT_NE(bytes->substr(128, 4), "DICM");
    EXPECT_TRUE(LooksLikeDicom(*bytes));
    EXPECT_EQ(ReadOk(Path(name), 24, 12).pixels, pixels);
    absl::StatusOr<GrayImage> generic = ReadGrayImage(Path(name));
    ASSERT_TRUE(generic.ok()) << generic.status();
    EXPECT_EQ(generic->pixels, pixels);
  }
  // No false positives on the other formats.
  GrayImage gray{24, 12, pixels};
  ASSERT_TRUE(WritePng(Path("gray.png"), gray).ok());
  ASSERT_TRUE(WriteJpeg(Path("gray.jpg"), gray, 90).ok());
  for (const char* name : {"gray.png", "gray.jpg"}) {
    absl::StatusOr<std::string> bytes = ReadFileToString(Path(name));
    ASSERT_TRUE(bytes.ok());
    EXPECT_FALSE(LooksLikeDicom(*bytes)) << name;
  }
  EXPECT_FALSE(LooksLikeDicom("patient notes, not an image\n"));
  EXPECT_FALSE(LooksLikeDicom(std::string("\x08\x00\x05\x00\xff\xff\xff\x00",
                                          8)));  // longer than the bytes
}

TEST_F(DicomReaderTest, CompressedDataSetWithoutMetaHeaderSaysWhy) {
  Builder builder;
  builder.Image(16, 12, 1, 8, 8, "MONOCHROME2");
  ASSERT_TRUE(PutEncapsulatedFrames(builder.dataset(), EXS_JPEG2000,
                                    {Encode(Mono8(16, 12))}));
  // Encoded as explicit VR little endian with encapsulated pixel data.
  builder.SaveDatasetOnly(Path("bare-j2k.dcm"), EXS_JPEG2000);
  absl::Status status = ReadError(Path("bare-j2k.dcm"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "no file meta header"))
      << status;
}

TEST_F(DicomReaderTest, UndecodableSyntaxSaysWhatItIsAndWhatToDo) {
  Builder builder;
  builder.Image(16, 12, 3, 8, 8, "YBR_FULL_422");
  ASSERT_TRUE(PutEncapsulatedFrames(builder.dataset(), EXS_JPEG2000,
                                    {std::string(64, 'Z')}));
  ASSERT_TRUE(SaveDeclaring(builder.file(), Path("jxl.dcm"), EXS_JPEG2000,
                            "1.2.840.10008.1.2.4.110"));
  absl::Status status = ReadError(Path("jxl.dcm"));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  for (const char* part : {"JPEG XL", "1.2.840.10008.1.2.4.110", "YBR_FULL_422",
                           "3 sample(s) of 8 bits", "export"}) {
    EXPECT_TRUE(absl::StrContains(status.message(), part)) << part << status;
  }
}

std::vector<uint8_t> ConstantFrames(int width, int height, int frames) {
  std::vector<uint8_t> pixels;
  for (int f = 0; f < frames; ++f) {
    pixels.insert(pixels.end(), static_cast<size_t>(width) * height,
                  static_cast<uint8_t>(10 + 40 * f));
  }
  return pixels;
}

TEST_F(DicomReaderTest, ChosenFramesOfACineLoop) {
  Builder(UID_UltrasoundMultiframeImageStorage)
      .Image(8, 6, 1, 8, 8, "MONOCHROME2")
      .Set(DCM_NumberOfFrames, "5")
      .Pixels8(ConstantFrames(8, 6, 5))
      .Save(Path("cine5.dcm"));
  DicomImageInfo info;
  absl::StatusOr<GrayImage> third = ReadDicomGray(Path("cine5.dcm"), &info, 3);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ(third->pixels, std::vector<uint8_t>(48, 130));
  EXPECT_EQ(ReadDicomGray(Path("cine5.dcm"), nullptr, 5).status().code(),
            absl::StatusCode::kOutOfRange);

  auto visited = [this](FrameChoice choice) {
    std::vector<std::pair<int, int>> frames;  // index, value
    absl::Status status = ForEachGrayFrame(
        Path("cine5.dcm"), choice, [&frames](int frame, GrayImage image) {
          frames.emplace_back(frame, image.pixels.at(0));
          return absl::OkStatus();
        });
    EXPECT_TRUE(status.ok()) << status;
    return frames;
  };
  using Frames = std::vector<std::pair<int, int>>;
  EXPECT_EQ(visited({FrameChoice::kMiddle, 1}), (Frames{{2, 90}}));
  EXPECT_EQ(visited({FrameChoice::kEveryKth, 2}),
            (Frames{{0, 10}, {2, 90}, {4, 170}}));
  EXPECT_EQ(visited({FrameChoice::kAll, 1}),
            (Frames{{0, 10}, {1, 50}, {2, 90}, {3, 130}, {4, 170}}));
  // A single image is its one frame whatever the choice.
  ASSERT_TRUE(
      WritePng(Path("one.png"), GrayImage{4, 4, std::vector<uint8_t>(16, 7)})
          .ok());
  int calls = 0;
  ASSERT_TRUE(ForEachGrayFrame(Path("one.png"), {FrameChoice::kAll, 1},
                               [&calls](int frame, GrayImage) {
                                 EXPECT_EQ(frame, 0);
                                 ++calls;
                                 return absl::OkStatus();
                               })
                  .ok());
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace echofed
