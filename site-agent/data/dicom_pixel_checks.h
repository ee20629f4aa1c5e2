#ifndef ECHOFED_SITE_AGENT_DATA_DICOM_PIXEL_CHECKS_H_
#define ECHOFED_SITE_AGENT_DATA_DICOM_PIXEL_CHECKS_H_

// The DICOM reader's guards around DCMTK's decoders, and its libjpeg-turbo
// fast path: each check exists because a fuzzed or real file made a decoder
// read or leave memory it should not have. Internal to dicom_reader.cc.

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcelem.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"

namespace echofed::dicom_internal {

absl::Status CheckDimensions(int columns, int rows, const std::string& origin);

// DicomImage fills missing native pixel data with zeros (and only logs it),
// which would turn a truncated file into a silently black image; the length
// is therefore checked against what the header declares.
absl::Status CheckNativeLength(DcmDataset* dataset, DcmElement* pixel_data,
                               const DicomImageInfo& info,
                               const std::string& origin);

// The fragments of encapsulated (compressed) pixel data as stored in the
// file, or null when the pixel data is not encapsulated.
DcmPixelSequence* EncapsulatedFragments(DcmElement* pixel_data);

// DCMTK 3.6.7's RLE decoder takes the segment offsets of the RLE header on
// trust: an offset past the end of the fragment made it read far outside
// the buffer (SEGV, found by tests/fuzz/dicom_fuzz), and a segment that
// decodes to fewer bytes than the frame needs is padded with its last value
// (read from before the decoder's buffer when the segment gave nothing). So
// the fragment of the frame that is decoded is checked first: one fragment
// per frame (PS3.5 Annex G), a sane header, segments inside the fragment and
// in order, and each long enough to fill the frame.
absl::Status CheckRleFrame(DcmElement* pixel_data, const DicomImageInfo& info,
                           int frame, const std::string& origin);

// DCMTK's JPEG and JPEG-LS decoders write the codestream's own frame size
// into a buffer sized from Rows and Columns, and report success: a stream
// of fewer lines left the rest of the image as uninitialised heap memory,
// which could hold pixels of an image read before (found by
// tests/fuzz/dicom_fuzz as two decodes of one file that differed). So the
// start-of-frame header of the frame that is decoded must agree with the
// DICOM header before DCMTK sees it. Only the marker segment headers are
// read, not the fragment.
// The same holds for the sample size: DicomImage sizes its frame buffer from
// Bits Allocated, while the decoders write one byte per sample for a
// precision up to 8 and two above it. A Bits Allocated of 136 on an 8-bit
// stream left 16 of every 17 bytes unwritten and rendered them as pixels
// (found by tests/fuzz/dicom_fuzz), so Bits Allocated must be the one the
// precision implies (PS3.5 8.2.1: 8 for up to 8 bits, 16 above).
absl::Status CheckJpegFrame(DcmElement* pixel_data, const DicomImageInfo& info,
                            Uint16 samples, Uint16 bits_allocated, int frame,
                            const std::string& origin);

// DicomImage reports a failed decompression only as a generic status (the
// codec's words go to the silenced log), so on failure the frame is decoded
// once more through dcmdata to put the codec's reason into the error.
std::string CodecDiagnosis(DcmDataset* dataset, DcmElement* pixel_data,
                           int frame);

// The commonest hospital encoding, 8-bit JPEG baseline, decoded with
// libjpeg-turbo instead of the IJG 6b code inside DCMTK: its SIMD IDCT and
// Huffman decoder make the decode several times faster, and from a YCbCr
// stream it returns the luminance plane without a colour round trip.
// Returns nullopt whenever the object is outside what this path reproduces
// (see dicom_reader.h) or libjpeg-turbo reports anything at all; DCMTK then
// decodes the object and words any error, so errors read the same either
// way.
std::optional<GrayImage> DecodeJpegBaselineFast(DcmDataset* dataset,
                                                DcmElement* pixel_data,
                                                const DicomImageInfo& info);

}  // namespace echofed::dicom_internal

#endif  // ECHOFED_SITE_AGENT_DATA_DICOM_PIXEL_CHECKS_H_
