#ifndef ECHOFED_COMMON_PKI_H_
#define ECHOFED_COMMON_PKI_H_

// The study's public-key infrastructure: one CA, and certificates whose
// subject carries the participant's identity (CN) and role (OU). Built with
// the OpenSSL API (ECDSA P-256, SHA-256), never by shelling out.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace echofed {

enum class Role { kCoordinator, kSite, kOperator, kStatistician };

absl::string_view RoleName(Role role);
absl::StatusOr<Role> ParseRole(absl::string_view name);

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

// Verifies certificates against the study CA. Immutable after creation and
// safe to share between threads.
class CertificateVerifier {
 public:
  static absl::StatusOr<CertificateVerifier> Create(absl::string_view ca_pem);
  CertificateVerifier(CertificateVerifier&&) noexcept;
  CertificateVerifier& operator=(CertificateVerifier&&) noexcept;
  ~CertificateVerifier();

  // UNAUTHENTICATED when the certificate is missing, malformed, expired or
  // not issued by the study CA.
  absl::StatusOr<PeerIdentity> Verify(absl::string_view cert_pem) const;

 private:
  CertificateVerifier() = default;
  struct Store;
  Store* store_ = nullptr;
};

// Reads the subject of a certificate without verifying it (doctor, logs).
absl::StatusOr<PeerIdentity> ReadCertificateSubject(absl::string_view cert_pem);

}  // namespace echofed

#endif  // ECHOFED_COMMON_PKI_H_
