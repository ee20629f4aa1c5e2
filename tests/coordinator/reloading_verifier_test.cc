#include "coordinator/reloading_verifier.h"

#include <atomic>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/files.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TempDir;
using testing::TestPki;

class ReloadingVerifierTest : public ::testing::Test {
 protected:
  std::string Crl(const std::vector<std::string>& serials, int64_t number,
                  const PemPair* ca = nullptr) {
    RevocationListRequest request;
    request.crl_number = number;
    for (const std::string& serial : serials) {
      request.revoked.push_back(
          {serial, absl::Now(), RevocationReason::kKeyCompromise});
    }
    return *CreateRevocationList(ca != nullptr ? *ca : pki_.ca(), request);
  }
  void WriteCrl(const std::string& pem) {
    ASSERT_TRUE(WriteFileAtomically(crl_path_, pem).ok());
  }
  std::unique_ptr<ReloadingVerifier> Make(absl::Duration interval) {
    ReloadingVerifierOptions options;
    options.ca_pem = pki_.ca().cert;
    options.crl_file = crl_path_;
    options.check_interval = interval;
    options.clock = &clock_;
    options.on_event = [this](const std::string& action, const std::string&) {
      events_.push_back(action);
    };
    absl::StatusOr<std::unique_ptr<ReloadingVerifier>> verifier =
        ReloadingVerifier::Create(std::move(options));
    EXPECT_TRUE(verifier.ok()) << verifier.status();
    return verifier.ok() ? std::move(*verifier) : nullptr;
  }
  static std::string SerialOf(const TlsMaterial& kit) {
    return ReadCertificateDetails(kit.cert)->serial;
  }

  TempDir dir_;
  TestPki pki_;
  FakeClock clock_{absl::Now()};
  std::string crl_path_ = dir_.Join("crl.pem");
  std::vector<std::string> events_;
  TlsMaterial site_a_ = pki_.Participant("site-a", Role::kSite);
  TlsMaterial site_b_ = pki_.Participant("site-b", Role::kSite);
};

TEST_F(ReloadingVerifierTest, RevocationTakesEffectWhenTheFileChanges) {
  WriteCrl(Crl({}, 1));
  std::unique_ptr<ReloadingVerifier> verifier = Make(absl::ZeroDuration());
  ASSERT_NE(verifier, nullptr);
  EXPECT_TRUE(verifier->Verify(site_a_.cert).ok());
  WriteCrl(Crl({SerialOf(site_a_)}, 2));
  absl::StatusOr<PeerIdentity> refused = verifier->Verify(site_a_.cert);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(refused.status().message().find("revoked"), std::string::npos);
  EXPECT_TRUE(verifier->Verify(site_b_.cert).ok());
  EXPECT_EQ(verifier->crl_number(), 2);
  EXPECT_EQ(events_, (std::vector<std::string>{"crl-loaded", "crl-loaded"}));
}

TEST_F(ReloadingVerifierTest, TheFileIsLookedAtOncePerInterval) {
  WriteCrl(Crl({}, 1));
  std::unique_ptr<ReloadingVerifier> verifier = Make(absl::Seconds(5));
  ASSERT_NE(verifier, nullptr);
  WriteCrl(Crl({SerialOf(site_a_)}, 2));
  clock_.Advance(absl::Seconds(4));
  EXPECT_TRUE(verifier->Verify(site_a_.cert).ok());  // not looked yet
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(verifier->Verify(site_a_.cert).ok());
}

TEST_F(ReloadingVerifierTest, BadReplacementsKeepTheListInForce) {
  WriteCrl(Crl({SerialOf(site_a_)}, 5));
  std::unique_ptr<ReloadingVerifier> verifier = Make(absl::ZeroDuration());
  ASSERT_NE(verifier, nullptr);
  ASSERT_FALSE(verifier->Verify(site_a_.cert).ok());
  TestPki other;
  const std::vector<std::string> replacements = {
      "garbage", "", Crl({}, 9, &other.ca()),  // another CA's list
      Crl({}, 4),  // the study CA's, but older: a rollback
  };
  for (const std::string& replacement : replacements) {
    WriteCrl(replacement);
    EXPECT_EQ(verifier->Verify(site_a_.cert).status().code(),
              absl::StatusCode::kUnauthenticated);
    EXPECT_TRUE(verifier->Verify(site_b_.cert).ok());
    EXPECT_EQ(verifier->crl_number(), 5);
  }
  std::filesystem::remove(crl_path_);
  EXPECT_FALSE(verifier->Verify(site_a_.cert).ok());
  EXPECT_EQ(events_, (std::vector<std::string>{"crl-loaded", "crl-refused",
                                               "crl-refused", "crl-refused",
                                               "crl-refused", "crl-refused"}));
  // A good newer list is taken again.
  WriteCrl(Crl({}, 6));
  EXPECT_TRUE(verifier->Verify(site_a_.cert).ok());
}

TEST_F(ReloadingVerifierTest, CreateNeedsALoadableList) {
  ReloadingVerifierOptions options;
  options.ca_pem = pki_.ca().cert;
  options.crl_file = crl_path_;
  EXPECT_EQ(ReloadingVerifier::Create(options).status().code(),
            absl::StatusCode::kNotFound);
  TestPki other;
  WriteCrl(Crl({}, 1, &other.ca()));
  EXPECT_EQ(ReloadingVerifier::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ReloadingVerifierTest, VerifiesWhileTheListIsSwapped) {
  WriteCrl(Crl({SerialOf(site_a_)}, 1));
  std::unique_ptr<ReloadingVerifier> verifier = Make(absl::ZeroDuration());
  ASSERT_NE(verifier, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<int> wrongly_accepted{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) {
    callers.emplace_back([&] {
      while (!stop) {
        // site-a stays revoked in every list written below.
        if (verifier->Verify(site_a_.cert).ok()) ++wrongly_accepted;
      }
    });
  }
  for (int number = 2; number < 30; ++number) {
    WriteCrl(Crl({SerialOf(site_a_)}, number));
    verifier->CheckNow();
  }
  stop = true;
  for (std::thread& caller : callers) caller.join();
  EXPECT_EQ(wrongly_accepted, 0);
  EXPECT_EQ(verifier->crl_number(), 29);
}

}  // namespace
}  // namespace echofed
