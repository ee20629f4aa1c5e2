#ifndef ECHOFED_COORDINATOR_STORE_H_
#define ECHOFED_COORDINATOR_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "proto/admin.pb.h"

struct sqlite3;

namespace echofed {

// The coordinator's durable state in SQLite (WAL): runs and their committed
// rounds. Model files live beside the database; a round row is written only
// after its model file is complete, so every row points to a whole model.
// Thread-safe.
class Store {
 public:
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path);
  ~Store();

  struct StoredRun {
    std::string run_id;
    Plan plan;
    RunStatus::State state = RunStatus::STATE_UNSPECIFIED;
    std::string message;
    int64_t created_unix_ms = 0;
    std::vector<RoundRecord> rounds;  // ascending
  };

  absl::Status SaveRun(const std::string& run_id, const Plan& plan,
                       RunStatus::State state, const std::string& message,
                       int64_t created_unix_ms);
  absl::Status UpdateRunState(const std::string& run_id, RunStatus::State state,
                              const std::string& message);
  // Inserts or replaces a round, and sets the run's state, in one
  // transaction. `synced` (the default): durable when it returns (the WAL
  // is fsynced). Unsynced: consistent but may be lost in a power cut until
  // the next synced save, whose fsync of the WAL covers it; for saves that
  // only add to a record already committed (its audit head).
  absl::Status SaveRound(const std::string& run_id, const RoundRecord& round,
                         RunStatus::State run_state, bool synced = true);
  absl::StatusOr<std::vector<StoredRun>> LoadRuns();

 private:
  explicit Store(sqlite3* db) : db_(db) {}
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveRoundLocked(const std::string& run_id,
                               const RoundRecord& round,
                               RunStatus::State run_state)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_STORE_H_
