#include "site-agent/data/dicom_reader.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrleerg.h"
#include "dcmtk/dcmdata/dcrlerp.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcvrus.h"
#include "dcmtk/dcmjpeg/djencode.h"
#include "dcmtk/dcmjpeg/djrplol.h"
#include "dcmtk/dcmjpeg/djrploss.h"
#include "dcmtk/dcmjpls/djencode.h"
#include "dcmtk/dcmjpls/djrparam.h"
#include "gtest/gtest.h"
#include "site-agent/data/image_io.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

// Written into every test object; must never show up in an error.
constexpr char kPatientName[] = "Doe^Janet";
constexpr char kPatientId[] = "PID-SECRET-4711";

// BT.601 luma, the weights the reader promises for colour input.
double Luma(double r, double g, double b) {
  return 0.299 * r + 0.587 * g + 0.114 * b;
}

std::string NewUid() {
  char uid[100];
  return dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
}

// A DICOM object under construction: identification, patient module and
// image pixel attributes, then pixel data.
class Builder {
 public:
  explicit Builder(const char* sop_class = UID_UltrasoundImageStorage,
                   const char* modality = "US") {
    DcmDataset* ds = file_.getDataset();
    ds->putAndInsertString(DCM_SOPClassUID, sop_class);
    ds->putAndInsertString(DCM_SOPInstanceUID, NewUid().c_str());
    ds->putAndInsertString(DCM_StudyInstanceUID, NewUid().c_str());
    ds->putAndInsertString(DCM_SeriesInstanceUID, NewUid().c_str());
    ds->putAndInsertString(DCM_Modality, modality);
    ds->putAndInsertString(DCM_PatientName, kPatientName);
    ds->putAndInsertString(DCM_PatientID, kPatientId);
  }

  Builder& Image(int columns, int rows, int samples, int bits_allocated,
                 int bits_stored, const char* photometric) {
    DcmDataset* ds = file_.getDataset();
    ds->putAndInsertUint16(DCM_Columns, static_cast<Uint16>(columns));
    ds->putAndInsertUint16(DCM_Rows, static_cast<Uint16>(rows));
    ds->putAndInsertUint16(DCM_SamplesPerPixel, static_cast<Uint16>(samples));
    ds->putAndInsertString(DCM_PhotometricInterpretation, photometric);
    ds->putAndInsertUint16(DCM_BitsAllocated,
                           static_cast<Uint16>(bits_allocated));
    ds->putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(bits_stored));
    ds->putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(bits_stored - 1));
    ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
    if (samples > 1) ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
    return *this;
  }
  Builder& Set(const DcmTagKey& key, const std::string& value) {
    EXPECT_TRUE(
        file_.getDataset()->putAndInsertString(key, value.c_str()).good());
    return *this;
  }
  Builder& SetU16(const DcmTagKey& key, Uint16 value) {
    EXPECT_TRUE(file_.getDataset()->putAndInsertUint16(key, value).good());
    return *this;
  }
  Builder& Pixels8(const std::vector<uint8_t>& pixels) {
    EXPECT_TRUE(file_.getDataset()
                    ->putAndInsertUint8Array(DCM_PixelData, pixels.data(),
                                             pixels.size())
                    .good());
    return *this;
  }
  Builder& Pixels16(const std::vector<uint16_t>& pixels) {
    EXPECT_TRUE(file_.getDataset()
                    ->putAndInsertUint16Array(DCM_PixelData, pixels.data(),
                                              pixels.size())
                    .good());
    return *this;
  }
  DcmDataset* dataset() { return file_.getDataset(); }

  // Writes the object in `xfer`, compressing it first when `xfer` is
  // encapsulated (the encoders are registered by the test suite).
  std::string Save(const std::string& path,
                   E_TransferSyntax xfer = EXS_LittleEndianExplicit,
                   const DcmRepresentationParameter* param = nullptr) {
    DcmDataset* ds = file_.getDataset();
    if (DcmXfer(xfer).isEncapsulated()) {
      OFCondition chosen = ds->chooseRepresentation(xfer, param);
      EXPECT_TRUE(chosen.good()) << chosen.text();
      EXPECT_TRUE(ds->canWriteXfer(xfer)) << DcmXfer(xfer).getXferName();
    }
    OFCondition saved = file_.saveFile(path.c_str(), xfer);
    EXPECT_TRUE(saved.good()) << path << ": " << saved.text();
    return path;
  }

 private:
  DcmFileFormat file_;
};

std::vector<uint8_t> Gradient8(int width, int height) {
  std::vector<uint8_t> pixels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      pixels.push_back(static_cast<uint8_t>((x * 4 + y * 2) % 256));
    }
  }
  return pixels;
}

// A smooth colour picture, so that lossy JPEG stays close to it.
struct Rgb {
  std::vector<uint8_t> r, g, b;
};
Rgb ColourPicture(int width, int height) {
  Rgb rgb;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      rgb.r.push_back(static_cast<uint8_t>(x * 255 / (width - 1)));
      rgb.g.push_back(static_cast<uint8_t>(y * 255 / (height - 1)));
      rgb.b.push_back(static_cast<uint8_t>(128 + (x - y) / 4));
    }
  }
  return rgb;
}

std::vector<uint8_t> Interleave(const Rgb& rgb) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i < rgb.r.size(); ++i) {
    out.insert(out.end(), {rgb.r[i], rgb.g[i], rgb.b[i]});
  }
  return out;
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

void ExpectNoIdentifiers(const absl::Status& status) {
  EXPECT_FALSE(absl::StrContains(status.message(), "Doe")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "Janet")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), kPatientId)) << status;
}

class DicomReaderTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    DJEncoderRegistration::registerCodecs();
    DJLSEncoderRegistration::registerCodecs();
    DcmRLEEncoderRegistration::registerCodecs();
  }

  std::string Path(const std::string& name) { return dir_.Join(name); }

  // Reads `path` and expects success with the given size.
  GrayImage ReadOk(const std::string& path, int width, int height,
                   DicomImageInfo* info = nullptr) {
    DicomImageInfo local;
    absl::StatusOr<GrayImage> image =
        ReadDicomGray(path, info != nullptr ? info : &local);
    EXPECT_TRUE(image.ok()) << image.status();
    if (!image.ok()) return GrayImage();
    EXPECT_EQ(image->width, width);
    EXPECT_EQ(image->height, height);
    EXPECT_EQ(image->pixels.size(), static_cast<size_t>(width) * height);
    return *image;
  }

  absl::Status ReadError(const std::string& path) {
    absl::StatusOr<GrayImage> image = ReadDicomGray(path);
    EXPECT_FALSE(image.ok()) << path << " decoded";
    if (image.ok()) return absl::OkStatus();
    ExpectNoIdentifiers(image.status());
    return image.status();
  }

  TempDir dir_;
};

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

TEST_F(DicomReaderTest, JpegTwoThousandIsUnimplementedAndNamed) {
  // Encapsulated pixel data of junk declared as JPEG 2000: the reader must
  // refuse it by transfer syntax, before any decoding is tried.
  Builder builder;
  builder.Image(16, 16, 1, 8, 8, "MONOCHROME2");
  auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
  sequence->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty offset table
  auto* fragment = new DcmPixelItem(DCM_PixelItemTag);
  const std::vector<uint8_t> junk(64, 0x5A);
  ASSERT_TRUE(fragment->putUint8Array(junk.data(), junk.size()).good());
  sequence->insert(fragment);
  auto* pixel_data = new DcmPixelData(DCM_PixelData);
  pixel_data->putOriginalRepresentation(EXS_JPEG2000, nullptr, sequence);
  ASSERT_TRUE(builder.dataset()->insert(pixel_data).good());
  builder.Save(Path("j2k.dcm"), EXS_JPEG2000);

  DicomImageInfo info;
  absl::StatusOr<GrayImage> image = ReadDicomGray(Path("j2k.dcm"), &info);
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(image.status().message(), "JPEG 2000"))
      << image.status();
  EXPECT_TRUE(
      absl::StrContains(image.status().message(), UID_JPEG2000TransferSyntax))
      << image.status();
  EXPECT_EQ(info.transfer_syntax_uid, UID_JPEG2000TransferSyntax);
  ExpectNoIdentifiers(image.status());
  // The generic entry point says the same.
  EXPECT_EQ(ReadGrayImage(Path("j2k.dcm")).status().code(),
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
