#include "common/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"

extern char** environ;

namespace echofed {

absl::StatusOr<Subprocess> Subprocess::Start(
    const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& arg : argv)
    args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  Subprocess process;
  int rc = posix_spawn(&process.pid_, argv[0].c_str(), &actions, nullptr,
                       args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(
        absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  }
  return process;
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_),
      exit_code_(other.exit_code_),
      max_rss_bytes_(other.max_rss_bytes_),
      cpu_seconds_(other.cpu_seconds_) {
  other.pid_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  std::swap(pid_, other.pid_);
  std::swap(exit_code_, other.exit_code_);
  std::swap(max_rss_bytes_, other.max_rss_bytes_);
  std::swap(cpu_seconds_, other.cpu_seconds_);
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && running()) {
    ::kill(pid_, SIGKILL);
    Wait(absl::Seconds(5));
  }
}

bool Subprocess::running() {
  if (pid_ <= 0 || exit_code_) return false;
  return !Wait(absl::ZeroDuration()).has_value();
}

void Subprocess::Signal(int signal) {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, signal);
}

std::optional<int> Subprocess::Wait(absl::Duration timeout) {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  absl::Time until = absl::Now() + timeout;
  while (true) {
    int status = 0;
    struct rusage usage {};
    pid_t done = ::wait4(pid_, &status, WNOHANG, &usage);
    if (done == pid_) {
      max_rss_bytes_ = static_cast<int64_t>(usage.ru_maxrss) * 1024;
      cpu_seconds_ = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
                     usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;
      exit_code_ =
          WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    if (done < 0 && errno != EINTR) {
      exit_code_ = -1;
      return exit_code_;
    }
    if (absl::Now() >= until) return std::nullopt;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

int Subprocess::Terminate(absl::Duration grace) {
  Signal(SIGCONT);
  Signal(SIGTERM);
  if (std::optional<int> code = Wait(grace)) return *code;
  Signal(SIGKILL);
  return Wait(absl::Seconds(10)).value_or(-1);
}

std::string ExecutableDir() {
  std::error_code error;
  std::filesystem::path self =
      std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? "." : self.parent_path().string();
}

int64_t Subprocess::PeakRssNow() const {
  if (pid_ <= 0) return 0;
  absl::StatusOr<std::string> status =
      ReadFileToString(absl::StrCat("/proc/", pid_, "/status"));
  if (!status.ok()) return 0;
  for (absl::string_view line : absl::StrSplit(*status, '\n')) {
    int64_t kib = 0;
    if (absl::ConsumePrefix(&line, "VmHWM:") &&
        absl::SimpleAtoi(
            absl::StripSuffix(absl::StripAsciiWhitespace(line), " kB"), &kib)) {
      return kib * 1024;
    }
  }
  return 0;
}

}  // namespace echofed
