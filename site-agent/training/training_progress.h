#ifndef ECHOFED_SITE_AGENT_TRAINING_TRAINING_PROGRESS_H_
#define ECHOFED_SITE_AGENT_TRAINING_TRAINING_PROGRESS_H_

// Training progress for whoever watches the agent: a person at a terminal
// gets one line redrawn in place, a service's journal gets a log line every
// so often. Kept apart from the trainer (and from LibTorch) so that the
// throttling and the wording are tested without a terminal.

#include <cstdint>
#include <string>

#include "absl/time/time.h"

namespace echofed {

struct TrainProgress {
  int epoch = 0;  // 1-based
  int epochs = 0;
  int batch = 0;  // 1-based
  int batches = 0;
  double loss = 0;     // running mean over the epoch so far
  int64_t images = 0;  // training images seen in this epoch so far
};

// "round 3  epoch 1/2  batch 12/40  loss 0.8123  18.4 images/s".
std::string FormatTrainProgress(int round, const TrainProgress& progress,
                                double images_per_second);

// Decides what to print for each progress report of one round's training,
// and when. Not thread safe: one reporter per TrainLocal call, fed from its
// thread.
class TrainProgressReporter {
 public:
  enum class Mode {
    // One line, redrawn in place ("\r...", erased to its end) at most every
    // `redraw_interval`; each epoch's last batch ends it with "\n" so the
    // epoch's result stays on screen.
    kTerminal,
    // Whole lines for a log: one every `log_interval`, and one at each
    // epoch's end. Redrawing would fill a journal with carriage returns.
    kLog,
  };
  struct Options {
    Mode mode = Mode::kLog;
    absl::Duration log_interval = absl::Seconds(30);
    absl::Duration redraw_interval = absl::Milliseconds(200);
  };

  // `start` is when training began (the first epoch's start, for the
  // images per second).
  TrainProgressReporter(const Options& options, int round, absl::Time start);

  // The text to print now for `progress`, reported at `now`; empty when
  // nothing is due. Terminal text carries its own "\r" and "\n"; log text
  // is one line without a newline.
  std::string Update(const TrainProgress& progress, absl::Time now);

 private:
  Options options_;
  int round_;
  int epoch_ = 0;
  absl::Time epoch_start_;
  absl::Time last_update_;
  absl::Time last_output_;
};

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_TRAINING_TRAINING_PROGRESS_H_
