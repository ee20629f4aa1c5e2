#ifndef ECHOFED_TESTS_SITE_AGENT_DATA_DICOM_READER_TEST_FIXTURE_H_
#define ECHOFED_TESTS_SITE_AGENT_DATA_DICOM_READER_TEST_FIXTURE_H_

// DICOM objects built in the test, written in any transfer syntax DCMTK
// can encode, and read back with the reader, for the tests of
// site-agent/data/dicom_reader.h (site_agent_dicom_reader_test).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"
#include "tests/testing/fixtures.h"

namespace echofed::testing {

// Written into every test object; must never show up in an error.
inline constexpr char kPatientName[] = "Doe^Janet";
inline constexpr char kPatientId[] = "PID-SECRET-4711";

// A DICOM object under construction: identification, patient module and
// image pixel attributes, then pixel data.
class Builder {
 public:
  explicit Builder(const char* sop_class = UID_UltrasoundImageStorage,
                   const char* modality = "US");

  // The image pixel module: size, samples, bits and photometric
  // interpretation (unsigned; planar configuration 0 for colour).
  Builder& Image(int columns, int rows, int samples, int bits_allocated,
                 int bits_stored, const char* photometric);
  // One attribute, as a string or an unsigned short.
  Builder& Set(const DcmTagKey& key, const std::string& value);
  Builder& SetU16(const DcmTagKey& key, Uint16 value);
  // The pixel data, 8 or 16 bits a sample.
  Builder& Pixels8(const std::vector<uint8_t>& pixels);
  Builder& Pixels16(const std::vector<uint16_t>& pixels);
  DcmDataset* dataset() { return file_.getDataset(); }
  DcmFileFormat* file() { return &file_; }

  // Writes the object in `xfer`, compressing it first when `xfer` is
  // encapsulated (the encoders are registered by the test suite).
  std::string Save(const std::string& path,
                   E_TransferSyntax xfer = EXS_LittleEndianExplicit,
                   const DcmRepresentationParameter* param = nullptr);
  // Writes the bare data set, without preamble and file meta header, as
  // old archives hold them.
  std::string SaveDatasetOnly(const std::string& path,
                              E_TransferSyntax xfer = EXS_LittleEndianImplicit);

 private:
  DcmFileFormat file_;
};

// 8-bit values rising along x and y, wrapping at 256.
std::vector<uint8_t> Gradient8(int width, int height);

// A smooth colour picture, so that lossy JPEG stays close to it.
struct Rgb {
  std::vector<uint8_t> r, g, b;
};
Rgb ColourPicture(int width, int height);

// Its samples interleaved (planar configuration 0).
std::vector<uint8_t> Interleave(const Rgb& rgb);

// Expects that the error names neither the patient nor the patient ID.
void ExpectNoIdentifiers(const absl::Status& status);

// A temporary directory for the objects, and the reader called on them.
class DicomReaderTest : public ::testing::Test {
 protected:
  // Registers the encoders Builder::Save compresses with.
  static void SetUpTestSuite();

  std::string Path(const std::string& name) { return dir_.Join(name); }

  // Reads `path` and expects success with the given size.
  GrayImage ReadOk(const std::string& path, int width, int height,
                   DicomImageInfo* info = nullptr);

  // Reads `path` and expects an error that names neither the patient
  // nor the patient ID; returns it (OK if the file decoded).
  absl::Status ReadError(const std::string& path);

  TempDir dir_;
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_SITE_AGENT_DATA_DICOM_READER_TEST_FIXTURE_H_
