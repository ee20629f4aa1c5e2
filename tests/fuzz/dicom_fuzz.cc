// libFuzzer target for the DICOM reader (site-agent/data/dicom_reader.h): the
// first code that touches a file a hospital hands us. Any status is an
// acceptable answer to a malformed object; a crash, a sanitizer report, a
// leak, an image that breaks the reader's own contract or one that changes
// from one decode to the next is a bug.
//
// DCMTK comes from Debian's packages, which are not instrumented: coverage
// feedback comes from our code around it (so the fuzzer learns which header
// fields and branches it reached), and ASan sees DCMTK's heap misuse only
// through the allocator and the intercepted libc calls.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/status/statusor.h"
#include "site-agent/data/dicom_reader.h"
#include "site-agent/data/image_io.h"

namespace {

// What callers rely on: the size they are told is the size they get, the
// memory-bomb limit holds, and the frame used is one the object has.
bool Consistent(const echofed::GrayImage& image,
                const echofed::DicomImageInfo& info) {
  return image.width > 0 && image.height > 0 &&
         image.width <= echofed::kMaxImageSide &&
         image.height <= echofed::kMaxImageSide &&
         image.pixels.size() == static_cast<size_t>(image.width) *
                                    static_cast<size_t>(image.height) &&
         image.width == info.columns && image.height == info.rows &&
         info.frame_used >= 0 && info.frame_used < info.frames;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  echofed::DicomImageInfo info;
  absl::StatusOr<echofed::GrayImage> image =
      echofed::DecodeDicomGray(bytes, "fuzz.dcm", &info);
  if (image.ok() && !Consistent(*image, info)) std::abort();

  // Decoding must be deterministic: a decoder that returns memory it never
  // wrote shows different heap garbage each time (that is how the
  // uninitialised rows of a short JPEG stream were found). The second decode
  // goes through DCMTK alone, which also fuzzes DCMTK's JPEG baseline
  // decoder where the libjpeg-turbo path would otherwise shadow it; for JPEG
  // baseline, which may have taken that path the first time, a third decode
  // is the one compared.
  echofed::DicomImageInfo dcmtk_info;
  absl::StatusOr<echofed::GrayImage> dcmtk = echofed::DecodeDicomGray(
      bytes, "fuzz.dcm", &dcmtk_info, echofed::DicomDecodePath::kDcmtkOnly);
  if (dcmtk.ok() && !Consistent(*dcmtk, dcmtk_info)) std::abort();
  if (info.transfer_syntax_uid == "1.2.840.10008.1.2.4.50") {
    image = echofed::DecodeDicomGray(bytes, "fuzz.dcm", &info,
                                     echofed::DicomDecodePath::kDcmtkOnly);
  }
  if (image.ok() != dcmtk.ok() ||
      (image.ok() && image->pixels != dcmtk->pixels)) {
    std::fprintf(stderr, "dicom_fuzz: two decodes of one object differ\n");
    std::abort();
  }
  return 0;
}
