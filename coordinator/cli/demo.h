#ifndef ECHOFED_COORDINATOR_CLI_DEMO_H_
#define ECHOFED_COORDINATOR_CLI_DEMO_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace echofed {

struct DemoOptions {
  // Everything the demo makes goes here (PKI, data, state, logs, model).
  std::string work_dir = "echofed-demo";
  // Virtual hospitals. With 3 or more, the last one is an external
  // validation site, as in the study design.
  int sites = 4;
  int patients_per_site = 60;
  int rounds = 3;
  int local_epochs = 6;
  // Where echofed-coordinator and echofed-agent live (default: beside this
  // program).
  std::string bin_dir;
  absl::Duration timeout = absl::Minutes(5);
};

// A whole federation on one machine: throwaway PKI, synthetic cohort, the
// real coordinator and one real agent process per hospital over loopback
// mutual TLS. Prints each round's loss and validation accuracy per site
// and pooled, downloads the final model.
absl::Status RunDemo(const DemoOptions& options, std::ostream& out);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_DEMO_H_
