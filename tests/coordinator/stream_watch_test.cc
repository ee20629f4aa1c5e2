#include "coordinator/stream_watch.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

TEST(StreamWatchTest, CancelsOnlyStreamsIdleBeyondTheTimeoutAndOnce) {
  StreamWatch watch(absl::Seconds(10));
  absl::Time start = absl::FromUnixSeconds(1000);
  int moving_cancels = 0, stalled_cancels = 0;
  StreamWatch::Token moving =
      watch.Register("moving", start, [&] { ++moving_cancels; });
  watch.Register("stalled", start, [&] { ++stalled_cancels; });
  watch.Touch(moving, start + absl::Seconds(8));
  EXPECT_TRUE(watch.CancelStalled(start + absl::Seconds(10)).empty());
  EXPECT_EQ(watch.CancelStalled(start + absl::Seconds(11)),
            std::vector<std::string>{"stalled"});
  EXPECT_TRUE(watch.CancelStalled(start + absl::Seconds(12)).empty());
  EXPECT_EQ(stalled_cancels, 1);
  EXPECT_EQ(moving_cancels, 0);
  watch.Unregister(moving);
  EXPECT_TRUE(watch.CancelStalled(start + absl::Hours(1)).empty());
  EXPECT_EQ(moving_cancels, 0);
}

TEST(StreamWatchTest, AStreamMayFinishInsideItsOwnCancel) {
  // Should a stream finish inside its own cancel (on the same thread), it
  // unregisters from within the cancel; that must not deadlock.
  StreamWatch watch(absl::Seconds(1));
  StreamWatch::Token token = 0;
  token = watch.Register("inline", absl::UnixEpoch(),
                         [&] { watch.Unregister(token); });
  EXPECT_EQ(watch.CancelStalled(absl::UnixEpoch() + absl::Seconds(2)).size(),
            1u);
  EXPECT_EQ(watch.size(), 0);
}

TEST(StreamWatchTest, UnregisterWaitsForACancelRunningElsewhere) {
  StreamWatch watch(absl::Seconds(1));
  absl::Notification cancel_started;
  std::atomic<bool> cancel_finished{false};
  StreamWatch::Token token = watch.Register("slow", absl::UnixEpoch(), [&] {
    cancel_started.Notify();
    absl::SleepFor(absl::Milliseconds(200));
    cancel_finished = true;
  });
  std::thread ticker(
      [&] { watch.CancelStalled(absl::UnixEpoch() + absl::Seconds(5)); });
  cancel_started.WaitForNotification();
  // The stream finishing now must not be freed under the running cancel.
  watch.Unregister(token);
  EXPECT_TRUE(cancel_finished);
  ticker.join();
}

TEST(StreamGateTest, LeaveWaitsForItsOwnStartRunningElsewhere) {
  // A stream handed a slot by another stream's Leave() may be cancelled
  // while its start runs on that thread: its own Leave must wait.
  StreamGate gate(1);
  StreamGate::Ticket first, second;
  gate.Enter(&first, [] {});
  absl::Notification start_running;
  std::atomic<bool> start_finished{false};
  gate.Enter(&second, [&] {
    start_running.Notify();
    absl::SleepFor(absl::Milliseconds(200));
    start_finished = true;
  });
  std::thread releaser([&] { gate.Leave(first); });
  start_running.WaitForNotification();
  gate.Leave(second);
  EXPECT_TRUE(start_finished);
  releaser.join();
  EXPECT_EQ(gate.waiting(), 0);
}

TEST(StreamGateTest, AtMostLimitMoveAndTheRestStartInArrivalOrder) {
  StreamGate gate(2);
  std::vector<int> started;
  StreamGate::Ticket tickets[5];
  for (int i = 0; i < 5; ++i) {
    gate.Enter(&tickets[i], [&started, i] { started.push_back(i); });
  }
  EXPECT_EQ(started, (std::vector<int>{0, 1}));
  EXPECT_EQ(gate.waiting(), 3);
  gate.Leave(tickets[3]);  // gave up while waiting: never starts
  EXPECT_EQ(gate.waiting(), 2);
  gate.Leave(tickets[0]);
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2}));
  gate.Leave(tickets[1]);
  gate.Leave(tickets[2]);
  EXPECT_EQ(started, (std::vector<int>{0, 1, 2, 4}));
  EXPECT_EQ(gate.waiting(), 0);
}

}  // namespace
}  // namespace echofed
