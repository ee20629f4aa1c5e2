#ifndef ECHOFED_SITE_AGENT_DATA_IMAGE_IO_H_
#define ECHOFED_SITE_AGENT_DATA_IMAGE_IO_H_

// Grayscale images from the formats hospitals archive. PNG through libpng's
// simplified API, JPEG through libjpeg-turbo, DICOM through DCMTK
// (site-agent/data/dicom_reader.h: its transfer syntaxes, windowing and the
// middle-frame policy for multi-frame objects). Colour images are converted
// to luminance by the libraries (ITU-R BT.601/709 weights): B-mode
// ultrasound is grayscale, and colour overlays are not used as signal.

#include <cstdint>
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
// 128), not by file name. Errors are INVALID_ARGUMENT for unreadable content,
// UNIMPLEMENTED for DICOM in a transfer syntax without a decoder here (e.g.
// JPEG 2000), NOT_FOUND for missing files.
absl::StatusOr<GrayImage> ReadGrayImage(const std::string& path);
absl::StatusOr<GrayImage> DecodeGrayImage(const std::string& bytes,
                                          const std::string& origin);

absl::Status WritePng(const std::string& path, const GrayImage& image);
absl::Status WriteJpeg(const std::string& path, const GrayImage& image,
                       int quality);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_IMAGE_IO_H_
