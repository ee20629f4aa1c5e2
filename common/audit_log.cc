#include "common/audit_log.h"

#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
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
  // The hash of line `capture_line` (ScanLog), when the log reaches it.
  std::string captured_hash;
};

absl::StatusOr<Scan> ScanLog(const std::string& path,
                             int64_t capture_line = 0) {
  std::ifstream in(path, std::ios::binary);
  Scan scan;
  scan.verification.head_hash = ZeroHash();
  if (capture_line == 0) scan.captured_hash = ZeroHash();
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
    if (number == capture_line) scan.captured_hash = expected;
    scan.verification.head_hash = expected;
    scan.verification.lines = number;
    start = end + 1;
    scan.sound_bytes = start;
  }
  return scan;
}

absl::Status TornTail(const std::string& path, int64_t sound_lines) {
  return absl::DataLossError(absl::StrCat(
      path, " line ", sound_lines + 1,
      ": incomplete (a crash mid-write; the coordinator cuts it at start)"));
}

}  // namespace

absl::StatusOr<AuditVerification> VerifyAuditLog(const std::string& path) {
  if (access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  absl::StatusOr<Scan> scan = ScanLog(path);
  if (!scan.ok()) return scan.status();
  if (scan->torn_tail) return TornTail(path, scan->verification.lines);
  return scan->verification;
}

absl::StatusOr<AuditVerification> VerifyAuditLogHead(
    const std::string& path, const AuditHead& recorded) {
  const std::string hash = absl::AsciiStrToLower(recorded.hash);
  if (recorded.records < 0 || hash.size() != 64 ||
      hash.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return absl::InvalidArgumentError(
        "a recorded audit head is a record count and a 64-digit hex hash");
  }
  if (access(path.c_str(), R_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  absl::StatusOr<Scan> scan = ScanLog(path, recorded.records);
  if (!scan.ok()) return scan.status();
  const int64_t lines = scan->verification.lines;
  // A cut at the end leaves a sound chain: only the count shows it.
  if (lines < recorded.records) {
    return absl::DataLossError(absl::StrCat(
        path, " is truncated: it ends at record ", lines,
        ", the recorded head is record ", recorded.records, "; ",
        recorded.records - lines, " record",
        recorded.records - lines == 1 ? "" : "s", " missing at the end",
        scan->torn_tail ? " (followed by an incomplete line)" : ""));
  }
  // Cut and then written on (the coordinator numbers on from the cut), or
  // another log altogether.
  if (scan->captured_hash != hash) {
    return absl::DataLossError(absl::StrCat(
        path, " does not hold the recorded head: record ", recorded.records,
        " has hash ", scan->captured_hash.substr(0, 16), "..., recorded ",
        hash.substr(0, 16),
        "...; records up to it were removed or rewritten and the log went on "
        "from there, or this is another log"));
  }
  if (scan->torn_tail) return TornTail(path, lines);
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

AuditHead AuditLog::Head() {
  absl::MutexLock lock(&mu_);
  return {next_seq_ - 1, last_hash_};
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
  // fsync per line: a line is durable before the action it records goes
  // on, so a crash cannot cut from the log what already happened (and a
  // round record pins the head only of lines on disk).
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() ||
      std::fflush(file_) != 0 || fsync(fileno(file_)) != 0) {
    return absl::InternalError("cannot write the audit log");
  }
  last_hash_ = hash;
  ++next_seq_;
  return absl::OkStatus();
}

}  // namespace echofed
