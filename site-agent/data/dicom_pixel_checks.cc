#include "site-agent/data/dicom_pixel_checks.h"

#include <turbojpeg.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dccodec.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcistrma.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcstack.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/dcmimage/diregist.h"  // colour support for DicomImage
#include "dcmtk/dcmimgle/dcmimage.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

namespace echofed::dicom_internal {

absl::Status CheckDimensions(int columns, int rows, const std::string& origin) {
  return CheckImageDimensions(columns, rows, origin + " (DICOM)");
}

absl::Status CheckNativeLength(DcmDataset* dataset, DcmElement* pixel_data,
                               const DicomImageInfo& info,
                               const std::string& origin) {
  Uint16 samples = 1, bits_allocated = 0;
  dataset->findAndGetUint16(DCM_SamplesPerPixel, samples);
  if (dataset->findAndGetUint16(DCM_BitsAllocated, bits_allocated).bad() ||
      bits_allocated == 0 || samples == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": DICOM image lacks Bits Allocated or Samples per Pixel"));
  }
  // 4:2:2 keeps one Cb and one Cr for every two pixels.
  const uint64_t samples_per_pixel_x2 =
      (info.photometric == "YBR_FULL_422" ||
       info.photometric == "YBR_PARTIAL_422")
          ? 4
          : 2 * static_cast<uint64_t>(samples);
  const uint64_t frame_bits = static_cast<uint64_t>(info.rows) * info.columns *
                              samples_per_pixel_x2 * bits_allocated / 2;
  const uint64_t stored = pixel_data->getLengthField();
  // Compared in frames, since frames * frame_bits could overflow for a
  // corrupt Number of Frames.
  if (static_cast<uint64_t>(info.frames) > stored * 8 / frame_bits) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": DICOM Pixel Data holds ", stored, " bytes, less than ",
        info.frames, " frame(s) of ", info.columns, "x", info.rows, "x",
        samples, " at ", bits_allocated, " bits (truncated or corrupt)"));
  }
  return absl::OkStatus();
}

DcmPixelSequence* EncapsulatedFragments(DcmElement* pixel_data) {
  auto* pixels = static_cast<DcmPixelData*>(pixel_data);
  E_TransferSyntax xfer = EXS_Unknown;
  const DcmRepresentationParameter* parameter = nullptr;
  pixels->getOriginalRepresentationKey(xfer, parameter);
  DcmPixelSequence* sequence = nullptr;
  if (pixels->getEncapsulatedRepresentation(xfer, parameter, sequence).bad()) {
    return nullptr;
  }
  return sequence;
}

absl::Status CheckRleFrame(DcmElement* pixel_data, const DicomImageInfo& info,
                           int frame, const std::string& origin) {
  auto corrupt = [&origin](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM RLE pixel data is corrupt (", why, ")"));
  };
  if (pixel_data->ident() != EVR_PixelData) return corrupt("no pixel data");
  DcmPixelSequence* sequence = EncapsulatedFragments(pixel_data);
  if (sequence == nullptr) return corrupt("not encapsulated");
  // Item 0 is the Basic Offset Table.
  if (sequence->card() != static_cast<unsigned long>(info.frames) + 1) {
    return corrupt(absl::StrCat(static_cast<long>(sequence->card()) - 1,
                                " fragments for ", info.frames, " frame(s)"));
  }
  DcmPixelItem* fragment = nullptr;
  Uint8* data = nullptr;
  if (sequence->getItem(fragment, static_cast<unsigned long>(frame) + 1)
          .bad() ||
      fragment == nullptr || fragment->getUint8Array(data).bad()) {
    return corrupt("unreadable fragment");
  }
  const size_t length = fragment->getLength();
  constexpr size_t kHeaderSize = 64;  // 16 little-endian 32-bit words
  if (data == nullptr || length < kHeaderSize) return corrupt("no header");
  auto word = [data](int index) {
    const Uint8* p = data + 4 * index;
    return static_cast<size_t>(p[0]) | static_cast<size_t>(p[1]) << 8 |
           static_cast<size_t>(p[2]) << 16 | static_cast<size_t>(p[3]) << 24;
  };
  const size_t segments = word(0);
  if (segments < 1 || segments > 15) {
    return corrupt(absl::StrCat(segments, " segments"));
  }
  const size_t per_segment =
      static_cast<size_t>(info.rows) * static_cast<size_t>(info.columns);
  for (size_t k = 0; k < segments; ++k) {
    const size_t begin = word(static_cast<int>(k) + 1);
    const size_t end =
        k + 1 < segments ? word(static_cast<int>(k) + 2) : length;
    if (begin < kHeaderSize || begin > end || end > length) {
      return corrupt(absl::StrCat("segment ", k + 1, " lies outside its ",
                                  length, "-byte fragment"));
    }
    // Output length of the PackBits runs, counted as DCMTK decodes them:
    // n < 128 copies n + 1 bytes, otherwise one byte repeats 257 - n times.
    size_t produced = 0;
    for (size_t i = begin; i < end && produced < per_segment;) {
      const Uint8 code = data[i++];
      if (code < 128) {
        const size_t literal = std::min<size_t>(code + 1u, end - i);
        produced += literal;
        i += literal;
      } else if (i < end) {
        produced += 257u - code;
        ++i;
      } else {
        break;
      }
    }
    if (produced < per_segment) {
      return corrupt(absl::StrCat("segment ", k + 1, " decodes to ", produced,
                                  " of ", per_segment, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckJpegFrame(DcmElement* pixel_data, const DicomImageInfo& info,
                            Uint16 samples, Uint16 bits_allocated, int frame,
                            const std::string& origin) {
  auto corrupt = [&origin](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM JPEG pixel data is corrupt (", why, ")"));
  };
  if (pixel_data->ident() != EVR_PixelData) return corrupt("no pixel data");
  DcmPixelSequence* sequence = EncapsulatedFragments(pixel_data);
  if (sequence == nullptr) return corrupt("not encapsulated");
  Uint32 item = 0;
  DcmPixelItem* fragment = nullptr;
  if (DcmCodec::determineStartFragment(static_cast<Uint32>(frame),
                                       static_cast<Sint32>(info.frames),
                                       sequence, item)
          .bad() ||
      sequence->getItem(fragment, item).bad() || fragment == nullptr) {
    return corrupt(absl::StrCat("no fragment for frame ", frame + 1));
  }
  const Uint32 length = fragment->getLength();
  auto read = [fragment, length](Uint32 offset, Uint32 count, Uint8* out) {
    return offset <= length && count <= length - offset &&
           fragment->getPartialValue(out, offset, count).good();
  };
  Uint8 soi[2];
  if (!read(0, 2, soi) || soi[0] != 0xFF || soi[1] != 0xD8) {
    return corrupt("the frame does not start with a JPEG SOI marker");
  }
  Uint32 offset = 2;
  while (true) {
    Uint8 marker[4];
    if (!read(offset, 4, marker) || marker[0] != 0xFF) {
      return corrupt("no JPEG frame header");
    }
    // Fill bytes and standalone markers (TEM, RSTn) are legal JPEG, but no
    // encoder puts them among the header segments, and DCMTK's own header
    // scan (DJCodecDecoder::scanJpegDataForBitDepth) loops forever on some
    // of them (found by tests/fuzz/image_fuzz): refuse them here.
    const Uint8 code = marker[1];
    if (code == 0xFF || code == 0x01 || (code >= 0xD0 && code <= 0xD8)) {
      return corrupt("unexpected marker among the JPEG header segments");
    }
    // SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC); SOF55 is JPEG-LS.
    const bool frame_header = (code >= 0xC0 && code <= 0xCF && code != 0xC4 &&
                               code != 0xC8 && code != 0xCC) ||
                              code == 0xF7;
    if (frame_header) {
      Uint8 sof[6];  // precision, lines, samples per line, components
      if (!read(offset + 4, 6, sof)) return corrupt("truncated frame header");
      const int precision = sof[0];
      const int lines = sof[1] << 8 | sof[2];
      const int columns = sof[3] << 8 | sof[4];
      if (lines != info.rows || columns != info.columns || sof[5] != samples) {
        return corrupt(absl::StrCat("the codestream holds ", columns, "x",
                                    lines, "x", int{sof[5]},
                                    ", the DICOM header says ", info.columns,
                                    "x", info.rows, "x", samples));
      }
      const int bits_needed = precision > 8 ? 16 : 8;
      if (bits_allocated != bits_needed) {
        return corrupt(absl::StrCat("the codestream holds ", precision,
                                    "-bit samples, which need Bits Allocated ",
                                    bits_needed, "; the DICOM header says ",
                                    bits_allocated));
      }
      return absl::OkStatus();
    }
    if (code == 0xDA || code == 0xD9) return corrupt("no JPEG frame header");
    const Uint32 segment = static_cast<Uint32>(marker[2]) << 8 | marker[3];
    if (segment < 2) return corrupt("a JPEG segment length below 2");
    offset += 2 + segment;
  }
}

std::string CodecDiagnosis(DcmDataset* dataset, DcmElement* pixel_data,
                           int frame) {
  Uint32 frame_size = 0;
  OFCondition status =
      pixel_data->getUncompressedFrameSize(dataset, frame_size);
  if (status.bad()) return status.text();
  // dcmdata wants an even buffer size so that it can swap bytes in place.
  std::vector<uint8_t> buffer(frame_size + (frame_size & 1));
  Uint32 start_fragment = 0;
  OFString colour_model;
  status = pixel_data->getUncompressedFrame(
      dataset, static_cast<Uint32>(frame), start_fragment, buffer.data(),
      static_cast<Uint32>(buffer.size()), colour_model);
  return status.bad() ? status.text() : "";
}

std::optional<GrayImage> DecodeJpegBaselineFast(DcmDataset* dataset,
                                                DcmElement* pixel_data,
                                                const DicomImageInfo& info) {
  if (dataset->getOriginalXfer() != EXS_JPEGProcess1 || info.frames != 1) {
    return std::nullopt;
  }
  Uint16 samples = 0, bits_allocated = 0, bits_stored = 0, representation = 1;
  dataset->findAndGetUint16(DCM_SamplesPerPixel, samples);
  dataset->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  dataset->findAndGetUint16(DCM_BitsStored, bits_stored);
  dataset->findAndGetUint16(DCM_PixelRepresentation, representation);
  if (bits_allocated != 8 || bits_stored != 8 || representation != 0) {
    return std::nullopt;
  }
  const bool monochrome =
      info.photometric == "MONOCHROME1" || info.photometric == "MONOCHROME2";
  const bool ybr =
      info.photometric == "YBR_FULL_422" || info.photometric == "YBR_FULL";
  if (!((samples == 1 && monochrome) || (samples == 3 && ybr))) {
    return std::nullopt;
  }
  // DCMTK would let these change 8-bit values on rendering; such objects
  // keep going through DCMTK.
  for (const DcmTagKey& key :
       {DCM_ModalityLUTSequence, DCM_PresentationLUTShape,
        DCM_PixelPaddingValue}) {
    if (dataset->tagExists(key)) return std::nullopt;
  }
  // Absent is the identity; findAndGetFloat64 zeroes its output when the
  // element is missing, so absence is tested separately.
  Float64 slope = 1, intercept = 0;
  if (dataset->tagExists(DCM_RescaleSlope) &&
      (dataset->findAndGetFloat64(DCM_RescaleSlope, slope).bad() ||
       slope != 1)) {
    return std::nullopt;
  }
  if (dataset->tagExists(DCM_RescaleIntercept) &&
      (dataset->findAndGetFloat64(DCM_RescaleIntercept, intercept).bad() ||
       intercept != 0)) {
    return std::nullopt;
  }

  E_TransferSyntax representation_xfer = EXS_Unknown;
  const DcmRepresentationParameter* parameter = nullptr;
  auto* pixels = static_cast<DcmPixelData*>(pixel_data);
  pixels->getOriginalRepresentationKey(representation_xfer, parameter);
  DcmPixelSequence* sequence = nullptr;
  if (pixels
          ->getEncapsulatedRepresentation(representation_xfer, parameter,
                                          sequence)
          .bad() ||
      sequence == nullptr || sequence->card() < 2) {
    return std::nullopt;
  }
  // Item 0 is the offset table; a single frame may still span fragments.
  std::vector<uint8_t> joined;
  const uint8_t* stream = nullptr;
  size_t stream_size = 0;
  for (unsigned long i = 1; i < sequence->card(); ++i) {
    DcmPixelItem* fragment = nullptr;
    Uint8* data = nullptr;
    if (sequence->getItem(fragment, i).bad() || fragment == nullptr ||
        fragment->getUint8Array(data).bad() || data == nullptr) {
      return std::nullopt;
    }
    const size_t length = fragment->getLength();
    if (sequence->card() == 2) {
      stream = data;
      stream_size = length;
    } else {
      joined.insert(joined.end(), data, data + length);
    }
  }
  if (stream == nullptr) {
    stream = joined.data();
    stream_size = joined.size();
  }

  std::unique_ptr<void, int (*)(tjhandle)> handle(tjInitDecompress(),
                                                  tjDestroy);
  if (handle == nullptr) return std::nullopt;
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle.get(), stream,
                          static_cast<unsigned long>(stream_size), &width,
                          &height, &subsampling, &colorspace) != 0 ||
      width != info.columns || height != info.rows ||
      colorspace != (samples == 1 ? TJCS_GRAY : TJCS_YCbCr)) {
    return std::nullopt;
  }
  GrayImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height);
  // The accurate integer IDCT is the one DCMTK's decoder uses, which keeps
  // monochrome output bit-identical to the DCMTK path.
  if (tjDecompress2(handle.get(), stream,
                    static_cast<unsigned long>(stream_size),
                    image.pixels.data(), width, 0, height, TJPF_GRAY,
                    TJFLAG_ACCURATEDCT) != 0) {
    return std::nullopt;
  }
  if (info.photometric == "MONOCHROME1") {
    for (uint8_t& value : image.pixels) {
      value = static_cast<uint8_t>(255 - value);
    }
  }
  return image;
}

}  // namespace echofed::dicom_internal
