#ifndef ECHOFED_SITE_AGENT_SYNTHETIC_COHORT_H_
#define ECHOFED_SITE_AGENT_SYNTHETIC_COHORT_H_

// A built-in synthetic neuroblastic-tumour cohort for demos and tests.
// SYNTHETIC: phantom B-mode images, not patient data, and not evidence of
// anything clinical.
//
// Each virtual hospital gets a manifest.csv and phantom ultrasound images
// whose lesion appearance depends on the subtype, following the usual
// sonographic description: NB heterogeneous and hypoechoic with irregular
// margins and frequent calcifications; GN homogeneous with a smooth,
// capsule-like margin and rare calcifications; GNB in between. Hospitals
// differ the way scanners do (gain, speckle, resolution, file format) and
// in their case mix.

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

#endif  // ECHOFED_SITE_AGENT_SYNTHETIC_COHORT_H_
