#ifndef ECHOFED_SITE_AGENT_DOCTOR_H_
#define ECHOFED_SITE_AGENT_DOCTOR_H_

// `echofed-agent doctor`: the pre-flight checks site IT runs before (and
// whenever) the agent does not behave. Each check ends PASS, WARN or FAIL
// and, unless it passed, says in one line what to do about it. Nothing here
// sends patient data anywhere: the data check prints counts, the coordinator
// only sees a Ping.
//
// The checks are free functions over plain inputs so that most of them run
// in tests without sockets or GPUs; RunDoctor() strings them together.
// Thread-compatible; RunDoctor() blocks for up to a few tens of seconds (the
// network timeouts and the timing run).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/pki.h"
#include "proto/config.pb.h"
#include "proto/plan.pb.h"

namespace echofed {

enum class CheckOutcome { kPass, kWarn, kFail };

absl::string_view OutcomeName(CheckOutcome outcome);

struct DoctorCheck {
  std::string name;
  CheckOutcome outcome = CheckOutcome::kPass;
  // What was found, one line.
  std::string detail;
  // What to do about it, one line; empty when the check passed.
  std::string fix;
};

// "PASS  name  detail" and, unless it passed, an indented "fix: ..." line.
std::string FormatCheck(const DoctorCheck& check);

struct DoctorOptions {
  // The agent's config (for messages) and what it names; paths resolved.
  std::string config_path;
  std::string coordinator_address;
  // Expected name in the coordinator's certificate; empty: the host of
  // coordinator_address.
  std::string coordinator_name;
  TlsFiles tls;
  std::string data_dir;
  // As in AgentConfig: "auto", "cpu", "cuda", "cuda:1".
  std::string device = "auto";
  // Folders the agent writes to (its state directory, a model folder).
  std::vector<std::string> disk_paths;
  // The study plan, when site IT has it: classes for the data check and the
  // model for the round-time estimate.
  std::optional<Plan> plan;

  Clock* clock = Clock::Real();
  // Certificates this close to their end are a warning.
  int expiry_warning_days = 30;
  // DNS, TCP connect and the Ping call each get this long.
  absl::Duration network_timeout = absl::Seconds(5);
  // Clock skew above this is a warning: the audit log and round deadlines
  // compare times across machines.
  absl::Duration skew_warning = absl::Seconds(3);
  // Clock skew above this is a failure: certificates are issued valid from
  // 300 s in the past (common/pki.cc), so a larger skew can make a freshly
  // issued certificate look not yet valid, or an expired one valid.
  absl::Duration skew_failure = absl::Seconds(300);
  // Free space below these is a warning / a failure. Enough for a few
  // copies of a ResNet-18 model file and its temporaries.
  int64_t disk_warning_bytes = int64_t{2} << 30;
  int64_t disk_failure_bytes = int64_t{256} << 20;
  // Wall time after which the timing run starts no further training step
  // (the warm-up step and the step under way come on top: ResNet-18 at
  // 224 px takes about 4.5 s a step on one CPU core, so the run stays under
  // about 20 s there).
  absl::Duration timing_budget = absl::Seconds(6);
  int max_timed_batches = 3;

  // Called with each check as soon as it is done (progress on a terminal).
  std::function<void(const DoctorCheck&)> on_check;
};

// What the certificate checks learnt, for the checks that follow.
struct CertificateFacts {
  // Set when cert, key and CA all loaded (whatever their verdicts).
  std::optional<TlsMaterial> tls;
  // The subject of the certificate, when it parsed.
  std::optional<PeerIdentity> subject;
};

// Certificate readable, valid now, days to expiry, key matches, issued by
// the configured CA, role is a site. Files only, no network.
std::vector<DoctorCheck> CheckCertificates(const TlsFiles& files,
                                           absl::Time now,
                                           int expiry_warning_days,
                                           CertificateFacts* facts);

// Skew = coordinator clock - local clock; `uncertainty` is half the round
// trip it was measured over.
DoctorCheck CheckClockSkew(absl::Duration skew, absl::Duration uncertainty,
                           const DoctorOptions& options);

// DNS resolution, TCP reachability, the mutual-TLS handshake through a real
// Ping call, and the clock skew it measures. Later steps are left out when
// an earlier one fails (their verdict would only repeat it); a null `tls`
// (the kit's files unreadable) stops after the TCP check. `skew`, when
// given, receives the measured skew (coordinator minus local clock).
std::vector<DoctorCheck> CheckCoordinator(const DoctorOptions& options,
                                          const TlsMaterial* tls,
                                          absl::Duration* skew = nullptr);

// What the GPU driver reports, independent of LibTorch (it is loaded at run
// time, so a CPU-only build reports the GPUs it cannot use).
struct GpuInfo {
  std::string name;
  int64_t total_memory_bytes = 0;
};
// An empty list when there is no NVIDIA driver or no GPU.
std::vector<GpuInfo> ProbeNvidiaGpus();

// The LibTorch the agent was built against.
struct TorchBuildInfo {
  // "2.6.0"; empty when unknown (then left out of the device line).
  std::string version;
  // The CUDA runtime it was compiled with, "12.4"; empty for a CPU-only
  // build.
  std::string cuda_version;
};
TorchBuildInfo ProbeTorchBuild();

// The device the agent would train on for `requested` (or why not the GPU),
// with the LibTorch and CUDA versions of `torch`.
DoctorCheck CheckDevice(const std::string& requested, bool torch_cuda_available,
                        const std::vector<GpuInfo>& gpus, int cpu_threads,
                        const TorchBuildInfo& torch = {});

DoctorCheck CheckDiskSpace(const std::string& path, int64_t available_bytes,
                           const DoctorOptions& options);

// Counts from the site data checker (manifest, clinical table, cohort
// rules): what the agent would train and validate on.
struct SiteDataCounts {
  int64_t screened_patients = 0;
  int64_t included_patients = 0;
  int64_t included_images = 0;
  int64_t train_images = 0;
  int64_t validation_images = 0;
};
DoctorCheck CheckSiteData(const std::string& data_dir, const Plan* plan,
                          const std::string& site, SiteDataCounts* counts);

// Times a few training steps of the plan's model on synthetic input and
// scales them to one round (local epochs over the training images, plus
// evaluation of the validation images). An estimate: transfers and image
// decoding are not in it.
DoctorCheck EstimateRoundTime(const Plan& plan, const SiteDataCounts& data,
                              const std::string& device,
                              const DoctorOptions& options);

struct DoctorReport {
  std::vector<DoctorCheck> checks;
  bool failed() const;
};

// Every check in order; the printed form is FormatCheck of each.
DoctorReport RunDoctor(const DoctorOptions& options);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DOCTOR_H_
