#ifndef ECHOFED_COMMON_CLOCK_H_
#define ECHOFED_COMMON_CLOCK_H_

#include <chrono>
#include <cstdint>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace echofed {

// Time behind an interface so deadline logic is testable without sleeping.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
  // Microseconds on a clock that never steps back (phase timings); only
  // differences mean anything.
  virtual int64_t MonotonicMicros() = 0;
  static Clock* Real();
};

class RealClock : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
  int64_t MonotonicMicros() override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
};

inline Clock* Clock::Real() {
  static RealClock* clock = new RealClock;
  return clock;
}

// A clock that moves only when told. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1800000000))
      : now_(start) {}
  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  int64_t MonotonicMicros() override { return absl::ToUnixMicros(Now()); }
  void Advance(absl::Duration by) {
    absl::MutexLock lock(&mu_);
    now_ += by;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_CLOCK_H_
