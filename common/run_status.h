#ifndef ECHOFED_COMMON_RUN_STATUS_H_
#define ECHOFED_COMMON_RUN_STATUS_H_

// Reading a RunStatus the same way wherever it is shown: `echofed status`,
// `echofed run status` and the coordinator's status page.

#include <string>

#include "proto/admin.pb.h"

namespace echofed {

// What an external validation site of `run` is doing, in words for
// operators: "waiting (round 3 training; evaluated round 2)", "evaluating
// round 3", "evaluated round 3", ... Such a site never trains, so its
// SiteStatus has no epoch, batch or loss worth showing, and its activity
// word alone goes stale (it still says "evaluated" while the next round
// trains). This reads the run's phase and round, whether the site's
// evaluation report for the round is in the round record, and the activity
// the coordinator last saw. For a joined site; callers say "not joined" or
// "missing" themselves. May return the site's own words (a "declined: ..."
// heartbeat): callers make it safe for their medium.
std::string ValidationSiteState(const RunStatus& run, const SiteStatus& site);

}  // namespace echofed

#endif  // ECHOFED_COMMON_RUN_STATUS_H_
