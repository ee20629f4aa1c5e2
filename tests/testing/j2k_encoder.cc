#include "tests/testing/j2k_encoder.h"

#include <openjpeg.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcpixel.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"

namespace echofed::testing {
namespace {

// OpenJPEG writes through these; the JP2 writer seeks back to fill in box
// lengths.
struct Sink {
  std::string data;
  size_t position = 0;
};

OPJ_SIZE_T WriteSink(void* buffer, OPJ_SIZE_T count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  if (sink->position + count > sink->data.size()) {
    sink->data.resize(sink->position + count);
  }
  std::memcpy(&sink->data[sink->position], buffer, count);
  sink->position += count;
  return count;
}

OPJ_OFF_T SkipSink(OPJ_OFF_T count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  const int64_t target = static_cast<int64_t>(sink->position) + count;
  if (target < 0) return -1;
  if (static_cast<size_t>(target) > sink->data.size()) {
    sink->data.resize(static_cast<size_t>(target));
  }
  sink->position = static_cast<size_t>(target);
  return count;
}

OPJ_BOOL SeekSink(OPJ_OFF_T position, void* user) {
  auto* sink = static_cast<Sink*>(user);
  if (position < 0) return OPJ_FALSE;
  if (static_cast<size_t>(position) > sink->data.size()) {
    sink->data.resize(static_cast<size_t>(position));
  }
  sink->position = static_cast<size_t>(position);
  return OPJ_TRUE;
}

void KeepError(const char* message, void* user) {
  auto* error = static_cast<std::string*>(user);
  if (error->empty() && message != nullptr) *error = message;
}
void Ignore(const char*, void*) {}

}  // namespace

std::string EncodeJ2k(const J2kSource& source, std::string* error) {
  const size_t pixels = static_cast<size_t>(source.width) * source.height;
  if (source.width <= 0 || source.height <= 0 ||
      (source.components != 1 && source.components != 3) ||
      source.samples.size() != pixels * source.components) {
    *error = "J2kSource: inconsistent size";
    return "";
  }
  opj_cparameters_t parameters;
  opj_set_default_encoder_parameters(&parameters);
  parameters.tcp_numlayers = 1;
  parameters.cp_disto_alloc = 1;
  parameters.tcp_rates[0] = source.lossy ? source.ratio : 0;  // 0: lossless
  parameters.irreversible = source.lossy ? 1 : 0;
  parameters.tcp_mct =
      source.components == 3 && source.colour_transform ? 1 : 0;
  // Each resolution level halves the image; the smallest must keep a pixel.
  int resolutions = 1;
  while (resolutions < 6 &&
         (1 << resolutions) <= std::min(source.width, source.height)) {
    ++resolutions;
  }
  parameters.numresolution = resolutions;

  opj_image_cmptparm_t components[3];
  std::memset(components, 0, sizeof(components));
  for (int c = 0; c < source.components; ++c) {
    components[c].dx = 1;
    components[c].dy = 1;
    components[c].w = static_cast<OPJ_UINT32>(source.width);
    components[c].h = static_cast<OPJ_UINT32>(source.height);
    components[c].prec = static_cast<OPJ_UINT32>(source.precision);
    components[c].sgnd = source.is_signed ? 1 : 0;
  }
  std::unique_ptr<opj_image_t, void (*)(opj_image_t*)> image(
      opj_image_create(
          static_cast<OPJ_UINT32>(source.components), components,
          source.components == 3 ? OPJ_CLRSPC_SRGB : OPJ_CLRSPC_GRAY),
      opj_image_destroy);
  if (image == nullptr) {
    *error = "opj_image_create failed";
    return "";
  }
  image->x0 = 0;
  image->y0 = 0;
  image->x1 = static_cast<OPJ_UINT32>(source.width);
  image->y1 = static_cast<OPJ_UINT32>(source.height);
  for (size_t i = 0; i < pixels; ++i) {
    for (int c = 0; c < source.components; ++c) {
      image->comps[c].data[i] = source.samples[i * source.components + c];
    }
  }
  std::unique_ptr<opj_codec_t, void (*)(opj_codec_t*)> codec(
      opj_create_compress(source.jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K),
      opj_destroy_codec);
  opj_set_error_handler(codec.get(), KeepError, error);
  opj_set_warning_handler(codec.get(), Ignore, nullptr);
  opj_set_info_handler(codec.get(), Ignore, nullptr);
  if (!opj_setup_encoder(codec.get(), &parameters, image.get())) {
    if (error->empty()) *error = "opj_setup_encoder failed";
    return "";
  }
  Sink sink;
  std::unique_ptr<opj_stream_t, void (*)(opj_stream_t*)> stream(
      opj_stream_create(1 << 16, OPJ_FALSE), opj_stream_destroy);
  opj_stream_set_user_data(stream.get(), &sink, nullptr);
  opj_stream_set_write_function(stream.get(), WriteSink);
  opj_stream_set_skip_function(stream.get(), SkipSink);
  opj_stream_set_seek_function(stream.get(), SeekSink);
  if (!opj_start_compress(codec.get(), image.get(), stream.get()) ||
      !opj_encode(codec.get(), stream.get()) ||
      !opj_end_compress(codec.get(), stream.get())) {
    if (error->empty()) *error = "OpenJPEG could not encode";
    return "";
  }
  return sink.data;
}

bool PutEncapsulatedFrames(DcmDataset* dataset, E_TransferSyntax xfer,
                           const std::vector<std::string>& frames,
                           int fragments_per_frame) {
  auto* sequence = new DcmPixelSequence(DCM_PixelSequenceTag);
  sequence->insert(new DcmPixelItem(DCM_PixelItemTag));  // empty offset table
  for (const std::string& frame : frames) {
    const size_t parts = static_cast<size_t>(std::max(1, fragments_per_frame));
    // Even-sized pieces: DICOM items have even lengths, and padding inside a
    // codestream would corrupt it.
    size_t piece = (frame.size() / parts + 1) & ~size_t{1};
    for (size_t at = 0; at < frame.size(); at += piece) {
      const size_t length = std::min(piece, frame.size() - at);
      auto* fragment = new DcmPixelItem(DCM_PixelItemTag);
      if (fragment
              ->putUint8Array(reinterpret_cast<const Uint8*>(frame.data() + at),
                              length)
              .bad()) {
        delete fragment;
        delete sequence;
        return false;
      }
      sequence->insert(fragment);
    }
  }
  auto* pixel_data = new DcmPixelData(DCM_PixelData);
  pixel_data->putOriginalRepresentation(xfer, nullptr, sequence);
  if (dataset->insert(pixel_data, OFTrue).bad()) {
    delete pixel_data;
    return false;
  }
  return true;
}

bool SaveDeclaring(DcmFileFormat* file, const std::string& path,
                   E_TransferSyntax xfer, const char* transfer_syntax_uid) {
  // A first save fills the meta header; then only the UID changes.
  if (file->saveFile(path.c_str(), xfer).bad()) return false;
  DcmMetaInfo* meta = file->getMetaInfo();
  if (meta->putAndInsertString(DCM_TransferSyntaxUID, transfer_syntax_uid)
          .bad() ||
      meta->computeGroupLengthAndPadding(EGL_withGL, EPD_noChange,
                                         EXS_LittleEndianExplicit,
                                         EET_ExplicitLength)
          .bad()) {
    return false;
  }
  return file
      ->saveFile(path.c_str(), xfer, EET_ExplicitLength, EGL_recalcGL,
                 EPD_noChange, 0, 0, EWM_dontUpdateMeta)
      .good();
}

}  // namespace echofed::testing
