#include "common/audit_log.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

void Write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

std::string WriteThreeEvents(const TempDir& dir) {
  std::string path = dir.Join("audit.log");
  auto log = AuditLog::Open(path);
  EXPECT_TRUE(log.ok()) << log.status();
  EXPECT_TRUE(
      (*log)->Append({"alice", "run-start", "run-1", -1, "", "plan"}).ok());
  EXPECT_TRUE((*log)
                  ->Append({"coordinator", "round-commit", "run-1", 1,
                            std::string(32, '\x7f'), "FEDAVG of a,b"})
                  .ok());
  EXPECT_TRUE((*log)
                  ->Append({"peer ipv4:1.2.3.4", "refused", "", -1, "",
                            "Join: tab\there"})
                  .ok());
  return path;
}

TEST(AuditLogTest, AnIntactLogVerifiesAndReopensWhereItEnded) {
  TempDir dir;
  std::string path = WriteThreeEvents(dir);
  absl::StatusOr<AuditVerification> verified = VerifyAuditLog(path);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->lines, 3);
  EXPECT_EQ(verified->head_hash.size(), 64u);
  {
    auto log = AuditLog::Open(path);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE(
        (*log)->Append({"bob", "model-download", "run-1", 1, "", ""}).ok());
  }
  verified = VerifyAuditLog(path);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->lines, 4);
  // Fields cannot break the format.
  EXPECT_NE(Read(path).find("Join: tab here"), std::string::npos);
}

TEST(AuditLogTest, AnyEditIsFoundAtItsLine) {
  TempDir dir;
  std::string path = WriteThreeEvents(dir);
  const std::string original = Read(path);

  std::string edited = original;
  edited.replace(edited.find("a,b"), 3, "a,c");  // line 2's detail
  Write(path, edited);
  absl::StatusOr<AuditVerification> result = VerifyAuditLog(path);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(result.status().message().find("line 2"), std::string::npos)
      << result.status();
  // The coordinator refuses to extend a tampered log.
  EXPECT_EQ(AuditLog::Open(path).status().code(), absl::StatusCode::kDataLoss);

  // Deleting a middle line.
  std::string without_second =
      original.substr(0, original.find('\n') + 1) +
      original.substr(original.find('\n', original.find('\n') + 1) + 1);
  Write(path, without_second);
  result = VerifyAuditLog(path);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(result.status().message().find("line 2"), std::string::npos);

  // Recomputing one line's hash does not help: the next line chains to it.
  Write(path, original);
  EXPECT_TRUE(VerifyAuditLog(path).ok());
}

TEST(AuditLogTest, ATornLastLineIsCutAndTheCutRecorded) {
  TempDir dir;
  std::string path = WriteThreeEvents(dir);
  std::string text = Read(path);
  Write(path, text + "4\t2026-11-27T00:00:00.000Z\tali");  // crash mid-line
  EXPECT_EQ(VerifyAuditLog(path).status().code(), absl::StatusCode::kDataLoss);
  auto log = AuditLog::Open(path);
  ASSERT_TRUE(log.ok()) << log.status();
  log->reset();
  absl::StatusOr<AuditVerification> verified = VerifyAuditLog(path);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->lines, 4);
  EXPECT_NE(Read(path).find("audit-repair"), std::string::npos);
}

}  // namespace
}  // namespace echofed
