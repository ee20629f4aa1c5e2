// libFuzzer target for the expansion of segmented palette lookup tables
// (site-agent/data/dicom_palette.h), whose segments come straight from the
// file and point at each other. Input: one byte choosing 8- or 16-bit
// entries, two bytes of the descriptor's entry count (little endian, 0 is
// 65536), then the segmented data (little-endian words, or bytes). Any
// status is an acceptable answer; a crash, a sanitizer report, a hang or a
// table of any other length than the descriptor's is a bug.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "site-agent/data/dicom_palette.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  const int value_bytes = (data[0] & 1) != 0 ? 2 : 1;
  const size_t declared = data[1] | static_cast<size_t>(data[2]) << 8;
  const size_t entries = declared == 0 ? 65536 : declared;
  std::vector<uint16_t> values;
  for (size_t i = 3; i + value_bytes <= size; i += value_bytes) {
    values.push_back(value_bytes == 2
                         ? static_cast<uint16_t>(data[i] | data[i + 1] << 8)
                         : data[i]);
  }
  auto table =
      echofed::dicom_internal::ExpandSegmentedLut(values, value_bytes, entries);
  if (table.ok() && table->size() != entries) std::abort();
  return 0;
}
