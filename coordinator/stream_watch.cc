#include "coordinator/stream_watch.h"

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
  std::vector<std::pair<Token, std::function<void()>>> to_cancel;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [token, stream] : streams_) {
      if (stream.cancelled || now - stream.last_activity <= idle_timeout_) {
        continue;
      }
      stream.cancelled = true;
      cancelling_[token] = std::this_thread::get_id();
      to_cancel.emplace_back(token, stream.cancel);
      cancelled.push_back(stream.description);
    }
  }
  // Outside the lock: a cancel may finish its stream inline, which
  // unregisters it.
  for (auto& [token, cancel] : to_cancel) {
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
  std::vector<std::function<void()>> to_start;
  {
    absl::MutexLock lock(&mu_);
    if (moving_.erase(ticket) == 0) {
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if (it->first == ticket) {
          waiting_.erase(it);
          break;
        }
      }
    }
    while (static_cast<int>(moving_.size()) < limit_ && !waiting_.empty()) {
      moving_.insert(waiting_.front().first);
      to_start.push_back(std::move(waiting_.front().second));
      waiting_.pop_front();
    }
  }
  for (std::function<void()>& start : to_start) start();
}

int StreamGate::waiting() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(waiting_.size());
}

}  // namespace echofed
