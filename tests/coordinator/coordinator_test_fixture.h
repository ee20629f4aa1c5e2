#ifndef ECHOFED_TESTS_COORDINATOR_COORDINATOR_TEST_FIXTURE_H_
#define ECHOFED_TESTS_COORDINATOR_COORDINATOR_TEST_FIXTURE_H_

// A coordinator in a temporary state directory on a fake clock, and the
// calls an agent would make to it, for the tests of coordinator.h
// (coordinator_test).

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/tensor_bundle.h"
#include "coordinator/coordinator.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed::testing {

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override { Restart(); }

  // (Re)creates the coordinator on the state directory, as a restart
  // of the process would.
  void Restart();

  // Joins `site`, declaring `images` images and as many patients.
  void Join(const std::string& site, int64_t images = 100);

  // The site's next task, without waiting.
  absl::StatusOr<Task> Poll(const std::string& site);

  // Uploads `bundle` as the site's update for `round`, as an agent would;
  // the upload id is `site`-`round` unless given, and the privacy spent
  // is sent only when positive.
  absl::StatusOr<UploadReceipt> Upload(const std::string& site,
                                       const std::string& run_id, int round,
                                       const TensorBundle& bundle,
                                       int64_t samples = 10,
                                       const std::string& upload_id = "",
                                       double privacy_epsilon = 0);

  // Streams `bundle` in small slices, as an agent would.
  absl::StatusOr<UploadReceipt> Send(const std::string& site,
                                     const UploadHeader& header,
                                     const TensorBundle& bundle);

  // Reports an evaluation of 3 classes: `correct` class-0 images called
  // class 0, `wrong` ones called class 1.
  absl::Status Report(const std::string& site, const std::string& run_id,
                      int round, EvalSplit split, int correct = 4,
                      int wrong = 1);

  // Starts a run and delivers the initial model from whoever is asked.
  std::string StartAndInitialize(const Plan& plan);

  // The status of `run_id`, or of the latest run.
  RunStatus Status(const std::string& run_id = "");

  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<Coordinator> coordinator_;
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_COORDINATOR_COORDINATOR_TEST_FIXTURE_H_
