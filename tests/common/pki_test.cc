#include "common/pki.h"

#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::TestPki;

TEST(PkiTest, IssuedCertificateCarriesIdentityAndRole) {
  TestPki pki;
  absl::StatusOr<CertificateVerifier> verifier =
      CertificateVerifier::Create(pki.ca().cert);
  ASSERT_TRUE(verifier.ok());
  TlsMaterial site = pki.Participant("hospital-a", Role::kSite);
  absl::StatusOr<PeerIdentity> peer = verifier->Verify(site.cert);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ(peer->identity, "hospital-a");
  EXPECT_EQ(peer->role, Role::kSite);

  TlsMaterial statistician = pki.Participant("stats", Role::kStatistician);
  EXPECT_EQ(verifier->Verify(statistician.cert)->role, Role::kStatistician);
}

TEST(PkiTest, OtherCaIsRefused) {
  TestPki pki;
  CertificateVerifier verifier = *CertificateVerifier::Create(pki.ca().cert);
  TlsMaterial stranger = TestPki::FromOtherCa("hospital-a", Role::kSite);
  absl::StatusOr<PeerIdentity> peer = verifier.Verify(stranger.cert);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
}

TEST(PkiTest, ExpiredAndNotYetValidAreRefused) {
  TestPki pki;
  CertificateVerifier verifier = *CertificateVerifier::Create(pki.ca().cert);
  // Valid for one day starting ten days ago.
  TlsMaterial expired =
      pki.Participant("old", Role::kSite, -10L * 86400, /*valid_days=*/1);
  EXPECT_EQ(verifier.Verify(expired.cert).status().code(),
            absl::StatusCode::kUnauthenticated);
  TlsMaterial future = pki.Participant("future", Role::kSite, 5L * 86400, 30);
  EXPECT_EQ(verifier.Verify(future.cert).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(PkiTest, MissingOrGarbageCertificateIsRefused) {
  TestPki pki;
  CertificateVerifier verifier = *CertificateVerifier::Create(pki.ca().cert);
  EXPECT_EQ(verifier.Verify("").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(
      verifier.Verify("-----BEGIN CERTIFICATE-----\nAAAA\n").status().code(),
      absl::StatusCode::kUnauthenticated);
}

TEST(PkiTest, CoordinatorNeedsHostNamesAndIdentitiesAreChecked) {
  TestPki pki;
  CertificateRequest request{"coordinator", Role::kCoordinator, {}, 30};
  EXPECT_FALSE(IssueCertificate(pki.ca(), request).ok());
  CertificateRequest bad_name{"a/b", Role::kSite, {}, 30};
  EXPECT_EQ(IssueCertificate(pki.ca(), bad_name).status().code(),
            absl::StatusCode::kInvalidArgument);
}

std::string SerialOf(const TlsMaterial& kit) {
  return ReadCertificateDetails(kit.cert)->serial;
}

RevocationListRequest Revoking(std::vector<std::string> serials,
                               int64_t crl_number = 1) {
  RevocationListRequest request;
  request.crl_number = crl_number;
  for (const std::string& serial : serials) {
    request.revoked.push_back(
        {serial, absl::Now(), RevocationReason::kKeyCompromise});
  }
  return request;
}

TEST(PkiTest, RevocationListCarriesNumberSerialsAndNextUpdate) {
  TestPki pki;
  TlsMaterial site = pki.Participant("hospital-a", Role::kSite);
  RevocationListRequest request = Revoking({SerialOf(site)}, 7);
  request.valid_for = absl::Hours(24 * 10);
  absl::StatusOr<std::string> crl = CreateRevocationList(pki.ca(), request);
  ASSERT_TRUE(crl.ok()) << crl.status();
  EXPECT_NE(crl->find("-----BEGIN X509 CRL-----"), std::string::npos);
  absl::StatusOr<RevocationListInfo> info =
      CheckRevocationList(*crl, pki.ca().cert);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->crl_number, 7);
  EXPECT_EQ(info->revoked_serials, std::vector<std::string>{SerialOf(site)});
  absl::Duration ahead = info->next_update - absl::Now();
  EXPECT_GT(ahead, absl::Hours(24 * 10) - absl::Minutes(1));
  EXPECT_LT(ahead, absl::Hours(24 * 10) + absl::Minutes(1));
  EXPECT_LT(info->this_update, absl::Now());
}

TEST(PkiTest, RevokedCertificateIsRefusedAndOthersPass) {
  TestPki pki;
  TlsMaterial revoked = pki.Participant("hospital-a", Role::kSite);
  TlsMaterial valid = pki.Participant("hospital-b", Role::kSite);
  std::string crl =
      *CreateRevocationList(pki.ca(), Revoking({SerialOf(revoked)}));
  absl::StatusOr<CertificateVerifier> verifier =
      CertificateVerifier::Create(pki.ca().cert, crl);
  ASSERT_TRUE(verifier.ok()) << verifier.status();
  ASSERT_NE(verifier->revocation_list(), nullptr);
  absl::StatusOr<PeerIdentity> refused = verifier->Verify(revoked.cert);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(refused.status().message().find("revoked"), std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find(SerialOf(revoked)),
            std::string::npos);
  absl::StatusOr<PeerIdentity> passed = verifier->Verify(valid.cert);
  ASSERT_TRUE(passed.ok()) << passed.status();
  EXPECT_EQ(passed->identity, "hospital-b");
  // The same certificate without the list passes: the list is what refuses.
  EXPECT_TRUE(
      CertificateVerifier::Create(pki.ca().cert)->Verify(revoked.cert).ok());
}

TEST(PkiTest, RevocationListOfAnotherCaIsRefused) {
  TestPki pki;
  TestPki other;
  TlsMaterial site = pki.Participant("hospital-a", Role::kSite);
  std::string foreign =
      *CreateRevocationList(other.ca(), Revoking({SerialOf(site)}));
  EXPECT_EQ(CheckRevocationList(foreign, pki.ca().cert).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CertificateVerifier::Create(pki.ca().cert, foreign).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Same CA name, other key (a forged list): the signature gives it away.
  PemPair impostor = *CreateCertificateAuthority("test study", 30);
  std::string forged =
      *CreateRevocationList(impostor, Revoking({SerialOf(site)}));
  absl::StatusOr<RevocationListInfo> checked =
      CheckRevocationList(forged, pki.ca().cert);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(checked.status().message().find("not signed"), std::string::npos)
      << checked.status();
  EXPECT_FALSE(CertificateVerifier::Create(pki.ca().cert, "garbage").ok());
}

TEST(PkiTest, StaleRevocationListRefusesEveryone) {
  TestPki pki;
  TlsMaterial site = pki.Participant("hospital-a", Role::kSite);
  RevocationListRequest request = Revoking({});
  request.this_update = absl::Now() - absl::Hours(24 * 3);
  request.valid_for = absl::Hours(24);
  CertificateVerifier verifier = *CertificateVerifier::Create(
      pki.ca().cert, *CreateRevocationList(pki.ca(), request));
  absl::StatusOr<PeerIdentity> peer = verifier.Verify(site.cert);
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(peer.status().message().find("echofed pki crl"), std::string::npos)
      << peer.status();
}

TEST(PkiTest, CertificateDetailsAndIssuer) {
  TestPki pki;
  TlsMaterial coordinator = pki.Coordinator();
  absl::StatusOr<CertificateDetails> details =
      ReadCertificateDetails(coordinator.cert);
  ASSERT_TRUE(details.ok()) << details.status();
  EXPECT_EQ(details->subject.identity, "coordinator");
  EXPECT_EQ(details->subject.role, Role::kCoordinator);
  EXPECT_EQ(details->host_names,
            (std::vector<std::string>{"localhost", "127.0.0.1"}));
  EXPECT_FALSE(details->serial.empty());
  EXPECT_NE(details->serial,
            SerialOf(pki.Participant("hospital-a", Role::kSite)));
  EXPECT_TRUE(CheckIssuedBy(coordinator.cert, pki.ca().cert).ok());
  TlsMaterial stranger = TestPki::FromOtherCa("hospital-a", Role::kSite);
  EXPECT_FALSE(CheckIssuedBy(stranger.cert, pki.ca().cert).ok());
}

TEST(PkiTest, RevocationReasonsParse) {
  EXPECT_EQ(*ParseRevocationReason("key-compromise"),
            RevocationReason::kKeyCompromise);
  EXPECT_EQ(*ParseRevocationReason("keyCompromise"),
            RevocationReason::kKeyCompromise);
  EXPECT_EQ(*ParseRevocationReason("SUPERSEDED"),
            RevocationReason::kSuperseded);
  EXPECT_FALSE(ParseRevocationReason("caCompromise").ok());
  EXPECT_FALSE(
      CreateRevocationList(TestPki().ca(), Revoking({"not hex"})).ok());
}

TEST(PkiTest, RoleNamesRoundTrip) {
  for (Role role : {Role::kCoordinator, Role::kSite, Role::kOperator,
                    Role::kStatistician}) {
    EXPECT_EQ(*ParseRole(RoleName(role)), role);
  }
  EXPECT_FALSE(ParseRole("admin").ok());
}

}  // namespace
}  // namespace echofed
