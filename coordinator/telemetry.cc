#include "coordinator/telemetry.h"

#include <algorithm>

namespace echofed {

const std::vector<double>& Telemetry::RoundDurationBuckets() {
  static const std::vector<double>* const kBuckets = new std::vector<double>{
      10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800};
  return *kBuckets;
}

void Telemetry::AddBytesReceived(int64_t bytes) {
  bytes_received_.fetch_add(bytes, std::memory_order_relaxed);
}

void Telemetry::AddBytesSent(int64_t bytes) {
  bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
}

void Telemetry::CountUploadRefusal(absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  ++upload_refusals_[absl::StatusCodeToString(code)];
}

void Telemetry::CountConnectionRefusal(absl::string_view listener,
                                       absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  ++connection_refusals_[{std::string(listener), std::string(reason)}];
}

void Telemetry::ObserveRoundCommitted(absl::Duration duration) {
  const double seconds = absl::ToDoubleSeconds(duration);
  const std::vector<double>& bounds = RoundDurationBuckets();
  const size_t bucket =
      std::lower_bound(bounds.begin(), bounds.end(), seconds) - bounds.begin();
  absl::MutexLock lock(&mu_);
  if (round_buckets_.empty()) round_buckets_.assign(bounds.size() + 1, 0);
  ++round_buckets_[bucket];
  round_seconds_sum_ += seconds;
  ++rounds_committed_;
}

Telemetry::Snapshot Telemetry::Take() const {
  Snapshot snapshot;
  snapshot.started = started_;
  snapshot.bytes_received = bytes_received_.load(std::memory_order_relaxed);
  snapshot.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  absl::MutexLock lock(&mu_);
  snapshot.rounds_committed = rounds_committed_;
  snapshot.round_duration_sum_seconds = round_seconds_sum_;
  snapshot.round_duration_cumulative.assign(RoundDurationBuckets().size() + 1,
                                            0);
  int64_t running = 0;
  for (size_t i = 0; i < snapshot.round_duration_cumulative.size(); ++i) {
    if (i < round_buckets_.size()) running += round_buckets_[i];
    snapshot.round_duration_cumulative[i] = running;
  }
  snapshot.upload_refusals = upload_refusals_;
  snapshot.connection_refusals = connection_refusals_;
  return snapshot;
}

}  // namespace echofed
