#ifndef ECHOFED_COORDINATOR_CLI_KITS_H_
#define ECHOFED_COORDINATOR_CLI_KITS_H_

// Provisioning on disk. A PKI folder holds:
//   ca/ca.pem, ca/ca.key (0600)      the study CA: keep ca.key offline
//   ca/revocations.textproto         the CA's record of revoked serials
//   <identity>/ca.pem, cert.pem, key.pem (0600)   one kit per participant
//   enrolment.textproto              who may connect, as what
//   crl.pem                          the signed CRL the coordinator loads
// Nobody edits certificates, the CRL or the revocation record by hand.
// Not safe against two commands on the same folder at once.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grpc_util.h"
#include "common/pki.h"
#include "proto/config.pb.h"

namespace echofed {

// Creates the study CA, an empty revocation record, crl.pem (no entries)
// and enrolment.textproto. ALREADY_EXISTS if the folder holds a CA.
absl::Status InitStudyPki(const std::string& pki_dir,
                          const std::string& study_name, int valid_days);

// Issues a certificate into <pki_dir>/<identity>/ and, for sites, operators
// and statisticians, adds the identity to enrolment.textproto (issuing again
// keeps one entry but does not revoke the previous certificate: use
// ReissueKit for that).
absl::Status IssueKit(const std::string& pki_dir,
                      const CertificateRequest& request);

// How long a freshly signed CRL stays current (its nextUpdate). The
// coordinator refuses every certificate once the list in force is past it,
// so re-sign (`echofed pki crl`) well before.
inline constexpr int kDefaultCrlDays = 30;

// Re-signs crl.pem from the CA's revocation record with the next CRL
// number and a fresh nextUpdate; nothing else changes.
absl::Status SignRevocationList(const std::string& pki_dir,
                                int crl_days = kDefaultCrlDays);

struct RevokeResult {
  std::string serial;  // of the revoked certificate
  bool already_revoked = false;
};

// Revokes the certificate in <pki_dir>/<identity>/cert.pem: records its
// serial in ca/revocations.textproto, re-signs crl.pem and removes the
// identity from enrolment.textproto. Running it again finishes a revocation
// that was interrupted (already_revoked). NOT_FOUND without such a kit.
absl::StatusOr<RevokeResult> RevokeKit(const std::string& pki_dir,
                                       const std::string& identity,
                                       RevocationReason reason,
                                       int crl_days = kDefaultCrlDays);

struct ReissueResult {
  std::string old_serial;
  std::string new_serial;
  Role role = Role::kSite;
};

// Replaces a participant's certificate and key: a new certificate (new
// serial, same identity, role and host names, `valid_days` long), the old
// one revoked as superseded and listed in a re-signed crl.pem, the kit
// rewritten (key 0600) and the identity enrolled in its role.
absl::StatusOr<ReissueResult> ReissueKit(const std::string& pki_dir,
                                         const std::string& identity,
                                         int valid_days,
                                         int crl_days = kDefaultCrlDays);

// Fills the defaults of a study description: coordinator_identity
// "coordinator", coordinator_port 7443, ca_valid_days 3650,
// certificate_valid_days 365.
void ApplyStudyDefaults(StudyDescription* study);

// INVALID_ARGUMENT naming the first problem of a description (defaults
// applied): no name, no or a malformed coordinator host, a port out of
// range, a bad or reserved identity, an unknown role, an identity given
// twice, or lifetimes that do not fit in the CA's.
absl::Status ValidateStudyDescription(const StudyDescription& study);

// What `ProvisionStudy` did, for the operator to read.
struct StudyProvisioning {
  bool ca_created = false;
  std::vector<std::string> issued;  // identities given a new kit
  std::vector<std::string> kept;    // identities whose kit was there already
  // Where the folder and the description disagree (a participant enrolled
  // but no longer described, a role or host names that differ, a revoked
  // kit): reported, never acted upon, each with the command that would.
  std::vector<std::string> differences;
};

// Provisions a study from its description (validated first; nothing is
// written if it is invalid): the CA when the folder has none, then for the
// coordinator and each participant without a kit a new kit holding its
// certificate, key (0600), the CA certificate, a README.txt of next steps
// and, for the coordinator and sites, a config for deploy/install.sh
// (coordinator.textproto, agent.textproto). Existing kits are never
// rewritten (a missing README or config is added), and nobody is revoked:
// differences are returned instead. FAILED_PRECONDITION if a kit folder
// holds a certificate of another CA or identity.
absl::StatusOr<StudyProvisioning> ProvisionStudy(
    const std::string& pki_dir, const StudyDescription& description);

// Reads <kit_dir>/{ca.pem,cert.pem,key.pem}.
absl::StatusOr<TlsMaterial> LoadKit(const std::string& kit_dir);

std::string EnrolmentPath(const std::string& pki_dir);
std::string CrlPath(const std::string& pki_dir);
std::string RevocationStatePath(const std::string& pki_dir);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_KITS_H_
