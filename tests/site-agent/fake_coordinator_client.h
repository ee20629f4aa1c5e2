#ifndef ECHOFED_TESTS_SITE_AGENT_FAKE_COORDINATOR_CLIENT_H_
#define ECHOFED_TESTS_SITE_AGENT_FAKE_COORDINATOR_CLIENT_H_

// A coordinator in memory for the agent's unit tests: it hands out a
// scripted list of tasks, serves the models it holds, and records every
// call the agent makes. Each call can be made to fail first with scripted
// statuses (a refused certificate, a coordinator that is down). A
// single-site federation is the identity: an update uploaded for round r is
// served as global model r.

#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/tensor_bundle.h"
#include "site-agent/coordinator_client.h"

namespace echofed::testing {

// The state every FakeCoordinatorClient method reads and writes. The test
// keeps it (a shared pointer) after handing the client to the agent.
struct FakeCoordinatorState {
  struct Upload {
    UploadHeader header;
    TensorBundle model;
    // False when a scripted failure refused it.
    bool accepted = false;
  };

  // Each NextTask answer, made when the agent asks (so that it can name
  // the digest of a model uploaded earlier). After the last, STOP for
  // `run_id`.
  std::deque<std::function<Task(const FakeCoordinatorState&)>> script;
  std::string run_id = "run-1";
  std::string site = "site-1";

  // Statuses returned, in order, before a call of that name succeeds:
  // "Join", "NextTask", "DownloadModel", "UploadUpdate", "ReportEvaluation".
  std::map<std::string, std::deque<absl::Status>> failures;

  // Global models by round.
  std::map<int, TensorBundle> models;

  int joins = 0;
  int next_task_calls = 0;
  std::vector<DownloadRequest> downloads;
  // Every upload the agent attempted, including refused ones.
  std::vector<Upload> uploads;
  std::vector<EvaluationReport> reports;
  std::vector<HeartbeatRequest> heartbeats;

  // The digest the coordinator would announce for global model `round`.
  std::string DigestOf(int round) const;
  // Uploads that succeeded, for round `round`.
  std::vector<const Upload*> AcceptedUploads(int round) const;
};

class FakeCoordinatorClient : public CoordinatorClient {
 public:
  explicit FakeCoordinatorClient(FakeCoordinatorState* state) : state_(state) {}

  std::string Address() const override { return "fake-coordinator:0"; }
  absl::StatusOr<JoinResponse> Join(const JoinRequest& request) override;
  absl::StatusOr<Task> NextTask(const NextTaskRequest& request) override;
  absl::StatusOr<TensorBundle> DownloadModel(
      const DownloadRequest& request) override;
  absl::StatusOr<UploadReceipt> UploadUpdate(
      const UploadHeader& header, const TensorBundle& model) override;
  absl::StatusOr<MaskingKeyResponse> SubmitMaskingKey(
      const MaskingKeyRequest& request) override;
  absl::StatusOr<MaskingCohort> GetMaskingCohort(
      const MaskingCohortRequest& request) override;
  absl::StatusOr<ReportReceipt> ReportEvaluation(
      const EvaluationReport& report) override;
  absl::StatusOr<HeartbeatResponse> Heartbeat(
      const HeartbeatRequest& request) override;
  absl::StatusOr<PingResponse> Ping(absl::Duration timeout) override;

 private:
  // The next scripted failure of `call`, or OK.
  absl::Status Injected(const std::string& call);

  FakeCoordinatorState* const state_;
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_SITE_AGENT_FAKE_COORDINATOR_CLIENT_H_
