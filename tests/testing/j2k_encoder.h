#ifndef ECHOFED_TESTS_TESTING_J2K_ENCODER_H_
#define ECHOFED_TESTS_TESTING_J2K_ENCODER_H_

// JPEG 2000 test objects: codestreams encoded with OpenJPEG from synthetic
// samples, and DICOM files around them (encapsulated pixel data, any
// transfer syntax UID, also ones DCMTK 3.6.7 does not know such as HTJ2K).
// Used by the reader's tests and the fuzzers' seed writer, so that no real
// image is ever needed. Plain functions, no GoogleTest: the fuzz build links
// this file too.

#include <cstdint>
#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcxfer.h"

namespace echofed::testing {

struct J2kSource {
  int width = 0, height = 0;
  int components = 1;  // 1 or 3
  int precision = 8;
  bool is_signed = false;
  std::vector<int32_t> samples;  // interleaved, width * height * components
  // Irreversible 9/7 wavelet at `ratio`:1 instead of the reversible 5/3.
  bool lossy = false;
  float ratio = 8;
  // The multiple component transform (RCT lossless, ICT lossy) on 3
  // components, as DICOM's YBR_RCT / YBR_ICT say.
  bool colour_transform = true;
  bool jp2 = false;  // the JP2 file format instead of a bare codestream
};

// The codestream (or JP2 file), or an empty string with `error` set.
std::string EncodeJ2k(const J2kSource& source, std::string* error);

// Puts the frames (one codestream each) into `dataset` as encapsulated Pixel
// Data of `xfer`, with an empty Basic Offset Table; each frame is split into
// `fragments_per_frame` fragments.
bool PutEncapsulatedFrames(DcmDataset* dataset, E_TransferSyntax xfer,
                           const std::vector<std::string>& frames,
                           int fragments_per_frame = 1);

// Saves `file` as Part 10 with `transfer_syntax_uid` in its meta header,
// the data set encoded as `xfer` (explicit VR little endian for every
// compressed syntax), so that syntaxes unknown to DCMTK can be written.
bool SaveDeclaring(DcmFileFormat* file, const std::string& path,
                   E_TransferSyntax xfer, const char* transfer_syntax_uid);

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_J2K_ENCODER_H_
