#include "tests/coordinator/coordinator_test_fixture.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "proto/metrics.pb.h"

namespace echofed::testing {

void CoordinatorTest::Restart() {
  coordinator_.reset();
  CoordinatorOptions options;
  options.state_dir = dir_.Join("state");
  options.clock = &clock_;
  absl::StatusOr<std::unique_ptr<Coordinator>> created =
      Coordinator::Create(options);
  ASSERT_TRUE(created.ok()) << created.status();
  coordinator_ = std::move(*created);
}

void CoordinatorTest::Join(const std::string& site, int64_t images) {
  JoinRequest request;
  request.set_device("cpu");
  request.mutable_data()->set_images(images);
  request.mutable_data()->set_patients(images);
  ASSERT_TRUE(coordinator_->Join(site, request).ok());
}

absl::StatusOr<Task> CoordinatorTest::Poll(const std::string& site) {
  std::optional<absl::StatusOr<Task>> result;
  coordinator_->NextTask(site, absl::ZeroDuration(),
                         [&](absl::StatusOr<Task> task) { result = task; });
  EXPECT_TRUE(result.has_value());
  return *result;
}

absl::StatusOr<UploadReceipt> CoordinatorTest::Upload(
    const std::string& site, const std::string& run_id, int round,
    const TensorBundle& bundle, int64_t samples, const std::string& upload_id,
    double privacy_epsilon) {
  UploadHeader header;
  header.set_run_id(run_id);
  header.set_round(round);
  header.set_num_samples(samples);
  header.set_mean_train_loss(0.5);
  if (privacy_epsilon > 0) {
    header.set_privacy_epsilon(privacy_epsilon);
    header.set_privacy_delta(1e-5);
  }
  header.set_upload_id(upload_id.empty() ? site + "-" + std::to_string(round)
                                         : upload_id);
  return Send(site, header, bundle);
}

absl::StatusOr<UploadReceipt> CoordinatorTest::Send(
    const std::string& site, const UploadHeader& header,
    const TensorBundle& bundle) {
  absl::StatusOr<std::unique_ptr<UploadSession>> session =
      coordinator_->BeginUpload(site, header);
  if (!session.ok()) return session.status();
  BundleSource source(&bundle);
  ModelChunker chunker(&source, 16);
  ModelChunk chunk;
  while (*chunker.Next(&chunk)) {
    if (absl::Status status = (*session)->Accept(chunk); !status.ok()) {
      return status;
    }
  }
  return (*session)->Finish();
}

absl::Status CoordinatorTest::Report(const std::string& site,
                                     const std::string& run_id, int round,
                                     EvalSplit split, int correct, int wrong) {
  EvaluationReport report;
  report.set_run_id(run_id);
  report.set_round(round);
  EvalAggregate* a = report.mutable_aggregate();
  a->set_split(split);
  a->set_class_count(3);
  for (int i = 0; i < 9; ++i) a->add_confusion(0);
  a->set_confusion(0, correct);
  a->set_confusion(1, wrong);
  a->set_num_images(correct + wrong);
  a->set_num_patients(correct + wrong);
  a->set_loss_sum(1.0);
  return coordinator_->ReportEvaluation(site, report);
}

std::string CoordinatorTest::StartAndInitialize(const Plan& plan) {
  absl::StatusOr<std::string> run_id = coordinator_->StartRun(plan);
  EXPECT_TRUE(run_id.ok()) << run_id.status();
  for (const Plan::SiteRole& site : plan.sites()) {
    absl::StatusOr<Task> task = Poll(site.site());
    if (task.ok() && task->kind() == Task::INITIALIZE) {
      EXPECT_TRUE(
          Upload(site.site(), *run_id, 0, MakeBundle("test_model", 0.0f)).ok());
      return *run_id;
    }
  }
  ADD_FAILURE() << "nobody was asked for the initial model";
  return *run_id;
}

RunStatus CoordinatorTest::Status(const std::string& run_id) {
  return *coordinator_->GetRunStatus(run_id);
}

}  // namespace echofed::testing
