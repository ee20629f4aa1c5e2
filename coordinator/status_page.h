#ifndef ECHOFED_COORDINATOR_STATUS_PAGE_H_
#define ECHOFED_COORDINATOR_STATUS_PAGE_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "coordinator/coordinator.h"
#include "coordinator/telemetry.h"
#include "proto/admin.pb.h"

namespace echofed {

// What the status page and the metrics endpoint show, copied out of the
// coordinator in one go so that rendering holds no lock and needs no
// socket. Aggregates only: run and round states, site activity, traffic and
// refusal counts; the coordinator holds no patient data to leak.
struct StatusSnapshot {
  absl::Time now;
  // The most recent run, with its sites and committed rounds.
  std::optional<RunStatus> latest;
  // Every run, without sites and rounds (ListRuns).
  std::vector<RunStatus> runs;
  Coordinator::SiteCounts sites;
  Telemetry::Snapshot telemetry;
};

StatusSnapshot TakeStatusSnapshot(Coordinator& coordinator);

// A self-contained HTML page (inline style, no script, no external
// resource), so that it also works saved to a file.
std::string RenderStatusPage(const StatusSnapshot& snapshot);

// Prometheus text exposition format 0.0.4.
std::string RenderPrometheusMetrics(const StatusSnapshot& snapshot);
inline constexpr char kPrometheusContentType[] =
    "text/plain; version=0.0.4; charset=utf-8";

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_STATUS_PAGE_H_
