#ifndef ECHOFED_SITE_AGENT_DATA_DICOM_READER_H_
#define ECHOFED_SITE_AGENT_DATA_DICOM_READER_H_

// DICOM image objects to 8-bit grayscale, through DCMTK (dcmdata, dcmimgle,
// dcmimage and the JPEG, JPEG-LS and RLE decoders); the pixel data of 8-bit
// JPEG baseline, the commonest hospital export, is decoded by libjpeg-turbo
// for speed (DicomDecodePath below), and JPEG 2000 and HTJ2K by OpenJPEG
// (dicom_j2k.h).
//
// What is decoded: uncompressed MONOCHROME1/2 (8 to 16 bits), RGB in either
// planar configuration, PALETTE COLOR (plain or segmented lookup tables)
// and YBR_FULL/YBR_FULL_422, in little or big endian, and JPEG (baseline,
// extended, lossless), JPEG-LS, RLE, JPEG 2000 (lossless and lossy) and
// High-Throughput JPEG 2000. Part 10 files and bare data sets without the
// preamble and file meta header (as old archives hold them) alike.
// Colour becomes luminance (0.299 R + 0.587 G + 0.114 B): B-mode ultrasound
// is grayscale and colour overlays are not signal. MONOCHROME1 is inverted so
// that bright tissue is bright in every image. Images with more than 8 bits
// stored are windowed with the file's first VOI window (or VOI LUT) when it
// has one, else from their own minimum to maximum; 8-bit images are taken as
// they are.
//
// Multi-frame objects (cine loops): one frame is decoded, by default THE
// MIDDLE FRAME, index frames / 2 counted from 0 (a loop's first and last
// frames are the likeliest to catch the probe moving), or the one asked
// for; only that frame is decompressed. info.frames tells how many there
// are (image_io.h's ForEachGrayFrame walks them as a plan chooses).
//
// Errors never carry patient identifiers, and DCMTK's own logging is
// switched off for the same reason (its messages are turned into statuses):
//   INVALID_ARGUMENT  not DICOM, truncated or corrupt, no Pixel Data, not an
//                     image object (Structured Report, RT, waveform...),
//                     dimensions of 0 or above kMaxImageSide;
//   UNIMPLEMENTED     a transfer syntax without a decoder here (MPEG, HEVC,
//                     JPEG 2000 Part 2, JPIP, JPEG XL, unknown ones), named
//                     in the message with what the object is and how to
//                     export it instead; compressed pixel data in a data
//                     set without a file meta header (the codec is unknown);
//   OUT_OF_RANGE      a frame index the object does not have;
//   NOT_FOUND         ReadDicomGray on a missing file.
// Thread-safe: decoders are registered once, and each call owns its objects.

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "site-agent/data/image_io.h"

namespace echofed {

struct DicomImageInfo {
  std::string transfer_syntax_uid;
  std::string transfer_syntax_name;  // human name, e.g. "JPEG Baseline"
  std::string sop_class_uid;
  std::string modality;
  std::string photometric;  // as stored, e.g. "MONOCHROME2", "YBR_FULL_422"
  int rows = 0, columns = 0, frames = 0;
  int frame_used = 0;  // index (from 0) of the decoded frame
  // From the Sequence of Ultrasound Regions (0018,6011) when present:
  // PhysicalDeltaX/Y (0018,602C/602E) of a region whose PhysicalUnitsX/Y
  // Direction is 3 (cm), converted to mm. A 2D tissue region (Region Spatial
  // Format 1) is preferred over M-mode or Doppler strips.
  std::optional<double> spacing_x_mm, spacing_y_mm;
};

// Which decoder turns the pixel data into gray values.
//   kAuto: single-frame 8-bit JPEG baseline (MONOCHROME1/2, YBR_FULL_422,
//     YBR_FULL) without Modality LUT, rescale, Presentation LUT Shape or
//     pixel padding goes through libjpeg-turbo, several times faster than
//     DCMTK's bundled IJG decoder; everything else, and anything libjpeg-
//     turbo objects to, through DCMTK. Monochrome results are bit-identical
//     to DCMTK's for well-formed streams (a corrupt stream that neither
//     decoder rejects may decode differently; fuzzing found one). For YBR the
//     luminance plane Y is taken directly, where DCMTK converts to RGB and back
//     to luma; the two differ by rounding (at most a few levels, e.g. where
//     chroma pushed RGB out of range).
//   kDcmtkOnly: always DCMTK, for tests and benchmarks that compare.
enum class DicomDecodePath { kAuto, kDcmtkOnly };

// The frame decoded unless another is asked for: frames / 2.
inline constexpr int kMiddleFrame = -1;

// Decodes a DICOM image object (Part 10 file content, with the 128-byte
// preamble and "DICM", or a bare data set) to 8-bit grayscale: frame
// `frame` (from 0), or the middle one. `origin` names the source in errors.
// `info`, when given, is filled as far as the header could be read, also
// when an error is returned.
absl::StatusOr<GrayImage> DecodeDicomGray(
    const std::string& bytes, const std::string& origin,
    DicomImageInfo* info = nullptr,
    DicomDecodePath path = DicomDecodePath::kAuto, int frame = kMiddleFrame);
absl::StatusOr<GrayImage> ReadDicomGray(const std::string& path,
                                        DicomImageInfo* info = nullptr,
                                        int frame = kMiddleFrame);

// True when the bytes look like DICOM: a Part 10 file ("DICM" at offset
// 128), or a data set without preamble and meta header whose first element
// (group 0002 or 0008, implicit or explicit VR) is plausible. PNG and JPEG
// signatures never match.
bool LooksLikeDicom(const std::string& bytes);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_DICOM_READER_H_
