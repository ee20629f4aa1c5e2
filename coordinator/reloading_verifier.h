#ifndef ECHOFED_COORDINATOR_RELOADING_VERIFIER_H_
#define ECHOFED_COORDINATOR_RELOADING_VERIFIER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/pki.h"

namespace echofed {

struct ReloadingVerifierOptions {
  std::string ca_pem;
  // The study CA's CRL (PEM). Empty: no revocation checking.
  std::string crl_file;
  // How often a call looks at the file (one stat). Zero: on every call.
  absl::Duration check_interval = absl::Seconds(1);
  Clock* clock = Clock::Real();
  // Told (action, detail) when a list is loaded ("crl-loaded") or a
  // replacement is refused ("crl-refused"), for the audit log. Called
  // without any lock held, from whichever thread noticed the change.
  std::function<void(const std::string& action, const std::string& detail)>
      on_event;
};

// Verifies client certificates against the study CA and, when configured,
// the CA's CRL file, which it re-reads when the file changes (device,
// inode, size, mtime or ctime), so a revocation takes effect without a
// restart.
//
// Thread-safe. Each list is held in an immutable CertificateVerifier; a
// changed file is parsed by one caller outside `mu_` while the others go on
// with the list in force, and the new verifier is swapped in under `mu_`.
// A replacement that cannot be read, does not parse, is not signed by the
// study CA, or carries a lower CRL number than the list in force (a
// rollback) is refused: the previous list stays in force and the error is
// logged once per change of the file. It never falls back to no list.
class ReloadingVerifier {
 public:
  // The CRL file, when given, must load now (INVALID_ARGUMENT or NOT_FOUND
  // otherwise): a coordinator never starts without the list it was told
  // to enforce. Without one, the CA alone decides.
  static absl::StatusOr<std::unique_ptr<ReloadingVerifier>> Create(
      ReloadingVerifierOptions options);
  ReloadingVerifier(const ReloadingVerifier&) = delete;
  ReloadingVerifier& operator=(const ReloadingVerifier&) = delete;

  // As CertificateVerifier::Verify, against the newest good list.
  absl::StatusOr<PeerIdentity> Verify(absl::string_view cert_pem) const;

  // Looks at the file now, whatever the interval.
  void CheckNow() const;

  // CRL number of the list in force; 0 without one.
  int64_t crl_number() const;

 private:
  struct FileState {
    bool exists = false;
    uint64_t device = 0;
    uint64_t inode = 0;
    int64_t size = 0;
    int64_t mtime_ns = 0;
    int64_t ctime_ns = 0;
    bool operator==(const FileState& other) const;
  };
  static FileState Stat(const std::string& path);

  ReloadingVerifier(ReloadingVerifierOptions options,
                    CertificateVerifier initial, FileState state);
  void MaybeCheck() const;
  void Reload() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(reload_mu_);
  std::shared_ptr<const CertificateVerifier> Current() const;

  const ReloadingVerifierOptions options_;

  // Held by the one caller that re-reads the file; others skip the check.
  mutable absl::Mutex reload_mu_;
  // The file as last examined, whether its list was taken or refused.
  mutable FileState seen_ ABSL_GUARDED_BY(reload_mu_);

  mutable absl::Mutex mu_;
  mutable std::shared_ptr<const CertificateVerifier> current_
      ABSL_GUARDED_BY(mu_);
  mutable absl::Time next_check_ ABSL_GUARDED_BY(mu_);
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_RELOADING_VERIFIER_H_
