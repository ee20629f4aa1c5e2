#include "common/log.h"

#include <cstdio>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace echofed {
namespace {

struct LogState {
  absl::Mutex mu;
  std::string component ABSL_GUARDED_BY(mu) = "echofed";
  LogLevel min_level ABSL_GUARDED_BY(mu) = LogLevel::kInfo;
};

LogState& State() {
  static LogState* state = new LogState;
  return *state;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARN";
    case LogLevel::kError:
      return "ERROR";
  }
  return "?";
}

}  // namespace

void SetLogComponent(absl::string_view component) {
  absl::MutexLock lock(&State().mu);
  State().component = std::string(component);
}

void SetMinLogLevel(LogLevel level) {
  absl::MutexLock lock(&State().mu);
  State().min_level = level;
}

void LogLine(LogLevel level, absl::string_view message) {
  LogState& state = State();
  absl::MutexLock lock(&state.mu);
  if (level < state.min_level) return;
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(),
                       absl::UTCTimeZone()),
      " ", LevelName(level), " [", state.component, "] ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace echofed
