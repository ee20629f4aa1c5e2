#ifndef ECHOFED_SITE_AGENT_DATA_SYNTHETIC_COHORT_H_
#define ECHOFED_SITE_AGENT_DATA_SYNTHETIC_COHORT_H_

// A built-in synthetic neuroblastic-tumour cohort for demos and tests.
// SYNTHETIC: phantom B-mode images, not patient data, and not evidence of
// anything clinical.
//
// Each virtual hospital gets a manifest.csv and phantom ultrasound images
// whose lesion appearance depends on the subtype, following the usual
// sonographic description: NB heterogeneous and hypoechoic with irregular
// margins and frequent calcifications; GN homogeneous with a smooth,
// capsule-like margin and rare calcifications; GNB in between. Hospitals
// differ the way scanners do (gain, speckle, blur, pixel spacing) and in
// their case mix.
//
// Each hospital also archives its images differently, cycling through:
//   site-1  DICOM US Image Storage, uncompressed (explicit VR little
//           endian), MONOCHROME2
//   site-2  JPEG files
//   site-3  DICOM, JPEG baseline as YBR_FULL_422 (how many scanners export)
//   site-4  PNG files
//   site-5  DICOM, RLE lossless, MONOCHROME1
//   site-6  DICOM, JPEG-LS lossless, MONOCHROME2, files without extension
//   site-7  DICOM, JPEG baseline, MONOCHROME2
//   site-8  as site-1, and so on.
// DICOM objects carry the pixel spacing as a Sequence of Ultrasound Regions
// and a synthetic but recognisable patient (PatientID "S1P0001", name
// "SYNTHETIC^S1P0001", birth date, sex, study date) so that privacy tests
// can show that no identifier leaves a site. Output is deterministic for a
// seed: pixels, headers and UIDs alike.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace echofed {

struct SyntheticCohortOptions {
  std::string out_dir;
  int sites = 3;
  int patients_per_site = 40;
  // Side of the written images in pixels.
  int image_size = 96;
  uint64_t seed = 7;
};

// Names of the generated sites: site-1, site-2, ...
std::vector<std::string> SyntheticSiteNames(int sites);

// Writes out_dir/<site>/manifest.csv and out_dir/<site>/images/*.
absl::Status WriteSyntheticCohort(const SyntheticCohortOptions& options);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_SYNTHETIC_COHORT_H_
