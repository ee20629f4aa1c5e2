#include "common/audit_log.h"

#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/sha256.h"

namespace echofed {
namespace {

const std::string& ZeroHash() {
  static const auto* zero = new std::string(64, '0');
  return *zero;
}

std::string Clean(absl::string_view field) {
  std::string out(field);
  for (char& c : out) {
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  }
  return out.empty() ? "-" : out;
}

std::string ChainHash(const std::string& previous, absl::string_view body) {
  return HexDigest(Sha256::Of(absl::StrCat(previous, "\n", body)));
}

struct Scan {
  AuditVerification verification;
  // Bytes of complete, verified lines; a torn tail starts here.
  uint64_t sound_bytes = 0;
  bool torn_tail = false;
};

absl::StatusOr<Scan> ScanLog(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Scan scan;
  scan.verification.head_hash = ZeroHash();
  if (!in) return scan;  // no log yet
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      scan.torn_tail = true;
      break;
    }
    absl::string_view line(text.data() + start, end - start);
    const int64_t number = scan.verification.lines + 1;
    std::vector<absl::string_view> fields = absl::StrSplit(line, '\t');
    size_t cut = line.rfind('\t');
    int64_t seq = 0;
    if (fields.size() != 9 || cut == absl::string_view::npos ||
        !absl::SimpleAtoi(fields[0], &seq)) {
      return absl::DataLossError(
          absl::StrCat(path, " line ", number, ": malformed"));
    }
    if (seq != number) {
      return absl::DataLossError(absl::StrCat(path, " line ", number,
                                              ": sequence number ", seq,
                                              " (lines removed or reordered)"));
    }
    std::string expected =
        ChainHash(scan.verification.head_hash, line.substr(0, cut));
    if (fields[8] != expected) {
      return absl::DataLossError(absl::StrCat(
          path, " line ", number,
          ": hash does not match (this line or an earlier one was edited)"));
    }
    scan.verification.head_hash = expected;
    scan.verification.lines = number;
    start = end + 1;
    scan.sound_bytes = start;
  }
  return scan;
}

}  // namespace

absl::StatusOr<AuditVerification> VerifyAuditLog(const std::string& path) {
  if (access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  absl::StatusOr<Scan> scan = ScanLog(path);
  if (!scan.ok()) return scan.status();
  if (scan->torn_tail) {
    return absl::DataLossError(absl::StrCat(
        path, " line ", scan->verification.lines + 1,
        ": incomplete (a crash mid-write; the coordinator cuts it at start)"));
  }
  return scan->verification;
}

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(
    const std::string& path) {
  absl::StatusOr<Scan> scan = ScanLog(path);
  if (!scan.ok()) {
    return absl::DataLossError(
        absl::StrCat("audit log is not intact, refusing to extend it: ",
                     scan.status().message()));
  }
  if (scan->torn_tail && truncate(path.c_str(), scan->sound_bytes) != 0) {
    return absl::InternalError(absl::StrCat("cannot repair ", path));
  }
  std::unique_ptr<AuditLog> log(new AuditLog());
  absl::MutexLock lock(&log->mu_);
  log->file_ = std::fopen(path.c_str(), "ab");
  if (log->file_ == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot open ", path, " for appending"));
  }
  log->next_seq_ = scan->verification.lines + 1;
  log->last_hash_ = scan->verification.head_hash;
  if (scan->torn_tail) {
    absl::Status noted =
        log->AppendLocked({"coordinator", "audit-repair", "", -1, "",
                           "cut an incomplete last line left by a crash"},
                          absl::Now());
    if (!noted.ok()) return noted;
  }
  return log;
}

AuditLog::~AuditLog() {
  absl::MutexLock lock(&mu_);
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status AuditLog::Append(const AuditEvent& event, absl::Time when) {
  absl::MutexLock lock(&mu_);
  return AppendLocked(event, when);
}

absl::Status AuditLog::AppendLocked(const AuditEvent& event, absl::Time when) {
  std::string body = absl::StrJoin(
      {absl::StrCat(next_seq_),
       absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", when, absl::UTCTimeZone()),
       Clean(event.actor), Clean(event.action), Clean(event.run_id),
       event.round < 0 ? std::string("-") : absl::StrCat(event.round),
       event.digest.empty() ? std::string("-") : HexDigest(event.digest),
       Clean(event.detail)},
      "\t");
  std::string hash = ChainHash(last_hash_, body);
  std::string line = absl::StrCat(body, "\t", hash, "\n");
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fflush(file_) != 0 || fsync(fileno(file_)) != 0) {
    return absl::InternalError("cannot write the audit log");
  }
  last_hash_ = hash;
  ++next_seq_;
  return absl::OkStatus();
}

}  // namespace echofed
