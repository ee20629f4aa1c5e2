#ifndef ECHOFED_SITE_AGENT_DATA_IMAGE_IO_H_
#define ECHOFED_SITE_AGENT_DATA_IMAGE_IO_H_

// Grayscale images from the formats hospitals archive. PNG through libpng's
// simplified API, JPEG through libjpeg-turbo, DICOM through DCMTK
// (site-agent/data/dicom_reader.h: its transfer syntaxes, windowing and the
// middle-frame policy for multi-frame objects). Colour images are converted
// to luminance by the libraries (ITU-R BT.601/709 weights): B-mode
// ultrasound is grayscale, and colour overlays are not used as signal.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace echofed {

struct GrayImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // row-major, width * height
};

// Images larger than this in either dimension, or in total, are refused: a
// few bytes of header can otherwise ask for gigabytes (memory bombs).
// Ultrasound frames are far smaller (typically 1024 x 768).
inline constexpr int kMaxImageSide = 16384;
inline constexpr int64_t kMaxImagePixels = int64_t{64} << 20;

// INVALID_ARGUMENT for an empty image or one over the limits above; every
// reader checks the header's dimensions with it before allocating.
absl::Status CheckImageDimensions(int width, int height,
                                  const std::string& origin);

// Decodes by content (magic bytes: PNG signature, JPEG SOI, "DICM" at byte
// 128 or a bare DICOM data set), not by file name. Errors are
// INVALID_ARGUMENT for unreadable content, UNIMPLEMENTED for DICOM in a
// transfer syntax without a decoder here (e.g. MPEG-4), NOT_FOUND for
// missing files.
absl::StatusOr<GrayImage> ReadGrayImage(const std::string& path);
absl::StatusOr<GrayImage> DecodeGrayImage(const std::string& bytes,
                                          const std::string& origin);

// Which frames of a multi-frame DICOM object (a cine loop) become images:
// the plan's frame_selection and frame_step (proto/plan.proto).
struct FrameChoice {
  enum Kind { kMiddle, kEveryKth, kAll };
  Kind kind = kMiddle;
  int step = 1;  // k of kEveryKth: frames 0, k, 2k, ...
};

// Reads the file at `path` once and hands each chosen frame, decoded, to
// `visit` with its index, one frame at a time: a cine loop of hundreds of
// frames is never held decoded as a whole. PNG, JPEG and single-frame DICOM
// are one frame (index 0; the middle frame of a multi-frame object under
// kMiddle). Returns the first error, of the decoder or of `visit`; frames
// visited before it stay visited.
absl::Status ForEachGrayFrame(
    const std::string& path, const FrameChoice& choice,
    const std::function<absl::Status(int frame, GrayImage image)>& visit);

absl::Status WritePng(const std::string& path, const GrayImage& image);
absl::Status WriteJpeg(const std::string& path, const GrayImage& image,
                       int quality);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_IMAGE_IO_H_
