// echofed: the operator's and statistician's command line.
//   pki study | init | issue | revoke | reissue | crl
//                            study CA, participant kits, revocation
//   run start|status|stop    runs on a coordinator
//   status [--watch S]       live table of the run: sites, round, metrics
//   runs                     list runs
//   model download           fetch a committed global model
//   report                   the statistician's report (JSON, CSV, HTML)
//   audit verify             the audit log's hash chain, and that it still
//                            holds a head a round recorded (not cut short)
//   demo                     a whole local federation on synthetic data

#include <unistd.h>

#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/audit_log.h"
#include "common/files.h"
#include "common/log.h"
#include "common/plan_util.h"
#include "coordinator/cli/admin_client.h"
#include "coordinator/cli/demo.h"
#include "coordinator/cli/kits.h"
#include "coordinator/cli/report.h"
#include "coordinator/cli/status_view.h"

namespace {

struct Connection {
  std::string address = "localhost:7443";
  std::string kit;
  std::string server_name;
};

void AddConnectionOptions(CLI::App* command, Connection* connection) {
  command
      ->add_option("--coordinator", connection->address,
                   "coordinator host:port")
      ->capture_default_str();
  command
      ->add_option("--kit", connection->kit,
                   "your kit folder (ca.pem, cert.pem, key.pem)")
      ->required();
  command->add_option("--server-name", connection->server_name,
                      "name in the coordinator certificate (default: host)");
}

int Fail(const absl::Status& status) {
  std::cerr << "echofed: " << status.ToString() << "\n";
  return 1;
}

std::unique_ptr<echofed::AdminClient> Connect(const Connection& connection,
                                              absl::Status* error) {
  absl::StatusOr<echofed::TlsMaterial> kit = echofed::LoadKit(connection.kit);
  if (!kit.ok()) {
    *error = kit.status();
    return nullptr;
  }
  return std::make_unique<echofed::AdminClient>(connection.address, *kit,
                                                connection.server_name);
}

void PrintStatus(const echofed::RunStatus& status) {
  std::cout << absl::StrFormat(
      "run %s  '%s'  %s  round %d/%d%s\n", status.run_id(),
      status.plan().name(), echofed::RunStatus::State_Name(status.state()),
      status.round(), status.plan().rounds(),
      status.message().empty() ? "" : "  (" + status.message() + ")");
  std::cout << echofed::FormatSites(status);
  std::cout << echofed::FormatPrivacy(status);
  for (const echofed::RoundRecord& round : status.rounds()) {
    if (round.round() == 0) continue;
    std::cout << "\n" << echofed::FormatRound(status, round);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "echofed: federated training of ultrasound models across hospitals"};
  app.require_subcommand(1);

  // pki
  CLI::App* pki = app.add_subcommand("pki", "study CA and participant kits");
  pki->require_subcommand(1);
  std::string pki_dir = "pki";
  std::string study = "echofed study";
  int days = 365;
  std::string study_file;
  CLI::App* pki_study = pki->add_subcommand(
      "study",
      "provision a study from its description: the CA (if none yet) and a "
      "kit with config and README per participant; run again to add "
      "participants (nobody is revoked)");
  pki_study->add_option("--file", study_file, "study description textproto")
      ->required();
  pki_study->add_option("--dir", pki_dir, "PKI folder")->capture_default_str();
  CLI::App* pki_init = pki->add_subcommand("init", "create the study CA");
  pki_init->add_option("--dir", pki_dir, "PKI folder")->capture_default_str();
  pki_init->add_option("--study", study, "study name")->capture_default_str();
  pki_init->add_option("--days", days, "CA lifetime in days")
      ->capture_default_str();
  CLI::App* pki_issue = pki->add_subcommand("issue", "issue a participant kit");
  echofed::CertificateRequest request;
  std::string role = "site";
  pki_issue->add_option("--dir", pki_dir, "PKI folder")->capture_default_str();
  pki_issue
      ->add_option("--identity", request.identity,
                   "participant name, e.g. hospital-a")
      ->required();
  pki_issue
      ->add_option("--role", role,
                   "site, operator, statistician or coordinator")
      ->capture_default_str();
  pki_issue->add_option("--host", request.host_names,
                        "coordinator host names / IPs (coordinator role)");
  pki_issue->add_option("--days", request.valid_days, "lifetime in days")
      ->capture_default_str();
  std::string identity;
  std::string reason = "unspecified";
  int crl_days = echofed::kDefaultCrlDays;
  CLI::App* pki_revoke = pki->add_subcommand(
      "revoke",
      "revoke a participant's certificate: listed in crl.pem (re-signed), "
      "removed from the enrolment list");
  pki_revoke->add_option("--dir", pki_dir, "PKI folder")->capture_default_str();
  pki_revoke->add_option("--identity", identity, "participant name")
      ->required();
  pki_revoke
      ->add_option("--reason", reason,
                   "keyCompromise, affiliationChanged, cessationOfOperation, "
                   "privilegeWithdrawn, superseded or unspecified")
      ->capture_default_str();
  pki_revoke->add_option("--crl-days", crl_days, "CRL valid for (days)")
      ->capture_default_str();
  int reissue_days = 365;
  CLI::App* pki_reissue = pki->add_subcommand(
      "reissue",
      "new certificate and key for a participant (same identity and role); "
      "the old one is revoked");
  pki_reissue->add_option("--dir", pki_dir, "PKI folder")
      ->capture_default_str();
  pki_reissue->add_option("--identity", identity, "participant name")
      ->required();
  pki_reissue->add_option("--days", reissue_days, "lifetime in days")
      ->capture_default_str();
  pki_reissue->add_option("--crl-days", crl_days, "CRL valid for (days)")
      ->capture_default_str();
  CLI::App* pki_crl = pki->add_subcommand(
      "crl",
      "re-sign crl.pem with a fresh next update (do it before it lapses)");
  pki_crl->add_option("--dir", pki_dir, "PKI folder")->capture_default_str();
  pki_crl->add_option("--crl-days", crl_days, "CRL valid for (days)")
      ->capture_default_str();

  // run
  CLI::App* run = app.add_subcommand("run", "start, watch or stop a run");
  run->require_subcommand(1);
  Connection connection;
  std::string plan_path, run_id;
  bool watch = false;
  CLI::App* run_start = run->add_subcommand("start", "start a run from a plan");
  run_start->add_option("--plan", plan_path, "Plan textproto")->required();
  AddConnectionOptions(run_start, &connection);
  CLI::App* run_status = run->add_subcommand("status", "show a run");
  run_status->add_option("--run", run_id, "run id (default: latest)");
  run_status->add_flag("--watch", watch, "refresh every 2 s until it ends");
  AddConnectionOptions(run_status, &connection);
  CLI::App* run_stop = run->add_subcommand("stop", "stop a run");
  run_stop->add_option("--run", run_id, "run id")->required();
  AddConnectionOptions(run_stop, &connection);

  CLI::App* live_status = app.add_subcommand(
      "status",
      "the run as a table: round, phase, deadline, each site's state and "
      "progress, last metrics (operator or statistician kit)");
  int watch_seconds = 0;
  live_status->add_option("--run", run_id, "run id (default: latest)");
  live_status
      ->add_option("--watch", watch_seconds,
                   "redraw every SECONDS in place until the run ends (on a "
                   "terminal; otherwise print once)")
      ->check(CLI::Range(0, 86400));
  AddConnectionOptions(live_status, &connection);

  CLI::App* runs = app.add_subcommand("runs", "list runs");
  AddConnectionOptions(runs, &connection);

  CLI::App* model = app.add_subcommand("model", "global models");
  model->require_subcommand(1);
  CLI::App* download = model->add_subcommand("download", "download a model");
  int round = -1;
  std::string out_path;
  download->add_option("--run", run_id, "run id")->required();
  download->add_option("--round", round, "round (default: latest)");
  download->add_option("-o,--out", out_path, "output .efm file")->required();
  AddConnectionOptions(download, &connection);

  CLI::App* report = app.add_subcommand(
      "report",
      "validation report of a run: JSON, tidy CSV and a self-contained HTML "
      "page (statistician or operator kit)");
  int report_round = -1;
  std::string report_dir;
  report->add_option("--run", run_id, "run id (default: latest)");
  report->add_option("--round", report_round,
                     "round (default: the last evaluated one)");
  report->add_option("--out", report_dir, "output folder")->required();
  AddConnectionOptions(report, &connection);

  CLI::App* audit = app.add_subcommand("audit", "the coordinator's audit log");
  audit->require_subcommand(1);
  CLI::App* audit_verify = audit->add_subcommand(
      "verify",
      "check the hash chain of an audit log (state_dir/audit.log); with "
      "--expect-records and --expect-head, also that no record was cut off "
      "its end since a round was committed: take both from that round's "
      "\"audit log at commit\" in `echofed run status` or a report "
      "(report.json round.audit_log)");
  std::string audit_path;
  int64_t expect_records = -1;
  std::string expect_head;
  audit_verify->add_option("file", audit_path, "audit log")->required();
  CLI::Option* expect_records_option =
      audit_verify
          ->add_option("--expect-records", expect_records,
                       "records the log held at the recorded head")
          ->check(CLI::NonNegativeNumber);
  CLI::Option* expect_head_option =
      audit_verify
          ->add_option("--expect-head", expect_head,
                       "the recorded head: hash of the log's last record "
                       "then (64 hex digits)")
          ->needs(expect_records_option);
  expect_records_option->needs(expect_head_option);

  CLI::App* demo = app.add_subcommand(
      "demo", "run a whole federation locally on a SYNTHETIC cohort");
  echofed::DemoOptions demo_options;
  // Filled in here so that --help shows the folder the demo would use.
  demo_options.work_dir = echofed::DefaultDemoWorkDir();
  int timeout_seconds = 300;
  demo->add_option("--work-dir", demo_options.work_dir,
                   "work folder, emptied first if an earlier demo made it")
      ->capture_default_str();
  demo->add_option("--sites", demo_options.sites, "hospitals")
      ->capture_default_str();
  demo->add_option("--rounds", demo_options.rounds, "rounds")
      ->capture_default_str();
  demo->add_option("--patients", demo_options.patients_per_site,
                   "patients per hospital")
      ->capture_default_str();
  demo->add_option("--epochs", demo_options.local_epochs, "local epochs")
      ->capture_default_str();
  demo->add_option("--timeout", timeout_seconds, "give up after seconds")
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);
  echofed::SetLogComponent("echofed");

  if (pki_study->parsed()) {
    echofed::StudyDescription description;
    if (absl::Status status = echofed::LoadTextProto(study_file, &description);
        !status.ok()) {
      return Fail(status);
    }
    absl::StatusOr<echofed::StudyProvisioning> provisioned =
        echofed::ProvisionStudy(pki_dir, description);
    if (!provisioned.ok()) {
      return Fail(absl::Status(
          provisioned.status().code(),
          absl::StrCat(study_file, ": ", provisioned.status().message())));
    }
    if (provisioned->ca_created) {
      std::cout << "study CA created in " << pki_dir
                << "/ca (keep ca.key offline)\n";
    }
    for (const std::string& name : provisioned->issued) {
      std::cout << "new kit:  " << pki_dir << "/" << name
                << " (see its README.txt)\n";
    }
    for (const std::string& name : provisioned->kept) {
      std::cout << "kept:     " << pki_dir << "/" << name << "\n";
    }
    for (const std::string& line : provisioned->differences) {
      std::cout << "differs:  " << line << "\n";
    }
    if (!provisioned->issued.empty()) {
      std::cout << "send each participant its own kit folder only, over a "
                   "channel you trust; copy "
                << echofed::EnrolmentPath(pki_dir)
                << " to a running coordinator and restart it\n";
    }
    return 0;
  }
  if (pki_init->parsed()) {
    absl::Status status = echofed::InitStudyPki(pki_dir, study, days);
    if (!status.ok()) return Fail(status);
    std::cout << "study CA created in " << pki_dir
              << "/ca (keep ca.key offline)\n";
    return 0;
  }
  if (pki_issue->parsed()) {
    absl::StatusOr<echofed::Role> parsed = echofed::ParseRole(role);
    if (!parsed.ok()) return Fail(parsed.status());
    request.role = *parsed;
    absl::Status status = echofed::IssueKit(pki_dir, request);
    if (!status.ok()) return Fail(status);
    std::cout << "kit for " << request.identity << " (" << role << ") in "
              << pki_dir << "/" << request.identity << "\n";
    return 0;
  }
  if (pki_revoke->parsed()) {
    absl::StatusOr<echofed::RevocationReason> parsed =
        echofed::ParseRevocationReason(reason);
    if (!parsed.ok()) return Fail(parsed.status());
    absl::StatusOr<echofed::RevokeResult> revoked =
        echofed::RevokeKit(pki_dir, identity, *parsed, crl_days);
    if (!revoked.ok()) return Fail(revoked.status());
    std::cout << (revoked->already_revoked ? "already revoked: " : "revoked: ")
              << identity << " (serial " << revoked->serial << ")\n  "
              << echofed::CrlPath(pki_dir)
              << " re-signed (a running coordinator with crl_file picks it "
                 "up within seconds)\n  "
              << identity << " removed from " << echofed::EnrolmentPath(pki_dir)
              << "\n";
    return 0;
  }
  if (pki_reissue->parsed()) {
    absl::StatusOr<echofed::ReissueResult> reissued =
        echofed::ReissueKit(pki_dir, identity, reissue_days, crl_days);
    if (!reissued.ok()) return Fail(reissued.status());
    std::cout << "re-issued: " << identity << " ("
              << echofed::RoleName(reissued->role) << ") serial "
              << reissued->new_serial << " in " << pki_dir << "/" << identity
              << "\n  old serial " << reissued->old_serial
              << " revoked (superseded) in " << echofed::CrlPath(pki_dir)
              << "\n";
    return 0;
  }
  if (pki_crl->parsed()) {
    absl::Status status = echofed::SignRevocationList(pki_dir, crl_days);
    if (!status.ok()) return Fail(status);
    std::cout << echofed::CrlPath(pki_dir) << " re-signed, valid for "
              << crl_days << " days\n";
    return 0;
  }
  if (audit_verify->parsed()) {
    const bool against_head = expect_head_option->count() > 0;
    absl::StatusOr<echofed::AuditVerification> verified =
        against_head ? echofed::VerifyAuditLogHead(
                           audit_path, {expect_records, expect_head})
                     : echofed::VerifyAuditLog(audit_path);
    if (!verified.ok()) return Fail(verified.status());
    std::cout << audit_path << ": " << verified->lines
              << " lines, hash chain intact; head " << verified->head_hash
              << "\n";
    if (against_head) {
      const int64_t after = verified->lines - expect_records;
      std::cout << "holds the recorded head (record " << expect_records
                << ") and " << after << (after == 1 ? " record" : " records")
                << " after it, checked by the chain only\n";
    } else {
      std::cout << "(a cut at the end leaves no trace in the file itself: "
                   "check it against a round's head with --expect-records "
                   "and --expect-head)\n";
    }
    return 0;
  }
  if (demo->parsed()) {
    demo_options.timeout = absl::Seconds(timeout_seconds);
    absl::Status status = echofed::RunDemo(demo_options, std::cout);
    if (!status.ok()) return Fail(status);
    return 0;
  }

  absl::Status error;
  std::unique_ptr<echofed::AdminClient> admin = Connect(connection, &error);
  if (admin == nullptr) return Fail(error);
  if (run_start->parsed()) {
    echofed::Plan plan;
    if (absl::Status status = echofed::LoadTextProto(plan_path, &plan);
        !status.ok()) {
      return Fail(status);
    }
    absl::StatusOr<std::string> id = admin->StartRun(plan);
    if (!id.ok()) return Fail(id.status());
    std::cout << *id << "\n";
    return 0;
  }
  if (run_status->parsed()) {
    while (true) {
      absl::StatusOr<echofed::RunStatus> status = admin->GetRunStatus(run_id);
      if (!status.ok()) return Fail(status.status());
      if (watch) std::cout << "\033[2J\033[H";
      PrintStatus(*status);
      bool finished = status->state() == echofed::RunStatus::DONE ||
                      status->state() == echofed::RunStatus::STOPPED ||
                      status->state() == echofed::RunStatus::FAILED;
      if (!watch || finished) return 0;
      absl::SleepFor(absl::Seconds(2));
    }
  }
  if (live_status->parsed()) {
    // Redrawing only makes sense on a screen; a pipe or log gets one table.
    const bool redraw = watch_seconds > 0 && isatty(STDOUT_FILENO) == 1;
    while (true) {
      absl::StatusOr<echofed::RunStatus> status = admin->GetRunStatus(run_id);
      if (!status.ok()) return Fail(status.status());
      std::string table = echofed::FormatLiveStatus(*status, absl::Now());
      // Home and clear after fetching, so the old table stays up meanwhile.
      if (redraw) std::cout << "\033[H\033[2J";
      std::cout << table << std::flush;
      bool finished = status->state() == echofed::RunStatus::DONE ||
                      status->state() == echofed::RunStatus::STOPPED ||
                      status->state() == echofed::RunStatus::FAILED;
      if (!redraw || finished) return 0;
      absl::SleepFor(absl::Seconds(watch_seconds));
    }
  }
  if (run_stop->parsed()) {
    absl::Status status = admin->StopRun(run_id);
    if (!status.ok()) return Fail(status);
    std::cout << "stopped " << run_id << "\n";
    return 0;
  }
  if (runs->parsed()) {
    absl::StatusOr<echofed::ListRunsResponse> list = admin->ListRuns();
    if (!list.ok()) return Fail(list.status());
    for (const echofed::RunStatus& status : list->runs()) {
      std::cout << absl::StrFormat(
          "%-28s %-18s round %d/%d  %s\n", status.run_id(),
          echofed::RunStatus::State_Name(status.state()), status.round(),
          status.plan().rounds(), status.plan().name());
    }
    return 0;
  }
  if (report->parsed()) {
    absl::StatusOr<echofed::RunStatus> status = admin->GetRunStatus(run_id);
    if (!status.ok()) return Fail(status.status());
    echofed::ReportOptions options;
    options.round = report_round;
    options.generated_unix_ms = absl::ToUnixMillis(absl::Now());
    absl::StatusOr<echofed::ReportPaths> paths =
        echofed::WriteReport(*status, options, report_dir);
    if (!paths.ok()) return Fail(paths.status());
    std::cout << "run " << status->run_id() << " round " << paths->round
              << ":\n  " << paths->html << "\n  " << paths->csv << "\n  "
              << paths->json << "\n";
    return 0;
  }
  if (download->parsed()) {
    absl::StatusOr<std::string> digest =
        admin->DownloadModel(run_id, round, out_path);
    if (!digest.ok()) return Fail(digest.status());
    std::cout << out_path << " sha256 " << absl::BytesToHexString(*digest)
              << "\n";
    return 0;
  }
  return 2;
}
