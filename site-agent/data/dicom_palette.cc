#include "site-agent/data/dicom_palette.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcvrobow.h"
#include "dcmtk/dcmdata/dcvrus.h"

namespace echofed::dicom_internal {
namespace {

constexpr uint16_t kDiscrete = 0;
constexpr uint16_t kLinear = 1;
constexpr uint16_t kIndirect = 2;

// Indirect segments may copy the same run of segments again and again, each
// of them empty; this caps the segments expanded so that a small table
// cannot keep the reader busy for minutes.
constexpr size_t kMaxSegmentExpansions = size_t{1} << 20;

struct Segment {
  uint16_t opcode = 0;
  // Entries (discrete, linear) or segments to copy (indirect).
  size_t length = 0;
  size_t start = 0;    // index of the opcode
  size_t payload = 0;  // index of the first value after opcode and length
};

absl::Status Invalid(const std::string& why) {
  return absl::InvalidArgumentError(
      absl::StrCat("segmented palette lookup table: ", why));
}

class Expander {
 public:
  Expander(const std::vector<uint16_t>& data, int value_bytes, size_t entries)
      : data_(data), value_bytes_(value_bytes), entries_(entries) {}

  absl::Status Parse() {
    const size_t n = data_.size();
    size_t i = 0;
    while (i + 1 < n) {
      Segment segment{data_[i], data_[i + 1], i, i + 2};
      size_t payload_size = 0;
      switch (segment.opcode) {
        case kDiscrete:
          payload_size = segment.length;
          break;
        case kLinear:
          payload_size = 1;
          break;
        case kIndirect:
          // A 32-bit offset: two words, or four bytes.
          payload_size = value_bytes_ == 2 ? 2 : 4;
          break;
        default:
          return Invalid(absl::StrCat("unknown segment type ", segment.opcode,
                                      " at value ", i));
      }
      if (payload_size > n - segment.payload) {
        return Invalid(absl::StrCat("segment ", segments_.size() + 1,
                                    " runs past the end of the data"));
      }
      segments_.push_back(segment);
      i = segment.payload + payload_size;
    }
    // One value left over can only be padding to an even length.
    if (i < n && data_[i] != 0) {
      return Invalid("the data end inside a segment header");
    }
    if (segments_.empty()) return Invalid("no segments");
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<uint16_t>> Expand() {
    out_.reserve(entries_);
    for (size_t k = 0; k < segments_.size(); ++k) {
      const Segment& segment = segments_[k];
      if (segment.opcode != kIndirect) {
        if (absl::Status status = Append(segment); !status.ok()) return status;
        continue;
      }
      if (out_.empty()) return Invalid("the first segment is indirect");
      absl::StatusOr<size_t> first = IndirectTarget(segment, k);
      if (!first.ok()) return first.status();
      for (size_t j = *first; j < *first + segment.length; ++j) {
        if (segments_[j].opcode == kIndirect) {
          return Invalid(absl::StrCat("indirect segment ", k + 1,
                                      " copies another indirect segment"));
        }
        if (absl::Status status = Append(segments_[j]); !status.ok()) {
          return status;
        }
      }
    }
    if (out_.size() != entries_) {
      return Invalid(absl::StrCat("expands to ", out_.size(),
                                  " entries; the descriptor gives ", entries_));
    }
    return std::move(out_);
  }

 private:
  // The index of the segment an indirect segment copies from, which must
  // start a run of `length` segments that all come before it.
  absl::StatusOr<size_t> IndirectTarget(const Segment& segment, size_t k) {
    const auto value = [this, &segment](size_t i) -> uint32_t {
      return data_[segment.payload + i];
    };
    uint32_t offset_bytes = 0;
    if (value_bytes_ == 2) {
      offset_bytes = value(0) | value(1) << 16;
    } else {
      offset_bytes = value(0) | value(1) << 8 | value(2) << 16 | value(3) << 24;
    }
    // The standard gives a byte offset; some writers put the index of the
    // 16-bit word instead. A byte offset that starts no segment is tried as
    // a word index, since either way it must land on an opcode.
    std::vector<size_t> candidates;
    if (offset_bytes % value_bytes_ == 0) {
      candidates.push_back(offset_bytes / value_bytes_);
    }
    if (value_bytes_ == 2) candidates.push_back(offset_bytes);
    for (size_t start : candidates) {
      auto found = std::lower_bound(
          segments_.begin(), segments_.begin() + k, start,
          [](const Segment& s, size_t at) { return s.start < at; });
      if (found == segments_.begin() + k || found->start != start) continue;
      const size_t first = static_cast<size_t>(found - segments_.begin());
      if (segment.length > k - first) {
        return Invalid(absl::StrCat("indirect segment ", k + 1, " copies ",
                                    segment.length,
                                    " segments, more than come before it"));
      }
      return first;
    }
    return Invalid(absl::StrCat("indirect segment ", k + 1, " points at byte ",
                                offset_bytes,
                                ", which starts no earlier segment"));
  }

  absl::Status Append(const Segment& segment) {
    if (++expansions_ > kMaxSegmentExpansions) {
      return Invalid("indirect segments copy too many segments");
    }
    if (segment.length > entries_ - out_.size()) {
      return Invalid(absl::StrCat("expands to more than the ", entries_,
                                  " entries the descriptor gives"));
    }
    if (segment.opcode == kDiscrete) {
      out_.insert(out_.end(), data_.begin() + segment.payload,
                  data_.begin() + segment.payload + segment.length);
      return absl::OkStatus();
    }
    if (out_.empty()) return Invalid("the first segment is linear");
    // From the previous segment's last value to this one's, excluding the
    // former and including the latter, rounded half away from zero.
    const int64_t y0 = out_.back();
    const int64_t y1 = data_[segment.payload];
    const int64_t n = static_cast<int64_t>(segment.length);
    for (int64_t i = 1; i <= n; ++i) {
      const int64_t step = (y1 - y0) * i;
      const int64_t rounded =
          step >= 0 ? (2 * step + n) / (2 * n) : -((-2 * step + n) / (2 * n));
      out_.push_back(static_cast<uint16_t>(y0 + rounded));
    }
    return absl::OkStatus();
  }

  const std::vector<uint16_t>& data_;
  const int value_bytes_;
  const size_t entries_;
  std::vector<Segment> segments_;
  std::vector<uint16_t> out_;
  size_t expansions_ = 0;
};

struct Colour {
  const char* name;
  DcmTagKey descriptor;
  DcmTagKey plain;
  DcmTagKey segmented;
};

const Colour kColours[] = {
    {"red", DCM_RedPaletteColorLookupTableDescriptor,
     DCM_RedPaletteColorLookupTableData,
     DCM_SegmentedRedPaletteColorLookupTableData},
    {"green", DCM_GreenPaletteColorLookupTableDescriptor,
     DCM_GreenPaletteColorLookupTableData,
     DCM_SegmentedGreenPaletteColorLookupTableData},
    {"blue", DCM_BluePaletteColorLookupTableDescriptor,
     DCM_BluePaletteColorLookupTableData,
     DCM_SegmentedBluePaletteColorLookupTableData},
};

// Descriptors have the VR "US or SS"; which one DCMTK chose depends on the
// file's encoding, and the values are read the same either way.
bool DescriptorValue(DcmDataset* dataset, const DcmTagKey& key,
                     unsigned long position, Uint16* value) {
  if (dataset->findAndGetUint16(key, *value, position).good()) return true;
  Sint16 signed_value = 0;
  if (dataset->findAndGetSint16(key, signed_value, position).good()) {
    *value = static_cast<Uint16>(signed_value);
    return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<std::vector<uint16_t>> ExpandSegmentedLut(
    const std::vector<uint16_t>& data, int value_bytes, size_t entries) {
  if (value_bytes != 1 && value_bytes != 2) {
    return absl::InvalidArgumentError(
        "segmented palette: 1 or 2 bytes a value");
  }
  Expander expander(data, value_bytes, entries);
  if (absl::Status status = expander.Parse(); !status.ok()) return status;
  return expander.Expand();
}

absl::Status ExpandSegmentedPalette(DcmDataset* dataset,
                                    const std::string& origin) {
  const bool segmented = std::any_of(
      std::begin(kColours), std::end(kColours), [dataset](const Colour& c) {
        return dataset->tagExists(c.segmented) &&
               !dataset->tagExistsWithValue(c.plain);
      });
  if (!segmented) return absl::OkStatus();
  for (const Colour& colour : kColours) {
    if (dataset->tagExistsWithValue(colour.plain)) continue;
    auto invalid = [&origin, &colour](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": DICOM ", colour.name, " palette lookup table: ", why));
    };
    Uint16 entries_value = 0, first_mapped = 0, bits = 0;
    if (!DescriptorValue(dataset, colour.descriptor, 0, &entries_value) ||
        !DescriptorValue(dataset, colour.descriptor, 1, &first_mapped) ||
        !DescriptorValue(dataset, colour.descriptor, 2, &bits)) {
      return invalid("no valid descriptor (0028,1101-1103)");
    }
    if (bits != 8 && bits != 16) {
      return invalid(absl::StrCat(bits, " bits per entry (8 or 16 expected)"));
    }
    const Uint16* words = nullptr;
    unsigned long count = 0;
    if (dataset->findAndGetUint16Array(colour.segmented, words, &count).bad() ||
        words == nullptr || count == 0) {
      return invalid(
          "neither table data (0028,1201-1203) nor segmented "
          "table data (0028,1221-1223)");
    }
    // 8-bit segmented data are a byte stream; an OW value holds them in
    // little-endian order, two to a word.
    std::vector<uint16_t> data;
    if (bits == 16) {
      data.assign(words, words + count);
    } else {
      data.reserve(2 * static_cast<size_t>(count));
      for (unsigned long i = 0; i < count; ++i) {
        data.push_back(words[i] & 0xFF);
        data.push_back(words[i] >> 8);
      }
    }
    const size_t entries = entries_value == 0 ? 65536 : entries_value;
    absl::StatusOr<std::vector<uint16_t>> table =
        ExpandSegmentedLut(data, bits / 8, entries);
    if (!table.ok()) return invalid(std::string(table.status().message()));
    if (bits == 8) {
      for (uint16_t& value : *table) value = static_cast<uint16_t>(value * 257);
    }
    auto* plain = new DcmOtherByteOtherWord(DcmTag(colour.plain, EVR_OW));
    if (plain->putUint16Array(table->data(), table->size()).bad() ||
        dataset->insert(plain, OFTrue).bad()) {
      delete plain;
      return absl::InternalError(absl::StrCat(
          origin, ": cannot store the expanded ", colour.name, " palette"));
    }
    const Uint16 descriptor[3] = {entries_value, first_mapped, 16};
    auto* element = new DcmUnsignedShort(DcmTag(colour.descriptor, EVR_US));
    if (element->putUint16Array(descriptor, 3).bad() ||
        dataset->insert(element, OFTrue).bad()) {
      delete element;
      return absl::InternalError(absl::StrCat(
          origin, ": cannot store the ", colour.name, " palette descriptor"));
    }
  }
  return absl::OkStatus();
}

}  // namespace echofed::dicom_internal
