#ifndef ECHOFED_SITE_AGENT_DATA_DICOM_J2K_H_
#define ECHOFED_SITE_AGENT_DATA_DICOM_J2K_H_

// JPEG 2000 and High-Throughput JPEG 2000 pixel data, decoded from memory by
// OpenJPEG (2.5 decodes HT block coding too); DCMTK 3.6.7 has no decoder for
// either. The frame is decoded here and put back into the data set as native
// pixel data, so that DCMTK renders it to gray exactly as it renders an
// uncompressed object (palette, windowing, MONOCHROME1, colour to luma).
// Internal to dicom_reader.cc; DecodeJ2kCodestream is public for its fuzz
// target (tests/fuzz/j2k_fuzz.cc).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcelem.h"
#include "site-agent/data/dicom_reader.h"

namespace echofed::dicom_internal {

// JPEG 2000 (lossless only .90, and .91) and HTJ2K (.201 lossless, .202
// RPCL lossless, .203). Part 2 multi-component (.92, .93) and JPIP are not.
bool IsJpeg2000Syntax(const std::string& transfer_syntax_uid);

// What the DICOM header says about a frame; the codestream must agree. A 0
// (or -1 for is_signed) accepts what the codestream holds, for the fuzz
// target, which has no header.
struct J2kExpectation {
  int columns = 0, rows = 0, samples = 0;
  int bits_stored = 0;       // the codestream's precision may not exceed it
  int bytes_per_sample = 0;  // Bits Allocated / 8: 1 or 2
  int is_signed = -1;        // Pixel Representation
};

struct J2kFrame {
  int width = 0, height = 0, components = 0, precision = 0;
  bool is_signed = false;
  // The codestream applied the multiple component transform (RCT or ICT):
  // the decoded components are R, G, B. Without it three components are
  // what was encoded (RGB, or Y, Cb, Cr).
  bool colour_transform = false;
  int bytes_per_sample = 0;
  // Samples interleaved, 1 or 2 bytes each (host byte order, two's
  // complement when signed): the layout of native DICOM pixel data.
  std::vector<uint8_t> pixels;
};

// Decodes a JPEG 2000 codestream (or a JP2 file, by its signature) from
// memory. The main header is checked against `expect` and the size limits
// (CheckImageDimensions, at most 16 bits, no subsampled components, a
// bounded number of tiles) before OpenJPEG allocates anything for the image.
// INVALID_ARGUMENT for anything unreadable or inconsistent, with OpenJPEG's
// own reason where it gives one.
absl::StatusOr<J2kFrame> DecodeJ2kCodestream(const uint8_t* data, size_t size,
                                             const J2kExpectation& expect,
                                             const std::string& origin);

// Decodes frame `frame` of the data set's encapsulated JPEG 2000 Pixel Data
// and replaces the Pixel Data with it, uncompressed (Number of Frames 1,
// Photometric Interpretation RGB where the codestream's colour transform
// undid YBR_RCT / YBR_ICT). `pixel_data` is deleted: the caller reads the
// data set again. INVALID_ARGUMENT when the frame cannot be found or decoded,
// or disagrees with the header.
absl::Status DecodeJpeg2000Frame(DcmDataset* dataset, DcmElement* pixel_data,
                                 const DicomImageInfo& info, int frame,
                                 const std::string& origin);

}  // namespace echofed::dicom_internal

#endif  // ECHOFED_SITE_AGENT_DATA_DICOM_J2K_H_
