// `echofed pki` on disk: revoking and re-issuing a participant updates the
// CA's record, the signed CRL, the enrolment list and the kit together.

#include "coordinator/cli/kits.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>

#include "absl/strings/match.h"
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

// ---- `echofed pki study`: a study description becomes the CA and kits.

StudyDescription ExampleStudy() {
  const char* source = std::getenv("ECHOFED_SOURCE_DIR");
  StudyDescription study;
  absl::Status status =
      LoadTextProto(std::string(source != nullptr ? source : ".") +
                        "/deploy/examples/study.textproto",
                    &study);
  EXPECT_TRUE(status.ok()) << status;
  return study;
}

class StudyTest : public ::testing::Test {
 protected:
  std::string Read(const std::string& relative) {
    absl::StatusOr<std::string> text = ReadFileToString(pki_ + "/" + relative);
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : "";
  }
  bool Exists(const std::string& relative) {
    return std::filesystem::exists(pki_ + "/" + relative);
  }
  int Mode(const std::string& relative) {
    struct stat file_stat;
    EXPECT_EQ(::stat((pki_ + "/" + relative).c_str(), &file_stat), 0)
        << relative;
    return file_stat.st_mode & 0777;
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
  // Every file of every kit, to see that a rerun leaves them alone.
  std::map<std::string, std::string> Snapshot() {
    std::map<std::string, std::string> files;
    for (const auto& entry :
         std::filesystem::recursive_directory_iterator(pki_)) {
      if (!entry.is_regular_file()) continue;
      files[entry.path().string()] = *ReadFileToString(entry.path().string());
    }
    return files;
  }

  TempDir dir_;
  std::string pki_ = dir_.Join("pki");
};

TEST_F(StudyTest, ExampleBecomesKitsThatPointToEachOther) {
  absl::StatusOr<StudyProvisioning> result =
      ProvisionStudy(pki_, ExampleStudy());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->ca_created);
  EXPECT_EQ(result->issued,
            (std::vector<std::string>{"coordinator", "hospital-zju",
                                      "hospital-soochow", "hospital-kunming",
                                      "alice", "bob"}));
  EXPECT_TRUE(result->kept.empty());
  EXPECT_TRUE(result->differences.empty());
  EXPECT_EQ(Mode("ca/ca.key"), 0600);
  EXPECT_EQ(Enrolled(), (std::vector<std::string>{
                            "hospital-zju:site", "hospital-soochow:site",
                            "hospital-kunming:site", "alice:operator",
                            "bob:statistician"}));

  const std::string ca = Read("ca/ca.pem");
  for (const auto& [identity, role] : std::vector<std::pair<std::string, Role>>{
           {"coordinator", Role::kCoordinator},
           {"hospital-zju", Role::kSite},
           {"hospital-kunming", Role::kSite},
           {"alice", Role::kOperator},
           {"bob", Role::kStatistician}}) {
    SCOPED_TRACE(identity);
    EXPECT_EQ(Mode(identity + "/key.pem"), 0600);
    EXPECT_EQ(Read(identity + "/ca.pem"), ca);
    ASSERT_TRUE(LoadKit(pki_ + "/" + identity).ok());
    absl::StatusOr<CertificateVerifier> verifier =
        CertificateVerifier::Create(ca, Read("crl.pem"));
    ASSERT_TRUE(verifier.ok());
    absl::StatusOr<PeerIdentity> peer =
        verifier->Verify(Read(identity + "/cert.pem"));
    ASSERT_TRUE(peer.ok()) << peer.status();
    EXPECT_EQ(peer->identity, identity);
    EXPECT_EQ(peer->role, role);
    std::string readme = Read(identity + "/README.txt");
    EXPECT_TRUE(absl::StrContains(readme, identity)) << readme;
    EXPECT_TRUE(absl::StrContains(readme, "never share it")) << readme;
    EXPECT_EQ(Exists(identity + "/coordinator.textproto"),
              role == Role::kCoordinator);
    EXPECT_EQ(Exists(identity + "/agent.textproto"), role == Role::kSite);
  }
  EXPECT_TRUE(absl::StrContains(Read("hospital-zju/README.txt"),
                                "deploy/install.sh agent --kit "
                                "pki/hospital-zju"));
  EXPECT_TRUE(absl::StrContains(Read("hospital-zju/README.txt"),
                                "--config pki/hospital-zju/agent.textproto"));
  EXPECT_TRUE(absl::StrContains(Read("hospital-zju/README.txt"), "doctor"));
  EXPECT_TRUE(absl::StrContains(Read("alice/README.txt"), "echofed run start"));
  EXPECT_TRUE(absl::StrContains(Read("bob/README.txt"), "echofed report"));

  CoordinatorConfig coordinator;
  ASSERT_TRUE(
      LoadTextProto(pki_ + "/coordinator/coordinator.textproto", &coordinator)
          .ok());
  EXPECT_EQ(coordinator.listen_address(), "0.0.0.0:7443");
  EXPECT_EQ(coordinator.status_listen_address(), "0.0.0.0:9443");
  EXPECT_EQ(coordinator.tls().cert(), "kit/cert.pem");
  EXPECT_EQ(coordinator.tls().key(), "kit/key.pem");
  EXPECT_EQ(coordinator.tls().ca_cert(), "kit/ca.pem");
  // install.sh --pki copies these two beside the config.
  EXPECT_EQ(coordinator.enrolment_file(), "enrolment.textproto");
  EXPECT_EQ(coordinator.crl_file(), "crl.pem");
  EXPECT_FALSE(coordinator.state_dir().empty());

  std::vector<std::string> hosts =
      ReadCertificateDetails(Read("coordinator/cert.pem"))->host_names;
  EXPECT_EQ(hosts, (std::vector<std::string>{"coordinator.study.example",
                                             "192.0.2.10"}));
  for (const std::string site :
       {"hospital-zju", "hospital-soochow", "hospital-kunming"}) {
    SCOPED_TRACE(site);
    AgentConfig agent;
    ASSERT_TRUE(
        LoadTextProto(pki_ + "/" + site + "/agent.textproto", &agent).ok());
    EXPECT_EQ(agent.coordinator_address(), "coordinator.study.example:7443");
    EXPECT_NE(std::find(hosts.begin(), hosts.end(), agent.coordinator_name()),
              hosts.end());
    EXPECT_TRUE(absl::EndsWith(agent.coordinator_address(),
                               coordinator.listen_address().substr(
                                   coordinator.listen_address().find(':'))));
    EXPECT_EQ(agent.tls().cert(), "kit/cert.pem");
    EXPECT_EQ(agent.tls().key(), "kit/key.pem");
    EXPECT_EQ(agent.tls().ca_cert(), "kit/ca.pem");
    EXPECT_FALSE(agent.data_dir().empty());
  }
}

TEST_F(StudyTest, Ipv6CoordinatorIsDialledInBrackets) {
  StudyDescription study;
  study.set_name("v6");
  study.add_coordinator_hosts("2001:db8::7");
  study.set_coordinator_port(8443);
  StudyParticipant* site = study.add_participants();
  site->set_identity("hospital-a");
  site->set_role("site");
  ASSERT_TRUE(ProvisionStudy(pki_, study).ok());
  AgentConfig agent;
  ASSERT_TRUE(LoadTextProto(pki_ + "/hospital-a/agent.textproto", &agent).ok());
  EXPECT_EQ(agent.coordinator_address(), "[2001:db8::7]:8443");
  EXPECT_EQ(agent.coordinator_name(), "2001:db8::7");
}

TEST_F(StudyTest, RerunKeepsKitsAndAddsANewSite) {
  StudyDescription study = ExampleStudy();
  ASSERT_TRUE(ProvisionStudy(pki_, study).ok());
  // A site's own edit of its config survives reruns.
  ASSERT_TRUE(WriteFileAtomically(pki_ + "/hospital-zju/agent.textproto",
                                  "data_dir: \"/data/us\"\n")
                  .ok());
  std::map<std::string, std::string> before = Snapshot();

  absl::StatusOr<StudyProvisioning> again = ProvisionStudy(pki_, study);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->ca_created);
  EXPECT_TRUE(again->issued.empty());
  EXPECT_EQ(again->kept.size(), 6u);
  EXPECT_TRUE(again->differences.empty());
  EXPECT_EQ(Snapshot(), before);

  StudyParticipant* added = study.add_participants();
  added->set_identity("hospital-new");
  added->set_role("site");
  absl::StatusOr<StudyProvisioning> grown = ProvisionStudy(pki_, study);
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ(grown->issued, std::vector<std::string>{"hospital-new"});
  EXPECT_TRUE(grown->differences.empty());
  std::map<std::string, std::string> after = Snapshot();
  for (const auto& [path, text] : before) {
    if (absl::EndsWith(path, "enrolment.textproto")) continue;
    EXPECT_EQ(after[path], text) << path;
  }
  EXPECT_EQ(Mode("hospital-new/key.pem"), 0600);
  EXPECT_TRUE(Exists("hospital-new/agent.textproto"));
  std::vector<std::string> enrolled = Enrolled();
  EXPECT_EQ(enrolled.size(), 6u);
  EXPECT_EQ(enrolled.back(), "hospital-new:site");
}

TEST_F(StudyTest, DroppedParticipantIsReportedNotRevoked) {
  StudyDescription study = ExampleStudy();
  ASSERT_TRUE(ProvisionStudy(pki_, study).ok());
  StudyDescription smaller = study;
  smaller.mutable_participants()->RemoveLast();  // bob
  smaller.set_coordinator_hosts(1, "192.0.2.11");
  absl::StatusOr<StudyProvisioning> result = ProvisionStudy(pki_, smaller);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->differences.size(), 2u);
  EXPECT_TRUE(absl::StrContains(result->differences[0], "coordinator"));
  EXPECT_TRUE(absl::StrContains(result->differences[0], "192.0.2.10"));
  EXPECT_TRUE(absl::StrContains(result->differences[1], "bob"));
  EXPECT_TRUE(absl::StrContains(result->differences[1], "pki revoke"));
  EXPECT_EQ(Enrolled().back(), "bob:statistician");
  absl::StatusOr<RevocationListInfo> crl =
      CheckRevocationList(Read("crl.pem"), Read("ca/ca.pem"));
  ASSERT_TRUE(crl.ok());
  EXPECT_TRUE(crl->revoked_serials.empty());
  // A revoked participant still described is pointed at reissue.
  ASSERT_TRUE(RevokeKit(pki_, "alice", RevocationReason::kUnspecified).ok());
  result = ProvisionStudy(pki_, study);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->differences.size(), 1u);
  EXPECT_TRUE(absl::StrContains(result->differences[0], "pki reissue"));
}

TEST_F(StudyTest, BadDescriptionsAreRefusedBeforeAnythingIsWritten) {
  struct Case {
    std::string name;
    std::function<void(StudyDescription*)> spoil;
    std::string message;
  };
  std::vector<Case> cases = {
      {"unknown role",
       [](StudyDescription* s) {
         s->mutable_participants(1)->set_role("nurse");
       },
       "unknown role 'nurse'"},
      {"coordinator as participant",
       [](StudyDescription* s) {
         s->mutable_participants(1)->set_role("coordinator");
       },
       "unknown role"},
      {"duplicate identity",
       [](StudyDescription* s) {
         s->mutable_participants(2)->set_identity("hospital-zju");
       },
       "'hospital-zju' is given twice"},
      {"site named like the coordinator",
       [](StudyDescription* s) {
         s->mutable_participants(0)->set_identity("coordinator");
       },
       "given twice"},
      {"reserved identity",
       [](StudyDescription* s) {
         s->mutable_participants(0)->set_identity("ca");
       },
       "reserved"},
      {"bad identity",
       [](StudyDescription* s) {
         s->mutable_participants(0)->set_identity("hospital a");
       },
       "may hold only"},
      {"underscore host",
       [](StudyDescription* s) {
         s->set_coordinator_hosts(0, "coord_1.example");
       },
       "coord_1.example"},
      {"bad IP",
       [](StudyDescription* s) { s->set_coordinator_hosts(1, "192.0.2.300"); },
       "not a valid IP address"},
      {"hyphen label",
       [](StudyDescription* s) { s->set_coordinator_hosts(0, "-x.example"); },
       "'-x.example'"},
      {"no hosts", [](StudyDescription* s) { s->clear_coordinator_hosts(); },
       "coordinator_hosts"},
      {"no name", [](StudyDescription* s) { s->clear_name(); }, "name"},
      {"port", [](StudyDescription* s) { s->set_coordinator_port(70000); },
       "70000"},
      {"lifetimes",
       [](StudyDescription* s) { s->set_certificate_valid_days(4000); },
       "exceeds ca_valid_days"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    StudyDescription study = ExampleStudy();
    c.spoil(&study);
    absl::StatusOr<StudyProvisioning> result = ProvisionStudy(pki_, study);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_TRUE(absl::StrContains(result.status().message(), c.message))
        << result.status();
    EXPECT_FALSE(std::filesystem::exists(pki_));
  }
}

TEST_F(StudyTest, CommandLineProvisionsAndRefuses) {
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), testing::BinaryPath("echofed"));
    absl::StatusOr<Subprocess> child =
        Subprocess::Start(args, dir_.Join("echofed.log"));
    EXPECT_TRUE(child.ok()) << child.status();
    if (!child.ok()) return -1;
    return child->Wait(absl::Seconds(60)).value_or(-1);
  };
  std::string bad = dir_.Join("bad.textproto");
  ASSERT_TRUE(
      WriteFileAtomically(bad,
                          "name: \"x\"\ncoordinator_hosts: \"c.example\""
                          "\nparticipants { identity: \"h\" role: "
                          "\"doctor\" }\n")
          .ok());
  EXPECT_NE(run({"pki", "study", "--file", bad, "--dir", pki_}), 0);
  EXPECT_FALSE(std::filesystem::exists(pki_));
  EXPECT_TRUE(absl::StrContains(*ReadFileToString(dir_.Join("echofed.log")),
                                "unknown role 'doctor'"));
  const char* source = std::getenv("ECHOFED_SOURCE_DIR");
  std::string example = std::string(source != nullptr ? source : ".") +
                        "/deploy/examples/study.textproto";
  EXPECT_EQ(run({"pki", "study", "--file", example, "--dir", pki_}), 0)
      << *ReadFileToString(dir_.Join("echofed.log"));
  EXPECT_EQ(Mode("hospital-soochow/key.pem"), 0600);
  EXPECT_EQ(Enrolled().size(), 5u);
  EXPECT_EQ(run({"pki", "study", "--file", example, "--dir", pki_}), 0);
  EXPECT_TRUE(absl::StrContains(*ReadFileToString(dir_.Join("echofed.log")),
                                "kept:     " + pki_ + "/bob"));
}

}  // namespace
}  // namespace echofed
