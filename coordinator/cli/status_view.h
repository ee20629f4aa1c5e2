#ifndef ECHOFED_COORDINATOR_CLI_STATUS_VIEW_H_
#define ECHOFED_COORDINATOR_CLI_STATUS_VIEW_H_

#include <string>

#include "absl/time/time.h"
#include "proto/admin.pb.h"

namespace echofed {

// The table of `echofed status` at time `now`: the run's round, phase and
// time left before the phase deadline; one line per site with its state
// (not joined, joined, training with epoch and batch, uploaded, evaluated,
// missing since when; for an external validation site waiting, evaluating
// or evaluated which round, see ValidationSiteState) and when it was last
// heard from; then the last
// committed round with its metrics (FormatRound). Text the sites sent
// (their activity word) is stripped of control characters, so a site
// cannot drive the operator's terminal.
std::string FormatLiveStatus(const RunStatus& status, absl::Time now);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_STATUS_VIEW_H_
