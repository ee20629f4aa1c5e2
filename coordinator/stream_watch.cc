#include "coordinator/stream_watch.h"

#include <thread>
#include <utility>
#include <vector>

namespace echofed {

StreamWatch::Token StreamWatch::Register(std::string description,
                                         absl::Time now,
                                         std::function<void()> cancel) {
  absl::MutexLock lock(&mu_);
  Token token = next_++;
  streams_[token] = {std::move(description), now, std::move(cancel), false};
  return token;
}

void StreamWatch::Touch(Token token, absl::Time now) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(token);
  if (it != streams_.end()) it->second.last_activity = now;
}

void StreamWatch::Unregister(Token token) {
  absl::MutexLock lock(&mu_);
  // A cancel running on another thread still uses the stream: wait for it.
  // On this thread it is the caller's own stack (the stream finishing from
  // inside its cancel), so there is nothing to wait for.
  auto not_cancelled_elsewhere = [this, token]() {
    mu_.AssertHeld();
    auto it = cancelling_.find(token);
    return it == cancelling_.end() || it->second == std::this_thread::get_id();
  };
  mu_.Await(absl::Condition(&not_cancelled_elsewhere));
  streams_.erase(token);
}

std::vector<std::string> StreamWatch::CancelStalled(absl::Time now) {
  std::vector<std::string> cancelled;
  std::vector<Token> stalled;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [token, stream] : streams_) {
      if (stream.cancelled || now - stream.last_activity <= idle_timeout_) {
        continue;
      }
      stream.cancelled = true;
      stalled.push_back(token);
      cancelled.push_back(stream.description);
    }
  }
  // Outside the lock: a cancel may finish its stream, which unregisters it.
  // Each stream is marked as being cancelled only while its own cancel runs,
  // and only if it is still registered then.
  for (Token token : stalled) {
    std::function<void()> cancel;
    {
      absl::MutexLock lock(&mu_);
      auto it = streams_.find(token);
      if (it == streams_.end()) continue;
      cancelling_[token] = std::this_thread::get_id();
      cancel = it->second.cancel;
    }
    cancel();
    absl::MutexLock lock(&mu_);
    cancelling_.erase(token);
  }
  return cancelled;
}

int StreamWatch::size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(streams_.size());
}

void StreamGate::Enter(Ticket* ticket, std::function<void()> start) {
  {
    absl::MutexLock lock(&mu_);
    *ticket = next_++;
    if (static_cast<int>(moving_.size()) >= limit_) {
      waiting_.emplace_back(*ticket, std::move(start));
      return;
    }
    moving_.insert(*ticket);
  }
  start();
}

void StreamGate::Leave(Ticket ticket) {
  std::vector<std::pair<Ticket, std::function<void()>>> to_start;
  {
    absl::MutexLock lock(&mu_);
    auto not_started_elsewhere = [this, ticket]() {
      mu_.AssertHeld();
      auto it = starting_.find(ticket);
      return it == starting_.end() || it->second == std::this_thread::get_id();
    };
    mu_.Await(absl::Condition(&not_started_elsewhere));
    if (moving_.erase(ticket) == 0) {
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if (it->first == ticket) {
          waiting_.erase(it);
          break;
        }
      }
    }
    while (static_cast<int>(moving_.size()) < limit_ && !waiting_.empty()) {
      const Ticket next = waiting_.front().first;
      moving_.insert(next);
      starting_[next] = std::this_thread::get_id();
      to_start.emplace_back(next, std::move(waiting_.front().second));
      waiting_.pop_front();
    }
  }
  for (auto& [next, start] : to_start) {
    start();
    absl::MutexLock lock(&mu_);
    starting_.erase(next);
  }
}

int StreamGate::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiting_.size());
}

}  // namespace echofed
