// Writes the binary seed corpora for the image fuzzers: small DICOM objects
// in every transfer syntax and photometric interpretation the reader
// supports (JPEG 2000 encoded with OpenJPEG), bare JPEG 2000 codestreams,
// segmented palette tables, and PNG / JPEG files in the variants libpng and
// libjpeg-turbo take different paths for. The seeds are generated rather than
// committed so that no real image can ever end up in the repository, and so
// that they follow the DCMTK and codec versions of the machine that runs the
// fuzzers.
//
// Usage: fuzz_seed_writer OUT_DIR  (writes OUT_DIR/dicom, OUT_DIR/image,
// OUT_DIR/j2k and OUT_DIR/segmented_lut)

#include <png.h>
#include <turbojpeg.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcrleerg.h"
#include "dcmtk/dcmdata/dcrlerp.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcvrus.h"
#include "dcmtk/dcmjpeg/djencode.h"
#include "dcmtk/dcmjpeg/djrplol.h"
#include "dcmtk/dcmjpeg/djrploss.h"
#include "dcmtk/dcmjpls/djencode.h"
#include "dcmtk/dcmjpls/djrparam.h"
#include "dcmtk/oflog/oflog.h"
#include "site-agent/data/image_io.h"
#include "tests/testing/j2k_encoder.h"

namespace echofed {
namespace {

// Small on purpose: libFuzzer mutates faster the shorter an input is, and
// the decoders' code paths do not depend on size beyond a few blocks.
constexpr int kWidth = 16;
constexpr int kHeight = 12;

// Every failure is fatal: a missing seed would silently weaken the run.
void Check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_seed_writer: %s\n", what.c_str());
    std::exit(1);
  }
}

std::vector<uint8_t> Gradient(int width, int height, int samples) {
  std::vector<uint8_t> pixels;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      for (int s = 0; s < samples; ++s) {
        pixels.push_back(static_cast<uint8_t>(x * 13 + y * 7 + s * 60));
      }
    }
  }
  return pixels;
}

// A DICOM object under construction. The identifiers are invented and
// marked as such; the reader must never need them.
class DicomSeed {
 public:
  explicit DicomSeed(const char* sop_class = UID_UltrasoundImageStorage) {
    DcmDataset* ds = file_.getDataset();
    ds->putAndInsertString(DCM_SOPClassUID, sop_class);
    ds->putAndInsertString(DCM_SOPInstanceUID, "1.2.826.0.1.3680043.2.1143.1");
    ds->putAndInsertString(DCM_Modality, "US");
    ds->putAndInsertString(DCM_PatientName, "Fuzz^Seed");
    ds->putAndInsertString(DCM_PatientID, "FUZZ-0001");
  }

  DicomSeed& Image(int samples, int bits_allocated, int bits_stored,
                   const char* photometric) {
    DcmDataset* ds = file_.getDataset();
    ds->putAndInsertUint16(DCM_Columns, kWidth);
    ds->putAndInsertUint16(DCM_Rows, kHeight);
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
  DicomSeed& Set(const DcmTagKey& key, const char* value) {
    Check(file_.getDataset()->putAndInsertString(key, value).good(),
          "cannot set a DICOM string");
    return *this;
  }
  DicomSeed& SetU16(const DcmTagKey& key, Uint16 value) {
    Check(file_.getDataset()->putAndInsertUint16(key, value).good(),
          "cannot set a DICOM US value");
    return *this;
  }
  DicomSeed& Pixels8(const std::vector<uint8_t>& pixels) {
    Check(file_.getDataset()
              ->putAndInsertUint8Array(DCM_PixelData, pixels.data(),
                                       pixels.size())
              .good(),
          "cannot set 8-bit pixel data");
    return *this;
  }
  DicomSeed& Pixels16(const std::vector<uint16_t>& pixels) {
    Check(file_.getDataset()
              ->putAndInsertUint16Array(DCM_PixelData, pixels.data(),
                                        pixels.size())
              .good(),
          "cannot set 16-bit pixel data");
    return *this;
  }
  DcmDataset* dataset() { return file_.getDataset(); }
  DcmFileFormat* file() { return &file_; }

  // The bare data set, without preamble and meta header.
  void SaveDatasetOnly(const std::string& path, E_TransferSyntax xfer) {
    const OFCondition saved = file_.getDataset()->saveFile(path.c_str(), xfer);
    Check(saved.good(), absl::StrCat(path, ": ", saved.text()));
  }

  // Compresses first when `xfer` is encapsulated.
  void Save(const std::string& path,
            E_TransferSyntax xfer = EXS_LittleEndianExplicit,
            const DcmRepresentationParameter* param = nullptr) {
    DcmDataset* ds = file_.getDataset();
    if (DcmXfer(xfer).isEncapsulated()) {
      Check(
          ds->chooseRepresentation(xfer, param).good() &&
              ds->canWriteXfer(xfer),
          absl::StrCat(path, ": cannot encode ", DcmXfer(xfer).getXferName()));
    }
    const OFCondition saved = file_.saveFile(path.c_str(), xfer);
    Check(saved.good(), absl::StrCat(path, ": ", saved.text()));
  }

 private:
  DcmFileFormat file_;
};

void WriteDicomSeeds(const std::string& dir) {
  auto path = [&dir](const char* name) { return dir + "/" + name; };
  const std::vector<uint8_t> mono = Gradient(kWidth, kHeight, 1);
  const std::vector<uint8_t> rgb = Gradient(kWidth, kHeight, 3);
  std::vector<uint16_t> mono12;
  for (uint8_t value : mono)
    mono12.push_back(static_cast<uint16_t>(value * 16));

  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("mono8-explicit.dcm"));
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("mono8-implicit.dcm"), EXS_LittleEndianImplicit);
  DicomSeed()
      .Image(1, 16, 12, "MONOCHROME2")
      .Pixels16(mono12)
      .Save(path("mono12-bigendian.dcm"), EXS_BigEndianExplicit);
  DicomSeed()
      .Image(1, 16, 12, "MONOCHROME2")
      .Set(DCM_WindowCenter, "2048")
      .Set(DCM_WindowWidth, "4096")
      .Pixels16(mono12)
      .Save(path("mono12-window.dcm"));
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME1")
      .Pixels8(mono)
      .Save(path("monochrome1.dcm"));
  DicomSeed().Image(3, 8, 8, "RGB").Pixels8(rgb).Save(path("rgb.dcm"));
  DicomSeed()
      .Image(3, 8, 8, "RGB")
      .SetU16(DCM_PlanarConfiguration, 1)
      .Pixels8(rgb)
      .Save(path("rgb-planar.dcm"));
  DicomSeed()
      .Image(3, 8, 8, "YBR_FULL")
      .Pixels8(rgb)
      .Save(path("ybr-full.dcm"));
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("deflated.dcm"), EXS_DeflatedLittleEndianExplicit);

  {
    DicomSeed palette;
    palette.Image(1, 8, 8, "PALETTE COLOR");
    std::vector<uint16_t> red, green, blue;
    for (int i = 0; i < 256; ++i) {
      red.push_back(static_cast<uint16_t>(i * 257));
      green.push_back(static_cast<uint16_t>((255 - i) * 257));
      blue.push_back(0);
    }
    const Uint16 descriptor[3] = {256, 0, 16};
    DcmDataset* ds = palette.dataset();
    for (const auto& [descriptor_tag, data_tag, table] :
         {std::tuple{DCM_RedPaletteColorLookupTableDescriptor,
                     DCM_RedPaletteColorLookupTableData, &red},
          std::tuple{DCM_GreenPaletteColorLookupTableDescriptor,
                     DCM_GreenPaletteColorLookupTableData, &green},
          std::tuple{DCM_BluePaletteColorLookupTableDescriptor,
                     DCM_BluePaletteColorLookupTableData, &blue}}) {
      // The dictionary's VR for descriptors is "US or SS", which
      // putAndInsertUint16 refuses.
      auto* element = new DcmUnsignedShort(DcmTag(descriptor_tag, EVR_US));
      Check(element->putUint16Array(descriptor, 3).good() &&
                ds->insert(element, OFTrue).good() &&
                ds->putAndInsertUint16Array(data_tag, table->data(),
                                            table->size())
                    .good(),
            "cannot write a palette");
    }
    palette.Pixels8(mono).Save(path("palette.dcm"));
  }

  DicomSeed(UID_UltrasoundMultiframeImageStorage)
      .Image(1, 8, 8, "MONOCHROME2")
      .Set(DCM_NumberOfFrames, "3")
      .Pixels8(Gradient(kWidth, kHeight * 3, 1))
      .Save(path("multiframe.dcm"));

  {
    // Sequence of Ultrasound Regions: one Doppler strip, one 2D region.
    DicomSeed regions;
    regions.Image(1, 8, 8, "MONOCHROME2").Pixels8(mono);
    for (const Uint16 format : {Uint16{3}, Uint16{1}}) {
      DcmItem* region = nullptr;
      Check(regions.dataset()
                ->findOrCreateSequenceItem(DCM_SequenceOfUltrasoundRegions,
                                           region, -2)
                .good(),
            "cannot add an ultrasound region");
      region->putAndInsertUint16(DCM_RegionSpatialFormat, format);
      region->putAndInsertUint16(DCM_PhysicalUnitsXDirection, 3);
      region->putAndInsertUint16(DCM_PhysicalUnitsYDirection, 3);
      region->putAndInsertFloat64(DCM_PhysicalDeltaX, 0.01);
      region->putAndInsertFloat64(DCM_PhysicalDeltaY, 0.02);
    }
    regions.Save(path("us-regions.dcm"));
  }

  DJ_RPLossy lossy(90);
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("jpeg-baseline.dcm"), EXS_JPEGProcess1, &lossy);
  DicomSeed()
      .Image(3, 8, 8, "RGB")
      .Pixels8(rgb)
      .Save(path("jpeg-baseline-colour.dcm"), EXS_JPEGProcess1, &lossy);
  DicomSeed()
      .Image(1, 16, 12, "MONOCHROME2")
      .Pixels16(mono12)
      .Save(path("jpeg-extended12.dcm"), EXS_JPEGProcess2_4, &lossy);
  DJ_RPLossless lossless(1, 0);
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("jpeg-lossless.dcm"), EXS_JPEGProcess14SV1, &lossless);
  DJLSRepresentationParameter jpeg_ls(0, OFTrue);
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("jpeg-ls.dcm"), EXS_JPEGLSLossless, &jpeg_ls);
  DcmRLERepresentationParameter rle;
  DicomSeed()
      .Image(1, 8, 8, "MONOCHROME2")
      .Pixels8(mono)
      .Save(path("rle.dcm"), EXS_RLELossless, &rle);
  DicomSeed(UID_UltrasoundMultiframeImageStorage)
      .Image(1, 8, 8, "MONOCHROME2")
      .Set(DCM_NumberOfFrames, "2")
      .Pixels8(Gradient(kWidth, kHeight * 2, 1))
      .Save(path("rle-multiframe.dcm"), EXS_RLELossless, &rle);

  // Not an image: the reader must say so rather than decode.
  DicomSeed(UID_BasicTextSRStorage)
      .Set(DCM_Modality, "SR")
      .Save(path("structured-report.dcm"));

  // Pixel Data whose length field claims almost 4 GiB: DCMTK used to
  // allocate that much for a 1 KiB file (see MemoryInputStream in
  // site-agent/data/dicom_reader.cc). Kept as a seed so that every run checks
  // it.
  absl::StatusOr<std::string> bytes =
      ReadFileToString(path("mono8-explicit.dcm"));
  Check(bytes.ok(), "cannot read back mono8-explicit.dcm");
  const std::string pixel_data("\xe0\x7f\x10\x00OB\x00\x00", 8);
  const size_t at = bytes->rfind(pixel_data);
  Check(at != std::string::npos, "no Pixel Data in mono8-explicit.dcm");
  bytes->replace(at + pixel_data.size(), 4, "\xf0\xff\xff\xff", 4);
  Check(WriteFileAtomically(path("overlong-length.dcm"), *bytes).ok(),
        "cannot write overlong-length.dcm");
}

std::string J2k(int components, int precision, bool is_signed, bool lossy,
                bool jp2 = false) {
  testing::J2kSource source;
  source.width = kWidth;
  source.height = kHeight;
  source.components = components;
  source.precision = precision;
  source.is_signed = is_signed;
  source.lossy = lossy;
  source.jp2 = jp2;
  const int offset = is_signed ? 1 << (precision - 1) : 0;
  for (uint8_t value : Gradient(kWidth, kHeight, components)) {
    source.samples.push_back(
        static_cast<int32_t>(value) * ((1 << precision) - 1) / 255 - offset);
  }
  std::string error;
  std::string codestream = testing::EncodeJ2k(source, &error);
  Check(!codestream.empty(), "OpenJPEG: " + error);
  return codestream;
}

// Segmented red, green and blue tables of 256 entries: discrete, linear and
// an indirect copy.
void PutSegmentedPalette(DcmDataset* ds) {
  const Uint16 descriptor[3] = {256, 0, 16};
  const std::vector<uint16_t> red = {0, 1, 0, 1, 255, 65535};
  const std::vector<uint16_t> green = {0, 1, 65535, 1, 255, 0};
  const std::vector<uint16_t> blue = {0, 1, 0, 1, 127, 0, 2, 1, 6, 0, 0, 1, 0};
  for (const auto& [descriptor_tag, data_tag, table] :
       {std::tuple{DCM_RedPaletteColorLookupTableDescriptor,
                   DCM_SegmentedRedPaletteColorLookupTableData, &red},
        std::tuple{DCM_GreenPaletteColorLookupTableDescriptor,
                   DCM_SegmentedGreenPaletteColorLookupTableData, &green},
        std::tuple{DCM_BluePaletteColorLookupTableDescriptor,
                   DCM_SegmentedBluePaletteColorLookupTableData, &blue}}) {
    auto* element = new DcmUnsignedShort(DcmTag(descriptor_tag, EVR_US));
    Check(
        element->putUint16Array(descriptor, 3).good() &&
            ds->insert(element, OFTrue).good() &&
            ds->putAndInsertUint16Array(data_tag, table->data(), table->size())
                .good(),
        "cannot write a segmented palette");
  }
}

// JPEG 2000 and HTJ2K objects, bare codestreams, a segmented palette and
// data sets without a meta header.
void WriteNewEncodingSeeds(const std::string& dicom_dir,
                           const std::string& j2k_dir,
                           const std::string& lut_dir) {
  auto dicom = [&dicom_dir](const char* name) {
    return dicom_dir + "/" + name;
  };
  auto write = [](const std::string& path, const std::string& bytes) {
    Check(WriteFileAtomically(path, bytes).ok(), "cannot write " + path);
  };
  const std::string mono = J2k(1, 8, false, false);
  const std::string colour = J2k(3, 8, false, true);
  const std::string signed12 = J2k(1, 12, true, false);
  write(j2k_dir + "/mono8.j2k", mono);
  write(j2k_dir + "/rgb-ict.j2k", colour);
  write(j2k_dir + "/signed12.j2k", signed12);
  write(j2k_dir + "/mono8.jp2", J2k(1, 8, false, false, true));

  struct Object {
    const char* name;
    int samples, bits_allocated, bits_stored;
    Uint16 representation;
    const char* photometric;
    std::vector<std::string> frames;
    E_TransferSyntax xfer;
    const char* declared_uid;  // null: the syntax's own
  };
  for (const Object& o : {
           Object{"j2k-lossless.dcm",
                  1,
                  8,
                  8,
                  0,
                  "MONOCHROME2",
                  {mono},
                  EXS_JPEG2000LosslessOnly,
                  nullptr},
           Object{"j2k-ybr-ict.dcm",
                  3,
                  8,
                  8,
                  0,
                  "YBR_ICT",
                  {colour},
                  EXS_JPEG2000,
                  nullptr},
           Object{"j2k-signed12.dcm",
                  1,
                  16,
                  12,
                  1,
                  "MONOCHROME2",
                  {signed12},
                  EXS_JPEG2000LosslessOnly,
                  nullptr},
           Object{"htj2k.dcm",
                  1,
                  8,
                  8,
                  0,
                  "MONOCHROME2",
                  {mono},
                  EXS_JPEG2000LosslessOnly,
                  "1.2.840.10008.1.2.4.201"},
           Object{"j2k-multiframe.dcm",
                  1,
                  8,
                  8,
                  0,
                  "MONOCHROME2",
                  {mono, mono},
                  EXS_JPEG2000LosslessOnly,
                  nullptr},
       }) {
    DicomSeed seed(o.frames.size() > 1 ? UID_UltrasoundMultiframeImageStorage
                                       : UID_UltrasoundImageStorage);
    seed.Image(o.samples, o.bits_allocated, o.bits_stored, o.photometric)
        .SetU16(DCM_PixelRepresentation, o.representation);
    if (o.frames.size() > 1) {
      seed.Set(DCM_NumberOfFrames, std::to_string(o.frames.size()).c_str());
    }
    Check(testing::PutEncapsulatedFrames(seed.dataset(), o.xfer, o.frames),
          absl::StrCat(o.name, ": cannot encapsulate"));
    if (o.declared_uid == nullptr) {
      seed.Save(dicom(o.name), o.xfer);
    } else {
      Check(testing::SaveDeclaring(seed.file(), dicom(o.name), o.xfer,
                                   o.declared_uid),
            absl::StrCat(o.name, ": cannot save"));
    }
  }

  DicomSeed segmented;
  segmented.Image(1, 8, 8, "PALETTE COLOR");
  PutSegmentedPalette(segmented.dataset());
  segmented.Pixels8(Gradient(kWidth, kHeight, 1));
  segmented.Save(dicom("palette-segmented.dcm"));
  segmented.SaveDatasetOnly(dicom("bare-palette-segmented.dcm"),
                            EXS_LittleEndianImplicit);
  DicomSeed bare;
  bare.Image(1, 8, 8, "MONOCHROME2").Pixels8(Gradient(kWidth, kHeight, 1));
  bare.SaveDatasetOnly(dicom("bare-implicit.dcm"), EXS_LittleEndianImplicit);
  bare.SaveDatasetOnly(dicom("bare-explicit.dcm"), EXS_LittleEndianExplicit);

  // segmented_lut_fuzz's input: the value size (odd: 16 bits), the entry
  // count (little endian), then the data.
  auto lut_seed = [](int value_bytes, uint16_t entries,
                     const std::vector<uint16_t>& values) {
    std::string bytes = {static_cast<char>(value_bytes == 2 ? 1 : 0),
                         static_cast<char>(entries & 0xFF),
                         static_cast<char>(entries >> 8)};
    for (uint16_t value : values) {
      bytes.push_back(static_cast<char>(value & 0xFF));
      if (value_bytes == 2) bytes.push_back(static_cast<char>(value >> 8));
    }
    return bytes;
  };
  write(lut_dir + "/linear16", lut_seed(2, 256, {0, 1, 0, 1, 255, 65535}));
  write(lut_dir + "/indirect16",
        lut_seed(2, 256, {0, 1, 0, 1, 127, 0, 2, 1, 6, 0, 0, 1, 0}));
  write(lut_dir + "/indirect8",
        lut_seed(1, 6, {0, 2, 0, 50, 1, 2, 100, 2, 1, 0, 0, 0, 0}));
}

void WritePngSeed(const std::string& path, uint32_t format,
                  const std::vector<uint8_t>& pixels) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = kWidth;
  png.height = kHeight;
  png.format = format;
  Check(png_image_write_to_file(&png, path.c_str(), 0, pixels.data(), 0,
                                nullptr) != 0,
        absl::StrCat(path, ": ", png.message));
}

void WriteJpegSeed(const std::string& path, int pixel_format, int subsampling,
                   int flags) {
  const int samples = tjPixelSize[pixel_format];
  const std::vector<uint8_t> pixels = Gradient(kWidth, kHeight, samples);
  tjhandle handle = tjInitCompress();
  Check(handle != nullptr, "tjInitCompress failed");
  unsigned char* out = nullptr;
  unsigned long size = 0;
  Check(tjCompress2(handle, pixels.data(), kWidth, 0, kHeight, pixel_format,
                    &out, &size, subsampling, 85, flags) == 0,
        absl::StrCat(path, ": ", tjGetErrorStr2(handle)));
  const absl::Status written = WriteFileAtomically(
      path, absl::string_view(reinterpret_cast<char*>(out), size));
  tjFree(out);
  tjDestroy(handle);
  Check(written.ok(), written.ToString());
}

void WriteImageSeeds(const std::string& dir, const std::string& dicom_dir) {
  GrayImage gray{kWidth, kHeight, Gradient(kWidth, kHeight, 1)};
  Check(WritePng(dir + "/gray.png", gray).ok(), "WritePng failed");
  Check(WriteJpeg(dir + "/gray.jpg", gray, 85).ok(), "WriteJpeg failed");
  WritePngSeed(dir + "/rgb.png", PNG_FORMAT_RGB, Gradient(kWidth, kHeight, 3));
  WritePngSeed(dir + "/gray-alpha.png", PNG_FORMAT_GA,
               Gradient(kWidth, kHeight, 2));
  // Sixteen bits per sample (the simplified API writes linear data as
  // 16-bit PNG).
  WritePngSeed(dir + "/gray16.png", PNG_FORMAT_LINEAR_Y,
               Gradient(kWidth, kHeight, 2));
  WriteJpegSeed(dir + "/rgb420.jpg", TJPF_RGB, TJSAMP_420, 0);
  WriteJpegSeed(dir + "/rgb-progressive.jpg", TJPF_RGB, TJSAMP_422,
                TJFLAG_PROGRESSIVE);
  WriteJpegSeed(dir + "/cmyk.jpg", TJPF_CMYK, TJSAMP_444, 0);
  // DecodeGrayImage dispatches DICOM by content too.
  for (const char* name : {"mono8-explicit.dcm", "jpeg-baseline.dcm",
                           "bare-implicit.dcm", "j2k-lossless.dcm"}) {
    std::filesystem::copy_file(
        dicom_dir + "/" + name, dir + "/" + name,
        std::filesystem::copy_options::overwrite_existing);
  }
}

}  // namespace
}  // namespace echofed

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  OFLog::configure(OFLogger::WARN_LOG_LEVEL);
  DJEncoderRegistration::registerCodecs();
  DJLSEncoderRegistration::registerCodecs();
  DcmRLEEncoderRegistration::registerCodecs();
  const std::string out = argv[1];
  const std::string dicom_dir = out + "/dicom";
  const std::string image_dir = out + "/image";
  const std::string j2k_dir = out + "/j2k";
  const std::string lut_dir = out + "/segmented_lut";
  for (const std::string& dir : {dicom_dir, image_dir, j2k_dir, lut_dir}) {
    echofed::Check(echofed::MakeDirectories(dir).ok(), "cannot create " + dir);
  }
  echofed::WriteDicomSeeds(dicom_dir);
  echofed::WriteNewEncodingSeeds(dicom_dir, j2k_dir, lut_dir);
  echofed::WriteImageSeeds(image_dir, dicom_dir);
  DJEncoderRegistration::cleanup();
  DJLSEncoderRegistration::cleanup();
  DcmRLEEncoderRegistration::cleanup();
  return 0;
}
