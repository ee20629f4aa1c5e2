#ifndef ECHOFED_SITE_AGENT_DATA_DICOM_WRITER_H_
#define ECHOFED_SITE_AGENT_DATA_DICOM_WRITER_H_

// 8-bit grayscale images as DICOM Ultrasound Image Storage objects, the way
// hospital archives hold B-mode frames: uncompressed, JPEG baseline (as
// MONOCHROME2 or as the YBR_FULL_422 colour that many scanners export),
// JPEG-LS lossless or RLE, MONOCHROME1 if asked. Used by the synthetic
// cohort and the benchmarks, so that the reader
// (site-agent/data/dicom_reader.h) is exercised with the encodings real sites
// send rather than with PNG.
//
// The objects carry a Patient module (ID, name, birth date, sex) on purpose:
// privacy tests need recognisable identifiers inside the site's files to show
// that none of them ever leaves the site.
//
// Thread-safe: DCMTK's encoders are registered once per process, and each
// call owns its objects. Output is deterministic for deterministic options
// (all UIDs given): the same image and options give the same bytes.

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "site-agent/data/image_io.h"

namespace echofed {

// The transfer syntax of the written object.
enum class DicomEncoding {
  kExplicitLittleEndian,  // 1.2.840.10008.1.2.1, uncompressed
  kJpegBaseline,          // 1.2.840.10008.1.2.4.50, lossy 8-bit
  kJpegLsLossless,        // 1.2.840.10008.1.2.4.80
  kRleLossless,           // 1.2.840.10008.1.2.5
};

// How the pixels are stored.
enum class DicomPhotometric {
  kMonochrome2,  // 0 is black
  kMonochrome1,  // 0 is white: the values are stored inverted
  // Gray replicated into RGB and JPEG-compressed as YCbCr with 4:2:2 chroma
  // subsampling; only with kJpegBaseline, where DICOM allows it.
  kYbrFull422,
};

struct DicomWriteOptions {
  DicomEncoding encoding = DicomEncoding::kExplicitLittleEndian;
  DicomPhotometric photometric = DicomPhotometric::kMonochrome2;
  int jpeg_quality = 90;  // 1..100, kJpegBaseline only

  // Pixel size in mm, written as one 2D tissue region of the Sequence of
  // Ultrasound Regions (0018,6011) covering the whole image, in cm as the
  // standard has it. Unset: no calibration is written.
  std::optional<double> spacing_x_mm;
  std::optional<double> spacing_y_mm;

  // Patient and study. Empty strings are written as empty (type 2) values.
  std::string patient_id;
  std::string patient_name;        // PN, e.g. "SYNTHETIC^S1P0001"
  std::string patient_birth_date;  // YYYYMMDD
  std::string patient_sex;         // "M", "F", "O" or ""
  std::string study_date;          // YYYYMMDD; also the content date
  std::string study_time;          // HHMMSS
  std::string accession_number;
  std::string institution_name;
  std::string manufacturer;
  std::string manufacturer_model_name;
  int series_number = 1;
  int instance_number = 1;

  // A Secondary Capture Image Storage object (modality OT, no ultrasound
  // region) instead: the screenshots and scanned forms that a PACS holds
  // beside the ultrasound series, which searches by modality must skip.
  bool secondary_capture = false;

  // Empty: a fresh unique UID (then the output differs between calls).
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string sop_instance_uid;
};

// The object as DICOM Part 10 bytes (preamble, "DICM", meta header,
// dataset). INVALID_ARGUMENT for an empty or inconsistent image, a quality
// outside 1..100, a side above 65535 or a photometric interpretation the
// encoding does not allow; INTERNAL when DCMTK fails to encode, or when
// DCMTK's JPEG encoder was registered earlier elsewhere in the process with
// settings that alter the pixels (JPEG output is decoded once and checked).
absl::StatusOr<std::string> EncodeDicomUltrasound(
    const GrayImage& image, const DicomWriteOptions& options);

// EncodeDicomUltrasound, then written atomically to `path`.
absl::Status WriteDicomUltrasound(const std::string& path,
                                  const GrayImage& image,
                                  const DicomWriteOptions& options);

// A UID that depends only on `key`: "2.25." followed by the decimal value of
// a name-based (SHA-256) 128-bit UUID, as ITU-T X.667 allows without a
// registered root. Lets generated cohorts be byte-for-byte reproducible.
std::string DeterministicDicomUid(absl::string_view key);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_DICOM_WRITER_H_
