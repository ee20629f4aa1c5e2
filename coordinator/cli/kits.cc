#include "coordinator/cli/kits.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "proto/config.pb.h"

namespace echofed {
namespace {

constexpr char kEnrolmentHeader[] =
    "# Participants of the study (written by `echofed pki`; do not edit).\n";
constexpr char kRevocationHeader[] =
    "# Certificates revoked by the study CA (written by `echofed pki revoke` "
    "and `reissue`; crl.pem is signed from it). Do not edit.\n";

std::string KitPath(const std::string& pki_dir, const std::string& identity) {
  return absl::StrCat(pki_dir, "/", identity);
}

absl::StatusOr<PemPair> LoadCa(const std::string& pki_dir) {
  absl::StatusOr<std::string> cert = ReadFileToString(pki_dir + "/ca/ca.pem");
  if (!cert.ok()) {
    return absl::NotFoundError(absl::StrCat("no study CA in ", pki_dir,
                                            " (run `echofed pki init` first)"));
  }
  absl::StatusOr<std::string> key = ReadFileToString(pki_dir + "/ca/ca.key");
  if (!key.ok()) return key.status();
  return PemPair{*cert, *key};
}

absl::StatusOr<EnrolmentList> LoadEnrolment(const std::string& pki_dir) {
  EnrolmentList enrolment;
  if (std::filesystem::exists(EnrolmentPath(pki_dir))) {
    if (absl::Status status = LoadTextProto(EnrolmentPath(pki_dir), &enrolment);
        !status.ok()) {
      return status;
    }
  }
  return enrolment;
}

absl::Status SaveEnrolment(const std::string& pki_dir,
                           const EnrolmentList& enrolment) {
  return WriteFileAtomically(
      EnrolmentPath(pki_dir),
      absl::StrCat(kEnrolmentHeader, ToTextProto(enrolment)));
}

// Adds or updates the identity's entry; coordinators are never enrolled
// (they are the server).
absl::Status Enrol(const std::string& pki_dir, const std::string& identity,
                   Role role) {
  if (role == Role::kCoordinator) return absl::OkStatus();
  absl::StatusOr<EnrolmentList> enrolment = LoadEnrolment(pki_dir);
  if (!enrolment.ok()) return enrolment.status();
  Participant* entry = nullptr;
  for (Participant& participant : *enrolment->mutable_participants()) {
    if (participant.identity() == identity) entry = &participant;
  }
  if (entry == nullptr) entry = enrolment->add_participants();
  entry->set_identity(identity);
  entry->set_role(std::string(RoleName(role)));
  return SaveEnrolment(pki_dir, *enrolment);
}

absl::Status Unenrol(const std::string& pki_dir, const std::string& identity) {
  absl::StatusOr<EnrolmentList> enrolment = LoadEnrolment(pki_dir);
  if (!enrolment.ok()) return enrolment.status();
  EnrolmentList kept;
  for (const Participant& participant : enrolment->participants()) {
    if (participant.identity() != identity) {
      *kept.add_participants() = participant;
    }
  }
  if (kept.participants_size() == enrolment->participants_size()) {
    return absl::OkStatus();
  }
  return SaveEnrolment(pki_dir, kept);
}

// The key first and 0600 from the start: a crash never leaves a readable
// key, and a kit left with a new key but the old certificate is refused
// by TLS (key and certificate must pair) rather than used.
absl::Status WriteKit(const std::string& pki_dir, const std::string& identity,
                      const PemPair& issued, const std::string& ca_cert) {
  std::string kit = KitPath(pki_dir, identity);
  if (absl::Status status = MakeDirectories(kit); !status.ok()) return status;
  if (absl::Status status =
          WriteFileAtomically(kit + "/key.pem", issued.key, 0600);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = WriteFileAtomically(kit + "/cert.pem", issued.cert);
      !status.ok()) {
    return status;
  }
  return WriteFileAtomically(kit + "/ca.pem", ca_cert);
}

// PKI folders made before revocation existed have no record: start empty.
absl::StatusOr<RevocationState> LoadRevocationState(
    const std::string& pki_dir) {
  RevocationState state;
  if (std::filesystem::exists(RevocationStatePath(pki_dir))) {
    if (absl::Status status =
            LoadTextProto(RevocationStatePath(pki_dir), &state);
        !status.ok()) {
      return status;
    }
  }
  return state;
}

// Takes the next CRL number, signs the list of `state` and writes the
// record, then crl.pem: the record is never behind a CRL already
// published, and a crash in between is repaired by the next signing.
absl::Status SignAndSave(const std::string& pki_dir, const PemPair& ca,
                         RevocationState state, int crl_days) {
  if (crl_days < 1) {
    return absl::InvalidArgumentError("--crl-days must be at least 1");
  }
  RevocationListRequest request;
  request.crl_number = state.crl_number() + 1;
  request.this_update = absl::Now();
  request.valid_for = absl::Hours(24) * crl_days;
  for (const RevokedCertificate& entry : state.revoked()) {
    absl::StatusOr<RevocationReason> reason =
        ParseRevocationReason(entry.reason());
    if (!reason.ok()) {
      return absl::DataLossError(absl::StrCat(RevocationStatePath(pki_dir),
                                              ": serial ", entry.serial(), ": ",
                                              reason.status().message()));
    }
    request.revoked.push_back(
        {entry.serial(), absl::FromUnixSeconds(entry.revoked_unix_seconds()),
         *reason});
  }
  absl::StatusOr<std::string> crl = CreateRevocationList(ca, request);
  if (!crl.ok()) return crl.status();
  state.set_crl_number(request.crl_number);
  if (absl::Status status = WriteFileAtomically(
          RevocationStatePath(pki_dir),
          absl::StrCat(kRevocationHeader, ToTextProto(state)));
      !status.ok()) {
    return status;
  }
  return WriteFileAtomically(CrlPath(pki_dir), *crl);
}

// Adds the certificate to the record (unless it is there) and re-signs.
// Returns whether it was already revoked.
absl::StatusOr<bool> RecordRevocation(const std::string& pki_dir,
                                      const PemPair& ca,
                                      const CertificateDetails& certificate,
                                      RevocationReason reason, int crl_days) {
  absl::StatusOr<RevocationState> state = LoadRevocationState(pki_dir);
  if (!state.ok()) return state.status();
  bool already_revoked = false;
  for (const RevokedCertificate& entry : state->revoked()) {
    if (entry.serial() == certificate.serial) already_revoked = true;
  }
  if (!already_revoked) {
    RevokedCertificate* entry = state->add_revoked();
    entry->set_serial(certificate.serial);
    entry->set_identity(certificate.subject.identity);
    entry->set_role(std::string(RoleName(certificate.subject.role)));
    entry->set_revoked_unix_seconds(absl::ToUnixSeconds(absl::Now()));
    entry->set_reason(std::string(RevocationReasonName(reason)));
  }
  if (absl::Status status = SignAndSave(pki_dir, ca, *state, crl_days);
      !status.ok()) {
    return status;
  }
  return already_revoked;
}

// The certificate in a participant's kit, checked to be this CA's.
absl::StatusOr<CertificateDetails> KitCertificate(const std::string& pki_dir,
                                                  const PemPair& ca,
                                                  const std::string& identity) {
  if (absl::Status status = ValidateIdentityName(identity); !status.ok()) {
    return status;
  }
  std::string path = KitPath(pki_dir, identity) + "/cert.pem";
  absl::StatusOr<std::string> pem = ReadFileToString(path);
  if (!pem.ok()) {
    return absl::NotFoundError(
        absl::StrCat("no certificate for '", identity, "' (", path, ")"));
  }
  if (absl::Status status = CheckIssuedBy(*pem, ca.cert); !status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": ", status.message()));
  }
  absl::StatusOr<CertificateDetails> details = ReadCertificateDetails(*pem);
  if (!details.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": ", details.status().message()));
  }
  if (details->subject.identity != identity) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is the certificate of '",
                     details->subject.identity, "', not of '", identity, "'"));
  }
  return details;
}

}  // namespace

std::string EnrolmentPath(const std::string& pki_dir) {
  return pki_dir + "/enrolment.textproto";
}

std::string CrlPath(const std::string& pki_dir) { return pki_dir + "/crl.pem"; }

std::string RevocationStatePath(const std::string& pki_dir) {
  return pki_dir + "/ca/revocations.textproto";
}

absl::Status InitStudyPki(const std::string& pki_dir,
                          const std::string& study_name, int valid_days) {
  if (std::filesystem::exists(pki_dir + "/ca/ca.key")) {
    return absl::AlreadyExistsError(absl::StrCat(
        pki_dir, " already holds a study CA; refusing to replace it"));
  }
  if (absl::Status status = MakeDirectories(pki_dir + "/ca"); !status.ok()) {
    return status;
  }
  absl::StatusOr<PemPair> ca =
      CreateCertificateAuthority(study_name, valid_days);
  if (!ca.ok()) return ca.status();
  if (absl::Status status =
          WriteFileAtomically(pki_dir + "/ca/ca.key", ca->key, 0600);
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          WriteFileAtomically(pki_dir + "/ca/ca.pem", ca->cert);
      !status.ok()) {
    return status;
  }
  // An empty CRL from the start, so the coordinator's config can name it
  // before anyone is revoked.
  if (absl::Status status =
          SignAndSave(pki_dir, *ca, RevocationState(), kDefaultCrlDays);
      !status.ok()) {
    return status;
  }
  if (!std::filesystem::exists(EnrolmentPath(pki_dir))) {
    return WriteFileAtomically(EnrolmentPath(pki_dir), kEnrolmentHeader);
  }
  return absl::OkStatus();
}

absl::Status IssueKit(const std::string& pki_dir,
                      const CertificateRequest& request) {
  absl::StatusOr<PemPair> ca = LoadCa(pki_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<PemPair> issued = IssueCertificate(*ca, request);
  if (!issued.ok()) return issued.status();
  if (absl::Status status =
          WriteKit(pki_dir, request.identity, *issued, ca->cert);
      !status.ok()) {
    return status;
  }
  return Enrol(pki_dir, request.identity, request.role);
}

absl::Status SignRevocationList(const std::string& pki_dir, int crl_days) {
  absl::StatusOr<PemPair> ca = LoadCa(pki_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<RevocationState> state = LoadRevocationState(pki_dir);
  if (!state.ok()) return state.status();
  return SignAndSave(pki_dir, *ca, *std::move(state), crl_days);
}

absl::StatusOr<RevokeResult> RevokeKit(const std::string& pki_dir,
                                       const std::string& identity,
                                       RevocationReason reason, int crl_days) {
  absl::StatusOr<PemPair> ca = LoadCa(pki_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<CertificateDetails> certificate =
      KitCertificate(pki_dir, *ca, identity);
  if (!certificate.ok()) return certificate.status();
  // CRL first: it is what a running coordinator enforces; the enrolment
  // list only counts from its next start.
  absl::StatusOr<bool> already =
      RecordRevocation(pki_dir, *ca, *certificate, reason, crl_days);
  if (!already.ok()) return already.status();
  if (absl::Status status = Unenrol(pki_dir, identity); !status.ok()) {
    return status;
  }
  return RevokeResult{certificate->serial, *already};
}

absl::StatusOr<ReissueResult> ReissueKit(const std::string& pki_dir,
                                         const std::string& identity,
                                         int valid_days, int crl_days) {
  absl::StatusOr<PemPair> ca = LoadCa(pki_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<CertificateDetails> old =
      KitCertificate(pki_dir, *ca, identity);
  if (!old.ok()) return old.status();
  CertificateRequest request;
  request.identity = identity;
  request.role = old->subject.role;
  request.host_names = old->host_names;
  request.valid_days = valid_days;
  // Issued before anything is written: if issuing fails, nothing changed.
  absl::StatusOr<PemPair> issued = IssueCertificate(*ca, request);
  if (!issued.ok()) return issued.status();
  absl::StatusOr<CertificateDetails> fresh =
      ReadCertificateDetails(issued->cert);
  if (!fresh.ok()) return fresh.status();
  absl::StatusOr<bool> already = RecordRevocation(
      pki_dir, *ca, *old, RevocationReason::kSuperseded, crl_days);
  if (!already.ok()) return already.status();
  if (absl::Status status = WriteKit(pki_dir, identity, *issued, ca->cert);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = Enrol(pki_dir, identity, request.role);
      !status.ok()) {
    return status;
  }
  return ReissueResult{old->serial, fresh->serial, request.role};
}

absl::StatusOr<TlsMaterial> LoadKit(const std::string& kit_dir) {
  TlsFiles files;
  files.set_ca_cert(kit_dir + "/ca.pem");
  files.set_cert(kit_dir + "/cert.pem");
  files.set_key(kit_dir + "/key.pem");
  return LoadTlsMaterial(files);
}

}  // namespace echofed
