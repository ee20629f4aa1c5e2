#ifndef ECHOFED_SITE_AGENT_DATA_DICOM_PALETTE_H_
#define ECHOFED_SITE_AGENT_DATA_DICOM_PALETTE_H_

// Segmented palette colour lookup tables (PS3.3 C.7.9.2), which ultrasound
// scanners write for PALETTE COLOR images and DCMTK 3.6.7 does not read: it
// looks only for the plain tables (0028,1201-1203), so such a file failed as
// if it were corrupt. The reader expands the segments into plain tables
// before DCMTK renders the image. Internal to dicom_reader.cc; the expander
// is public for its fuzz target (tests/fuzz/segmented_lut_fuzz.cc).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"

namespace echofed::dicom_internal {

// Expands segmented table data (one of (0028,1221-1223): 16-bit words, or
// where the descriptor gives 8 bits per entry its bytes in stream order, one
// per element; `value_bytes` says which) to exactly `entries` values. Segments:
// discrete (opcode 0: length, values), linear (1: length, end value; a straight
// line from the previous value, rounded to the nearest integer) and indirect
// (2: number of segments, a 32-bit byte offset, low word first; the segments
// starting there are expanded again here). The data come from the file, so
// everything is checked: an unknown opcode, a segment running past the data, a
// linear or indirect segment first, an indirect segment pointing anywhere but
// at an earlier non-indirect segment (no loops), or more or fewer values than
// `entries` are INVALID_ARGUMENT, and the work is bounded.
absl::StatusOr<std::vector<uint16_t>> ExpandSegmentedLut(
    const std::vector<uint16_t>& data, int value_bytes, size_t entries);

// For a PALETTE COLOR data set that has the segmented tables and not the
// plain ones, puts the expanded tables into the data set as plain 16-bit
// tables (8-bit entries scaled by 257) with descriptors to match. Does
// nothing to other data sets. INVALID_ARGUMENT, naming the colour, when a
// table or its descriptor is missing or does not expand.
absl::Status ExpandSegmentedPalette(DcmDataset* dataset,
                                    const std::string& origin);

}  // namespace echofed::dicom_internal

#endif  // ECHOFED_SITE_AGENT_DATA_DICOM_PALETTE_H_
