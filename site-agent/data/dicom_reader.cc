#include "site-agent/data/dicom_reader.h"

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

namespace echofed {
namespace {

constexpr size_t kDicmOffset = 128;

// DCMTK's codec registry is a process-wide list and registerCodecs() is not
// safe to race, so every entry point goes through this once.
void InitializeDcmtkOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    // DCMTK's parser and renderer log through oflog to stderr. Their
    // messages can quote element values, and a header value may be a
    // patient's name; everything we need from a failure ends up in the
    // returned status instead, so the library stays silent.
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

// DICOM bytes in memory for DCMTK. DcmInputBufferStream cannot hand out a
// stream factory, so DCMTK allocates every element value at the length its
// header declares before reading it: a corrupt length field made a 1 KiB
// file allocate up to 4 GiB (found by tests/fuzz/dicom_fuzz). With a factory
// DCMTK defers values longer than its read limit and first skips over them,
// which fails, without allocating, when the bytes are not there; the
// deferred values that are there are read from `bytes` when used, so the
// frames of a cine loop that are not decoded are never copied either.
class MemoryProducer : public DcmProducer {
 public:
  explicit MemoryProducer(const std::string& bytes) : bytes_(bytes) {}
  OFBool good() const override { return OFTrue; }
  OFCondition status() const override { return EC_Normal; }
  OFBool eos() override { return position_ == bytes_.size(); }
  offile_off_t avail() override {
    return static_cast<offile_off_t>(bytes_.size() - position_);
  }
  offile_off_t read(void* buffer, offile_off_t length) override {
    const size_t count = Clamp(length);
    std::memcpy(buffer, bytes_.data() + position_, count);
    position_ += count;
    return static_cast<offile_off_t>(count);
  }
  offile_off_t skip(offile_off_t length) override {
    const size_t count = Clamp(length);
    position_ += count;
    return static_cast<offile_off_t>(count);
  }
  void putback(offile_off_t length) override {
    position_ -= std::min(
        position_, static_cast<size_t>(std::max(length, offile_off_t{0})));
  }

 private:
  size_t Clamp(offile_off_t length) const {
    if (length <= 0) return 0;
    return std::min(static_cast<size_t>(length), bytes_.size() - position_);
  }

  const std::string& bytes_;
  size_t position_ = 0;
};

class MemoryInputStream : public DcmInputStream {
 public:
  // `bytes` must outlive the stream and every object read through it.
  explicit MemoryInputStream(const std::string& bytes)
      : DcmInputStream(&producer_), bytes_(bytes), producer_(bytes) {}

  DcmInputStreamFactory* newFactory() const override;

  // Deflated data sets: deferred values are found again by inflating from
  // where the compressed part begins.
  OFCondition installCompressionFilter(E_StreamCompression filter) override {
    const offile_off_t start = tell();
    OFCondition result = DcmInputStream::installCompressionFilter(filter);
    if (result.good()) {
      compression_ = filter;
      compressed_from_ = start;
    }
    return result;
  }

  // A short skip means an element declared more bytes than the file has.
  offile_off_t skip(offile_off_t length) override {
    const offile_off_t skipped = DcmInputStream::skip(length);
    if (skipped < length) overrun_ = true;
    return skipped;
  }
  bool overrun() const { return overrun_; }

 private:
  const std::string& bytes_;
  MemoryProducer producer_;
  E_StreamCompression compression_ = ESC_none;
  offile_off_t compressed_from_ = 0;
  bool overrun_ = false;
};

class MemoryStreamFactory : public DcmInputStreamFactory {
 public:
  MemoryStreamFactory(const std::string& bytes, E_StreamCompression compression,
                      offile_off_t compressed_from, offile_off_t offset)
      : bytes_(bytes),
        compression_(compression),
        compressed_from_(compressed_from),
        offset_(offset) {}

  DcmInputStream* create() const override {
    auto* stream = new MemoryInputStream(bytes_);
    offile_off_t position = 0;
    if (compression_ != ESC_none) {
      stream->skip(compressed_from_);
      stream->installCompressionFilter(compression_);
      position = compressed_from_;
    }
    stream->skip(offset_ - position);
    return stream;
  }
  DcmInputStreamFactory* clone() const override {
    return new MemoryStreamFactory(*this);
  }
  // DCMTK only tells file factories from temporary-file ones (which delete
  // their file); memory behaves as a file that stays.
  DcmInputStreamFactoryType ident() const override {
    return DFT_DcmInputFileStreamFactory;
  }

 private:
  const std::string& bytes_;
  E_StreamCompression compression_;
  offile_off_t compressed_from_;
  offile_off_t offset_;
};

DcmInputStreamFactory* MemoryInputStream::newFactory() const {
  return new MemoryStreamFactory(bytes_, compression_, compressed_from_,
                                 tell());
}

// After a failed parse the deferred values may be the ones whose length
// lied; reading one would allocate what it claims. Nothing on the error
// path needs a large value, so they are all dropped.
void DropDeferredValues(DcmFileFormat* file) {
  DcmStack stack;
  while (file->nextObject(stack, OFTrue).good()) {
    DcmObject* object = stack.top();
    if (object == nullptr || !object->isLeaf()) continue;
    auto* element = static_cast<DcmElement*>(object);
    if (!element->valueLoaded()) element->clear();
  }
}

std::string GetString(DcmItem* item, const DcmTagKey& key) {
  OFString value;
  if (item == nullptr || item->findAndGetOFString(key, value).bad()) return "";
  return std::string(value.c_str());
}

// DCMTK names UIDs in CamelCase ("BasicTextSRStorage"); site IT reads
// "Basic Text SR Storage" more easily.
std::string HumanUidName(const char* camel) {
  std::string name;
  const size_t n = std::strlen(camel);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = camel[i];
    if (i > 0 && std::isupper(c)) {
      const unsigned char before = camel[i - 1];
      const bool word_start =
          std::islower(before) || std::isdigit(before) ||
          (std::isupper(before) && i + 1 < n &&
           std::islower(static_cast<unsigned char>(camel[i + 1])));
      if (word_start) name.push_back(' ');
    }
    name.push_back(static_cast<char>(c));
  }
  return name;
}

std::string SopClassDescription(const std::string& uid) {
  const char* name = dcmFindNameOfUID(uid.c_str(), nullptr);
  if (name == nullptr) return absl::StrCat("SOP class ", uid);
  return absl::StrCat(HumanUidName(name), " (", uid, ")");
}

// Names for transfer syntaxes newer than DCMTK 3.6.7's table, so that the
// error for them says what they are rather than "unknown".
std::string TransferSyntaxName(const std::string& uid, E_TransferSyntax xfer) {
  if (xfer != EXS_Unknown) return DcmXfer(xfer).getXferName();
  if (uid.rfind("1.2.840.10008.1.2.4.20", 0) == 0) {
    return "High-Throughput JPEG 2000";
  }
  if (uid.rfind("1.2.840.10008.1.2.4.11", 0) == 0) return "JPEG XL";
  return "unknown transfer syntax";
}

bool CanDecode(E_TransferSyntax xfer) {
  if (xfer == EXS_Unknown) return false;
  // Native (and deflated) data needs no codec.
  if (DcmXfer(xfer).isNotEncapsulated()) return true;
  return DcmCodecList::canChangeCoding(xfer, EXS_LittleEndianExplicit);
}

absl::Status UndecodableSyntax(const std::string& origin,
                               const DicomImageInfo& info) {
  return absl::UnimplementedError(absl::StrCat(
      origin, ": transfer syntax ", info.transfer_syntax_name, " (",
      info.transfer_syntax_uid,
      ") cannot be decoded here; supported: uncompressed, JPEG baseline, "
      "extended and lossless, JPEG-LS and RLE (export the image from the "
      "PACS or scanner in one of these)"));
}

// Spacing from the Sequence of Ultrasound Regions. A 2D tissue region
// (Region Spatial Format 1) is the B-mode image; M-mode and Doppler strips
// have time on one axis, so they only count when no 2D region is calibrated.
void ReadRegionSpacing(DcmDataset* dataset, DicomImageInfo* info) {
  DcmSequenceOfItems* regions = nullptr;
  if (dataset->findAndGetSequence(DCM_SequenceOfUltrasoundRegions, regions)
          .bad() ||
      regions == nullptr) {
    return;
  }
  constexpr Uint16 kCentimetre = 3;
  auto delta_mm = [](DcmItem* item, const DcmTagKey& units_key,
                     const DcmTagKey& delta_key) -> std::optional<double> {
    Uint16 units = 0;
    Float64 delta = 0;
    if (item->findAndGetUint16(units_key, units).bad() ||
        units != kCentimetre ||
        item->findAndGetFloat64(delta_key, delta).bad() ||
        !std::isfinite(delta) || delta == 0) {
      return std::nullopt;
    }
    return std::fabs(delta) * 10.0;
  };
  for (const bool want_2d : {true, false}) {
    for (unsigned long i = 0; i < regions->card(); ++i) {
      DcmItem* item = regions->getItem(i);
      if (item == nullptr) continue;
      Uint16 format = 0;
      item->findAndGetUint16(DCM_RegionSpatialFormat, format);
      if (want_2d && format != 1) continue;
      std::optional<double> x =
          delta_mm(item, DCM_PhysicalUnitsXDirection, DCM_PhysicalDeltaX);
      std::optional<double> y =
          delta_mm(item, DCM_PhysicalUnitsYDirection, DCM_PhysicalDeltaY);
      if (x || y) {
        info->spacing_x_mm = x;
        info->spacing_y_mm = y;
        return;
      }
    }
  }
}

absl::Status CheckDimensions(int columns, int rows, const std::string& origin) {
  return CheckImageDimensions(columns, rows, origin + " (DICOM)");
}

// DicomImage fills missing native pixel data with zeros (and only logs it),
// which would turn a truncated file into a silently black image; the length
// is therefore checked against what the header declares.
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

// The fragments of encapsulated (compressed) pixel data as stored in the
// file, or null when the pixel data is not encapsulated.
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

// DCMTK 3.6.7's RLE decoder takes the segment offsets of the RLE header on
// trust: an offset past the end of the fragment made it read far outside
// the buffer (SEGV, found by tests/fuzz/dicom_fuzz), and a segment that
// decodes to fewer bytes than the frame needs is padded with its last value
// (read from before the decoder's buffer when the segment gave nothing). So
// the fragment of the frame that is decoded is checked first: one fragment
// per frame (PS3.5 Annex G), a sane header, segments inside the fragment and
// in order, and each long enough to fill the frame.
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

// DicomImage reports a failed decompression only as a generic status (the
// codec's words go to the silenced log), so on failure the frame is decoded
// once more through dcmdata to put the codec's reason into the error.
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

}  // namespace

bool LooksLikeDicom(const std::string& bytes) {
  return bytes.size() >= kDicmOffset + 4 &&
         std::memcmp(bytes.data() + kDicmOffset, "DICM", 4) == 0;
}

absl::StatusOr<GrayImage> DecodeDicomGray(const std::string& bytes,
                                          const std::string& origin,
                                          DicomImageInfo* info_out,
                                          DicomDecodePath path) {
  DicomImageInfo local_info;
  DicomImageInfo& info = info_out != nullptr ? *info_out : local_info;
  info = DicomImageInfo();
  if (!LooksLikeDicom(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": not a DICOM file (no \"DICM\" marker at byte 128)"));
  }
  InitializeDcmtkOnce();
  if (!dcmDataDict.isDictionaryLoaded()) {
    // Without the dictionary implicit-VR files parse as unknown elements.
    return absl::FailedPreconditionError(
        "DCMTK's DICOM data dictionary is not loaded (install libdcmtk's "
        "dicom.dic or set DCMDICTPATH)");
  }

  // Parsed straight from memory: the bytes are already here, and a temporary
  // copy on disk would be one more place for patient data to linger.
  DcmFileFormat file;
  MemoryInputStream stream(bytes);
  file.transferInit();
  const OFCondition parsed = file.read(stream);
  file.transferEnd();
  // An element longer than what is left of the file is truncation, also
  // where DCMTK's parser lets it pass.
  const bool broken = parsed.bad() || stream.overrun();
  if (broken) DropDeferredValues(&file);

  DcmMetaInfo* meta = file.getMetaInfo();
  DcmDataset* dataset = file.getDataset();
  info.transfer_syntax_uid = GetString(meta, DCM_TransferSyntaxUID);
  E_TransferSyntax xfer = dataset->getOriginalXfer();
  if (!info.transfer_syntax_uid.empty()) {
    xfer = DcmXfer(info.transfer_syntax_uid.c_str()).getXfer();
  } else if (xfer != EXS_Unknown) {
    info.transfer_syntax_uid = DcmXfer(xfer).getXferID();
  }
  info.transfer_syntax_name =
      TransferSyntaxName(info.transfer_syntax_uid, xfer);
  info.sop_class_uid = GetString(dataset, DCM_SOPClassUID);
  if (info.sop_class_uid.empty()) {
    info.sop_class_uid = GetString(meta, DCM_MediaStorageSOPClassUID);
  }
  info.modality = GetString(dataset, DCM_Modality);
  info.photometric = GetString(dataset, DCM_PhotometricInterpretation);
  Uint16 rows = 0, columns = 0;
  dataset->findAndGetUint16(DCM_Rows, rows);
  dataset->findAndGetUint16(DCM_Columns, columns);
  info.rows = rows;
  info.columns = columns;
  info.frames = 1;
  if (dataset->tagExistsWithValue(DCM_NumberOfFrames)) {
    Sint32 frames = 0;
    if (dataset->findAndGetSint32(DCM_NumberOfFrames, frames).bad() ||
        frames < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin,
                       ": DICOM Number of Frames (0028,0008) is not a positive "
                       "number"));
    }
    info.frames = frames;
  }
  ReadRegionSpacing(dataset, &info);

  const bool decodable = CanDecode(xfer);
  if (broken) {
    if (!decodable && !info.transfer_syntax_uid.empty()) {
      return UndecodableSyntax(origin, info);
    }
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": DICOM is truncated or corrupt (",
        parsed.bad() ? parsed.text() : "an element is longer than the file",
        ")"));
  }

  DcmElement* pixel_data = nullptr;
  if (dataset->findAndGetElement(DCM_PixelData, pixel_data).bad() ||
      pixel_data == nullptr) {
    if (dataset->tagExists(DCM_FloatPixelData) ||
        dataset->tagExists(DCM_DoubleFloatPixelData)) {
      return absl::UnimplementedError(absl::StrCat(
          origin, ": ", SopClassDescription(info.sop_class_uid),
          " holds floating-point pixel data, which is not read here"));
    }
    if (!info.sop_class_uid.empty() &&
        !dcmIsImageStorageSOPClassUID(info.sop_class_uid.c_str())) {
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": DICOM object is a ",
          SopClassDescription(info.sop_class_uid),
          info.modality.empty() ? ""
                                : absl::StrCat(", modality ", info.modality),
          ", not an image: it has no Pixel Data (7FE0,0010)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM has no Pixel Data (7FE0,0010)"));
  }
  if (pixel_data->getLengthField() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM Pixel Data (7FE0,0010) is empty"));
  }
  if (!decodable) return UndecodableSyntax(origin, info);
  if (absl::Status status = CheckDimensions(info.columns, info.rows, origin);
      !status.ok()) {
    return status;
  }
  info.frame_used = info.frames / 2;
  if (DcmXfer(dataset->getOriginalXfer()).isNotEncapsulated()) {
    if (absl::Status status =
            CheckNativeLength(dataset, pixel_data, info, origin);
        !status.ok()) {
      return status;
    }
  } else if (dataset->getOriginalXfer() == EXS_RLELossless) {
    if (absl::Status status =
            CheckRleFrame(pixel_data, info, info.frame_used, origin);
        !status.ok()) {
      return status;
    }
  } else {
    // The other decoders registered here are JPEG and JPEG-LS.
    Uint16 samples = 1, bits_allocated = 0;
    dataset->findAndGetUint16(DCM_SamplesPerPixel, samples);
    dataset->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
    if (absl::Status status = CheckJpegFrame(
            pixel_data, info, samples, bits_allocated, info.frame_used, origin);
        !status.ok()) {
      return status;
    }
  }
  if (path == DicomDecodePath::kAuto) {
    if (std::optional<GrayImage> fast =
            DecodeJpegBaselineFast(dataset, pixel_data, info)) {
      return *std::move(fast);
    }
  }
  // Partial access decompresses only the frame we keep; embedded overlays
  // would force the whole pixel data to be decoded and are not signal.
  const unsigned long flags =
      CIF_UsePartialAccessToPixelData | CIF_NeverAccessEmbeddedOverlays;
  auto image = std::make_unique<DicomImage>(
      dataset, dataset->getOriginalXfer(), flags,
      static_cast<unsigned long>(info.frame_used), 1UL);
  if (image->getStatus() != EIS_Normal) {
    std::string why = DicomImage::getString(image->getStatus());
    if (DcmXfer(dataset->getOriginalXfer()).isEncapsulated()) {
      const std::string codec =
          CodecDiagnosis(dataset, pixel_data, info.frame_used);
      if (!codec.empty()) why = codec;
    }
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": DICOM pixel data cannot be decoded (", why, "; ",
        info.photometric.empty() ? "no photometric interpretation"
                                 : info.photometric,
        ", ", info.transfer_syntax_name, "): truncated or corrupt"));
  }
  std::unique_ptr<DicomImage> gray;
  if (!image->isMonochrome()) {
    // Default weights are ITU-R BT.601 luma, as in image_io's PNG/JPEG path.
    gray.reset(image->createMonochromeImage());
    if (gray == nullptr || gray->getStatus() != EIS_Normal) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": DICOM ", info.photometric,
                       " image cannot be converted to grayscale"));
    }
  } else {
    gray = std::move(image);
  }

  // An 8-bit image is already display-ready; wider data (12 or 16 bits)
  // needs a window, and the one chosen at the scanner is the best guess.
  Uint16 bits_stored = 8;
  dataset->findAndGetUint16(DCM_BitsStored, bits_stored);
  if (bits_stored > 8) {
    const bool windowed = (gray->getWindowCount() > 0 && gray->setWindow(0)) ||
                          (gray->getVoiLutCount() > 0 && gray->setVoiLut(0));
    if (!windowed) gray->setMinMaxWindow(0);
  }

  // DCMTK inverts MONOCHROME1 through its presentation LUT in floating
  // point, which lands some values one off (128 stays 128, not 127).
  // Rendering uninverted and flipping the 8-bit result is exact.
  const bool invert = gray->getPhotometricInterpretation() == EPI_Monochrome1;
  if (invert && !gray->setPresentationLutShape(ESP_Identity)) {
    return absl::InternalError(absl::StrCat(
        origin, ": cannot render the MONOCHROME1 image uninverted"));
  }

  const unsigned long width = gray->getWidth();
  const unsigned long height = gray->getHeight();
  if (width != static_cast<unsigned long>(info.columns) ||
      height != static_cast<unsigned long>(info.rows)) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM decoded to ", width, "x", height,
                     " instead of ", info.columns, "x", info.rows));
  }
  GrayImage out;
  out.width = info.columns;
  out.height = info.rows;
  const unsigned long size = gray->getOutputDataSize(8);
  if (size != static_cast<unsigned long>(out.width) * out.height) {
    return absl::InternalError(absl::StrCat(origin, ": DICOM renderer gave ",
                                            size, " bytes for ", out.width, "x",
                                            out.height, " 8-bit pixels"));
  }
  out.pixels.resize(size);
  if (!gray->getOutputData(out.pixels.data(), size, 8, 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": DICOM pixel data cannot be rendered"));
  }
  if (invert) {
    for (uint8_t& value : out.pixels) value = static_cast<uint8_t>(255 - value);
  }
  return out;
}

absl::StatusOr<GrayImage> ReadDicomGray(const std::string& path,
                                        DicomImageInfo* info) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeDicomGray(*bytes, path, info);
}

}  // namespace echofed
