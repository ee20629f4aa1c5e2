#include "site-agent/privacy/privacy_ledger.h"

#include <sys/stat.h>

#include <fstream>

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

TEST(PrivacyLedgerTest, ReleasesSurviveReopening) {
  testing::TempDir dir;
  const std::string path = dir.Join("privacy-ledger.txt");
  {
    absl::StatusOr<PrivacyLedger> ledger = PrivacyLedger::Open(path);
    ASSERT_TRUE(ledger.ok()) << ledger.status();  // no file yet: empty
    EXPECT_FALSE(ledger->Released("run-a", 1));
    ASSERT_TRUE(ledger->Record("run-a", 1).ok());
    ASSERT_TRUE(ledger->Record("run-a", 2).ok());
    ASSERT_TRUE(ledger->Record("run-b", 1).ok());
    EXPECT_TRUE(ledger->Released("run-a", 2));
  }
  absl::StatusOr<PrivacyLedger> again = PrivacyLedger::Open(path);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->Released("run-a", 1));
  EXPECT_TRUE(again->Released("run-a", 2));
  EXPECT_TRUE(again->Released("run-b", 1));
  EXPECT_FALSE(again->Released("run-b", 2));
  EXPECT_FALSE(again->Released("run-c", 1));
  // Only the owner reads it.
  struct stat info;
  ASSERT_EQ(::stat(path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
}

TEST(PrivacyLedgerTest, MemoryOnlyWithoutAPath) {
  absl::StatusOr<PrivacyLedger> ledger = PrivacyLedger::Open("");
  ASSERT_TRUE(ledger.ok());
  ASSERT_TRUE(ledger->Record("run", 3).ok());
  EXPECT_TRUE(ledger->Released("run", 3));
  EXPECT_TRUE(absl::IsInvalidArgument(ledger->Record("two words", 1)));
}

TEST(PrivacyLedgerTest, ADamagedLedgerIsNotGuessedAround) {
  testing::TempDir dir;
  const std::string path = dir.Join("privacy-ledger.txt");
  std::ofstream(path) << "run-a 1\nrun-a one\n";
  EXPECT_TRUE(absl::IsDataLoss(PrivacyLedger::Open(path).status()));
  // A ledger that cannot be written refuses the release.
  absl::StatusOr<PrivacyLedger> unwritable =
      PrivacyLedger::Open(dir.Join("no-such-folder/ledger.txt"));
  ASSERT_TRUE(unwritable.ok());
  EXPECT_FALSE(unwritable->Record("run", 1).ok());
  EXPECT_FALSE(unwritable->Released("run", 1));
}

}  // namespace
}  // namespace echofed
