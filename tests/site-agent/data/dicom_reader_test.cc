// The DICOM reader (site-agent/data/dicom_reader.h) decoding what it
// supports: native and encapsulated (JPEG, JPEG-LS, RLE) pixel data, each
// photometric interpretation, multi-frame objects, pixel spacing, and the
// busi-sites benchmark's files.

#include "site-agent/data/dicom_reader.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcrlerp.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcvrus.h"
#include "dcmtk/dcmjpeg/djrplol.h"
#include "dcmtk/dcmjpeg/djrploss.h"
#include "dcmtk/dcmjpls/djrparam.h"
#include "gtest/gtest.h"
#include "site-agent/data/image_io.h"
#include "tests/site-agent/data/dicom_reader_test_fixture.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::Builder;
using ::echofed::testing::ColourPicture;
using ::echofed::testing::DicomReaderTest;
using ::echofed::testing::Gradient8;
using ::echofed::testing::Interleave;
using ::echofed::testing::Rgb;

// BT.601 luma, the weights the reader promises for colour input.
double Luma(double r, double g, double b) {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

std::vector<uint8_t> Planes(const Rgb& rgb) {
  std::vector<uint8_t> out = rgb.r;
  out.insert(out.end(), rgb.g.begin(), rgb.g.end());
  out.insert(out.end(), rgb.b.begin(), rgb.b.end());
  return out;
}

std::vector<uint8_t> ExpectedLuma(const Rgb& rgb) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < rgb.r.size(); ++i) {
    out.push_back(
        static_cast<uint8_t>(std::lround(Luma(rgb.r[i], rgb.g[i], rgb.b[i]))));
  }
  return out;
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

TEST_F(DicomReaderTest, Monochrome2EightBitIsTakenAsIs) {
  const std::vector<uint8_t> pixels = Gradient8(40, 30);
  Builder()
      .Image(40, 30, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("m2.dcm"));
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("m2.dcm"), 40, 30, &info);
  EXPECT_EQ(image.pixels, pixels);
  EXPECT_EQ(info.transfer_syntax_uid, UID_LittleEndianExplicitTransferSyntax);
  EXPECT_EQ(info.sop_class_uid, UID_UltrasoundImageStorage);
  EXPECT_EQ(info.modality, "US");
  EXPECT_EQ(info.photometric, "MONOCHROME2");
  EXPECT_EQ(info.rows, 30);
  EXPECT_EQ(info.columns, 40);
  EXPECT_EQ(info.frames, 1);
  EXPECT_EQ(info.frame_used, 0);
  EXPECT_FALSE(info.spacing_x_mm.has_value());
  EXPECT_FALSE(info.spacing_y_mm.has_value());
}

TEST_F(DicomReaderTest, ImplicitLittleEndianToo) {
  const std::vector<uint8_t> pixels = Gradient8(17, 9);  // odd length
  Builder()
      .Image(17, 9, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("implicit.dcm"), EXS_LittleEndianImplicit);
  EXPECT_EQ(ReadOk(Path("implicit.dcm"), 17, 9).pixels, pixels);
}

TEST_F(DicomReaderTest, Monochrome1IsInvertedSoBrightIsBright) {
  const std::vector<uint8_t> pixels = Gradient8(32, 16);
  Builder()
      .Image(32, 16, 1, 8, 8, "MONOCHROME1")
      .Pixels8(pixels)
      .Save(Path("m1.dcm"));
  GrayImage image = ReadOk(Path("m1.dcm"), 32, 16);
  ASSERT_EQ(image.pixels.size(), pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) {
    ASSERT_EQ(image.pixels[i], 255 - pixels[i]) << "pixel " << i;
  }
}

// 16-bit values from 1000 to 61000 along x.
std::vector<uint16_t> Ramp16(int width, int height) {
  std::vector<uint16_t> pixels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      pixels.push_back(static_cast<uint16_t>(1000 + x * 60000 / (width - 1)));
    }
  }
  return pixels;
}

TEST_F(DicomReaderTest, SixteenBitWithoutWindowUsesMinMax) {
  Builder()
      .Image(61, 4, 1, 16, 16, "MONOCHROME2")
      .Pixels16(Ramp16(61, 4))
      .Save(Path("m16.dcm"));
  GrayImage image = ReadOk(Path("m16.dcm"), 61, 4);
  ASSERT_EQ(image.pixels.size(), 61u * 4);
  for (int y = 0; y < 4; ++y) {
    EXPECT_EQ(image.pixels[y * 61], 0);
    EXPECT_EQ(image.pixels[y * 61 + 60], 255);
    EXPECT_NEAR(image.pixels[y * 61 + 30], 128, 1);
  }
  // Monotone along the ramp.
  for (int x = 1; x < 61; ++x) {
    EXPECT_GE(image.pixels[x], image.pixels[x - 1]);
  }
}

// The window from the file wins over min-max; also read in big endian, where
// a missed byte swap would scramble every value.
void CheckWindowed(const GrayImage& image, const std::vector<uint16_t>& raw) {
  constexpr double kCenter = 31000, kWidth = 20000;
  ASSERT_EQ(image.pixels.size(), raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const double x = raw[i];
    double expected;
    if (x <= kCenter - 0.5 - (kWidth - 1) / 2) {
      expected = 0;
    } else if (x > kCenter - 0.5 + (kWidth - 1) / 2) {
      expected = 255;
    } else {
      expected = ((x - (kCenter - 0.5)) / (kWidth - 1) + 0.5) * 255;
    }
    ASSERT_NEAR(image.pixels[i], expected, 1.01) << "raw value " << raw[i];
  }
}

TEST_F(DicomReaderTest, SixteenBitUsesTheFilesWindow) {
  const std::vector<uint16_t> raw = Ramp16(61, 4);
  Builder()
      .Image(61, 4, 1, 16, 16, "MONOCHROME2")
      .Set(DCM_WindowCenter, "31000")
      .Set(DCM_WindowWidth, "20000")
      .Pixels16(raw)
      .Save(Path("window.dcm"));
  CheckWindowed(ReadOk(Path("window.dcm"), 61, 4), raw);
}

TEST_F(DicomReaderTest, BigEndianExplicit) {
  const std::vector<uint16_t> raw = Ramp16(61, 4);
  Builder()
      .Image(61, 4, 1, 16, 16, "MONOCHROME2")
      .Set(DCM_WindowCenter, "31000")
      .Set(DCM_WindowWidth, "20000")
      .Pixels16(raw)
      .Save(Path("big.dcm"), EXS_BigEndianExplicit);
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("big.dcm"), 61, 4, &info);
  EXPECT_EQ(info.transfer_syntax_uid, UID_BigEndianExplicitTransferSyntax);
  CheckWindowed(image, raw);
}

TEST_F(DicomReaderTest, RgbBothPlanarConfigurations) {
  const Rgb rgb = ColourPicture(24, 12);
  const std::vector<uint8_t> expected = ExpectedLuma(rgb);
  Builder()
      .Image(24, 12, 3, 8, 8, "RGB")
      .Pixels8(Interleave(rgb))
      .Save(Path("rgb0.dcm"));
  Builder()
      .Image(24, 12, 3, 8, 8, "RGB")
      .SetU16(DCM_PlanarConfiguration, 1)
      .Pixels8(Planes(rgb))
      .Save(Path("rgb1.dcm"));
  GrayImage interleaved = ReadOk(Path("rgb0.dcm"), 24, 12);
  GrayImage planar = ReadOk(Path("rgb1.dcm"), 24, 12);
  EXPECT_LE(MaxAbsDiff(interleaved.pixels, expected), 1);
  EXPECT_EQ(planar.pixels, interleaved.pixels);
}

TEST_F(DicomReaderTest, PaletteColour) {
  // Index i maps to red i, green 255 - i, blue 0 (16-bit table entries).
  std::vector<uint16_t> red, green, blue;
  for (int i = 0; i < 256; ++i) {
    red.push_back(static_cast<uint16_t>(i * 257));
    green.push_back(static_cast<uint16_t>((255 - i) * 257));
    blue.push_back(0);
  }
  const Uint16 descriptor[3] = {256, 0, 16};
  const std::vector<uint8_t> indices = Gradient8(20, 10);
  Builder palette;
  palette.Image(20, 10, 1, 8, 8, "PALETTE COLOR");
  DcmDataset* ds = palette.dataset();
  for (const auto& [descriptor_tag, data_tag, table] :
       {std::tuple{DCM_RedPaletteColorLookupTableDescriptor,
                   DCM_RedPaletteColorLookupTableData, &red},
        std::tuple{DCM_GreenPaletteColorLookupTableDescriptor,
                   DCM_GreenPaletteColorLookupTableData, &green},
        std::tuple{DCM_BluePaletteColorLookupTableDescriptor,
                   DCM_BluePaletteColorLookupTableData, &blue}}) {
    // The dictionary gives the descriptors the ambiguous VR "US or SS",
    // which putAndInsertUint16 refuses; state US explicitly.
    auto* element = new DcmUnsignedShort(DcmTag(descriptor_tag, EVR_US));
    ASSERT_TRUE(element->putUint16Array(descriptor, 3).good());
    ASSERT_TRUE(ds->insert(element, OFTrue).good());
    ASSERT_TRUE(
        ds->putAndInsertUint16Array(data_tag, table->data(), table->size())
            .good());
  }
  palette.Pixels8(indices).Save(Path("palette.dcm"));
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("palette.dcm"), 20, 10, &info);
  EXPECT_EQ(info.photometric, "PALETTE COLOR");
  ASSERT_EQ(image.pixels.size(), indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    ASSERT_NEAR(image.pixels[i], Luma(indices[i], 255 - indices[i], 0), 2)
        << "index " << int{indices[i]};
  }
}

TEST_F(DicomReaderTest, YbrFull) {
  const Rgb rgb = ColourPicture(16, 16);
  std::vector<uint8_t> ybr;
  for (size_t i = 0; i < rgb.r.size(); ++i) {
    const double r = rgb.r[i], g = rgb.g[i], b = rgb.b[i];
    const double y = Luma(r, g, b);
    const double cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128;
    const double cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128;
    for (double v : {y, cb, cr}) {
      ybr.push_back(static_cast<uint8_t>(std::clamp(std::lround(v), 0L, 255L)));
    }
  }
  Builder()
      .Image(16, 16, 3, 8, 8, "YBR_FULL")
      .Pixels8(ybr)
      .Save(Path("ybr.dcm"));
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("ybr.dcm"), 16, 16, &info);
  EXPECT_EQ(info.photometric, "YBR_FULL");
  // YCbCr -> RGB -> luma comes back to Y up to rounding.
  EXPECT_LE(MaxAbsDiff(image.pixels, ExpectedLuma(rgb)), 2);
}

TEST_F(DicomReaderTest, JpegBaselineColourAsYbrFull422) {
  const Rgb rgb = ColourPicture(64, 48);
  DJ_RPLossy quality(95);
  Builder()
      .Image(64, 48, 3, 8, 8, "RGB")
      .Pixels8(Interleave(rgb))
      .Save(Path("jpeg.dcm"), EXS_JPEGProcess1, &quality);
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("jpeg.dcm"), 64, 48, &info);
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEGProcess1TransferSyntax);
  EXPECT_EQ(info.transfer_syntax_name, "JPEG Baseline");
  EXPECT_EQ(info.photometric, "YBR_FULL_422");  // as site-a stores it
  const std::vector<uint8_t> expected = ExpectedLuma(rgb);
  EXPECT_LT(MeanAbsDiff(image.pixels, expected), 2.0);
  EXPECT_LE(MaxAbsDiff(image.pixels, expected), 12);
}

TEST_F(DicomReaderTest, JpegBaselineMonochrome) {
  const std::vector<uint8_t> pixels = Gradient8(64, 32);
  DJ_RPLossy quality(95);
  Builder()
      .Image(64, 32, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("jpeg-mono.dcm"), EXS_JPEGProcess1, &quality);
  GrayImage image = ReadOk(Path("jpeg-mono.dcm"), 64, 32);
  EXPECT_LT(MeanAbsDiff(image.pixels, pixels), 3.0);
}

TEST_F(DicomReaderTest, JpegExtendedTwelveBit) {
  std::vector<uint16_t> raw;
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 64; ++x) raw.push_back(static_cast<uint16_t>(x * 64));
  }
  DJ_RPLossy quality(95);
  Builder()
      .Image(64, 32, 1, 16, 12, "MONOCHROME2")
      .Pixels16(raw)
      .Save(Path("jpeg12.dcm"), EXS_JPEGProcess2_4, &quality);
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("jpeg12.dcm"), 64, 32, &info);
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEGProcess2_4TransferSyntax);
  // No window in the file: min-max, so the ramp spans about 0..255.
  ASSERT_EQ(image.pixels.size(), raw.size());
  std::vector<uint8_t> expected;
  for (uint16_t v : raw) {
    expected.push_back(static_cast<uint8_t>(std::lround(v * 255.0 / 4032)));
  }
  EXPECT_LT(MeanAbsDiff(image.pixels, expected), 3.0);
}

TEST_F(DicomReaderTest, JpegLosslessIsExact) {
  const std::vector<uint8_t> pixels = Gradient8(48, 20);
  DJ_RPLossless lossless(1, 0);
  Builder()
      .Image(48, 20, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("jpeg-lossless.dcm"), EXS_JPEGProcess14SV1, &lossless);
  DicomImageInfo info;
  EXPECT_EQ(ReadOk(Path("jpeg-lossless.dcm"), 48, 20, &info).pixels, pixels);
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEGProcess14SV1TransferSyntax);
}

TEST_F(DicomReaderTest, JpegLsIsExact) {
  const std::vector<uint8_t> pixels = Gradient8(48, 20);
  DJLSRepresentationParameter lossless(0, OFTrue);
  Builder()
      .Image(48, 20, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("jls.dcm"), EXS_JPEGLSLossless, &lossless);
  DicomImageInfo info;
  EXPECT_EQ(ReadOk(Path("jls.dcm"), 48, 20, &info).pixels, pixels);
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEGLSLosslessTransferSyntax);
}

TEST_F(DicomReaderTest, RleIsExact) {
  const std::vector<uint8_t> pixels = Gradient8(48, 20);
  DcmRLERepresentationParameter rle;
  Builder()
      .Image(48, 20, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("rle.dcm"), EXS_RLELossless, &rle);
  DicomImageInfo info;
  EXPECT_EQ(ReadOk(Path("rle.dcm"), 48, 20, &info).pixels, pixels);
  EXPECT_EQ(info.transfer_syntax_uid, UID_RLELosslessTransferSyntax);
}

// Frames of constant values: the decoded image tells which frame was used.
std::vector<uint8_t> ConstantFrames(int width, int height,
                                    const std::vector<uint8_t>& values) {
  std::vector<uint8_t> pixels;
  for (uint8_t value : values) {
    pixels.insert(pixels.end(), static_cast<size_t>(width) * height, value);
  }
  return pixels;
}

TEST_F(DicomReaderTest, MultiFrameUsesTheMiddleFrame) {
  Builder(UID_UltrasoundMultiframeImageStorage)
      .Image(16, 8, 1, 8, 8, "MONOCHROME2")
      .Set(DCM_NumberOfFrames, "3")
      .Pixels8(ConstantFrames(16, 8, {10, 100, 200}))
      .Save(Path("cine.dcm"));
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("cine.dcm"), 16, 8, &info);
  EXPECT_EQ(info.frames, 3);
  EXPECT_EQ(info.frame_used, 1);
  EXPECT_EQ(image.pixels, std::vector<uint8_t>(16 * 8, 100));
}

TEST_F(DicomReaderTest, CompressedMultiFrameDecodesTheMiddleFrame) {
  DcmRLERepresentationParameter rle;
  Builder(UID_UltrasoundMultiframeImageStorage)
      .Image(16, 8, 1, 8, 8, "MONOCHROME2")
      .Set(DCM_NumberOfFrames, "4")
      .Pixels8(ConstantFrames(16, 8, {10, 50, 90, 130}))
      .Save(Path("cine-rle.dcm"), EXS_RLELossless, &rle);
  DicomImageInfo info;
  GrayImage image = ReadOk(Path("cine-rle.dcm"), 16, 8, &info);
  EXPECT_EQ(info.frames, 4);
  EXPECT_EQ(info.frame_used, 2);
  EXPECT_EQ(image.pixels, std::vector<uint8_t>(16 * 8, 90));
}

TEST_F(DicomReaderTest, UltrasoundRegionSpacingPrefersTheTwoDRegion) {
  Builder builder;
  builder.Image(16, 16, 1, 8, 8, "MONOCHROME2").Pixels8(Gradient8(16, 16));
  DcmDataset* ds = builder.dataset();
  // A Doppler strip first (spatial format 3), then the 2D tissue region.
  for (const auto& [format, dx_cm, dy_cm] :
       {std::tuple<Uint16, double, double>{3, 0.5, 0.5},
        std::tuple<Uint16, double, double>{1, 0.015, 0.02}}) {
    DcmItem* region = nullptr;
    ASSERT_TRUE(ds->findOrCreateSequenceItem(DCM_SequenceOfUltrasoundRegions,
                                             region, -2)
                    .good());
    region->putAndInsertUint16(DCM_RegionSpatialFormat, format);
    region->putAndInsertUint16(DCM_PhysicalUnitsXDirection, 3);
    region->putAndInsertUint16(DCM_PhysicalUnitsYDirection, 3);
    region->putAndInsertFloat64(DCM_PhysicalDeltaX, dx_cm);
    region->putAndInsertFloat64(DCM_PhysicalDeltaY, dy_cm);
  }
  builder.Save(Path("regions.dcm"));
  DicomImageInfo info;
  ReadOk(Path("regions.dcm"), 16, 16, &info);
  ASSERT_TRUE(info.spacing_x_mm.has_value());
  ASSERT_TRUE(info.spacing_y_mm.has_value());
  EXPECT_NEAR(*info.spacing_x_mm, 0.15, 1e-9);
  EXPECT_NEAR(*info.spacing_y_mm, 0.2, 1e-9);
}

TEST_F(DicomReaderTest, DecodeGrayImageDispatchesOnContent) {
  const std::vector<uint8_t> pixels = Gradient8(20, 10);
  // No .dcm suffix: content decides.
  Builder()
      .Image(20, 10, 1, 8, 8, "MONOCHROME2")
      .Pixels8(pixels)
      .Save(Path("scan.bin"));
  absl::StatusOr<GrayImage> image = ReadGrayImage(Path("scan.bin"));
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->pixels, pixels);
  absl::StatusOr<std::string> bytes = ReadFileToString(Path("scan.bin"));
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(LooksLikeDicom(*bytes));
  EXPECT_FALSE(LooksLikeDicom(bytes->substr(0, 131)));
  EXPECT_FALSE(LooksLikeDicom(std::string(200, 'x')));
}

// The busi-sites benchmark beside the source tree: every DICOM image of
// site-a (JPEG baseline, YBR_FULL_422, calibrated regions, 256x256) and
// site-c (uncompressed MONOCHROME2, 320x320) must decode.
struct SiteExpectation {
  const char* site;
  int side;
  const char* transfer_syntax;
  const char* photometric;
  bool calibrated;
  size_t images;
};

void DecodeWholeSite(const std::string& root, const SiteExpectation& want) {
  const std::string site_dir = absl::StrCat(root, "/", want.site);
  absl::StatusOr<std::string> manifest =
      ReadFileToString(site_dir + "/manifest.csv");
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  size_t decoded = 0;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(*manifest, '\n')) {
    if (header) {
      header = false;
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    std::vector<std::string> fields = absl::StrSplit(line, ',');
    ASSERT_EQ(fields.size(), 3u) << line;
    const std::string path = absl::StrCat(site_dir, "/", fields[1]);
    DicomImageInfo info;
    absl::StatusOr<GrayImage> image = ReadDicomGray(path, &info);
    ASSERT_TRUE(image.ok()) << image.status();
    EXPECT_EQ(image->width, want.side) << path;
    EXPECT_EQ(image->height, want.side) << path;
    EXPECT_EQ(info.transfer_syntax_uid, want.transfer_syntax) << path;
    EXPECT_EQ(info.photometric, want.photometric) << path;
    if (want.calibrated) {
      EXPECT_TRUE(info.spacing_x_mm.has_value()) << path;
      EXPECT_TRUE(info.spacing_y_mm.has_value()) << path;
      for (const std::optional<double>& mm :
           {info.spacing_x_mm, info.spacing_y_mm}) {
        if (!mm) continue;
        EXPECT_GT(*mm, 0.0) << path;
        EXPECT_LT(*mm, 5.0) << path;  // mm per pixel, not cm
      }
    }
    const auto [low, high] =
        std::minmax_element(image->pixels.begin(), image->pixels.end());
    EXPECT_LT(*low, *high) << path << " decoded to a flat image";
    ++decoded;
  }
  EXPECT_EQ(decoded, want.images);
}

TEST(DicomReaderRealDataTest, EveryBusiSiteImageDecodes) {
  const std::string root = testing::BusiSitesDir();
  if (root.empty()) {
    GTEST_SKIP() << "busi-sites benchmark not found beside the source tree "
                    "(../shared/data/busi-sites); set ECHOFED_SOURCE_DIR";
  }
  DecodeWholeSite(root, {"site-a", 256, UID_JPEGProcess1TransferSyntax,
                         "YBR_FULL_422", true, 276});
  DecodeWholeSite(root, {"site-c", 320, UID_LittleEndianExplicitTransferSyntax,
                         "MONOCHROME2", false, 157});
}

}  // namespace
}  // namespace echofed
