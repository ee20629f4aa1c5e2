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
#include "site-agent/data/dicom_j2k.h"
#include "site-agent/data/dicom_palette.h"
#include "site-agent/data/dicom_pixel_checks.h"

namespace echofed {
namespace {

using dicom_internal::CheckDimensions;
using dicom_internal::CheckJpegFrame;
using dicom_internal::CheckNativeLength;
using dicom_internal::CheckRleFrame;
using dicom_internal::CodecDiagnosis;
using dicom_internal::DecodeJpeg2000Frame;
using dicom_internal::DecodeJpegBaselineFast;
using dicom_internal::EncapsulatedFragments;
using dicom_internal::ExpandSegmentedPalette;
using dicom_internal::IsJpeg2000Syntax;

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
  if (uid == "1.2.840.10008.1.2.4.201") {
    return "High-Throughput JPEG 2000 Lossless";
  }
  if (uid == "1.2.840.10008.1.2.4.202") {
    return "High-Throughput JPEG 2000 with RPCL Options Lossless";
  }
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

// What would make an object in `uid` decodable, for site IT to act on.
std::string UndecodableAdvice(const std::string& uid) {
  auto in = [&uid](int first, int last) {
    constexpr char kPrefix[] = "1.2.840.10008.1.2.4.";
    if (uid.rfind(kPrefix, 0) != 0) return false;
    const std::string tail = uid.substr(sizeof(kPrefix) - 1);
    if (tail.empty() || tail.size() > 3 ||
        tail.find_first_not_of("0123456789") != std::string::npos) {
      return false;
    }
    const int number = std::stoi(tail);
    return number >= first && number <= last;
  };
  if (in(100, 108)) {
    return "it is a video (MPEG-2, MPEG-4 or HEVC); export single frames "
           "uncompressed or as JPEG baseline";
  }
  if (in(92, 93)) {
    return "JPEG 2000 Part 2 multi-component coding is not read; export as "
           "JPEG 2000 (Part 1), uncompressed or JPEG baseline";
  }
  if (in(94, 95)) {
    return "the pixel data are not in the file but on a JPIP server; "
           "retrieve the object from the PACS with its pixel data";
  }
  if (in(110, 112)) {
    return "JPEG XL has no decoder here; export uncompressed, as JPEG "
           "baseline or as JPEG 2000";
  }
  return "export the image from the PACS or scanner uncompressed or as JPEG "
         "baseline";
}

absl::Status UndecodableSyntax(const std::string& origin,
                               const DicomImageInfo& info,
                               DcmDataset* dataset) {
  Uint16 samples = 0, bits_stored = 0;
  dataset->findAndGetUint16(DCM_SamplesPerPixel, samples);
  dataset->findAndGetUint16(DCM_BitsStored, bits_stored);
  return absl::UnimplementedError(absl::StrCat(
      origin, ": transfer syntax ", info.transfer_syntax_name, " (",
      info.transfer_syntax_uid, "), ",
      info.photometric.empty() ? "no photometric interpretation"
                               : info.photometric,
      ", ", samples, " sample(s) of ", bits_stored,
      " bits, cannot be decoded here: ",
      UndecodableAdvice(info.transfer_syntax_uid),
      " (read here: uncompressed, deflated, JPEG baseline, extended and "
      "lossless, JPEG-LS, RLE, JPEG 2000 and HTJ2K)"));
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

// Old archives and some PACS exports hold the bare data set, without the
// preamble and file meta header: it starts with its first element, nearly
// always in group 0008 (or 0002 where only the preamble is missing). The
// first element header must be a plausible one, in implicit or explicit VR,
// little or big endian. PNG (0x89 'P') and JPEG (0xFF 0xD8) never start so.
bool LooksLikeDicomDataset(const std::string& bytes) {
  if (bytes.size() < 8) return false;
  const auto* b = reinterpret_cast<const unsigned char*>(bytes.data());
  const unsigned little_group = b[0] | b[1] << 8;
  const unsigned big_group = b[0] << 8 | b[1];
  const bool explicit_vr = std::isupper(b[4]) && std::isupper(b[5]) &&
                           DcmVR(std::string(bytes, 4, 2).c_str()).isStandard();
  if (big_group == 0x0008) return explicit_vr;
  if (little_group != 0x0008 && little_group != 0x0002) return false;
  if (explicit_vr) return true;
  // Implicit VR: a 32-bit length that fits in the file (or is undefined,
  // as for a sequence).
  const uint64_t length = static_cast<uint64_t>(b[4]) | b[5] << 8 | b[6] << 16 |
                          static_cast<uint64_t>(b[7]) << 24;
  return length == 0xFFFFFFFFu || length <= bytes.size() - 8;
}

// DicomImage's status, worded as what is wrong with the file: only a
// failed decompression or an unreadable document is corruption; an
// attribute that is missing or has a value DCMTK does not render is named
// as such, with what the object is.
absl::Status RenderError(const std::string& origin, const DicomImageInfo& info,
                         DcmDataset* dataset, DcmElement* pixel_data,
                         EI_Status status) {
  Uint16 samples = 0, bits_allocated = 0, bits_stored = 0;
  dataset->findAndGetUint16(DCM_SamplesPerPixel, samples);
  dataset->findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  dataset->findAndGetUint16(DCM_BitsStored, bits_stored);
  const std::string what =
      absl::StrCat(info.photometric.empty() ? "no photometric interpretation"
                                            : info.photometric,
                   ", ", samples, " sample(s), ", bits_stored, " of ",
                   bits_allocated, " bits, ", info.transfer_syntax_name);
  std::string why = DicomImage::getString(status);
  switch (status) {
    case EIS_MissingAttribute:
    case EIS_InvalidValue:
    case EIS_NotSupportedValue:
      return absl::InvalidArgumentError(absl::StrCat(
          origin, ": DICOM image cannot be rendered (", why, "; ", what,
          "): its image pixel attributes are incomplete or not supported "
          "here; export it uncompressed as MONOCHROME2 or RGB"));
    default:
      break;
  }
  if (pixel_data != nullptr &&
      DcmXfer(dataset->getOriginalXfer()).isEncapsulated()) {
    const std::string codec =
        CodecDiagnosis(dataset, pixel_data, info.frame_used);
    if (!codec.empty()) why = codec;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(origin, ": DICOM pixel data cannot be decoded (", why, "; ",
                   what, "): truncated or corrupt"));
}

}  // namespace

bool LooksLikeDicom(const std::string& bytes) {
  return (bytes.size() >= kDicmOffset + 4 &&
          std::memcmp(bytes.data() + kDicmOffset, "DICM", 4) == 0) ||
         LooksLikeDicomDataset(bytes);
}

absl::StatusOr<GrayImage> DecodeDicomGray(const std::string& bytes,
                                          const std::string& origin,
                                          DicomImageInfo* info_out,
                                          DicomDecodePath path, int frame) {
  DicomImageInfo local_info;
  DicomImageInfo& info = info_out != nullptr ? *info_out : local_info;
  info = DicomImageInfo();
  if (!LooksLikeDicom(bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin,
        ": not a DICOM file (no \"DICM\" marker at byte 128, and no data "
        "set element at byte 0)"));
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
  const bool declared_syntax = !info.transfer_syntax_uid.empty();
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

  // DCMTK 3.6.7 knows JPEG 2000 but cannot decode it, and does not know
  // HTJ2K at all (xfer is unknown then); OpenJPEG decodes both.
  const bool jpeg2000 = IsJpeg2000Syntax(info.transfer_syntax_uid);
  const bool decodable = jpeg2000 || CanDecode(xfer);
  if (broken) {
    if (!decodable && !info.transfer_syntax_uid.empty()) {
      return UndecodableSyntax(origin, info, dataset);
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
  if (!decodable) return UndecodableSyntax(origin, info, dataset);
  if (absl::Status status = CheckDimensions(info.columns, info.rows, origin);
      !status.ok()) {
    return status;
  }
  if (frame == kMiddleFrame) {
    info.frame_used = info.frames / 2;
  } else if (frame >= 0 && frame < info.frames) {
    info.frame_used = frame;
  } else {
    return absl::OutOfRangeError(absl::StrCat(origin, ": DICOM frame ", frame,
                                              " asked of an object of ",
                                              info.frames, " frame(s)"));
  }
  // A data set without a file meta header does not say how its pixel data
  // are compressed; DCMTK then reads encapsulated data as if uncompressed.
  const bool encapsulated = pixel_data->ident() == EVR_PixelData &&
                            EncapsulatedFragments(pixel_data) != nullptr;
  if (encapsulated && !jpeg2000 &&
      DcmXfer(dataset->getOriginalXfer()).isNotEncapsulated()) {
    return absl::UnimplementedError(absl::StrCat(
        origin,
        ": DICOM pixel data are compressed, but the file does not say "
        "how (",
        declared_syntax ? info.transfer_syntax_name : "no file meta header",
        "): export the image with its file meta header, or uncompressed"));
  }
  E_TransferSyntax render_xfer = dataset->getOriginalXfer();
  unsigned long render_frame = static_cast<unsigned long>(info.frame_used);
  if (jpeg2000) {
    if (absl::Status status = DecodeJpeg2000Frame(dataset, pixel_data, info,
                                                  info.frame_used, origin);
        !status.ok()) {
      return status;
    }
    // The frame is native pixel data now, and the only frame.
    pixel_data = nullptr;
    render_xfer = EXS_LittleEndianExplicit;
    render_frame = 0;
  } else if (DcmXfer(dataset->getOriginalXfer()).isNotEncapsulated()) {
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
  if (info.photometric == "PALETTE COLOR") {
    if (absl::Status status = ExpandSegmentedPalette(dataset, origin);
        !status.ok()) {
      return status;
    }
  }
  if (path == DicomDecodePath::kAuto && !jpeg2000) {
    if (std::optional<GrayImage> fast =
            DecodeJpegBaselineFast(dataset, pixel_data, info)) {
      return *std::move(fast);
    }
  }
  // Partial access decompresses only the frame we keep; embedded overlays
  // would force the whole pixel data to be decoded and are not signal.
  const unsigned long flags =
      CIF_UsePartialAccessToPixelData | CIF_NeverAccessEmbeddedOverlays;
  auto image = std::make_unique<DicomImage>(dataset, render_xfer, flags,
                                            render_frame, 1UL);
  if (image->getStatus() != EIS_Normal) {
    return RenderError(origin, info, dataset, pixel_data, image->getStatus());
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
                                        DicomImageInfo* info, int frame) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeDicomGray(*bytes, path, info, DicomDecodePath::kAuto, frame);
}

}  // namespace echofed
