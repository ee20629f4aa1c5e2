#include "tests/site-agent/data/dicom_reader_test_fixture.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcrleerg.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmjpeg/djencode.h"
#include "dcmtk/dcmjpls/djencode.h"

namespace echofed::testing {
namespace {

std::string NewUid() {
  char uid[100];
  return dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
}

}  // namespace

Builder::Builder(const char* sop_class, const char* modality) {
  DcmDataset* ds = file_.getDataset();
  ds->putAndInsertString(DCM_SOPClassUID, sop_class);
  ds->putAndInsertString(DCM_SOPInstanceUID, NewUid().c_str());
  ds->putAndInsertString(DCM_StudyInstanceUID, NewUid().c_str());
  ds->putAndInsertString(DCM_SeriesInstanceUID, NewUid().c_str());
  ds->putAndInsertString(DCM_Modality, modality);
  ds->putAndInsertString(DCM_PatientName, kPatientName);
  ds->putAndInsertString(DCM_PatientID, kPatientId);
}

Builder& Builder::Image(int columns, int rows, int samples, int bits_allocated,
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

Builder& Builder::Set(const DcmTagKey& key, const std::string& value) {
  EXPECT_TRUE(
      file_.getDataset()->putAndInsertString(key, value.c_str()).good());
  return *this;
}

Builder& Builder::SetU16(const DcmTagKey& key, Uint16 value) {
  EXPECT_TRUE(file_.getDataset()->putAndInsertUint16(key, value).good());
  return *this;
}

Builder& Builder::Pixels8(const std::vector<uint8_t>& pixels) {
  EXPECT_TRUE(
      file_.getDataset()
          ->putAndInsertUint8Array(DCM_PixelData, pixels.data(), pixels.size())
          .good());
  return *this;
}

Builder& Builder::Pixels16(const std::vector<uint16_t>& pixels) {
  EXPECT_TRUE(
      file_.getDataset()
          ->putAndInsertUint16Array(DCM_PixelData, pixels.data(), pixels.size())
          .good());
  return *this;
}

std::string Builder::Save(const std::string& path, E_TransferSyntax xfer,
                          const DcmRepresentationParameter* param) {
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

std::string Builder::SaveDatasetOnly(const std::string& path,
                                     E_TransferSyntax xfer) {
  OFCondition saved = file_.getDataset()->saveFile(path.c_str(), xfer);
  EXPECT_TRUE(saved.good()) << path << ": " << saved.text();
  return path;
}

std::vector<uint8_t> Gradient8(int width, int height) {
  std::vector<uint8_t> pixels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      pixels.push_back(static_cast<uint8_t>((x * 4 + y * 2) % 256));
    }
  }
  return pixels;
}

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

void ExpectNoIdentifiers(const absl::Status& status) {
  EXPECT_FALSE(absl::StrContains(status.message(), "Doe")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "Janet")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), kPatientId)) << status;
}

void DicomReaderTest::SetUpTestSuite() {
  DJEncoderRegistration::registerCodecs();
  DJLSEncoderRegistration::registerCodecs();
  DcmRLEEncoderRegistration::registerCodecs();
}

GrayImage DicomReaderTest::ReadOk(const std::string& path, int width,
                                  int height, DicomImageInfo* info) {
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

absl::Status DicomReaderTest::ReadError(const std::string& path) {
  absl::StatusOr<GrayImage> image = ReadDicomGray(path);
  EXPECT_FALSE(image.ok()) << path << " decoded";
  if (image.ok()) return absl::OkStatus();
  ExpectNoIdentifiers(image.status());
  return image.status();
}

}  // namespace echofed::testing
