// `echofed pki` on disk: revoking and re-issuing a participant updates the
// CA's record, the signed CRL, the enrolment list and the kit together.

#include "coordinator/cli/kits.h"

#include <sys/stat.h>

#include <algorithm>

#include "common/files.h"
#include "common/subprocess.h"
#include "gtest/gtest.h"
#include "proto/config.pb.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;

class KitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(InitStudyPki(pki_, "kits test", 30).ok());
    ASSERT_TRUE(IssueKit(pki_, {"coordinator",
                                Role::kCoordinator,
                                {"coord.example", "10.0.0.7"},
                                30})
                    .ok());
    ASSERT_TRUE(IssueKit(pki_, {"hospital-a", Role::kSite, {}, 30}).ok());
    ASSERT_TRUE(IssueKit(pki_, {"hospital-b", Role::kSite, {}, 30}).ok());
    ASSERT_TRUE(IssueKit(pki_, {"alice", Role::kOperator, {}, 30}).ok());
  }

  std::string Read(const std::string& relative) {
    absl::StatusOr<std::string> text = ReadFileToString(pki_ + "/" + relative);
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }
  std::string Ca() { return Read("ca/ca.pem"); }
  std::string SerialOf(const std::string& identity) {
    return ReadCertificateDetails(Read(identity + "/cert.pem"))->serial;
  }
  RevocationListInfo Crl() {
    absl::StatusOr<RevocationListInfo> info =
        CheckRevocationList(Read("crl.pem"), Ca());
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? *info : RevocationListInfo();
  }
  std::vector<std::string> Enrolled() {
    EnrolmentList list;
    EXPECT_TRUE(LoadTextProto(EnrolmentPath(pki_), &list).ok());
    std::vector<std::string> names;
    for (const Participant& participant : list.participants()) {
      names.push_back(participant.identity() + ":" + participant.role());
    }
    return names;
  }
  absl::StatusOr<PeerIdentity> VerifyWithCrl(const std::string& identity) {
    absl::StatusOr<CertificateVerifier> verifier =
        CertificateVerifier::Create(Ca(), Read("crl.pem"));
    if (!verifier.ok()) return verifier.status();
    return verifier->Verify(Read(identity + "/cert.pem"));
  }

  TempDir dir_;
  std::string pki_ = dir_.Join("pki");
};

TEST_F(KitsTest, InitWritesAnEmptySignedCrl) {
  RevocationListInfo crl = Crl();
  EXPECT_EQ(crl.crl_number, 1);
  EXPECT_TRUE(crl.revoked_serials.empty());
  EXPECT_GT(crl.next_update, absl::Now() + absl::Hours(24 * 29));
  EXPECT_TRUE(VerifyWithCrl("hospital-a").ok());
}

TEST_F(KitsTest, RevokeListsTheSerialAndUnenrols) {
  std::string serial = SerialOf("hospital-a");
  absl::StatusOr<RevokeResult> revoked =
      RevokeKit(pki_, "hospital-a", RevocationReason::kKeyCompromise);
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_EQ(revoked->serial, serial);
  EXPECT_FALSE(revoked->already_revoked);

  RevocationListInfo crl = Crl();
  EXPECT_EQ(crl.crl_number, 2);
  EXPECT_EQ(crl.revoked_serials, std::vector<std::string>{serial});
  RevocationState state;
  ASSERT_TRUE(LoadTextProto(RevocationStatePath(pki_), &state).ok());
  ASSERT_EQ(state.revoked_size(), 1);
  EXPECT_EQ(state.revoked(0).serial(), serial);
  EXPECT_EQ(state.revoked(0).identity(), "hospital-a");
  EXPECT_EQ(state.revoked(0).role(), "site");
  EXPECT_EQ(state.revoked(0).reason(), "keyCompromise");
  EXPECT_EQ(state.crl_number(), 2);

  EXPECT_EQ(Enrolled(),
            (std::vector<std::string>{"hospital-b:site", "alice:operator"}));
  absl::StatusOr<PeerIdentity> refused = VerifyWithCrl("hospital-a");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(VerifyWithCrl("hospital-b").ok());

  // Again: nothing new is listed, but the list is re-signed (so a run that
  // was cut short in the middle is finished).
  absl::StatusOr<RevokeResult> again =
      RevokeKit(pki_, "hospital-a", RevocationReason::kUnspecified);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_revoked);
  EXPECT_EQ(Crl().revoked_serials, std::vector<std::string>{serial});
  EXPECT_EQ(Crl().crl_number, 3);
}

TEST_F(KitsTest, ReissueRevokesTheOldCertificateAndRewritesTheKit) {
  std::string old_serial = SerialOf("hospital-a");
  std::string old_key = Read("hospital-a/key.pem");
  absl::StatusOr<ReissueResult> reissued = ReissueKit(pki_, "hospital-a", 90);
  ASSERT_TRUE(reissued.ok()) << reissued.status();
  EXPECT_EQ(reissued->old_serial, old_serial);
  EXPECT_EQ(reissued->role, Role::kSite);
  EXPECT_NE(reissued->new_serial, old_serial);
  EXPECT_EQ(SerialOf("hospital-a"), reissued->new_serial);
  EXPECT_NE(Read("hospital-a/key.pem"), old_key);
  struct stat key_stat;
  ASSERT_EQ(::stat((pki_ + "/hospital-a/key.pem").c_str(), &key_stat), 0);
  EXPECT_EQ(key_stat.st_mode & 0777, 0600);
  // The kit holds a working pair of the same identity and role.
  absl::StatusOr<TlsMaterial> kit = LoadKit(pki_ + "/hospital-a");
  ASSERT_TRUE(kit.ok()) << kit.status();
  absl::StatusOr<PeerIdentity> peer = VerifyWithCrl("hospital-a");
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->identity, "hospital-a");
  EXPECT_EQ(peer->role, Role::kSite);

  EXPECT_EQ(Crl().revoked_serials, std::vector<std::string>{old_serial});
  RevocationState state;
  ASSERT_TRUE(LoadTextProto(RevocationStatePath(pki_), &state).ok());
  ASSERT_EQ(state.revoked_size(), 1);
  EXPECT_EQ(state.revoked(0).reason(), "superseded");
  EXPECT_EQ(Enrolled(),
            (std::vector<std::string>{"hospital-a:site", "hospital-b:site",
                                      "alice:operator"}));
}

TEST_F(KitsTest, RevokedParticipantIsReenrolledByReissue) {
  std::string first = SerialOf("alice");
  ASSERT_TRUE(RevokeKit(pki_, "alice", RevocationReason::kUnspecified).ok());
  EXPECT_EQ(Enrolled(),
            (std::vector<std::string>{"hospital-a:site", "hospital-b:site"}));
  absl::StatusOr<ReissueResult> reissued = ReissueKit(pki_, "alice", 30);
  ASSERT_TRUE(reissued.ok()) << reissued.status();
  EXPECT_EQ(reissued->role, Role::kOperator);
  EXPECT_EQ(Crl().revoked_serials, std::vector<std::string>{first});
  EXPECT_TRUE(VerifyWithCrl("alice").ok());
  std::vector<std::string> enrolled = Enrolled();
  EXPECT_NE(std::find(enrolled.begin(), enrolled.end(), "alice:operator"),
            enrolled.end());
}

TEST_F(KitsTest, CoordinatorReissueKeepsHostNamesAndIsNotEnrolled) {
  absl::StatusOr<ReissueResult> reissued = ReissueKit(pki_, "coordinator", 30);
  ASSERT_TRUE(reissued.ok()) << reissued.status();
  absl::StatusOr<CertificateDetails> details =
      ReadCertificateDetails(Read("coordinator/cert.pem"));
  ASSERT_TRUE(details.ok());
  EXPECT_EQ(details->subject.role, Role::kCoordinator);
  EXPECT_EQ(details->host_names,
            (std::vector<std::string>{"coord.example", "10.0.0.7"}));
  EXPECT_EQ(Enrolled().size(), 3u);
}

TEST_F(KitsTest, UnknownOrForeignKitsAreNotRevoked) {
  EXPECT_EQ(
      RevokeKit(pki_, "nobody", RevocationReason::kUnspecified).status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_EQ(
      RevokeKit(pki_, "../ca", RevocationReason::kUnspecified).status().code(),
      absl::StatusCode::kInvalidArgument);
  // A kit whose certificate came from another CA.
  TempDir other_dir;
  std::string other = other_dir.Join("pki");
  ASSERT_TRUE(InitStudyPki(other, "other", 30).ok());
  ASSERT_TRUE(IssueKit(other, {"hospital-c", Role::kSite, {}, 30}).ok());
  ASSERT_TRUE(MakeDirectories(pki_ + "/hospital-c").ok());
  ASSERT_TRUE(
      WriteFileAtomically(pki_ + "/hospital-c/cert.pem",
                          *ReadFileToString(other + "/hospital-c/cert.pem"))
          .ok());
  EXPECT_EQ(RevokeKit(pki_, "hospital-c", RevocationReason::kUnspecified)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Crl().crl_number, 1);  // nothing was signed
}

TEST_F(KitsTest, CrlIsResignedWithAFreshNextUpdate) {
  ASSERT_TRUE(RevokeKit(pki_, "hospital-b", RevocationReason::kUnspecified,
                        /*crl_days=*/2)
                  .ok());
  EXPECT_LT(Crl().next_update, absl::Now() + absl::Hours(49));
  ASSERT_TRUE(SignRevocationList(pki_, 60).ok());
  RevocationListInfo crl = Crl();
  EXPECT_EQ(crl.crl_number, 3);
  EXPECT_EQ(crl.revoked_serials.size(), 1u);
  EXPECT_GT(crl.next_update, absl::Now() + absl::Hours(24 * 59));
  EXPECT_FALSE(SignRevocationList(pki_, 0).ok());
}

// The `echofed` program itself: its revoke and reissue subcommands reach
// the same code, and a bad reason is refused before anything changes.
TEST_F(KitsTest, CommandLineRevokesAndReissues) {
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), testing::BinaryPath("echofed"));
    absl::StatusOr<Subprocess> child =
        Subprocess::Start(args, dir_.Join("echofed.log"));
    EXPECT_TRUE(child.ok()) << child.status();
    if (!child.ok()) return -1;
    std::optional<int> code = child->Wait(absl::Seconds(60));
    return code.value_or(-1);
  };
  std::string old_serial = SerialOf("hospital-b");
  EXPECT_NE(run({"pki", "revoke", "--dir", pki_, "--identity", "hospital-b",
                 "--reason", "stolen"}),
            0);
  EXPECT_EQ(Crl().crl_number, 1);
  EXPECT_EQ(run({"pki", "revoke", "--dir", pki_, "--identity", "hospital-b",
                 "--reason", "key-compromise"}),
            0)
      << Read("../echofed.log");
  EXPECT_EQ(Crl().revoked_serials, std::vector<std::string>{old_serial});
  EXPECT_EQ(Enrolled(),
            (std::vector<std::string>{"hospital-a:site", "alice:operator"}));
  EXPECT_EQ(run({"pki", "reissue", "--dir", pki_, "--identity", "hospital-b",
                 "--days", "10"}),
            0)
      << Read("../echofed.log");
  EXPECT_NE(SerialOf("hospital-b"), old_serial);
  EXPECT_TRUE(VerifyWithCrl("hospital-b").ok());
  EXPECT_EQ(Enrolled(),
            (std::vector<std::string>{"hospital-a:site", "alice:operator",
                                      "hospital-b:site"}));
  EXPECT_EQ(run({"pki", "crl", "--dir", pki_, "--crl-days", "7"}), 0);
  EXPECT_EQ(Crl().crl_number, 4);
}

}  // namespace
}  // namespace echofed
