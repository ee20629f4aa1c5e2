#ifndef ECHOFED_COORDINATOR_SERVICES_H_
#define ECHOFED_COORDINATOR_SERVICES_H_

// Thin gRPC adapters: authenticate the caller from its certificate, then
// translate between messages and the Coordinator. No logic lives here.

#include <initializer_list>
#include <memory>

#include "absl/status/statusor.h"
#include "common/pki.h"
#include "coordinator/coordinator.h"
#include "coordinator/enrolment.h"
#include "coordinator/reloading_verifier.h"
#include "coordinator/stream_watch.h"
#include "proto/admin.grpc.pb.h"
#include "proto/federation.grpc.pb.h"

namespace echofed {

// Verifies the client certificate of a call against the study CA, its
// revocation list and the enrolment list. Every refusal is logged with the
// peer address. Thread-safe; the enrolment is fixed, the revocation list
// follows its file (see ReloadingVerifier).
class Authenticator {
 public:
  // Refusals are written to `coordinator`'s audit log when it is given.
  Authenticator(std::unique_ptr<ReloadingVerifier> verifier,
                Enrolment enrolment, Coordinator* coordinator = nullptr)
      : verifier_(std::move(verifier)),
        enrolment_(std::move(enrolment)),
        coordinator_(coordinator) {}

  // UNAUTHENTICATED: no, invalid or revoked certificate. PERMISSION_DENIED: not
  // enrolled, or a role not allowed to make this call.
  absl::StatusOr<PeerIdentity> Authenticate(
      const grpc::CallbackServerContext& context,
      std::initializer_list<Role> allowed, const char* method) const;
  // The same checks for a caller outside gRPC (the status page):
  // `cert_pem` is the client certificate its TLS session presented, empty
  // for none; `peer_address` is for the log; `listener` labels the refusal
  // in the metrics ("grpc" or "status").
  absl::StatusOr<PeerIdentity> AuthenticateCertificate(
      const std::string& cert_pem, const std::string& peer_address,
      std::initializer_list<Role> allowed, const char* method,
      absl::string_view listener) const;

 private:
  const std::unique_ptr<ReloadingVerifier> verifier_;
  const Enrolment enrolment_;
  Coordinator* coordinator_;
};

// DownloadModel is a raw method (its messages are bytes to us): a
// committed model's chunks go out as slices of its mapped file, with no
// serialization copy (common/chunk_stream.h). The agent's side is typed.
class FederationService final
    : public Federation::WithRawCallbackMethod_DownloadModel<
          Federation::CallbackService> {
 public:
  // `watch` (optional) cancels model streams that stop moving; `gate`
  // (optional) bounds how many downloads move at once.
  FederationService(Coordinator* coordinator, const Authenticator* auth,
                    StreamWatch* watch = nullptr, StreamGate* gate = nullptr)
      : coordinator_(coordinator), auth_(auth), watch_(watch), gate_(gate) {}

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const JoinRequest* request,
                                 JoinResponse* response) override;
  grpc::ServerUnaryReactor* NextTask(grpc::CallbackServerContext* context,
                                     const NextTaskRequest* request,
                                     Task* response) override;
  // The request is a serialized DownloadRequest; chunks go out serialized.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* DownloadModel(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<UploadChunk>* UploadUpdate(
      grpc::CallbackServerContext* context, UploadReceipt* receipt) override;
  grpc::ServerUnaryReactor* ReportEvaluation(
      grpc::CallbackServerContext* context, const EvaluationReport* request,
      ReportReceipt* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const HeartbeatRequest* request,
                                      HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const PingRequest* request,
                                 PingResponse* response) override;
  grpc::ServerUnaryReactor* SubmitMaskingKey(
      grpc::CallbackServerContext* context, const MaskingKeyRequest* request,
      MaskingKeyResponse* response) override;
  grpc::ServerUnaryReactor* GetMaskingCohort(
      grpc::CallbackServerContext* context, const MaskingCohortRequest* request,
      MaskingCohort* response) override;

 private:
  Coordinator* coordinator_;
  const Authenticator* auth_;
  StreamWatch* watch_;
  StreamGate* gate_;
};

// DownloadModel is raw like the federation's (the same model streamer).
class AdminService final : public Admin::WithRawCallbackMethod_DownloadModel<
                               Admin::CallbackService> {
 public:
  AdminService(Coordinator* coordinator, const Authenticator* auth,
               StreamWatch* watch = nullptr, StreamGate* gate = nullptr)
      : coordinator_(coordinator), auth_(auth), watch_(watch), gate_(gate) {}

  grpc::ServerUnaryReactor* StartRun(grpc::CallbackServerContext* context,
                                     const StartRunRequest* request,
                                     StartRunResponse* response) override;
  grpc::ServerUnaryReactor* StopRun(grpc::CallbackServerContext* context,
                                    const StopRunRequest* request,
                                    StopRunResponse* response) override;
  grpc::ServerUnaryReactor* GetRunStatus(grpc::CallbackServerContext* context,
                                         const RunStatusRequest* request,
                                         RunStatus* response) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* context,
                                     const ListRunsRequest* request,
                                     ListRunsResponse* response) override;
  // The request is a serialized AdminDownloadRequest.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* DownloadModel(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;

 private:
  Coordinator* coordinator_;
  const Authenticator* auth_;
  StreamWatch* watch_;
  StreamGate* gate_;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_SERVICES_H_
