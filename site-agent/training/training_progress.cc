#include "site-agent/training/training_progress.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace echofed {

std::string FormatTrainProgress(int round, const TrainProgress& progress,
                                double images_per_second) {
  return absl::StrFormat(
      "round %d  epoch %d/%d  batch %d/%d  loss %.4f  %.1f images/s", round,
      progress.epoch, progress.epochs, progress.batch, progress.batches,
      progress.loss, images_per_second);
}

TrainProgressReporter::TrainProgressReporter(const Options& options, int round,
                                             absl::Time start)
    : options_(options),
      round_(round),
      epoch_start_(start),
      last_update_(start),
      last_output_(start) {}

std::string TrainProgressReporter::Update(const TrainProgress& progress,
                                          absl::Time now) {
  if (progress.epoch != epoch_) {
    // Epochs follow each other without a pause, so the previous report's
    // time is when this epoch began.
    if (epoch_ != 0) epoch_start_ = last_update_;
    epoch_ = progress.epoch;
  }
  last_update_ = now;
  const bool epoch_done = progress.batch >= progress.batches;
  const absl::Duration interval = options_.mode == Mode::kTerminal
                                      ? options_.redraw_interval
                                      : options_.log_interval;
  if (!epoch_done && now - last_output_ < interval) return "";
  last_output_ = now;
  const double seconds = absl::ToDoubleSeconds(now - epoch_start_);
  const double rate = seconds > 0 ? progress.images / seconds : 0;
  std::string line = FormatTrainProgress(round_, progress, rate);
  if (options_.mode == Mode::kLog) return line;
  // "\033[K" erases what a longer previous line left to the right.
  return absl::StrCat("\r", line, "\033[K", epoch_done ? "\n" : "");
}

}  // namespace echofed
