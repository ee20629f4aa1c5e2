#ifndef ECHOFED_COORDINATOR_STREAM_WATCH_H_
#define ECHOFED_COORDINATOR_STREAM_WATCH_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace echofed {

// Model streams that stop moving. A site that opens an upload and then
// sends nothing (or a download it never reads) would hold a stream, a spool
// file and buffers until its connection dies, which may be hours; the
// server's ticker asks this watch to cancel every stream idle for longer than
// the timeout. Thread-safe; no gRPC here (streams register a cancel
// callback), so it is tested without sockets.
class StreamWatch {
 public:
  using Token = uint64_t;

  explicit StreamWatch(absl::Duration idle_timeout)
      : idle_timeout_(idle_timeout) {}

  // `cancel` is called at most once, from CancelStalled, while the stream
  // is registered. It may finish the stream on the spot (gRPC can run the
  // reactor's callbacks inline), so Unregister from within it is allowed.
  Token Register(std::string description, absl::Time now,
                 std::function<void()> cancel);
  void Touch(Token token, absl::Time now);
  // After this returns, `cancel` is not running and never will be for the
  // stream (a cancel in progress on another thread is waited for).
  void Unregister(Token token);
  // Cancels streams idle for longer than the timeout; returns their
  // descriptions.
  std::vector<std::string> CancelStalled(absl::Time now);
  int size() const;

 private:
  struct Stream {
    std::string description;
    absl::Time last_activity;
    std::function<void()> cancel;
    bool cancelled = false;
  };
  // The cancels CancelStalled is running right now (outside the lock), and
  // on which thread.
  std::map<Token, std::thread::id> cancelling_ ABSL_GUARDED_BY(mu_);
  const absl::Duration idle_timeout_;
  mutable absl::Mutex mu_;
  Token next_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<Token, Stream> streams_ ABSL_GUARDED_BY(mu_);
};

// At most `limit` model downloads move at once; the others wait their turn
// in arrival order. Each moving download holds a slice or two in flight, so
// with the gate the coordinator's memory follows the limit, not the number of
// sites, and the total time is the same (the transfers share the CPUs
// anyway). Thread-safe.
class StreamGate {
 public:
  using Ticket = uint64_t;
  explicit StreamGate(int limit) : limit_(limit) {}

  // Sets *ticket, then runs `start` now (on this thread) if a slot is free,
  // or later, from the Leave() of another stream.
  void Enter(Ticket* ticket, std::function<void()> start);
  // Frees the ticket's slot (or its place in the queue) and starts the
  // streams that can move now (their `start` runs on this thread). If the
  // ticket's own `start` is running on another thread, waits for it: the
  // stream must not be freed under it.
  void Leave(Ticket ticket);
  int waiting() const;

 private:
  const int limit_;
  mutable absl::Mutex mu_;
  Ticket next_ ABSL_GUARDED_BY(mu_) = 1;
  std::set<Ticket> moving_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<Ticket, std::function<void()>>> waiting_
      ABSL_GUARDED_BY(mu_);
  // Starts handed out by Leave() and still running, with their thread.
  std::map<Ticket, std::thread::id> starting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_STREAM_WATCH_H_
