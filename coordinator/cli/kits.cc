#include "coordinator/cli/kits.h"

#include <arpa/inet.h>

#include <algorithm>
#include <filesystem>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

namespace {

constexpr int kDefaultCoordinatorPort = 7443;

// What sites dial and certificates name: a DNS name (RFC 1123 labels) or an
// IP literal. Checked here because a bad name only shows up later as a TLS
// failure at every site.
absl::Status ValidateHostName(const std::string& host) {
  unsigned char address[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, host.c_str(), address) == 1 ||
      inet_pton(AF_INET6, host.c_str(), address) == 1) {
    return absl::OkStatus();
  }
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator host '", host, "' ", why));
  };
  if (host.empty() || host.size() > 253) {
    return bad("must be 1 to 253 characters");
  }
  std::vector<std::string> labels = absl::StrSplit(host, '.');
  for (const std::string& label : labels) {
    if (label.empty() || label.size() > 63) {
      return bad("has an empty or over-long label");
    }
    if (label.front() == '-' || label.back() == '-') {
      return bad("has a label that starts or ends with '-'");
    }
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return bad(
            "is neither a DNS name (letters, digits, '-', '.') nor an "
            "IP address");
      }
    }
  }
  // "10.0.0.300" is a typo of an address, not a name.
  if (std::all_of(labels.back().begin(), labels.back().end(),
                  [](char c) { return absl::ascii_isdigit(c); })) {
    return bad("is not a valid IP address");
  }
  return absl::OkStatus();
}

std::string CoordinatorAddress(const StudyDescription& study) {
  const std::string& host = study.coordinator_hosts(0);
  bool ipv6 = host.find(':') != std::string::npos;
  return absl::StrCat(ipv6 ? "[" : "", host, ipv6 ? "]" : "", ":",
                      study.coordinator_port());
}

void SetInstalledKitPaths(TlsFiles* tls) {
  // deploy/install.sh puts the kit in kit/ beside the config.
  tls->set_ca_cert("kit/ca.pem");
  tls->set_cert("kit/cert.pem");
  tls->set_key("kit/key.pem");
}

std::string CoordinatorConfigText(const StudyDescription& study) {
  CoordinatorConfig config;
  config.set_listen_address(absl::StrCat("0.0.0.0:", study.coordinator_port()));
  SetInstalledKitPaths(config.mutable_tls());
  config.set_state_dir("/var/lib/echofed-coordinator");
  config.set_enrolment_file("enrolment.textproto");
  config.set_crl_file("crl.pem");
  if (study.status_port() != 0) {
    config.set_status_listen_address(
        absl::StrCat("0.0.0.0:", study.status_port()));
  }
  return absl::StrCat(
      "# echofed-coordinator --config "
      "/etc/echofed/coordinator/coordinator.textproto\n"
      "# Study '",
      study.name(),
      "', written by `echofed pki study`.\n"
      "# Relative paths are relative to this file once deploy/install.sh "
      "has placed\n# it in /etc/echofed/coordinator/, with the kit in kit/, "
      "and enrolment.textproto\n# and crl.pem (copies of "
      "pki/enrolment.textproto and pki/crl.pem) beside it.\n"
      "# All options: deploy/examples/coordinator.textproto.\n",
      ToTextProto(config));
}

std::string AgentConfigText(const StudyDescription& study) {
  AgentConfig config;
  config.set_coordinator_address(CoordinatorAddress(study));
  config.set_coordinator_name(study.coordinator_hosts(0));
  SetInstalledKitPaths(config.mutable_tls());
  config.set_data_dir("/srv/echofed/data");
  config.set_device("auto");
  // The systemd unit's StateDirectory: the privacy ledger.
  config.set_state_dir("/var/lib/echofed-agent");
  return absl::StrCat(
      "# echofed-agent run --config /etc/echofed/agent/agent.textproto\n"
      "# Study '",
      study.name(),
      "', written by `echofed pki study`.\n"
      "# Relative paths are relative to this file once deploy/install.sh "
      "has placed\n# it in /etc/echofed/agent/, with the kit in kit/.\n"
      "# SET data_dir to where this hospital's manifest.csv and images are "
      "(read\n# only; give install.sh the same --data-dir).\n"
      "# All options: deploy/examples/agent.textproto.\n",
      ToTextProto(config));
}

std::string ReadmeText(const StudyDescription& study,
                       const std::string& identity, Role role) {
  std::string kit = absl::StrCat("pki/", identity);
  std::string connect = absl::StrCat(" --kit ", kit, " --coordinator ",
                                     CoordinatorAddress(study));
  std::string head = absl::StrCat(
      "echofed kit of '", identity, "' (", RoleName(role), ") for study '",
      study.name(),
      "'\n\nca.pem    the study CA's certificate\n"
      "cert.pem  your certificate: it carries your identity and role\n"
      "key.pem   your private key (mode 0600): it IS your identity. Never "
      "send it\n          by e-mail, never copy it elsewhere than the "
      "machine that uses it,\n          never share it with anyone.\n");
  switch (role) {
    case Role::kCoordinator:
      return absl::StrCat(
          head,
          "coordinator.textproto  the coordinator's config\n\n"
          "Next steps, on the coordinator host (",
          absl::StrJoin(study.coordinator_hosts(), ", "),
          "), from the repository\nwith a build and the whole pki/ folder "
          "less ca/ca.key (keep that offline):\n\n"
          "  sudo deploy/install.sh coordinator --pki pki --kit ",
          kit, " \\\n      --config ", kit,
          "/coordinator.textproto\n"
          "  sudo systemctl enable --now echofed-coordinator\n"
          "  journalctl -u echofed-coordinator -f\n\n"
          "Open TCP ",
          study.coordinator_port(), " inbound (sites dial it)",
          study.status_port() != 0
              ? absl::StrCat(" and TCP ", study.status_port(),
                             " for the status page")
              : "",
          ", nothing else. After\n`echofed pki revoke|reissue|crl` copy "
          "pki/crl.pem to\n/etc/echofed/coordinator/crl.pem; after adding "
          "participants copy\npki/enrolment.textproto there and restart the "
          "service. No patient data ever\nreaches this machine.\n");
    case Role::kSite:
      return absl::StrCat(
          head, "agent.textproto  the agent's config (coordinator ",
          CoordinatorAddress(study),
          ")\n\nNext steps, for site IT on the hospital's GPU box, from the "
          "repository with a\nbuild:\n\n"
          "1. Put the images and manifest.csv under /srv/echofed/data (or "
          "elsewhere: then\n   set data_dir in agent.textproto and --data-dir "
          "below to it), and check them:\n"
          "     echofed-agent check-data /srv/echofed/data\n"
          "2. Install the agent as a service:\n"
          "     sudo deploy/install.sh agent --kit ",
          kit, " \\\n         --config ", kit,
          "/agent.textproto \\\n"
          "         --data-dir /srv/echofed/data\n"
          "3. Check everything before the study starts:\n"
          "     sudo -u echofed-agent echofed-agent doctor \\\n"
          "         --config /etc/echofed/agent/agent.textproto --plan "
          "<the study plan> \\\n"
          "         --state-dir /var/lib/echofed-agent\n"
          "4. sudo systemctl enable --now echofed-agent; journalctl -u "
          "echofed-agent -f\n\n"
          "The agent only dials out: allow outbound TCP to\n",
          CoordinatorAddress(study),
          ".\nPatient data never leaves this machine; only model weights and "
          "aggregate\nmetrics do.\n");
    case Role::kOperator:
      return absl::StrCat(
          head,
          "\nYou run the study with `echofed` (this kit stays on your "
          "machine):\n\n"
          "  echofed run start  --plan plan.textproto",
          connect, "\n  echofed status --watch 5", connect,
          "\n  echofed run stop --run <run id>", connect,
          "\n  echofed model download --run <run id> -o final.efm", connect,
          "\n  echofed report --out report/", connect,
          "\n\nThe status page (if the coordinator serves one) takes this "
          "certificate too.\n");
    case Role::kStatistician:
      return absl::StrCat(
          head,
          "\nYou read the study's results with `echofed` (this kit stays on "
          "your machine):\n\n"
          "  echofed runs",
          connect, "\n  echofed status", connect,
          "\n  echofed report --run <run id> --out report/", connect,
          "\n\nThe report folder gets JSON, a tidy CSV and an HTML page of "
          "pooled and\nper-site metrics; no per-patient data exists "
          "anywhere to download.\n");
  }
  return head;
}

// Writes a kit's README and config unless there already: a site may have
// edited its config, and a rerun must not undo that.
absl::Status WriteKitGuides(const std::string& pki_dir,
                            const StudyDescription& study,
                            const std::string& identity, Role role) {
  std::string kit = KitPath(pki_dir, identity);
  std::vector<std::pair<std::string, std::string>> files = {
      {kit + "/README.txt", ReadmeText(study, identity, role)}};
  if (role == Role::kCoordinator) {
    files.push_back(
        {kit + "/coordinator.textproto", CoordinatorConfigText(study)});
  } else if (role == Role::kSite) {
    files.push_back({kit + "/agent.textproto", AgentConfigText(study)});
  }
  for (const auto& [path, text] : files) {
    if (std::filesystem::exists(path)) continue;
    if (absl::Status status = WriteFileAtomically(path, text); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace

void ApplyStudyDefaults(StudyDescription* study) {
  if (study->coordinator_identity().empty()) {
    study->set_coordinator_identity("coordinator");
  }
  if (study->coordinator_port() == 0) {
    study->set_coordinator_port(kDefaultCoordinatorPort);
  }
  if (study->ca_valid_days() == 0) study->set_ca_valid_days(3650);
  if (study->certificate_valid_days() == 0) {
    study->set_certificate_valid_days(365);
  }
}

absl::Status ValidateStudyDescription(const StudyDescription& study) {
  if (study.name().empty()) {
    return absl::InvalidArgumentError("the study needs a name");
  }
  if (study.coordinator_hosts().empty()) {
    return absl::InvalidArgumentError(
        "coordinator_hosts: give at least one host name or IP address that "
        "sites reach the coordinator at");
  }
  for (const std::string& host : study.coordinator_hosts()) {
    if (absl::Status status = ValidateHostName(host); !status.ok()) {
      return status;
    }
  }
  for (uint32_t port : {study.coordinator_port(), study.status_port()}) {
    if (port > 65535) {
      return absl::InvalidArgumentError(
          absl::StrCat("port ", port, " is out of range (1 to 65535)"));
    }
  }
  if (study.status_port() == study.coordinator_port()) {
    return absl::InvalidArgumentError(
        "status_port must differ from coordinator_port");
  }
  if (study.ca_valid_days() < 1 || study.certificate_valid_days() < 1) {
    return absl::InvalidArgumentError("lifetimes must be at least 1 day");
  }
  if (study.certificate_valid_days() > study.ca_valid_days()) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate_valid_days (", study.certificate_valid_days(),
                     ") exceeds ca_valid_days (", study.ca_valid_days(),
                     "): certificates stop with the CA"));
  }
  absl::flat_hash_set<std::string> seen;
  auto check_identity = [&](const std::string& identity) -> absl::Status {
    if (absl::Status status = ValidateIdentityName(identity); !status.ok()) {
      return status;
    }
    // Kit folders sit beside ca/ in the PKI folder.
    if (identity == "ca" || identity == "." || identity == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("identity '", identity, "' is reserved"));
    }
    if (!seen.insert(identity).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("identity '", identity, "' is given twice"));
    }
    return absl::OkStatus();
  };
  if (absl::Status status = check_identity(study.coordinator_identity());
      !status.ok()) {
    return status;
  }
  for (const StudyParticipant& participant : study.participants()) {
    if (absl::Status status = check_identity(participant.identity());
        !status.ok()) {
      return status;
    }
    absl::StatusOr<Role> role = ParseRole(participant.role());
    if (!role.ok() || *role == Role::kCoordinator) {
      return absl::InvalidArgumentError(absl::StrCat(
          "participant '", participant.identity(), "': unknown role '",
          participant.role(), "' (site, operator or statistician)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StudyProvisioning> ProvisionStudy(
    const std::string& pki_dir, const StudyDescription& description) {
  StudyDescription study = description;
  ApplyStudyDefaults(&study);
  if (absl::Status status = ValidateStudyDescription(study); !status.ok()) {
    return status;
  }
  StudyProvisioning result;
  if (!std::filesystem::exists(pki_dir + "/ca/ca.key")) {
    if (absl::Status status =
            InitStudyPki(pki_dir, study.name(), study.ca_valid_days());
        !status.ok()) {
      return status;
    }
    result.ca_created = true;
  }
  absl::StatusOr<PemPair> ca = LoadCa(pki_dir);
  if (!ca.ok()) return ca.status();
  absl::StatusOr<RevocationState> revocations = LoadRevocationState(pki_dir);
  if (!revocations.ok()) return revocations.status();
  absl::flat_hash_set<std::string> revoked_serials;
  for (const RevokedCertificate& entry : revocations->revoked()) {
    revoked_serials.insert(entry.serial());
  }

  std::vector<CertificateRequest> wanted;
  wanted.push_back(
      {study.coordinator_identity(),
       Role::kCoordinator,
       {study.coordinator_hosts().begin(), study.coordinator_hosts().end()},
       study.certificate_valid_days()});
  for (const StudyParticipant& participant : study.participants()) {
    wanted.push_back({participant.identity(),
                      *ParseRole(participant.role()),
                      {},
                      study.certificate_valid_days()});
  }
  absl::flat_hash_set<std::string> described;
  for (const CertificateRequest& request : wanted) {
    described.insert(request.identity);
    const std::string& identity = request.identity;
    if (!std::filesystem::exists(KitPath(pki_dir, identity) + "/cert.pem")) {
      if (absl::Status status = IssueKit(pki_dir, request); !status.ok()) {
        return status;
      }
      result.issued.push_back(identity);
    } else {
      absl::StatusOr<CertificateDetails> existing =
          KitCertificate(pki_dir, *ca, identity);
      if (!existing.ok()) return existing.status();
      result.kept.push_back(identity);
      if (existing->subject.role != request.role) {
        result.differences.push_back(absl::StrCat(
            identity, ": the kit's certificate is a ",
            RoleName(existing->subject.role), "'s, the description says ",
            RoleName(request.role),
            "; to change it: `echofed pki revoke --identity ", identity,
            "`, remove its kit folder and run this again"));
      } else if (request.role == Role::kCoordinator &&
                 existing->host_names != request.host_names) {
        result.differences.push_back(absl::StrCat(
            identity, ": the certificate names hosts ",
            absl::StrJoin(existing->host_names, ", "), ", the description ",
            absl::StrJoin(request.host_names, ", "),
            "; to change them: `echofed pki revoke --identity ", identity,
            "`, remove its kit folder and run this again (existing agent "
            "configs keep the old address)"));
      }
      if (revoked_serials.contains(existing->serial)) {
        result.differences.push_back(absl::StrCat(
            identity, ": its certificate (serial ", existing->serial,
            ") is revoked; `echofed pki reissue --identity ", identity,
            "` re-admits it"));
      }
    }
    if (absl::Status status =
            WriteKitGuides(pki_dir, study, identity, request.role);
        !status.ok()) {
      return status;
    }
  }

  absl::StatusOr<EnrolmentList> enrolment = LoadEnrolment(pki_dir);
  if (!enrolment.ok()) return enrolment.status();
  for (const Participant& participant : enrolment->participants()) {
    if (!described.contains(participant.identity())) {
      result.differences.push_back(absl::StrCat(
          participant.identity(), " (", participant.role(),
          ") is enrolled but not in the study description; it stays "
          "enrolled: `echofed pki revoke --dir ",
          pki_dir, " --identity ", participant.identity(), "` to remove it"));
    }
  }
  return result;
}

absl::StatusOr<TlsMaterial> LoadKit(const std::string& kit_dir) {
  TlsFiles files;
  files.set_ca_cert(kit_dir + "/ca.pem");
  files.set_cert(kit_dir + "/cert.pem");
  files.set_key(kit_dir + "/key.pem");
  return LoadTlsMaterial(files);
}

}  // namespace echofed
