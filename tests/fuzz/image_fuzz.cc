// libFuzzer target for DecodeGrayImage (site-agent/data/image_io.h), which
// picks libpng, libjpeg-turbo or DCMTK by the bytes' signature. Errors are the
// expected answer to most inputs; crashes, sanitizer reports, leaks,
// images that contradict their own dimensions and images that change from
// one decode to the next are bugs.
//
// The codec libraries are Debian's uninstrumented builds: coverage feedback
// comes from our dispatch and checks, and ASan catches the libraries' heap
// misuse through the allocator and libc interceptors only.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "site-agent/data/image_io.h"

namespace {

// The training dataset wraps the pixels as a height x width tensor
// (torch::from_blob) without checking their count.
bool Consistent(const echofed::GrayImage& image) {
  return image.width > 0 && image.height > 0 &&
         image.width <= echofed::kMaxImageSide &&
         image.height <= echofed::kMaxImageSide &&
         image.pixels.size() == static_cast<size_t>(image.width) *
                                    static_cast<size_t>(image.height);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<echofed::GrayImage> image =
      echofed::DecodeGrayImage(bytes, "fuzz-image");
  if (image.ok() && !Consistent(*image)) std::abort();
  // A decoder that hands back memory it never wrote shows different heap
  // garbage on a second decode (dicom_fuzz found DCMTK doing so).
  absl::StatusOr<echofed::GrayImage> again =
      echofed::DecodeGrayImage(bytes, "fuzz-image");
  if (image.ok() != again.ok() ||
      (image.ok() && image->pixels != again->pixels)) {
    std::fprintf(stderr, "image_fuzz: two decodes of one image differ\n");
    std::abort();
  }
  return 0;
}
