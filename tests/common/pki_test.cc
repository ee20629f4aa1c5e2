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

TEST(PkiTest, RoleNamesRoundTrip) {
  for (Role role : {Role::kCoordinator, Role::kSite, Role::kOperator,
                    Role::kStatistician}) {
    EXPECT_EQ(*ParseRole(RoleName(role)), role);
  }
  EXPECT_FALSE(ParseRole("admin").ok());
}

}  // namespace
}  // namespace echofed
