#ifndef ECHOFED_COORDINATOR_CLI_ADMIN_CLIENT_H_
#define ECHOFED_COORDINATOR_CLI_ADMIN_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/grpc_util.h"
#include "proto/admin.grpc.pb.h"

namespace echofed {

// The operator's and statistician's side of the Admin service. Blocking;
// one call at a time.
class AdminClient {
 public:
  AdminClient(const std::string& address, const TlsMaterial& tls,
              const std::string& server_name = "");

  absl::StatusOr<std::string> StartRun(const Plan& plan);
  absl::Status StopRun(const std::string& run_id);
  absl::StatusOr<RunStatus> GetRunStatus(const std::string& run_id);
  absl::StatusOr<ListRunsResponse> ListRuns();
  // Streams a committed model to `path` (an .efm model file); returns its
  // digest, checked chunk by chunk.
  absl::StatusOr<std::string> DownloadModel(const std::string& run_id,
                                            int round, const std::string& path);

 private:
  std::unique_ptr<Admin::Stub> stub_;
};

// Human-readable summary of one round: train loss, the audit log's head at
// its commit, per-site and pooled accuracy for internal and external
// validation.
std::string FormatRound(const RunStatus& status, const RoundRecord& round);
// Text a site sent (activity, device), made safe for a terminal: printable
// ASCII only, so a site cannot send escape sequences to an operator's screen.
std::string PrintableText(absl::string_view text);

// One line per site: role, activity, progress (epoch, batch, loss) of a
// training site; what an external validation site is doing instead
// (ValidationSiteState), as it never trains.
std::string FormatSites(const RunStatus& status);
// Differential privacy runs: the plan's settings, the projected epsilon of a
// training site over the run and each site's epsilon spent so far; empty
// for other runs.
std::string FormatPrivacy(const RunStatus& status);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_ADMIN_CLIENT_H_
