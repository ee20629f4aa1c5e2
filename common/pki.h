#ifndef ECHOFED_COMMON_PKI_H_
#define ECHOFED_COMMON_PKI_H_

// The study's public-key infrastructure: one CA, and certificates whose
// subject carries the participant's identity (CN) and role (OU). Built with
// the OpenSSL API (ECDSA P-256, SHA-256), never by shelling out.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "proto/config.pb.h"

namespace echofed {

enum class Role { kCoordinator, kSite, kOperator, kStatistician };

absl::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(absl::string_view name);

// The three PEM texts of a participant: the study CA, its certificate and
// its private key.
struct TlsMaterial {
  std::string ca_cert;
  std::string cert;
  std::string key;
};
// Reads them from the files named in a config's tls block.
absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files);

struct PemPair {
  std::string cert;
  std::string key;
};

// Identities are short names used in certificates, logs and file names.
absl::Status ValidateIdentityName(absl::string_view identity);

absl::StatusOr<PemPair> CreateCertificateAuthority(absl::string_view study_name,
                                                   int valid_days);

struct CertificateRequest {
  std::string identity;
  Role role = Role::kSite;
  // Subject alternative names for a server: "localhost", "127.0.0.1", ...
  std::vector<std::string> host_names;
  int valid_days = 365;
  // Seconds to shift the validity window (tests of expiry use negatives).
  long not_before_offset_seconds = -300;
};

absl::StatusOr<PemPair> IssueCertificate(const PemPair& ca,
                                         const CertificateRequest& request);

// A peer as proven by its certificate chain.
struct PeerIdentity {
  std::string identity;
  Role role = Role::kSite;
};

// Revocation reasons of RFC 5280 that fit a study (the CA- and attribute-
// authority ones do not).
enum class RevocationReason {
  kUnspecified,
  kKeyCompromise,
  kAffiliationChanged,
  kSuperseded,
  kCessationOfOperation,
  kPrivilegeWithdrawn,
};

// RFC 5280 spelling: "keyCompromise", ...
absl::string_view RevocationReasonName(RevocationReason reason);
// Accepts the RFC 5280 names in any case, with or without '-' or '_'
// ("key-compromise", "KEY_COMPROMISE").
absl::StatusOr<RevocationReason> ParseRevocationReason(absl::string_view name);

struct RevokedSerial {
  std::string serial;  // upper-case hex, as CertificateDetails gives it
  absl::Time revoked_at;
  RevocationReason reason = RevocationReason::kUnspecified;
};

struct RevocationListRequest {
  std::vector<RevokedSerial> revoked;
  // RFC 5280 cRLNumber: must grow with every list the CA signs, so a
  // verifier can refuse to go back to an older list.
  int64_t crl_number = 1;
  absl::Time this_update = absl::Now();
  // nextUpdate = this_update + valid_for. After it the list counts as
  // stale and verification against it fails (closed, not open).
  absl::Duration valid_for = absl::Hours(24 * 30);
};

// A signed X.509 v2 CRL (PEM) of the CA, with authority key identifier,
// CRL number and a reason code per entry.
absl::StatusOr<std::string> CreateRevocationList(
    const PemPair& ca, const RevocationListRequest& request);

// What a CRL says, once its signature is known to be the CA's.
struct RevocationListInfo {
  int64_t crl_number = 0;
  absl::Time this_update;
  absl::Time next_update;
  std::vector<std::string> revoked_serials;  // upper-case hex
};

// INVALID_ARGUMENT when `crl_pem` is not a PEM CRL, names another issuer,
// or is not signed by the key of `ca_cert_pem`.
absl::StatusOr<RevocationListInfo> CheckRevocationList(
    absl::string_view crl_pem, absl::string_view ca_cert_pem);

// Verifies certificates against the study CA and, when given one, its CRL.
// Immutable after creation and safe to share between threads (revocation
// lists that change are swapped in whole: coordinator/reloading_verifier.h).
class CertificateVerifier {
 public:
  static absl::StatusOr<CertificateVerifier> Create(absl::string_view ca_pem);
  // With a CRL that must pass CheckRevocationList against `ca_pem`
  // (INVALID_ARGUMENT otherwise).
  static absl::StatusOr<CertificateVerifier> Create(absl::string_view ca_pem,
                                                    absl::string_view crl_pem);
  CertificateVerifier(CertificateVerifier&&) noexcept;
  CertificateVerifier& operator=(CertificateVerifier&&) noexcept;
  ~CertificateVerifier();

  // UNAUTHENTICATED when the certificate is missing, malformed, expired,
  // not issued by the study CA, or revoked (also when the CRL is past its
  // nextUpdate: a stale list cannot vouch for anyone).
  absl::StatusOr<PeerIdentity> Verify(absl::string_view cert_pem) const;

  // The CRL in use, if any.
  const RevocationListInfo* revocation_list() const;

 private:
  CertificateVerifier() = default;
  struct Store;
  Store* store_ = nullptr;
};

// Reads the subject of a certificate without verifying it (doctor, logs).
absl::StatusOr<PeerIdentity> ReadCertificateSubject(absl::string_view cert_pem);

// Everything needed to revoke or re-issue a certificate. Not verified.
struct CertificateDetails {
  PeerIdentity subject;
  std::string serial;                   // upper-case hex
  std::vector<std::string> host_names;  // DNS and IP subject alt names
};
absl::StatusOr<CertificateDetails> ReadCertificateDetails(
    absl::string_view cert_pem);

// INVALID_ARGUMENT unless `cert_pem` carries a signature of the key of
// `ca_cert_pem` (validity dates are not checked: expired certificates can
// still be revoked).
absl::Status CheckIssuedBy(absl::string_view cert_pem,
                           absl::string_view ca_cert_pem);

// INTERNAL with `what` and the first error of OpenSSL's queue, which it
// clears.
absl::Status OpenSslError(absl::string_view what);

// Signs `message` (SHA-256) with the private key `key_pem`: a participant
// vouches for data relayed through others (secure aggregation's keys).
absl::StatusOr<std::string> SignWithKey(absl::string_view key_pem,
                                        absl::string_view message);
// INVALID_ARGUMENT unless `signature` is a signature of `message` by the key
// of `cert_pem` (the certificate itself is not verified here:
// CertificateVerifier does that).
absl::Status CheckSignature(absl::string_view cert_pem,
                            absl::string_view message,
                            absl::string_view signature);

}  // namespace echofed

#endif  // ECHOFED_COMMON_PKI_H_
