// What the agent prints while training: one redrawn line on a terminal, a
// throttled log line otherwise, each epoch's end always shown.

#include "site-agent/training/training_progress.h"

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1800000000);

TrainProgress Batch(int epoch, int batch, int64_t images, double loss = 0.5) {
  return TrainProgress{epoch, 2, batch, 10, loss, images};
}

TEST(TrainProgressTest, FormatsOneLine) {
  EXPECT_EQ(FormatTrainProgress(3, Batch(1, 4, 64, 0.81234), 18.44),
            "round 3  epoch 1/2  batch 4/10  loss 0.8123  18.4 images/s");
}

TEST(TrainProgressTest, LogLinesComeEveryIntervalAndAtEpochEnds) {
  TrainProgressReporter::Options options;
  options.mode = TrainProgressReporter::Mode::kLog;
  options.log_interval = absl::Seconds(30);
  TrainProgressReporter reporter(options, 7, kStart);
  // 16 images every 10 s: batches 1 and 2 come before the interval.
  EXPECT_EQ(reporter.Update(Batch(1, 1, 16), kStart + absl::Seconds(10)), "");
  EXPECT_EQ(reporter.Update(Batch(1, 2, 32), kStart + absl::Seconds(20)), "");
  EXPECT_EQ(reporter.Update(Batch(1, 3, 48), kStart + absl::Seconds(30)),
            "round 7  epoch 1/2  batch 3/10  loss 0.5000  1.6 images/s");
  // The next one is due 30 s after the last line, not after the start.
  EXPECT_EQ(reporter.Update(Batch(1, 5, 80), kStart + absl::Seconds(50)), "");
  EXPECT_NE(reporter.Update(Batch(1, 6, 96), kStart + absl::Seconds(60)), "");
  // The epoch's last batch is always shown, whatever the interval.
  std::string last =
      reporter.Update(Batch(1, 10, 160), kStart + absl::Seconds(61));
  EXPECT_TRUE(absl::StartsWith(last, "round 7  epoch 1/2  batch 10/10"))
      << last;
  EXPECT_EQ(last.find('\r'), std::string::npos);
  EXPECT_EQ(last.find('\n'), std::string::npos);
  // The second epoch's rate counts from the first epoch's end: 32 images in
  // 8 s, not in 69 s.
  EXPECT_EQ(reporter.Update(Batch(2, 2, 32), kStart + absl::Seconds(69)), "");
  EXPECT_EQ(reporter.Update(Batch(2, 10, 32), kStart + absl::Seconds(69)),
            "round 7  epoch 2/2  batch 10/10  loss 0.5000  4.0 images/s");
}

TEST(TrainProgressTest, TerminalLineIsRedrawnInPlaceAndThrottled) {
  TrainProgressReporter::Options options;
  options.mode = TrainProgressReporter::Mode::kTerminal;
  options.redraw_interval = absl::Milliseconds(200);
  TrainProgressReporter reporter(options, 1, kStart);
  std::string first =
      reporter.Update(Batch(1, 1, 16), kStart + absl::Milliseconds(250));
  EXPECT_EQ(first,
            "\rround 1  epoch 1/2  batch 1/10  loss 0.5000  64.0 images/s"
            "\033[K");
  // Too soon after the last redraw: nothing, so a fast GPU does not flood
  // the terminal.
  EXPECT_EQ(reporter.Update(Batch(1, 2, 32), kStart + absl::Milliseconds(300)),
            "");
  std::string later =
      reporter.Update(Batch(1, 3, 48), kStart + absl::Milliseconds(500));
  EXPECT_TRUE(absl::StartsWith(later, "\rround 1  epoch 1/2  batch 3/10"))
      << later;
  EXPECT_FALSE(absl::EndsWith(later, "\n"));
  // The epoch's end is drawn even right after a redraw, and ends the line
  // so that it stays on screen.
  std::string end =
      reporter.Update(Batch(1, 10, 160), kStart + absl::Milliseconds(510));
  EXPECT_TRUE(absl::StartsWith(end, "\rround 1  epoch 1/2  batch 10/10"))
      << end;
  EXPECT_TRUE(absl::EndsWith(end, "\033[K\n")) << end;
}

}  // namespace
}  // namespace echofed
