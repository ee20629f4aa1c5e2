#include "coordinator/cli/kits.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "proto/config.pb.h"

namespace echofed {
namespace {

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

}  // namespace

std::string EnrolmentPath(const std::string& pki_dir) {
  return pki_dir + "/enrolment.textproto";
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
  if (!std::filesystem::exists(EnrolmentPath(pki_dir))) {
    return WriteFileAtomically(EnrolmentPath(pki_dir),
                               "# Participants of the study (written by "
                               "`echofed pki issue`).\n");
  }
  return absl::OkStatus();
}

absl::Status IssueKit(const std::string& pki_dir,
                      const CertificateRequest& request) {
  absl::StatusOr<PemPair> ca = LoadCa(pki_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<PemPair> issued = IssueCertificate(*ca, request);
  if (!issued.ok()) return issued.status();
  std::string kit = absl::StrCat(pki_dir, "/", request.identity);
  if (absl::Status status = MakeDirectories(kit); !status.ok()) return status;
  if (absl::Status status =
          WriteFileAtomically(kit + "/key.pem", issued->key, 0600);
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          WriteFileAtomically(kit + "/cert.pem", issued->cert);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = WriteFileAtomically(kit + "/ca.pem", ca->cert);
      !status.ok()) {
    return status;
  }
  if (request.role == Role::kCoordinator) return absl::OkStatus();
  EnrolmentList enrolment;
  if (std::filesystem::exists(EnrolmentPath(pki_dir))) {
    if (absl::Status status = LoadTextProto(EnrolmentPath(pki_dir), &enrolment);
        !status.ok()) {
      return status;
    }
  }
  Participant* entry = nullptr;
  for (Participant& participant : *enrolment.mutable_participants()) {
    if (participant.identity() == request.identity) entry = &participant;
  }
  if (entry == nullptr) entry = enrolment.add_participants();
  entry->set_identity(request.identity);
  entry->set_role(std::string(RoleName(request.role)));
  return WriteFileAtomically(
      EnrolmentPath(pki_dir),
      absl::StrCat("# Participants of the study (written by `echofed pki "
                   "issue`).\n",
                   ToTextProto(enrolment)));
}

absl::StatusOr<TlsMaterial> LoadKit(const std::string& kit_dir) {
  TlsFiles files;
  files.set_ca_cert(kit_dir + "/ca.pem");
  files.set_cert(kit_dir + "/cert.pem");
  files.set_key(kit_dir + "/key.pem");
  return LoadTlsMaterial(files);
}

}  // namespace echofed
