// echofed-agent doctor: the verdicts, their text, and the run of every
// check in order. The checks themselves: doctor_connection.cc (kit,
// coordinator, clock) and doctor_machine.cc (device, disk, data, round
// time).

#include "site-agent/doctor.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "site-agent/doctor_internal.h"
#include "torch/torch.h"

namespace echofed {
namespace doctor_internal {

std::string ReadableBytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) {
    return absl::StrFormat("%.1f GiB", bytes / double(int64_t{1} << 30));
  }
  return absl::StrFormat("%.0f MiB", bytes / double(int64_t{1} << 20));
}

std::string ReadableSeconds(double seconds) {
  if (seconds < 10) return absl::StrFormat("%.1f s", seconds);
  if (seconds < 120) return absl::StrFormat("%.0f s", seconds);
  if (seconds < 7200) return absl::StrFormat("%.0f min", seconds / 60);
  return absl::StrFormat("%.1f h", seconds / 3600);
}

}  // namespace doctor_internal

namespace {
using doctor_internal::Fail;
using doctor_internal::Pass;
using doctor_internal::Warn;
}  // namespace

absl::string_view OutcomeName(CheckOutcome outcome) {
  switch (outcome) {
    case CheckOutcome::kPass:
      return "PASS";
    case CheckOutcome::kWarn:
      return "WARN";
    case CheckOutcome::kFail:
      return "FAIL";
  }
  return "?";
}

std::string FormatCheck(const DoctorCheck& check) {
  std::string line = absl::StrFormat(
      "%s  %-18s %s\n", OutcomeName(check.outcome), check.name, check.detail);
  if (check.outcome != CheckOutcome::kPass && !check.fix.empty()) {
    absl::StrAppend(&line, "      fix: ", check.fix, "\n");
  }
  return line;
}

bool DoctorReport::failed() const {
  return std::any_of(checks.begin(), checks.end(), [](const DoctorCheck& c) {
    return c.outcome == CheckOutcome::kFail;
  });
}

DoctorReport RunDoctor(const DoctorOptions& options) {
  DoctorReport report;
  auto add = [&](DoctorCheck check) {
    if (options.on_check) options.on_check(check);
    report.checks.push_back(std::move(check));
  };
  auto add_all = [&](std::vector<DoctorCheck> checks) {
    for (DoctorCheck& check : checks) add(std::move(check));
  };
  CertificateFacts facts;
  add_all(CheckCertificates(options.tls, options.clock->Now(),
                            options.expiry_warning_days, &facts));
  // A certificate or key that cannot work would only fail the handshake
  // again, less clearly; name resolution and the port still say something
  // about the network while the files are being fixed.
  bool kit_usable =
      facts.tls.has_value() &&
      std::none_of(
          report.checks.begin(), report.checks.end(),
          [](const DoctorCheck& check) {
            return check.outcome == CheckOutcome::kFail &&
                   (check.name == "certificate" || check.name == "private key");
          });
  add_all(CheckCoordinator(options, kit_usable ? &*facts.tls : nullptr));
  add(CheckDevice(options.device, torch::cuda::is_available(),
                  ProbeNvidiaGpus(), torch::get_num_threads(),
                  ProbeTorchBuild()));
  for (const std::string& path : options.disk_paths) {
    std::error_code error;
    std::filesystem::space_info space = std::filesystem::space(path, error);
    if (error) {
      add(Fail(absl::StrCat("disk ", path), error.message(),
               absl::StrCat("create ", path,
                            " writable by the agent's user (the systemd "
                            "unit's StateDirectory does this)")));
    } else {
      add(CheckDiskSpace(path, static_cast<int64_t>(space.available), options));
    }
  }
  std::string site = facts.subject ? facts.subject->identity : "";
  SiteDataCounts counts;
  const Plan* plan = options.plan ? &*options.plan : nullptr;
  DoctorCheck data = CheckSiteData(options.data_dir, plan, site, &counts);
  bool data_ok = data.outcome != CheckOutcome::kFail;
  add(std::move(data));
  if (plan == nullptr) {
    add(Warn("round time", "not estimated: no plan given",
             "pass --plan <the study's plan.textproto> to time its model"));
  } else if (data_ok) {
    add(EstimateRoundTime(*plan, counts, options.device, options));
  }
  return report;
}

}  // namespace echofed
