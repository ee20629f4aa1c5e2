#ifndef ECHOFED_COORDINATOR_TELEMETRY_H_
#define ECHOFED_COORDINATOR_TELEMETRY_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace echofed {

// Counters of one coordinator process for its metrics endpoint: traffic,
// refusals and round durations. Only aggregate numbers, never anything
// about patients (the coordinator holds none) nor free text from a peer:
// labels are fixed words, so a hostile peer cannot grow the label set.
//
// Thread-safe: byte counters are atomics (bumped for every chunk on the
// gRPC threads, so they take no lock); the labelled counters and the
// histogram sit behind `mu_` (rare events). Values only ever grow while
// the process lives, as Prometheus counters must.
class Telemetry {
 public:
  // Upper bounds of the round-duration histogram buckets, in seconds. A
  // round is local training at every site plus transfers: minutes to hours.
  static const std::vector<double>& RoundDurationBuckets();

  explicit Telemetry(absl::Time started) : started_(started) {}
  Telemetry(const Telemetry&) = delete;
  Telemetry& operator=(const Telemetry&) = delete;

  // Model bytes on the wire (chunk payloads), both services together.
  void AddBytesReceived(int64_t bytes);
  void AddBytesSent(int64_t bytes);
  // An update refused by the coordinator (bad content, wrong round, ...);
  // the reason is the status code's name.
  void CountUploadRefusal(absl::StatusCode code);
  // A caller refused before any work: `listener` is "grpc" or "status",
  // `reason` one of the kRefused* words below.
  void CountConnectionRefusal(absl::string_view listener,
                              absl::string_view reason);
  // A round committed after `duration` from its opening.
  void ObserveRoundCommitted(absl::Duration duration);

  struct Snapshot {
    absl::Time started;
    int64_t bytes_received = 0;
    int64_t bytes_sent = 0;
    int64_t rounds_committed = 0;
    // Per bucket of RoundDurationBuckets(): rounds that took at most its
    // bound (cumulative, as the exposition format wants), then +Inf.
    std::vector<int64_t> round_duration_cumulative;
    double round_duration_sum_seconds = 0;
    std::map<std::string, int64_t> upload_refusals;  // by status code name
    // By (listener, reason).
    std::map<std::pair<std::string, std::string>, int64_t> connection_refusals;
  };
  Snapshot Take() const;

 private:
  const absl::Time started_;
  std::atomic<int64_t> bytes_received_{0};
  std::atomic<int64_t> bytes_sent_{0};

  mutable absl::Mutex mu_;
  int64_t rounds_committed_ ABSL_GUARDED_BY(mu_) = 0;
  // Not cumulative: rounds per bucket, the last one +Inf.
  std::vector<int64_t> round_buckets_ ABSL_GUARDED_BY(mu_);
  double round_seconds_sum_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, int64_t> upload_refusals_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, int64_t> connection_refusals_
      ABSL_GUARDED_BY(mu_);
};

// Reasons for a connection refusal (metric label values).
inline constexpr absl::string_view kRefusedNoCertificate = "no_certificate";
// Malformed, expired, from another CA, or revoked.
inline constexpr absl::string_view kRefusedBadCertificate = "bad_certificate";
inline constexpr absl::string_view kRefusedNotEnrolled = "not_enrolled";
inline constexpr absl::string_view kRefusedRole = "role_not_allowed";

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_TELEMETRY_H_
