#ifndef ECHOFED_COORDINATOR_CLI_KITS_H_
#define ECHOFED_COORDINATOR_CLI_KITS_H_

// Provisioning on disk. A PKI folder holds:
//   ca/ca.pem, ca/ca.key (0600)      the study CA: keep ca.key offline
//   <identity>/ca.pem, cert.pem, key.pem (0600)   one kit per participant
//   enrolment.textproto              who may connect, as what
// Nobody edits certificates by hand.

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/grpc_util.h"
#include "common/pki.h"

namespace echofed {

absl::Status InitStudyPki(const std::string& pki_dir,
                          const std::string& study_name, int valid_days);

// Issues a certificate into <pki_dir>/<identity>/ and, for sites, operators
// and statisticians, adds the identity to enrolment.textproto (re-issuing
// keeps one entry).
absl::Status IssueKit(const std::string& pki_dir,
                      const CertificateRequest& request);

// Reads <kit_dir>/{ca.pem,cert.pem,key.pem}.
absl::StatusOr<TlsMaterial> LoadKit(const std::string& kit_dir);

std::string EnrolmentPath(const std::string& pki_dir);

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_KITS_H_
