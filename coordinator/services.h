#ifndef ECHOFED_COORDINATOR_SERVICES_H_
#define ECHOFED_COORDINATOR_SERVICES_H_

// Thin gRPC adapters: authenticate the caller from its certificate, then
// translate between messages and the Coordinator. No logic lives here.

#include <initializer_list>

#include "absl/status/statusor.h"
#include "common/pki.h"
#include "coordinator/coordinator.h"
#include "coordinator/enrolment.h"
#include "proto/admin.grpc.pb.h"
#include "proto/federation.grpc.pb.h"

namespace echofed {

// Verifies the client certificate of a call against the study CA and the
// enrolment list. Every refusal is logged with the peer address. Immutable,
// thread-safe.
class Authenticator {
 public:
  // Refusals are written to `coordinator`'s audit log when it is given.
  Authenticator(CertificateVerifier verifier, Enrolment enrolment,
                Coordinator* coordinator = nullptr)
      : verifier_(std::move(verifier)),
        enrolment_(std::move(enrolment)),
        coordinator_(coordinator) {}

  // UNAUTHENTICATED: no or invalid certificate. PERMISSION_DENIED: not
  // enrolled, or a role not allowed to make this call.
  absl::StatusOr<PeerIdentity> Authenticate(
      const grpc::CallbackServerContext& context,
      std::initializer_list<Role> allowed, const char* method) const;

 private:
  CertificateVerifier verifier_;
  Enrolment enrolment_;
  Coordinator* coordinator_;
};

class FederationService final : public Federation::CallbackService {
 public:
  FederationService(Coordinator* coordinator, const Authenticator* auth)
      : coordinator_(coordinator), auth_(auth) {}

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const JoinRequest* request,
                                 JoinResponse* response) override;
  grpc::ServerUnaryReactor* NextTask(grpc::CallbackServerContext* context,
                                     const NextTaskRequest* request,
                                     Task* response) override;
  grpc::ServerWriteReactor<ModelChunk>* DownloadModel(
      grpc::CallbackServerContext* context,
      const DownloadRequest* request) override;
  grpc::ServerReadReactor<UploadChunk>* UploadUpdate(
      grpc::CallbackServerContext* context, UploadReceipt* receipt) override;
  grpc::ServerUnaryReactor* ReportEvaluation(
      grpc::CallbackServerContext* context, const EvaluationReport* request,
      ReportReceipt* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* context,
                                      const HeartbeatRequest* request,
                                      HeartbeatResponse* response) override;

 private:
  Coordinator* coordinator_;
  const Authenticator* auth_;
};

class AdminService final : public Admin::CallbackService {
 public:
  AdminService(Coordinator* coordinator, const Authenticator* auth)
      : coordinator_(coordinator), auth_(auth) {}

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
  grpc::ServerWriteReactor<ModelChunk>* DownloadModel(
      grpc::CallbackServerContext* context,
      const AdminDownloadRequest* request) override;

 private:
  Coordinator* coordinator_;
  const Authenticator* auth_;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_SERVICES_H_
