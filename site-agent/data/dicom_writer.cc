#include "site-agent/data/dicom_writer.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/sha256.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrleerg.h"
#include "dcmtk/dcmdata/dcrlerp.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcwcache.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmjpeg/djencode.h"
#include "dcmtk/dcmjpeg/djrploss.h"
#include "dcmtk/dcmjpls/djencode.h"
#include "dcmtk/dcmjpls/djrparam.h"
#include "dcmtk/oflog/oflog.h"
#include "site-agent/data/dicom_reader.h"

namespace echofed {
namespace {

// DCMTK's codec list is process-wide and its registration is not safe to
// race, hence once. The encoders are told never to mint a new SOP Instance
// UID on lossy compression: a scanner that stores JPEG keeps the instance it
// acquired, and a fresh random UID would make the output irreproducible.
void InitializeEncodersOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    // As in the reader: DCMTK's messages can quote element values such as
    // the patient's name, so the library stays silent and failures come
    // back as statuses.
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    // usePixelValues off: with it (DCMTK's default) the lossy encoder
    // shifts 8-bit monochrome values down by the image's minimum and only
    // compensates in a display window, which readers of 8-bit data ignore.
    // Off, it maps the full 0..255 range onto itself.
    DJEncoderRegistration::registerCodecs(
        ECC_lossyYCbCr, EUC_never, /*pOptimizeHuffman=*/OFFalse,
        /*pSmoothingFactor=*/0, /*pForcedBitDepth=*/0, /*pFragmentSize=*/0,
        /*pCreateOffsetTable=*/OFTrue, ESS_422, /*pWriteYBR422=*/OFTrue,
        /*pConvertToSC=*/OFFalse, /*pWindowType=*/0, /*pWindowParameter=*/0,
        /*pVoiCenter=*/0.0, /*pVoiWidth=*/0.0, /*pRoiLeft=*/0, /*pRoiTop=*/0,
        /*pRoiWidth=*/0, /*pRoiHeight=*/0, /*pUsePixelValues=*/OFFalse);
    DJLSEncoderRegistration::registerCodecs(
        /*jpls_t1=*/0, /*jpls_t2=*/0, /*jpls_t3=*/0, /*jpls_reset=*/0,
        /*preferCookedEncoding=*/OFTrue, /*fragmentSize=*/0,
        /*createOffsetTable=*/OFTrue, EJLSUC_never);
    DcmRLEEncoderRegistration::registerCodecs(
        /*pCreateSOPInstanceUID=*/OFFalse);
  });
}

E_TransferSyntax TransferSyntaxOf(DicomEncoding encoding) {
  switch (encoding) {
    case DicomEncoding::kExplicitLittleEndian:
      return EXS_LittleEndianExplicit;
    case DicomEncoding::kJpegBaseline:
      return EXS_JPEGProcess1;
    case DicomEncoding::kJpegLsLossless:
      return EXS_JPEGLSLossless;
    case DicomEncoding::kRleLossless:
      return EXS_RLELossless;
  }
  return EXS_Unknown;
}

absl::Status CheckOptions(const GrayImage& image,
                          const DicomWriteOptions& options) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height) {
    return absl::InvalidArgumentError(
        absl::StrCat("DICOM writer: image of ", image.width, "x", image.height,
                     " with ", image.pixels.size(), " pixels is inconsistent"));
  }
  // Rows and Columns are 16-bit unsigned in DICOM.
  if (image.width > 65535 || image.height > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("DICOM writer: ", image.width, "x", image.height,
                     " exceeds DICOM's 65535 pixels per side"));
  }
  if (TransferSyntaxOf(options.encoding) == EXS_Unknown) {
    return absl::InvalidArgumentError("DICOM writer: unknown encoding");
  }
  if (options.encoding == DicomEncoding::kJpegBaseline &&
      (options.jpeg_quality < 1 || options.jpeg_quality > 100)) {
    return absl::InvalidArgumentError(
        absl::StrCat("DICOM writer: JPEG quality ", options.jpeg_quality,
                     " is outside 1..100"));
  }
  // PS3.5 8.2.1: YBR_FULL_422 describes JPEG lossy data only.
  if (options.photometric == DicomPhotometric::kYbrFull422 &&
      options.encoding != DicomEncoding::kJpegBaseline) {
    return absl::InvalidArgumentError(
        "DICOM writer: YBR_FULL_422 is only written with JPEG baseline");
  }
  for (const std::optional<double>& mm :
       {options.spacing_x_mm, options.spacing_y_mm}) {
    if (mm && !(*mm > 0 && *mm < 1000)) {
      return absl::InvalidArgumentError(
          absl::StrCat("DICOM writer: pixel spacing ", *mm,
                       " mm is not a "
                       "positive size below 1 m"));
    }
  }
  return absl::OkStatus();
}

std::string FreshUid() {
  char uid[100];
  return dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
}

// One 2D tissue region over the whole image: what a calibrated B-mode
// frame carries, and what the reader takes its spacing from.
absl::Status PutUltrasoundRegion(DcmDataset* dataset, const GrayImage& image,
                                 const DicomWriteOptions& options) {
  if (!options.spacing_x_mm && !options.spacing_y_mm) return absl::OkStatus();
  DcmItem* region = nullptr;
  if (dataset
          ->findOrCreateSequenceItem(DCM_SequenceOfUltrasoundRegions, region,
                                     -2)
          .bad() ||
      region == nullptr) {
    return absl::InternalError(
        "DICOM writer: cannot create the Sequence of Ultrasound Regions");
  }
  constexpr Uint16 kTwoDimensional = 1;  // Region Spatial Format: 2D
  constexpr Uint16 kTissue = 1;          // Region Data Type: tissue
  constexpr Uint16 kCentimetre = 3;      // Physical Units X/Y Direction
  constexpr Uint16 kNoUnits = 0;
  OFCondition status =
      region->putAndInsertUint16(DCM_RegionSpatialFormat, kTwoDimensional);
  if (status.good()) {
    status = region->putAndInsertUint16(DCM_RegionDataType, kTissue);
  }
  if (status.good()) status = region->putAndInsertUint32(DCM_RegionFlags, 0);
  if (status.good()) {
    status = region->putAndInsertUint32(DCM_RegionLocationMinX0, 0);
  }
  if (status.good()) {
    status = region->putAndInsertUint32(DCM_RegionLocationMinY0, 0);
  }
  if (status.good()) {
    status = region->putAndInsertUint32(DCM_RegionLocationMaxX1,
                                        static_cast<Uint32>(image.width - 1));
  }
  if (status.good()) {
    status = region->putAndInsertUint32(DCM_RegionLocationMaxY1,
                                        static_cast<Uint32>(image.height - 1));
  }
  if (status.good()) {
    status = region->putAndInsertUint16(
        DCM_PhysicalUnitsXDirection,
        options.spacing_x_mm ? kCentimetre : kNoUnits);
  }
  if (status.good()) {
    status = region->putAndInsertUint16(
        DCM_PhysicalUnitsYDirection,
        options.spacing_y_mm ? kCentimetre : kNoUnits);
  }
  // The standard states Physical Delta in the units above: cm, not mm.
  if (status.good()) {
    status = region->putAndInsertFloat64(
        DCM_PhysicalDeltaX,
        options.spacing_x_mm ? *options.spacing_x_mm / 10.0 : 0.0);
  }
  if (status.good()) {
    status = region->putAndInsertFloat64(
        DCM_PhysicalDeltaY,
        options.spacing_y_mm ? *options.spacing_y_mm / 10.0 : 0.0);
  }
  if (status.bad()) {
    return absl::InternalError(absl::StrCat(
        "DICOM writer: ultrasound region not written (", status.text(), ")"));
  }
  return absl::OkStatus();
}

// Identification, patient, study, series, equipment and image pixel
// modules. Pixel data is added by the caller.
absl::Status PutHeader(DcmDataset* dataset, const GrayImage& image,
                       const DicomWriteOptions& options,
                       const std::string& sop_instance_uid) {
  const bool ybr = options.photometric == DicomPhotometric::kYbrFull422;
  const std::string study_uid = options.study_instance_uid.empty()
                                    ? FreshUid()
                                    : options.study_instance_uid;
  const std::string series_uid = options.series_instance_uid.empty()
                                     ? FreshUid()
                                     : options.series_instance_uid;
  const std::pair<DcmTagKey, std::string> strings[] = {
      {DCM_SpecificCharacterSet, "ISO_IR 100"},
      {DCM_ImageType, "ORIGINAL\\PRIMARY"},
      {DCM_SOPClassUID, options.secondary_capture
                            ? UID_SecondaryCaptureImageStorage
                            : UID_UltrasoundImageStorage},
      {DCM_SOPInstanceUID, sop_instance_uid},
      {DCM_StudyDate, options.study_date},
      {DCM_ContentDate, options.study_date},
      {DCM_StudyTime, options.study_time},
      {DCM_ContentTime, options.study_time},
      {DCM_AccessionNumber, options.accession_number},
      {DCM_Modality, options.secondary_capture ? "OT" : "US"},
      {DCM_Manufacturer, options.manufacturer},
      {DCM_InstitutionName, options.institution_name},
      {DCM_ReferringPhysicianName, ""},
      {DCM_ManufacturerModelName, options.manufacturer_model_name},
      {DCM_PatientName, options.patient_name},
      {DCM_PatientID, options.patient_id},
      {DCM_PatientBirthDate, options.patient_birth_date},
      {DCM_PatientSex, options.patient_sex},
      {DCM_StudyInstanceUID, study_uid},
      {DCM_SeriesInstanceUID, series_uid},
      {DCM_StudyID, ""},
      {DCM_SeriesNumber, absl::StrCat(options.series_number)},
      {DCM_InstanceNumber, absl::StrCat(options.instance_number)},
      {DCM_PatientOrientation, ""},
      {DCM_BurnedInAnnotation, "NO"},
      // The encoder turns RGB into YBR_FULL_422 while compressing; it needs
      // the colour image as its input.
      {DCM_PhotometricInterpretation,
       ybr                                                     ? "RGB"
       : options.photometric == DicomPhotometric::kMonochrome1 ? "MONOCHROME1"
                                                               : "MONOCHROME2"},
  };
  for (const auto& [key, value] : strings) {
    OFCondition status = dataset->putAndInsertString(key, value.c_str());
    if (status.bad()) {
      return absl::InvalidArgumentError(
          absl::StrCat("DICOM writer: element ", DcmTag(key).getTagName(),
                       " not written (", status.text(), ")"));
    }
  }
  const std::pair<DcmTagKey, Uint16> numbers[] = {
      {DCM_SamplesPerPixel, ybr ? 3 : 1},
      {DCM_Rows, static_cast<Uint16>(image.height)},
      {DCM_Columns, static_cast<Uint16>(image.width)},
      {DCM_BitsAllocated, 8},
      {DCM_BitsStored, 8},
      {DCM_HighBit, 7},
      {DCM_PixelRepresentation, 0},
  };
  for (const auto& [key, value] : numbers) {
    if (dataset->putAndInsertUint16(key, value).bad()) {
      return absl::InternalError(absl::StrCat(
          "DICOM writer: element ", DcmTag(key).getTagName(), " not written"));
    }
  }
  if (ybr && dataset->putAndInsertUint16(DCM_PlanarConfiguration, 0).bad()) {
    return absl::InternalError(
        "DICOM writer: Planar Configuration not written");
  }
  if (options.secondary_capture) {
    // Type 1 in the SC Equipment module: a workstation made it.
    if (dataset->putAndInsertString(DCM_ConversionType, "WSD").bad()) {
      return absl::InternalError("DICOM writer: Conversion Type not written");
    }
    return absl::OkStatus();
  }
  return PutUltrasoundRegion(dataset, image, options);
}

std::vector<uint8_t> StoredPixels(const GrayImage& image,
                                  DicomPhotometric photometric) {
  switch (photometric) {
    case DicomPhotometric::kMonochrome2:
      return image.pixels;
    case DicomPhotometric::kMonochrome1: {
      std::vector<uint8_t> inverted(image.pixels.size());
      for (size_t i = 0; i < inverted.size(); ++i) {
        inverted[i] = static_cast<uint8_t>(255 - image.pixels[i]);
      }
      return inverted;
    }
    case DicomPhotometric::kYbrFull422: {
      std::vector<uint8_t> rgb(image.pixels.size() * 3);
      for (size_t i = 0; i < image.pixels.size(); ++i) {
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = image.pixels[i];
      }
      return rgb;
    }
  }
  return {};
}

// DCMTK's JPEG-LS encoder pads an odd-length codestream to even length
// with a byte it never sets, so the file changed from run to run. PS3.5
// A.4 asks for a trailing 0x00 after the EOI marker; writing it makes the
// output reproducible.
void ZeroFragmentPadding(DcmDataset* dataset, E_TransferSyntax xfer,
                         const DcmRepresentationParameter* parameter) {
  DcmElement* element = nullptr;
  if (dataset->findAndGetElement(DCM_PixelData, element).bad() ||
      element == nullptr) {
    return;
  }
  DcmPixelSequence* sequence = nullptr;
  if (static_cast<DcmPixelData*>(element)
          ->getEncapsulatedRepresentation(xfer, parameter, sequence)
          .bad() ||
      sequence == nullptr) {
    return;
  }
  // Item 0 is the offset table.
  for (unsigned long i = 1; i < sequence->card(); ++i) {
    DcmPixelItem* fragment = nullptr;
    Uint8* data = nullptr;
    if (sequence->getItem(fragment, i).bad() || fragment == nullptr ||
        fragment->getUint8Array(data).bad() || data == nullptr) {
      continue;
    }
    const Uint32 length = fragment->getLength();
    if (length >= 3 && data[length - 3] == 0xFF && data[length - 2] == 0xD9) {
      data[length - 1] = 0;
    }
  }
}

// Part 10 serialisation into memory, so the file can be written atomically
// and no half-written object is ever left in a site's folder.
absl::StatusOr<std::string> Serialise(DcmFileFormat& file,
                                      E_TransferSyntax xfer) {
  std::string out;
  std::vector<char> buffer(64 * 1024);
  DcmOutputBufferStream stream(buffer.data(),
                               static_cast<offile_off_t>(buffer.size()));
  DcmWriteCache cache;
  file.transferInit();
  OFCondition status;
  do {
    status = file.write(stream, xfer, EET_ExplicitLength, &cache, EGL_recalcGL,
                        EPD_noChange, 0, 0, 0, EWM_fileformat);
    void* data = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(data, length);
    out.append(static_cast<const char*>(data), static_cast<size_t>(length));
  } while (status == EC_StreamNotifyClient);
  file.transferEnd();
  if (status.bad()) {
    return absl::InternalError(absl::StrCat(
        "DICOM writer: serialisation failed (", status.text(), ")"));
  }
  return out;
}

// Bits per sample of the JPEG-LS (MED) prediction residuals, a close
// estimate of what lossless JPEG-LS needs.
double ResidualBitsPerSample(const GrayImage& image) {
  std::vector<int64_t> histogram(256, 0);
  const int w = image.width;
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < w; ++x) {
      const int a = x > 0 ? image.pixels[y * w + x - 1] : 0;
      const int b = y > 0 ? image.pixels[(y - 1) * w + x] : 0;
      const int c = x > 0 && y > 0 ? image.pixels[(y - 1) * w + x - 1] : 0;
      int predicted = a + b - c;
      if (c >= std::max(a, b)) predicted = std::min(a, b);
      if (c <= std::min(a, b)) predicted = std::max(a, b);
      ++histogram[(image.pixels[y * w + x] - predicted) & 0xff];
    }
  }
  const double total = static_cast<double>(image.pixels.size());
  double bits = 0;
  for (int64_t count : histogram) {
    if (count > 0) bits -= count / total * std::log2(count / total);
  }
  return bits;
}

}  // namespace

absl::StatusOr<std::string> EncodeDicomUltrasound(
    const GrayImage& image, const DicomWriteOptions& options) {
  if (absl::Status status = CheckOptions(image, options); !status.ok()) {
    return status;
  }
  InitializeEncodersOnce();
  if (!dcmDataDict.isDictionaryLoaded()) {
    return absl::FailedPreconditionError(
        "DCMTK's DICOM data dictionary is not loaded (install libdcmtk's "
        "dicom.dic or set DCMDICTPATH)");
  }
  const std::string sop_instance_uid =
      options.sop_instance_uid.empty() ? FreshUid() : options.sop_instance_uid;
  DcmFileFormat file;
  DcmDataset* dataset = file.getDataset();
  if (absl::Status status =
          PutHeader(dataset, image, options, sop_instance_uid);
      !status.ok()) {
    return status;
  }
  const std::vector<uint8_t> pixels = StoredPixels(image, options.photometric);
  if (dataset
          ->putAndInsertUint8Array(DCM_PixelData, pixels.data(),
                                   static_cast<unsigned long>(pixels.size()))
          .bad()) {
    return absl::InternalError("DICOM writer: Pixel Data not written");
  }

  const E_TransferSyntax xfer = TransferSyntaxOf(options.encoding);
  // DCMTK 3.6.7's JPEG-LS encoder gives the codec an output buffer of the
  // raw size plus 1 KiB; an image that does not compress (speckle noise)
  // overflows it and corrupts the heap (seen in the synthetic cohort). Such
  // an image is refused here instead, with a margin over the estimate.
  if (options.encoding == DicomEncoding::kJpegLsLossless &&
      ResidualBitsPerSample(image) > 6.5) {
    return absl::FailedPreconditionError(
        "DICOM writer: this image would not compress under JPEG-LS, and "
        "DCMTK 3.6.7's encoder overflows its buffer on such images; use "
        "another transfer syntax");
  }
  if (DcmXfer(xfer).isEncapsulated()) {
    DJ_RPLossy jpeg(options.jpeg_quality);
    DJLSRepresentationParameter jpeg_ls(/*nearlosslessDeviation=*/0,
                                        /*losslessProcess=*/OFTrue);
    DcmRLERepresentationParameter rle;
    const DcmRepresentationParameter* parameter = &rle;
    if (options.encoding == DicomEncoding::kJpegBaseline) parameter = &jpeg;
    if (options.encoding == DicomEncoding::kJpegLsLossless) {
      parameter = &jpeg_ls;
    }
    OFCondition chosen = dataset->chooseRepresentation(xfer, parameter);
    if (chosen.bad() || !dataset->canWriteXfer(xfer)) {
      return absl::InternalError(
          absl::StrCat("DICOM writer: ", DcmXfer(xfer).getXferName(),
                       " encoding failed (", chosen.text(), ")"));
    }
    ZeroFragmentPadding(dataset, xfer, parameter);
    // Another part of the process may have registered the encoders first
    // with their default of a new SOP Instance UID for lossy data; the
    // instance keeps the identity it was given either way.
    OFString uid;
    dataset->findAndGetOFString(DCM_SOPInstanceUID, uid);
    if (uid != sop_instance_uid.c_str()) {
      dataset->putAndInsertString(DCM_SOPInstanceUID, sop_instance_uid.c_str());
      delete dataset->remove(DCM_SourceImageSequence);
    }
    if (options.photometric == DicomPhotometric::kYbrFull422) {
      OFString photometric;
      dataset->findAndGetOFString(DCM_PhotometricInterpretation, photometric);
      if (photometric != "YBR_FULL_422") {
        return absl::InternalError(absl::StrCat(
            "DICOM writer: the JPEG encoder wrote ", photometric.c_str(),
            " instead of YBR_FULL_422 (encoder registered "
            "elsewhere with other colour settings)"));
      }
    }
  }
  absl::StatusOr<std::string> bytes = Serialise(file, xfer);
  if (!bytes.ok() || options.encoding != DicomEncoding::kJpegBaseline) {
    return bytes;
  }
  // The encoder's settings are whatever the process registered first; one
  // registered elsewhere with DCMTK's defaults would shift or recolour the
  // pixels without a word. A decode (about a millisecond) turns that into
  // an error instead of a subtly wrong image.
  absl::StatusOr<GrayImage> decoded = DecodeDicomGray(*bytes, "DICOM writer");
  if (!decoded.ok()) return decoded.status();
  double difference = 0;
  for (size_t i = 0; i < image.pixels.size(); ++i) {
    difference += decoded->pixels[i] - image.pixels[i];
  }
  difference /= static_cast<double>(image.pixels.size());
  if (std::fabs(difference) > 4.0) {
    return absl::InternalError(absl::StrCat(
        "DICOM writer: JPEG baseline changed the mean pixel value by ",
        difference,
        " (DCMTK's JPEG encoder was registered elsewhere in this process "
        "with other settings)"));
  }
  return bytes;
}

absl::Status WriteDicomUltrasound(const std::string& path,
                                  const GrayImage& image,
                                  const DicomWriteOptions& options) {
  absl::StatusOr<std::string> bytes = EncodeDicomUltrasound(image, options);
  if (!bytes.ok()) {
    return absl::Status(bytes.status().code(),
                        absl::StrCat(path, ": ", bytes.status().message()));
  }
  return WriteFileAtomically(path, *bytes);
}

std::string DeterministicDicomUid(absl::string_view key) {
  const std::string digest = Sha256::Of(key);
  uint8_t bytes[16];
  std::memcpy(bytes, digest.data(), sizeof(bytes));
  // RFC 9562 layout: version 8 (custom, here SHA-256 name-based), variant 10.
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0F) | 0x80);
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3F) | 0x80);
  unsigned __int128 value = 0;
  for (uint8_t byte : bytes) value = (value << 8) | byte;
  std::string digits;
  do {
    digits.insert(digits.begin(), static_cast<char>('0' + value % 10));
    value /= 10;
  } while (value != 0);
  return absl::StrCat("2.25.", digits);
}

}  // namespace echofed
