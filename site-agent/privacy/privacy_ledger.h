#ifndef ECHOFED_SITE_AGENT_PRIVACY_PRIVACY_LEDGER_H_
#define ECHOFED_SITE_AGENT_PRIVACY_PRIVACY_LEDGER_H_

#include <map>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace echofed {

// The rounds this site has released under differential privacy, per run,
// kept on disk so that an agent that restarts does not release a round a
// second time with fresh noise (a release its epsilon would not count).
// One line "run_id round" per release, appended and synced to disk before
// the update leaves. Not thread-safe (the agent's loop owns it).
class PrivacyLedger {
 public:
  // `path` empty: memory only (the releases are forgotten when the process
  // ends). A missing file is an empty ledger; a damaged one is DATA_LOSS,
  // since guessing would under-count.
  static absl::StatusOr<PrivacyLedger> Open(std::string path);

  bool Released(const std::string& run_id, int round) const;
  // Durable before it returns (when there is a file).
  absl::Status Record(const std::string& run_id, int round);
  const std::string& path() const { return path_; }

 private:
  explicit PrivacyLedger(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::map<std::string, std::set<int>> released_;
};

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PRIVACY_PRIVACY_LEDGER_H_
