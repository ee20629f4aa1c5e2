// libFuzzer target for the JPEG 2000 / HTJ2K decoding of the DICOM reader
// (site-agent/data/dicom_j2k.h): OpenJPEG behind the reader's own check of
// the main header. The input is a codestream or a JP2 file, decoded with no
// DICOM header to agree with, so only the size limits bound it. Any status
// is an acceptable answer; a crash, a sanitizer report, a leak, a frame that
// contradicts its own size or limits, or one that changes from one decode
// to the next is a bug.
//
// OpenJPEG comes from Debian's package, not instrumented: coverage feedback
// comes from the header check around it, and ASan sees its heap misuse
// through the allocator and the intercepted libc calls.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "site-agent/data/dicom_j2k.h"
#include "site-agent/data/image_io.h"

namespace {

bool Consistent(const echofed::dicom_internal::J2kFrame& frame) {
  return frame.width > 0 && frame.height > 0 &&
         frame.width <= echofed::kMaxImageSide &&
         frame.height <= echofed::kMaxImageSide &&
         (frame.components == 1 || frame.components == 3) &&
         frame.precision >= 1 && frame.precision <= 16 &&
         (frame.bytes_per_sample == 1 || frame.bytes_per_sample == 2) &&
         frame.pixels.size() == static_cast<size_t>(frame.width) *
                                    static_cast<size_t>(frame.height) *
                                    static_cast<size_t>(frame.components) *
                                    static_cast<size_t>(frame.bytes_per_sample);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const echofed::dicom_internal::J2kExpectation any;
  auto frame =
      echofed::dicom_internal::DecodeJ2kCodestream(data, size, any, "fuzz.j2k");
  if (frame.ok() && !Consistent(*frame)) std::abort();
  // Memory OpenJPEG never wrote would differ between two decodes.
  auto again =
      echofed::dicom_internal::DecodeJ2kCodestream(data, size, any, "fuzz.j2k");
  if (frame.ok() != again.ok() ||
      (frame.ok() && frame->pixels != again->pixels)) {
    std::fprintf(stderr, "j2k_fuzz: two decodes of one codestream differ\n");
    std::abort();
  }
  return 0;
}
