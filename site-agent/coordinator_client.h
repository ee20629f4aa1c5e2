#ifndef ECHOFED_SITE_AGENT_COORDINATOR_CLIENT_H_
#define ECHOFED_SITE_AGENT_COORDINATOR_CLIENT_H_

// What the agent asks of the coordinator, one method per Federation call,
// in the agent's own terms: whole models rather than chunk streams, Abseil
// statuses rather than gRPC ones. The agent's task handling is written
// against this interface only, so that it can be tested without a server
// (tests/site-agent/fake_coordinator_client.h); the real client is
// grpc_coordinator_client.cc, the one file of the agent that includes gRPC.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/pki.h"
#include "common/tensor_bundle.h"
#include "proto/federation.pb.h"

namespace echofed {

// Statuses: UNAUTHENTICATED and PERMISSION_DENIED mean the coordinator
// refused this site's certificate; UNAVAILABLE, DEADLINE_EXCEEDED and the
// like mean the network or the coordinator is down for now; the others are
// the coordinator's answer to the request itself. Implementations are used
// from the agent's one thread; they need not be thread-safe.
class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;

  // Where the coordinator is, for log lines.
  virtual std::string Address() const = 0;

  virtual absl::StatusOr<JoinResponse> Join(const JoinRequest& request) = 0;
  // Waits up to request.wait_seconds() at the coordinator for a task.
  virtual absl::StatusOr<Task> NextTask(const NextTaskRequest& request) = 0;
  // The whole model of a round, its manifest checked against its chunks.
  virtual absl::StatusOr<TensorBundle> DownloadModel(
      const DownloadRequest& request) = 0;
  // One attempt at sending an update; the caller retries with the same
  // upload_id, which the coordinator counts once.
  virtual absl::StatusOr<UploadReceipt> UploadUpdate(
      const UploadHeader& header, const TensorBundle& model) = 0;
  virtual absl::StatusOr<MaskingKeyResponse> SubmitMaskingKey(
      const MaskingKeyRequest& request) = 0;
  virtual absl::StatusOr<MaskingCohort> GetMaskingCohort(
      const MaskingCohortRequest& request) = 0;
  virtual absl::StatusOr<ReportReceipt> ReportEvaluation(
      const EvaluationReport& report) = 0;
  virtual absl::StatusOr<HeartbeatResponse> Heartbeat(
      const HeartbeatRequest& request) = 0;
  // Answered within `timeout`: who the coordinator takes this site for and
  // its clock (doctor's checks).
  virtual absl::StatusOr<PingResponse> Ping(absl::Duration timeout) = 0;
};

// Where and how to reach the coordinator.
struct CoordinatorConnection {
  // host:port
  std::string address;
  // Name expected in the coordinator's certificate (empty: the host of
  // `address`).
  std::string server_name;
  TlsMaterial tls;
};

// The real client: gRPC over mutual TLS. The channel connects lazily, so
// this never fails; the first call says whether the coordinator is there.
std::unique_ptr<CoordinatorClient> NewGrpcCoordinatorClient(
    const CoordinatorConnection& connection);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_COORDINATOR_CLIENT_H_
