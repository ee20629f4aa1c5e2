// Where `echofed demo` works: by default outside the current folder (run
// from the repository root it used to leave echofed-demo/ in the source
// tree), and a failed demo says where its logs are.

#include "coordinator/cli/demo.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

// Sets (or, with nullopt, unsets) an environment variable for one test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(DefaultDemoWorkDirTest, IsInTheXdgStateHome) {
  ScopedEnv state("XDG_STATE_HOME", "/srv/state");
  ScopedEnv home("HOME", "/home/ada");
  EXPECT_EQ(DefaultDemoWorkDir(), "/srv/state/echofed/demo");
}

TEST(DefaultDemoWorkDirTest, FallsBackToHomeLocalState) {
  ScopedEnv home("HOME", "/home/ada");
  {
    ScopedEnv state("XDG_STATE_HOME", std::nullopt);
    EXPECT_EQ(DefaultDemoWorkDir(), "/home/ada/.local/state/echofed/demo");
  }
  // The XDG specification: a relative path is invalid and ignored (it
  // would land in the current folder again).
  {
    ScopedEnv state("XDG_STATE_HOME", "relative/state");
    EXPECT_EQ(DefaultDemoWorkDir(), "/home/ada/.local/state/echofed/demo");
  }
  {
    ScopedEnv state("XDG_STATE_HOME", "");
    EXPECT_EQ(DefaultDemoWorkDir(), "/home/ada/.local/state/echofed/demo");
  }
}

TEST(DefaultDemoWorkDirTest, WithoutAHomeIsTheUsersFolderInTmpdir) {
  ScopedEnv state("XDG_STATE_HOME", std::nullopt);
  ScopedEnv home("HOME", std::nullopt);
  ScopedEnv tmpdir("TMPDIR", "/var/tmp");
  EXPECT_EQ(DefaultDemoWorkDir(),
            absl::StrCat("/var/tmp/echofed-demo-", ::getuid()));
}

TEST(DefaultDemoWorkDirTest, IsNeverRelative) {
  EXPECT_TRUE(std::filesystem::path(DefaultDemoWorkDir()).is_absolute());
}

// Programs that stand in for echofed-coordinator and echofed-agent and fail
// at once: the demo stops at its synthetic cohort.
void WriteFailingPrograms(const std::string& bin) {
  ASSERT_TRUE(MakeDirectories(bin).ok());
  for (const char* program : {"echofed-coordinator", "echofed-agent"}) {
    std::string path = absl::StrCat(bin, "/", program);
    ASSERT_TRUE(WriteFileAtomically(path,
                                    "#!/bin/sh\necho 'cannot start' >&2\n"
                                    "exit 1\n",
                                    0755)
                    .ok());
  }
}

TEST(RunDemoTest, TheDefaultFolderIsUsedAndAnErrorNamesIt) {
  TempDir temp;
  WriteFailingPrograms(temp.Join("bin"));
  ScopedEnv state("XDG_STATE_HOME", temp.Join("state"));
  DemoOptions options;
  options.bin_dir = temp.Join("bin");
  std::ostringstream out;
  absl::Status status = RunDemo(options, out);
  ASSERT_FALSE(status.ok());
  std::string dir = temp.Join("state/echofed/demo");
  EXPECT_TRUE(absl::StrContains(status.message(), "synthetic cohort failed"))
      << status;
  EXPECT_TRUE(absl::EndsWith(status.message(), absl::StrCat("are in ", dir)))
      << status;
  EXPECT_TRUE(absl::StartsWith(out.str(), absl::StrCat("work folder: ", dir)))
      << out.str();
  EXPECT_TRUE(std::filesystem::exists(dir + "/logs/synth.log"));
}

TEST(RunDemoTest, AnExplicitWorkDirWinsAndLosesItsTrailingSlash) {
  TempDir temp;
  WriteFailingPrograms(temp.Join("bin"));
  ScopedEnv state("XDG_STATE_HOME", temp.Join("state"));
  DemoOptions options;
  options.bin_dir = temp.Join("bin");
  options.work_dir = temp.Join("mine/./echofed-demo/");
  std::ostringstream out;
  absl::Status status = RunDemo(options, out);
  ASSERT_FALSE(status.ok());
  std::string dir = temp.Join("mine/echofed-demo");
  EXPECT_TRUE(absl::EndsWith(status.message(), absl::StrCat("are in ", dir)))
      << status;
  EXPECT_TRUE(std::filesystem::exists(dir + "/logs/synth.log"));
  EXPECT_FALSE(std::filesystem::exists(temp.Join("state")));
}

TEST(RunDemoTest, RefusesAFolderItDidNotMake) {
  TempDir temp;
  WriteFailingPrograms(temp.Join("bin"));
  ASSERT_TRUE(MakeDirectories(temp.Join("work")).ok());
  ASSERT_TRUE(WriteFileAtomically(temp.Join("work/notes.txt"), "mine").ok());
  DemoOptions options;
  options.bin_dir = temp.Join("bin");
  options.work_dir = temp.Join("work");
  std::ostringstream out;
  absl::Status status = RunDemo(options, out);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(std::filesystem::exists(temp.Join("work/notes.txt")));
}

}  // namespace
}  // namespace echofed
