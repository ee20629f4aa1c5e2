#include "coordinator/reloading_verifier.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/log.h"

namespace echofed {
namespace {

std::string Describe(const RevocationListInfo& info) {
  return absl::StrCat("CRL number ", info.crl_number, ", ",
                      info.revoked_serials.size(), " revoked, next update ",
                      absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", info.next_update,
                                       absl::UTCTimeZone()));
}

}  // namespace

bool ReloadingVerifier::FileState::operator==(const FileState& other) const {
  return exists == other.exists && device == other.device &&
         inode == other.inode && size == other.size &&
         mtime_ns == other.mtime_ns && ctime_ns == other.ctime_ns;
}

ReloadingVerifier::FileState ReloadingVerifier::Stat(const std::string& path) {
  struct stat info;
  FileState state;
  if (::stat(path.c_str(), &info) != 0) return state;
  state.exists = true;
  state.device = static_cast<uint64_t>(info.st_dev);
  state.inode = static_cast<uint64_t>(info.st_ino);
  state.size = static_cast<int64_t>(info.st_size);
  state.mtime_ns = static_cast<int64_t>(info.st_mtim.tv_sec) * 1'000'000'000 +
                   info.st_mtim.tv_nsec;
  state.ctime_ns = static_cast<int64_t>(info.st_ctim.tv_sec) * 1'000'000'000 +
                   info.st_ctim.tv_nsec;
  return state;
}

absl::StatusOr<std::unique_ptr<ReloadingVerifier>> ReloadingVerifier::Create(
    ReloadingVerifierOptions options) {
  if (options.clock == nullptr) options.clock = Clock::Real();
  if (options.crl_file.empty()) {
    absl::StatusOr<CertificateVerifier> verifier =
        CertificateVerifier::Create(options.ca_pem);
    if (!verifier.ok()) return verifier.status();
    return std::unique_ptr<ReloadingVerifier>(
        new ReloadingVerifier(std::move(options), std::move(*verifier), {}));
  }
  // Stat before reading: should the file change in between, the next
  // check sees a new state and reads it again.
  FileState state = Stat(options.crl_file);
  absl::StatusOr<std::string> pem = ReadFileToString(options.crl_file);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(),
                        absl::StrCat("crl_file: ", pem.status().message()));
  }
  absl::StatusOr<CertificateVerifier> verifier =
      CertificateVerifier::Create(options.ca_pem, *pem);
  if (!verifier.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "crl_file ", options.crl_file, ": ", verifier.status().message()));
  }
  const RevocationListInfo& info = *verifier->revocation_list();
  LogInfo("certificate revocation list ", options.crl_file, ": ",
          Describe(info));
  if (info.next_update < options.clock->Now()) {
    LogError("the certificate revocation list ", options.crl_file,
             " is past its next update: every client certificate is refused "
             "until it is re-signed (`echofed pki crl`)");
  }
  if (options.on_event) options.on_event("crl-loaded", Describe(info));
  return std::unique_ptr<ReloadingVerifier>(
      new ReloadingVerifier(std::move(options), std::move(*verifier), state));
}

ReloadingVerifier::ReloadingVerifier(ReloadingVerifierOptions options,
                                     CertificateVerifier initial,
                                     FileState state)
    : options_(std::move(options)),
      seen_(state),
      current_(std::make_shared<const CertificateVerifier>(std::move(initial))),
      next_check_(options_.clock->Now() + options_.check_interval) {}

std::shared_ptr<const CertificateVerifier> ReloadingVerifier::Current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

int64_t ReloadingVerifier::crl_number() const {
  std::shared_ptr<const CertificateVerifier> current = Current();
  const RevocationListInfo* info = current->revocation_list();
  return info == nullptr ? 0 : info->crl_number;
}

absl::StatusOr<PeerIdentity> ReloadingVerifier::Verify(
    absl::string_view cert_pem) const {
  MaybeCheck();
  // The shared_ptr keeps this list alive while it verifies, even if a newer
  // one is swapped in meanwhile.
  return Current()->Verify(cert_pem);
}

void ReloadingVerifier::MaybeCheck() const {
  if (options_.crl_file.empty()) return;
  {
    absl::MutexLock lock(&mu_);
    absl::Time now = options_.clock->Now();
    if (now < next_check_) return;
    next_check_ = now + options_.check_interval;
  }
  // Whoever finds the file changed parses it; the others go on with the
  // list in force rather than wait (reactions never block).
  if (!reload_mu_.TryLock()) return;
  Reload();
  reload_mu_.Unlock();
}

void ReloadingVerifier::CheckNow() const {
  if (options_.crl_file.empty()) return;
  absl::MutexLock lock(&reload_mu_);
  Reload();
}

void ReloadingVerifier::Reload() const {
  FileState state = Stat(options_.crl_file);
  if (state == seen_) return;
  seen_ = state;
  const int64_t in_force = crl_number();
  auto refuse = [&](absl::string_view why) {
    std::string detail =
        absl::StrCat(options_.crl_file, ": ", why, "; CRL number ", in_force,
                     " stays in force");
    LogError("refused a new certificate revocation list: ", detail);
    if (options_.on_event) options_.on_event("crl-refused", detail);
  };
  if (!state.exists) {
    refuse("the file is gone");
    return;
  }
  absl::StatusOr<std::string> pem = ReadFileToString(options_.crl_file);
  if (!pem.ok()) {
    refuse(pem.status().message());
    return;
  }
  absl::StatusOr<CertificateVerifier> next =
      CertificateVerifier::Create(options_.ca_pem, *pem);
  if (!next.ok()) {
    refuse(next.status().message());
    return;
  }
  const RevocationListInfo& info = *next->revocation_list();
  if (info.crl_number < in_force) {
    refuse(absl::StrCat("its CRL number ", info.crl_number,
                        " is older than the list in force (a rollback)"));
    return;
  }
  if (info.next_update < options_.clock->Now()) {
    LogError("the certificate revocation list ", options_.crl_file,
             " is past its next update: every client certificate is refused "
             "until it is re-signed (`echofed pki crl`)");
  }
  {
    absl::MutexLock lock(&mu_);
    current_ = std::make_shared<const CertificateVerifier>(std::move(*next));
  }
  LogInfo("certificate revocation list reloaded from ", options_.crl_file, ": ",
          Describe(info));
  if (options_.on_event) options_.on_event("crl-loaded", Describe(info));
}

}  // namespace echofed
