#include "site-agent/data/dicom_j2k.h"

#include <openjpeg.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "site-agent/data/dicom_pixel_checks.h"
#include "site-agent/data/image_io.h"

namespace echofed::dicom_internal {
namespace {

constexpr uint8_t kJp2Signature[12] = {0x00, 0x00, 0x00, 0x0C, 0x6A, 0x50,
                                       0x20, 0x20, 0x0D, 0x0A, 0x87, 0x0A};
constexpr uint8_t kCodestreamStart[4] = {0xFF, 0x4F, 0xFF, 0x51};  // SOC SIZ

// OpenJPEG allocates a few kilobytes of coding parameters per tile and
// component while it reads the main header, before any caller could look
// at it: a 100-byte header can ask for 65535 tiles of 16384 components. The
// header is therefore read here first. Real images have one tile, or a few
// hundred for very large ones.
constexpr uint64_t kMaxTileComponents = 65536;

uint32_t Big16(const uint8_t* p) { return uint32_t{p[0]} << 8 | p[1]; }
uint32_t Big32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 |
         p[3];
}

bool IsJp2(const uint8_t* data, size_t size) {
  return size >= sizeof(kJp2Signature) &&
         std::memcmp(data, kJp2Signature, sizeof(kJp2Signature)) == 0;
}

bool StartsFrame(const uint8_t* data, size_t size) {
  return IsJp2(data, size) ||
         (size >= 4 && std::memcmp(data, kCodestreamStart, 4) == 0);
}

// The contiguous codestream box ("jp2c") of a JP2 file, or the data itself.
absl::StatusOr<std::pair<const uint8_t*, size_t>> Codestream(
    const uint8_t* data, size_t size) {
  if (!IsJp2(data, size)) return std::make_pair(data, size);
  size_t at = 0;
  while (size - at >= 8) {
    uint64_t length = Big32(data + at);
    size_t header = 8;
    if (length == 1) {
      if (size - at < 16) break;
      length = uint64_t{Big32(data + at + 8)} << 32 | Big32(data + at + 12);
      header = 16;
    } else if (length == 0) {
      length = size - at;
    }
    if (length < header || length > size - at) break;
    if (std::memcmp(data + at + 4, "jp2c", 4) == 0) {
      return std::make_pair(data + at + header,
                            static_cast<size_t>(length - header));
    }
    at += static_cast<size_t>(length);
  }
  return absl::InvalidArgumentError("JP2 file without a codestream box");
}

struct MainHeader {
  uint32_t width = 0, height = 0, components = 0, precision = 0;
  bool is_signed = false, mixed_sign = false, subsampled = false;
  uint64_t tiles = 0;
};

// SIZ (ISO 15444-1 A.5.1), which must follow SOC directly.
absl::StatusOr<MainHeader> ReadMainHeader(const uint8_t* data, size_t size) {
  auto corrupt = [](const std::string& why) {
    return absl::InvalidArgumentError(why);
  };
  if (size < 4 || std::memcmp(data, kCodestreamStart, 4) != 0) {
    return corrupt("no JPEG 2000 codestream (SOC and SIZ markers)");
  }
  constexpr size_t kFixed = 38;  // Lsiz up to Csiz
  if (size < 4 + kFixed) return corrupt("truncated SIZ marker");
  const uint8_t* siz = data + 4;
  const uint32_t components = Big16(siz + 36);
  if (components == 0 || Big16(siz) != kFixed + 3 * components ||
      size - 4 < kFixed + 3 * components) {
    return corrupt("SIZ marker of the wrong length");
  }
  const uint32_t x = Big32(siz + 4), y = Big32(siz + 8);
  const uint32_t x0 = Big32(siz + 12), y0 = Big32(siz + 16);
  const uint32_t tile_w = Big32(siz + 20), tile_h = Big32(siz + 24);
  const uint32_t tile_x0 = Big32(siz + 28), tile_y0 = Big32(siz + 32);
  if (x <= x0 || y <= y0 || tile_w == 0 || tile_h == 0 || tile_x0 > x0 ||
      tile_y0 > y0 || uint64_t{tile_x0} + tile_w <= x0 ||
      uint64_t{tile_y0} + tile_h <= y0) {
    return corrupt("inconsistent image and tile grid in SIZ");
  }
  MainHeader header;
  header.width = x - x0;
  header.height = y - y0;
  header.components = components;
  header.tiles = ((uint64_t{x} - tile_x0 + tile_w - 1) / tile_w) *
                 ((uint64_t{y} - tile_y0 + tile_h - 1) / tile_h);
  for (uint32_t c = 0; c < components; ++c) {
    const uint8_t* component = siz + kFixed + 3 * c;
    const bool is_signed = (component[0] & 0x80) != 0;
    header.precision =
        std::max<uint32_t>(header.precision, (component[0] & 0x7F) + 1u);
    if (c == 0) header.is_signed = is_signed;
    if (is_signed != header.is_signed) header.mixed_sign = true;
    if (component[1] != 1 || component[2] != 1) header.subsampled = true;
  }
  return header;
}

// OpenJPEG reads through these from memory.
struct MemorySource {
  const uint8_t* data;
  size_t size;
  size_t position = 0;
};

OPJ_SIZE_T ReadSource(void* buffer, OPJ_SIZE_T count, void* user) {
  auto* source = static_cast<MemorySource*>(user);
  if (source->position >= source->size) return static_cast<OPJ_SIZE_T>(-1);
  const size_t n = std::min<size_t>(count, source->size - source->position);
  std::memcpy(buffer, source->data + source->position, n);
  source->position += n;
  return n;
}

// OpenJPEG keeps its skips within the length it is given; anything else is
// refused rather than clamped, since a short skip it did not expect could
// make it retry forever.
OPJ_OFF_T SkipSource(OPJ_OFF_T count, void* user) {
  auto* source = static_cast<MemorySource*>(user);
  const int64_t target = static_cast<int64_t>(source->position) + count;
  if (target < 0 || target > static_cast<int64_t>(source->size)) return -1;
  source->position = static_cast<size_t>(target);
  return count;
}

OPJ_BOOL SeekSource(OPJ_OFF_T position, void* user) {
  auto* source = static_cast<MemorySource*>(user);
  if (position < 0 || static_cast<uint64_t>(position) > source->size) {
    return OPJ_FALSE;
  }
  source->position = static_cast<size_t>(position);
  return OPJ_TRUE;
}

// OpenJPEG's messages go nowhere by default; its first error is kept for the
// status.
void KeepFirstError(const char* message, void* user) {
  auto* first = static_cast<std::string*>(user);
  if (!first->empty() || message == nullptr) return;
  *first = message;
  while (!first->empty() && (first->back() == '\n' || first->back() == ' ')) {
    first->pop_back();
  }
}
void Ignore(const char*, void*) {}

struct CodecDeleter {
  void operator()(opj_codec_t* codec) const { opj_destroy_codec(codec); }
};
struct StreamDeleter {
  void operator()(opj_stream_t* stream) const { opj_stream_destroy(stream); }
};
struct ImageDeleter {
  void operator()(opj_image_t* image) const { opj_image_destroy(image); }
};

absl::Status CheckHeader(const MainHeader& header, const J2kExpectation& expect,
                         const std::string& origin) {
  auto refuse = [&origin](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM JPEG 2000 pixel data: ", why));
  };
  if (absl::Status status = CheckImageDimensions(
          static_cast<int>(std::min<uint32_t>(header.width, kMaxImageSide + 1)),
          static_cast<int>(
              std::min<uint32_t>(header.height, kMaxImageSide + 1)),
          origin + " (JPEG 2000)");
      !status.ok()) {
    return status;
  }
  const int samples = static_cast<int>(header.components);
  if (expect.columns != 0 &&
      (static_cast<int>(header.width) != expect.columns ||
       static_cast<int>(header.height) != expect.rows)) {
    return refuse(absl::StrCat("the codestream holds ", header.width, "x",
                               header.height, ", the DICOM header says ",
                               expect.columns, "x", expect.rows));
  }
  if (expect.samples != 0 && samples != expect.samples) {
    return refuse(absl::StrCat("the codestream holds ", samples,
                               " component(s), the DICOM header says Samples "
                               "per Pixel ",
                               expect.samples));
  }
  if (samples != 1 && samples != 3) {
    return refuse(absl::StrCat(samples, " components (1 or 3 are read)"));
  }
  if (header.tiles * header.components > kMaxTileComponents) {
    return refuse(absl::StrCat(header.tiles, " tiles of ", header.components,
                               " component(s) is more than is read"));
  }
  if (header.subsampled) {
    return refuse(
        "subsampled components are not read (export without "
        "chroma subsampling)");
  }
  if (header.mixed_sign) {
    return refuse("components differ in signedness");
  }
  if (header.precision > 16) {
    return refuse(
        absl::StrCat(header.precision, "-bit samples (at most 16 are read)"));
  }
  if (expect.bits_stored != 0 &&
      static_cast<int>(header.precision) > expect.bits_stored) {
    return refuse(absl::StrCat("the codestream holds ", header.precision,
                               "-bit samples, the DICOM header says Bits "
                               "Stored ",
                               expect.bits_stored));
  }
  if (expect.is_signed >= 0 && header.is_signed != (expect.is_signed == 1)) {
    return refuse(absl::StrCat("the codestream's samples are ",
                               header.is_signed ? "signed" : "unsigned",
                               ", the DICOM header says Pixel Representation ",
                               expect.is_signed));
  }
  return absl::OkStatus();
}

// The fragments of one frame, joined: one fragment a frame, or those the
// Basic Offset Table assigns to it, or else those from one fragment that
// starts a codestream to the next.
absl::StatusOr<std::vector<uint8_t>> FrameCodestream(
    DcmElement* pixel_data, int frames, int frame, const std::string& origin) {
  auto corrupt = [&origin](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": DICOM JPEG 2000 pixel data is corrupt (", why, ")"));
  };
  DcmPixelSequence* sequence = pixel_data->ident() == EVR_PixelData
                                   ? EncapsulatedFragments(pixel_data)
                                   : nullptr;
  if (sequence == nullptr || sequence->card() < 2) {
    return corrupt("no encapsulated fragments");
  }
  const unsigned long fragments = sequence->card() - 1;  // item 0: the table
  auto fragment_bytes = [sequence](unsigned long item, Uint8** data,
                                   Uint32* length) {
    DcmPixelItem* fragment = nullptr;
    *data = nullptr;
    if (sequence->getItem(fragment, item).bad() || fragment == nullptr ||
        fragment->getUint8Array(*data).bad()) {
      return false;
    }
    *length = fragment->getLength();
    return *data != nullptr || *length == 0;
  };
  unsigned long first = 1, end = fragments + 1;
  if (frames > 1 && fragments == static_cast<unsigned long>(frames)) {
    first = static_cast<unsigned long>(frame) + 1;
    end = first + 1;
  } else if (frames > 1) {
    Uint32 start = 0, next = 0;
    const bool by_table =
        DcmCodec::determineStartFragment(static_cast<Uint32>(frame), frames,
                                         sequence, start)
            .good() &&
        (frame + 1 == frames ||
         DcmCodec::determineStartFragment(static_cast<Uint32>(frame + 1),
                                          frames, sequence, next)
             .good());
    if (by_table) {
      first = start;
      end = frame + 1 == frames ? fragments + 1 : next;
    } else {
      std::vector<unsigned long> starts;
      // Only the first bytes of each fragment are read: the other frames'
      // data stay where they are, in the file's bytes.
      for (unsigned long i = 1; i <= fragments; ++i) {
        DcmPixelItem* fragment = nullptr;
        Uint8 head[sizeof(kJp2Signature)] = {};
        if (sequence->getItem(fragment, i).bad() || fragment == nullptr) {
          return corrupt("an unreadable fragment");
        }
        const Uint32 length =
            std::min<Uint32>(fragment->getLength(), sizeof(head));
        if (length > 0 && fragment->getPartialValue(head, 0, length).bad()) {
          return corrupt("an unreadable fragment");
        }
        if (StartsFrame(head, length)) starts.push_back(i);
      }
      if (starts.size() != static_cast<size_t>(frames)) {
        return corrupt(absl::StrCat(starts.size(), " codestreams in ",
                                    fragments, " fragments for ", frames,
                                    " frames"));
      }
      first = starts[frame];
      end = frame + 1 == frames ? fragments + 1 : starts[frame + 1];
    }
    if (first < 1 || end <= first || end > fragments + 1) {
      return corrupt(absl::StrCat("no fragments for frame ", frame + 1));
    }
  }
  std::vector<uint8_t> joined;
  for (unsigned long i = first; i < end; ++i) {
    Uint8* data = nullptr;
    Uint32 length = 0;
    if (!fragment_bytes(i, &data, &length)) {
      return corrupt("an unreadable fragment");
    }
    joined.insert(joined.end(), data, data + length);
  }
  return joined;
}

}  // namespace

bool IsJpeg2000Syntax(const std::string& uid) {
  for (const char* known :
       {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203"}) {
    if (uid == known) return true;
  }
  return false;
}

absl::StatusOr<J2kFrame> DecodeJ2kCodestream(const uint8_t* data, size_t size,
                                             const J2kExpectation& expect,
                                             const std::string& origin) {
  auto corrupt = [&origin](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": DICOM JPEG 2000 pixel data is corrupt (", why, ")"));
  };
  absl::StatusOr<std::pair<const uint8_t*, size_t>> codestream =
      Codestream(data, size);
  if (!codestream.ok()) return corrupt(codestream.status().message());
  absl::StatusOr<MainHeader> header =
      ReadMainHeader(codestream->first, codestream->second);
  if (!header.ok()) return corrupt(header.status().message());
  if (absl::Status status = CheckHeader(*header, expect, origin);
      !status.ok()) {
    return status;
  }

  std::unique_ptr<opj_codec_t, CodecDeleter> codec(
      opj_create_decompress(IsJp2(data, size) ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K));
  if (codec == nullptr) return absl::InternalError("OpenJPEG: no decoder");
  std::string error;
  opj_set_error_handler(codec.get(), KeepFirstError, &error);
  opj_set_warning_handler(codec.get(), Ignore, nullptr);
  opj_set_info_handler(codec.get(), Ignore, nullptr);
  opj_dparameters_t parameters;
  opj_set_default_decoder_parameters(&parameters);
  // Strict: a truncated codestream is an error, not a partly grey image.
  if (!opj_setup_decoder(codec.get(), &parameters) ||
      !opj_decoder_set_strict_mode(codec.get(), OPJ_TRUE)) {
    return absl::InternalError("OpenJPEG: cannot set up the decoder");
  }
  MemorySource source{data, size};
  std::unique_ptr<opj_stream_t, StreamDeleter> stream(opj_stream_create(
      std::min<size_t>(std::max<size_t>(size, 1), OPJ_J2K_STREAM_CHUNK_SIZE),
      OPJ_TRUE));
  if (stream == nullptr) return absl::InternalError("OpenJPEG: no stream");
  opj_stream_set_user_data(stream.get(), &source, nullptr);
  opj_stream_set_user_data_length(stream.get(), size);
  opj_stream_set_read_function(stream.get(), ReadSource);
  opj_stream_set_skip_function(stream.get(), SkipSource);
  opj_stream_set_seek_function(stream.get(), SeekSource);

  opj_image_t* raw_image = nullptr;
  const bool read = opj_read_header(stream.get(), codec.get(), &raw_image);
  std::unique_ptr<opj_image_t, ImageDeleter> image(raw_image);
  if (!read || image == nullptr) {
    return corrupt(error.empty() ? "unreadable main header" : error);
  }
  // The header OpenJPEG read must be the one checked above.
  if (image->x1 - image->x0 != header->width ||
      image->y1 - image->y0 != header->height ||
      image->numcomps != header->components) {
    return corrupt("the main header changed between two reads");
  }
  bool colour_transform = false;
  if (opj_codestream_info_v2_t* info = opj_get_cstr_info(codec.get())) {
    colour_transform = info->m_default_tile_info.mct != 0;
    opj_destroy_cstr_info(&info);
  }
  if (!opj_set_decode_area(
          codec.get(), image.get(), static_cast<OPJ_INT32>(image->x0),
          static_cast<OPJ_INT32>(image->y0), static_cast<OPJ_INT32>(image->x1),
          static_cast<OPJ_INT32>(image->y1)) ||
      !opj_decode(codec.get(), stream.get(), image.get()) ||
      !opj_end_decompress(codec.get(), stream.get())) {
    return corrupt(error.empty() ? "the codestream does not decode" : error);
  }
  // A JP2 palette or channel definition may change the components.
  if (image->numcomps != header->components) {
    return corrupt(absl::StrCat("decoded to ", image->numcomps,
                                " components instead of ", header->components));
  }

  J2kFrame frame;
  frame.width = static_cast<int>(header->width);
  frame.height = static_cast<int>(header->height);
  frame.components = static_cast<int>(header->components);
  frame.is_signed = header->is_signed;
  frame.colour_transform = colour_transform && frame.components == 3;
  frame.precision = static_cast<int>(header->precision);
  frame.bytes_per_sample = expect.bytes_per_sample != 0
                               ? expect.bytes_per_sample
                               : (header->precision > 8 ? 2 : 1);
  if (frame.precision > 8 * frame.bytes_per_sample) {
    return corrupt(absl::StrCat(frame.precision, "-bit samples do not fit in ",
                                8 * frame.bytes_per_sample, " bits"));
  }
  const size_t pixels = static_cast<size_t>(frame.width) * frame.height;
  for (int c = 0; c < frame.components; ++c) {
    const opj_image_comp_t& component = image->comps[c];
    if (component.data == nullptr ||
        component.w != static_cast<OPJ_UINT32>(frame.width) ||
        component.h != static_cast<OPJ_UINT32>(frame.height) ||
        component.prec > static_cast<OPJ_UINT32>(frame.precision) ||
        component.factor != 0) {
      return corrupt(absl::StrCat("component ", c + 1, " decoded to ",
                                  component.w, "x", component.h));
    }
  }
  frame.pixels.resize(pixels * frame.components * frame.bytes_per_sample);
  const int64_t low =
      frame.is_signed ? -(int64_t{1} << (frame.precision - 1)) : 0;
  const int64_t high = frame.is_signed
                           ? (int64_t{1} << (frame.precision - 1)) - 1
                           : (int64_t{1} << frame.precision) - 1;
  uint8_t* out = frame.pixels.data();
  for (size_t i = 0; i < pixels; ++i) {
    for (int c = 0; c < frame.components; ++c) {
      const int64_t value =
          std::clamp<int64_t>(image->comps[c].data[i], low, high);
      if (frame.bytes_per_sample == 1) {
        *out++ = static_cast<uint8_t>(value);
      } else {
        const uint16_t word = static_cast<uint16_t>(value);
        std::memcpy(out, &word, 2);
        out += 2;
      }
    }
  }
  return frame;
}

absl::Status DecodeJpeg2000Frame(DcmDataset* dataset, DcmElement* pixel_data,
                                 const DicomImageInfo& info, int frame,
                                 const std::string& origin) {
  Uint16 samples = 1, bits_allocated = 0, bits_stored = 0, representation = 0;
  dataset->findAndGetUint16(DCM_SamplesPerPixel, samples);
  dataset->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  dataset->findAndGetUint16(DCM_BitsStored, bits_stored);
  dataset->findAndGetUint16(DCM_PixelRepresentation, representation);
  if (bits_allocated != 8 && bits_allocated != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM JPEG 2000 image with Bits Allocated ",
                     bits_allocated, " (8 or 16 are read)"));
  }
  if (bits_stored == 0 || bits_stored > bits_allocated) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM JPEG 2000 image with Bits Stored ",
                     bits_stored, " and Bits Allocated ", bits_allocated));
  }
  absl::StatusOr<std::vector<uint8_t>> codestream =
      FrameCodestream(pixel_data, info.frames, frame, origin);
  if (!codestream.ok()) return codestream.status();
  J2kExpectation expect;
  expect.columns = info.columns;
  expect.rows = info.rows;
  expect.samples = samples;
  expect.bits_stored = bits_stored;
  expect.bytes_per_sample = bits_allocated / 8;
  expect.is_signed = representation == 0 ? 0 : 1;
  absl::StatusOr<J2kFrame> decoded = DecodeJ2kCodestream(
      codestream->data(), codestream->size(), expect, origin);
  if (!decoded.ok()) return decoded.status();
  codestream->clear();
  codestream->shrink_to_fit();

  // What the components are now: the colour transform (YBR_RCT, YBR_ICT)
  // has been undone, giving RGB; without one they are as encoded.
  std::string photometric = info.photometric;
  if (samples == 3) {
    photometric =
        decoded->colour_transform || photometric == "RGB" ? "RGB" : "YBR_FULL";
  }
  auto* native = new DcmPixelData(DCM_PixelData);
  const OFCondition put =
      decoded->bytes_per_sample == 1
          ? native->putUint8Array(decoded->pixels.data(),
                                  decoded->pixels.size())
          : native->putUint16Array(
                reinterpret_cast<const Uint16*>(decoded->pixels.data()),
                decoded->pixels.size() / 2);
  // insert() with replacement deletes the encapsulated Pixel Data.
  if (put.bad() || dataset->insert(native, OFTrue).bad()) {
    delete native;
    return absl::InternalError(
        absl::StrCat(origin, ": cannot hold the decoded JPEG 2000 frame"));
  }
  dataset->putAndInsertString(DCM_PhotometricInterpretation,
                              photometric.c_str());
  if (samples > 1) dataset->putAndInsertUint16(DCM_PlanarConfiguration, 0);
  if (dataset->tagExists(DCM_NumberOfFrames)) {
    dataset->putAndInsertString(DCM_NumberOfFrames, "1");
  }
  return absl::OkStatus();
}

}  // namespace echofed::dicom_internal
