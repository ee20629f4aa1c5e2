#include "site-agent/privacy/privacy_ledger.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace echofed {

absl::StatusOr<PrivacyLedger> PrivacyLedger::Open(std::string path) {
  PrivacyLedger ledger(std::move(path));
  if (ledger.path_.empty()) return ledger;
  std::ifstream in(ledger.path_);
  if (!in) {
    if (errno == ENOENT) return ledger;
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read the privacy ledger ", ledger.path_, ": ",
                     std::strerror(errno)));
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    std::vector<std::string> fields =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    int round = 0;
    if (fields.size() != 2 || !absl::SimpleAtoi(fields[1], &round) ||
        round < 0) {
      return absl::DataLossError(absl::StrCat(
          "privacy ledger ", ledger.path_, " line ", number,
          " is damaged; it records which rounds left this site under "
          "differential privacy, so it is not ignored: repair or move it"));
    }
    ledger.released_[fields[0]].insert(round);
  }
  return ledger;
}

bool PrivacyLedger::Released(const std::string& run_id, int round) const {
  auto it = released_.find(run_id);
  return it != released_.end() && it->second.count(round) > 0;
}

absl::Status PrivacyLedger::Record(const std::string& run_id, int round) {
  if (run_id.empty() || run_id.find_first_of(" \n") != std::string::npos) {
    return absl::InvalidArgumentError("run id unfit for the privacy ledger");
  }
  if (!path_.empty()) {
    int fd =
        ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot write the privacy ledger ", path_, ": ",
                       std::strerror(errno)));
    }
    std::string line = absl::StrCat(run_id, " ", round, "\n");
    bool written = ::write(fd, line.data(), line.size()) ==
                       static_cast<ssize_t>(line.size()) &&
                   ::fsync(fd) == 0;
    int saved_errno = errno;
    ::close(fd);
    if (!written) {
      return absl::DataLossError(
          absl::StrCat("cannot record a release in the privacy ledger ", path_,
                       ": ", std::strerror(saved_errno)));
    }
  }
  released_[run_id].insert(round);
  return absl::OkStatus();
}

}  // namespace echofed
