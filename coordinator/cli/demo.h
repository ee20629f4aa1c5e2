#ifndef ECHOFED_COORDINATOR_CLI_DEMO_H_
#define ECHOFED_COORDINATOR_CLI_DEMO_H_

#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace echofed {

struct DemoOptions {
  // Everything the demo makes goes here (PKI, data, state, logs, model).
  // Empty: DefaultDemoWorkDir().
  std::string work_dir;
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

// Where the demo works unless told otherwise: $XDG_STATE_HOME/echofed/demo,
// else ~/.local/state/echofed/demo, else (no HOME) a folder of this user's
// in the temporary directory ($TMPDIR, else /tmp).
//
// Why there: the current folder is often the source tree (the README runs
// the demo from the repository root), where a work folder shows up as
// untracked files. The XDG state home is the place for what should outlive
// a run but is not a user's document (logs, history): the demo's logs,
// throwaway PKI and final model, which the `echofed-agent diagnose` command
// it prints at the end still needs later. /tmp is only the fallback: it is
// emptied at reboot or by age, and shared between users. The demo empties
// its folder at each run, so it does not grow.
std::string DefaultDemoWorkDir();

// A whole federation on one machine: throwaway PKI, synthetic cohort, the
// real coordinator and one real agent process per hospital over loopback
// mutual TLS. Prints each round's loss and validation accuracy per site
// and pooled, downloads the final model. Its last line, and any error it
// returns, names the work folder.
absl::Status RunDemo(const DemoOptions& options, std::ostream& out);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_DEMO_H_
