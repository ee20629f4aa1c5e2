#include "tests/site-agent/fake_coordinator_client.h"

#include "absl/strings/str_cat.h"

namespace echofed::testing {

// Enough polls for any script; past them the agent is looping without end
// (a test bug), and a refusal stops it rather than hanging the test.
constexpr int kMaxPolls = 10000;

std::string FakeCoordinatorState::DigestOf(int round) const {
  auto model = models.find(round);
  return model == models.end() ? "" : ModelDigest(model->second.manifest);
}

std::vector<const FakeCoordinatorState::Upload*>
FakeCoordinatorState::AcceptedUploads(int round) const {
  std::vector<const Upload*> accepted;
  for (const Upload& upload : uploads) {
    if (upload.accepted && upload.header.round() == round) {
      accepted.push_back(&upload);
    }
  }
  return accepted;
}

absl::Status FakeCoordinatorClient::Injected(const std::string& call) {
  auto failures = state_->failures.find(call);
  if (failures == state_->failures.end() || failures->second.empty()) {
    return absl::OkStatus();
  }
  absl::Status status = failures->second.front();
  failures->second.pop_front();
  return status;
}

absl::StatusOr<JoinResponse> FakeCoordinatorClient::Join(
    const JoinRequest& request) {
  ++state_->joins;
  if (absl::Status status = Injected("Join"); !status.ok()) return status;
  JoinResponse response;
  response.set_site(state_->site);
  return response;
}

absl::StatusOr<Task> FakeCoordinatorClient::NextTask(
    const NextTaskRequest& request) {
  if (++state_->next_task_calls > kMaxPolls) {
    return absl::PermissionDeniedError("fake coordinator: script exhausted");
  }
  if (absl::Status status = Injected("NextTask"); !status.ok()) return status;
  if (state_->script.empty()) {
    Task stop;
    stop.set_kind(Task::STOP);
    stop.set_run_id(state_->run_id);
    return stop;
  }
  Task task = state_->script.front()(*state_);
  state_->script.pop_front();
  return task;
}

absl::StatusOr<TensorBundle> FakeCoordinatorClient::DownloadModel(
    const DownloadRequest& request) {
  state_->downloads.push_back(request);
  if (absl::Status status = Injected("DownloadModel"); !status.ok()) {
    return status;
  }
  auto model = state_->models.find(request.round());
  if (model == state_->models.end()) {
    return absl::NotFoundError(
        absl::StrCat("fake coordinator: no model of round ", request.round()));
  }
  return model->second;
}

absl::StatusOr<UploadReceipt> FakeCoordinatorClient::UploadUpdate(
    const UploadHeader& header, const TensorBundle& model) {
  state_->uploads.push_back({header, model});
  if (absl::Status status = Injected("UploadUpdate"); !status.ok()) {
    return status;
  }
  state_->uploads.back().accepted = true;
  // One site: the global model of the round is its update.
  state_->models[header.round()] = model;
  UploadReceipt receipt;
  receipt.set_digest(ModelDigest(model.manifest));
  return receipt;
}

absl::StatusOr<MaskingKeyResponse> FakeCoordinatorClient::SubmitMaskingKey(
    const MaskingKeyRequest& request) {
  return absl::UnimplementedError("fake coordinator: no secure aggregation");
}

absl::StatusOr<MaskingCohort> FakeCoordinatorClient::GetMaskingCohort(
    const MaskingCohortRequest& request) {
  return absl::UnimplementedError("fake coordinator: no secure aggregation");
}

absl::StatusOr<ReportReceipt> FakeCoordinatorClient::ReportEvaluation(
    const EvaluationReport& report) {
  if (absl::Status status = Injected("ReportEvaluation"); !status.ok()) {
    return status;
  }
  state_->reports.push_back(report);
  return ReportReceipt();
}

absl::StatusOr<HeartbeatResponse> FakeCoordinatorClient::Heartbeat(
    const HeartbeatRequest& request) {
  state_->heartbeats.push_back(request);
  return HeartbeatResponse();
}

absl::StatusOr<PingResponse> FakeCoordinatorClient::Ping(
    absl::Duration timeout) {
  PingResponse response;
  response.set_site(state_->site);
  return response;
}

}  // namespace echofed::testing
