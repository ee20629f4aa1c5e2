#ifndef ECHOFED_COMMON_SUBPROCESS_H_
#define ECHOFED_COMMON_SUBPROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace echofed {

// A child process with stdout and stderr appended to a log file. Used by
// the demo to start the coordinator and agents, and by end-to-end tests.
// The destructor kills a child that is still running. Not thread-safe.
class Subprocess {
 public:
  static absl::StatusOr<Subprocess> Start(const std::vector<std::string>& argv,
                                          const std::string& log_path);
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();
  // Sends a signal (SIGTERM, SIGKILL, SIGSTOP, SIGCONT...).
  void Signal(int signal);
  // Waits up to `timeout` for the exit; returns the exit code (128 + signal
  // when killed), or nullopt if it is still running.
  std::optional<int> Wait(absl::Duration timeout);
  // SIGTERM, then SIGKILL after `grace`.
  int Terminate(absl::Duration grace = absl::Seconds(5));

  // Resource use of the finished child (zero while it runs): peak resident
  // memory and user + system CPU time. The kernel's peak includes the
  // parent's pages copied at fork, before exec: for a large parent, use
  // PeakRssNow() while the child runs.
  int64_t max_rss_bytes() const { return max_rss_bytes_; }
  // The running child's own peak resident memory since exec (VmHWM), or 0.
  int64_t PeakRssNow() const;
  double cpu_seconds() const { return cpu_seconds_; }

 private:
  Subprocess() = default;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  int64_t max_rss_bytes_ = 0;
  double cpu_seconds_ = 0;
};

// The folder holding the running executable (to find sibling binaries).
std::string ExecutableDir();

}  // namespace echofed

#endif  // ECHOFED_COMMON_SUBPROCESS_H_
