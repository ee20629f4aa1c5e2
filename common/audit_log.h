#ifndef ECHOFED_COMMON_AUDIT_LOG_H_
#define ECHOFED_COMMON_AUDIT_LOG_H_

// An append-only, hash-chained audit log: who did what, when, in which run
// and round, with which model digest. Each line carries the SHA-256 of the
// previous line's hash and its own fields, so editing, inserting, deleting
// or reordering any line breaks the chain from there on. Removing lines at
// the end cannot be seen from the file alone, so the head is also kept
// elsewhere: the coordinator puts it into every committed round record
// (RoundRecord.audit_head, shown by `echofed run status` and in reports),
// and VerifyAuditLogHead checks a log against such a head.
//
// Line format, tab-separated (tabs and newlines in fields become spaces):
//   seq  time(RFC 3339 UTC)  actor  action  run  round  digest  detail  hash
// with hash = hex SHA-256(previous hash + "\n" + the first eight fields
// joined by tabs); the first line's previous hash is 64 zeros.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace echofed {

struct AuditEvent {
  std::string actor;   // certificate identity, or "peer <address>"
  std::string action;  // e.g. refused, join, run-start, round-commit
  std::string run_id;  // empty when none
  int round = -1;      // -1 when none
  std::string digest;  // raw model digest bytes; empty when none
  std::string detail;
};

struct AuditVerification {
  int64_t lines = 0;
  std::string head_hash;  // hex; 64 zeros for an empty log
};

// A point in the chain as recorded outside the log: how many records it
// held and the hash of the last of them.
struct AuditHead {
  int64_t records = 0;
  std::string hash;  // lowercase hex; 64 zeros for an empty log
};

// Checks the whole chain. DATA_LOSS names the first line that does not fit.
absl::StatusOr<AuditVerification> VerifyAuditLog(const std::string& path);

// VerifyAuditLog, and that the log still holds `recorded` (e.g. a round
// record's audit head): DATA_LOSS saying how many records are missing when
// the log ends before it (cut at the end), or that the record at its
// position has another hash (cut and extended again, or another log).
// Records after the recorded head are checked by the chain only.
// INVALID_ARGUMENT when `recorded` is not a count and a 64-digit hex hash.
absl::StatusOr<AuditVerification> VerifyAuditLogHead(const std::string& path,
                                                     const AuditHead& recorded);

class AuditLog {
 public:
  // Opens (creating) the log and verifies it. A torn last line (a crash
  // mid-write) is cut off and the cut is itself recorded; any other break
  // of the chain is an error, so a tampered log is never extended as if
  // it were sound.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(
      const std::string& path);
  ~AuditLog();

  // Appends and syncs one line. Thread-safe.
  absl::Status Append(const AuditEvent& event, absl::Time when = absl::Now());

  // The last line written (its count and hash), for keeping outside the
  // log. Lines that failed to be written are not in it. Thread-safe; with
  // concurrent appends, a head at least as recent as the caller's own.
  AuditHead Head();

 private:
  AuditLog() = default;
  absl::Status AppendLocked(const AuditEvent& event, absl::Time when)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  std::FILE* file_ ABSL_GUARDED_BY(mu_) = nullptr;
  int64_t next_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::string last_hash_ ABSL_GUARDED_BY(mu_);
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_AUDIT_LOG_H_
