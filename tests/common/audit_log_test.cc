#include "common/audit_log.h"

#include <cctype>
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

// Cutting lines off the end leaves a sound chain; a head recorded elsewhere
// (as a round record holds it) shows the cut and how much is gone.
TEST(AuditLogTest, TruncationIsFoundAgainstARecordedHead) {
  TempDir dir;
  std::string path = WriteThreeEvents(dir);
  AuditHead recorded;
  {
    auto log = AuditLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    recorded = (*log)->Head();
  }
  absl::StatusOr<AuditVerification> whole = VerifyAuditLog(path);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(recorded.records, 3);
  EXPECT_EQ(recorded.hash, whole->head_hash);
  absl::StatusOr<AuditVerification> checked =
      VerifyAuditLogHead(path, recorded);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->lines, 3);

  // The last two lines cut: the chain alone still verifies.
  const std::string original = Read(path);
  Write(path, original.substr(0, original.find('\n') + 1));
  ASSERT_TRUE(VerifyAuditLog(path).ok());
  checked = VerifyAuditLogHead(path, recorded);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(checked.status().message().find(
                "truncated: it ends at record 1, the recorded head is record "
                "3; 2 records missing at the end"),
            std::string::npos)
      << checked.status();

  // Cut, then written on by a coordinator: as many lines as recorded, but
  // the recorded head is not among them.
  {
    auto log = AuditLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(
          (*log)->Append({"bob", "model-download", "", -1, "", ""}).ok());
    }
  }
  ASSERT_TRUE(VerifyAuditLog(path).ok());
  checked = VerifyAuditLogHead(path, recorded);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(checked.status().message().find(
                "does not hold the recorded head: record 3"),
            std::string::npos)
      << checked.status();

  // The intact log grown past the head still holds it; a head given in
  // capitals is the same head.
  Write(path, original);
  {
    auto log = AuditLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)->Append({"bob", "model-download", "", -1, "", ""}).ok());
    EXPECT_EQ((*log)->Head().records, 4);
  }
  AuditHead upper = recorded;
  for (char& c : upper.hash) c = static_cast<char>(std::toupper(c));
  checked = VerifyAuditLogHead(path, upper);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->lines, 4);

  // An edit before the head is still named at its line.
  std::string edited = original;
  edited.replace(edited.find("a,b"), 3, "a,c");
  Write(path, edited);
  checked = VerifyAuditLogHead(path, recorded);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(checked.status().message().find("line 2"), std::string::npos)
      << checked.status();

  // Not a head at all.
  EXPECT_EQ(VerifyAuditLogHead(path, {3, "abc"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(VerifyAuditLogHead(path, {-1, recorded.hash}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AuditLogTest, AnEmptyLogHasTheZeroHead) {
  TempDir dir;
  std::string path = dir.Join("audit.log");
  auto log = AuditLog::Open(path);
  ASSERT_TRUE(log.ok()) << log.status();
  AuditHead head = (*log)->Head();
  EXPECT_EQ(head.records, 0);
  EXPECT_EQ(head.hash, std::string(64, '0'));
  EXPECT_TRUE(VerifyAuditLogHead(path, head).ok());
}

}  // namespace
}  // namespace echofed
