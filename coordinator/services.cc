#include "coordinator/services.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_util.h"
#include "common/log.h"

namespace echofed {
namespace {

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Streams a model file to the caller, one slice per write.
class ModelStreamer final : public grpc::ServerWriteReactor<ModelChunk> {
 public:
  explicit ModelStreamer(absl::StatusOr<std::unique_ptr<ModelFileReader>> model)
      : model_(std::move(model)) {
    if (!model_.ok()) {
      Finish(ToGrpcStatus(model_.status()));
      return;
    }
    chunker_ = std::make_unique<ModelChunker>(model_->get());
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    absl::StatusOr<bool> more = chunker_->Next(&chunk_);
    if (!more.ok()) {
      Finish(ToGrpcStatus(more.status()));
    } else if (!*more) {
      Finish(grpc::Status::OK);
    } else {
      StartWrite(&chunk_);
    }
  }

  absl::StatusOr<std::unique_ptr<ModelFileReader>> model_;
  std::unique_ptr<ModelChunker> chunker_;
  ModelChunk chunk_;
};

// Receives an update: header first, then model chunks, each checked as it
// arrives. A stream that breaks discards the partial update.
class UpdateReceiver final : public grpc::ServerReadReactor<UploadChunk> {
 public:
  UpdateReceiver(grpc::CallbackServerContext* context, Coordinator* coordinator,
                 absl::StatusOr<PeerIdentity> peer, UploadReceipt* receipt)
      : context_(context), coordinator_(coordinator), receipt_(receipt) {
    if (!peer.ok()) {
      Finish(ToGrpcStatus(peer.status()));
      return;
    }
    site_ = peer->identity;
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      OnEndOfStream();
      return;
    }
    absl::Status status;
    if (session_ == nullptr) {
      if (!chunk_.has_header()) {
        status = absl::InvalidArgumentError("an upload starts with its header");
      } else {
        absl::StatusOr<std::unique_ptr<UploadSession>> session =
            coordinator_->BeginUpload(site_, chunk_.header());
        if (session.ok()) {
          session_ = std::move(*session);
        } else {
          status = session.status();
        }
      }
    } else if (!chunk_.has_chunk()) {
      status = absl::InvalidArgumentError("second upload header");
    } else {
      status = session_->Accept(chunk_.chunk());
    }
    if (!status.ok()) {
      Reject(status);
      return;
    }
    StartRead(&chunk_);
  }

  void OnDone() override { delete this; }

 private:
  void OnEndOfStream() {
    if (context_->IsCancelled()) {
      LogWarning("upload from ", site_, " broke off; discarded");
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "upload cancelled"));
      return;
    }
    if (session_ == nullptr) {
      Reject(absl::InvalidArgumentError("empty upload"));
      return;
    }
    absl::StatusOr<UploadReceipt> receipt = session_->Finish();
    if (!receipt.ok()) {
      Reject(receipt.status());
      return;
    }
    *receipt_ = *receipt;
    Finish(grpc::Status::OK);
  }

  void Reject(const absl::Status& status) {
    LogWarning("update from ", site_, " refused: ", status.ToString());
    session_.reset();
    Finish(ToGrpcStatus(status));
  }

  grpc::CallbackServerContext* context_;
  Coordinator* coordinator_;
  UploadReceipt* receipt_;
  std::string site_;
  UploadChunk chunk_;
  std::unique_ptr<UploadSession> session_;
};

}  // namespace

absl::StatusOr<PeerIdentity> Authenticator::Authenticate(
    const grpc::CallbackServerContext& context,
    std::initializer_list<Role> allowed, const char* method) const {
  absl::StatusOr<PeerIdentity> peer =
      verifier_.Verify(PeerCertificatePem(context));
  absl::Status status = peer.status();
  if (status.ok()) status = enrolment_.Check(*peer);
  if (status.ok() &&
      std::find(allowed.begin(), allowed.end(), peer->role) == allowed.end()) {
    status = absl::PermissionDeniedError(absl::StrCat(
        "the role ", RoleName(peer->role), " may not call ", method));
  }
  if (!status.ok()) {
    LogWarning("refused ", method, " from ", context.peer(),
               peer.ok() ? absl::StrCat(" (", peer->identity, ")") : "", ": ",
               status.message());
    if (coordinator_ != nullptr) {
      coordinator_->Audit(
          {peer.ok() ? peer->identity : absl::StrCat("peer ", context.peer()),
           "refused", "", -1, "",
           absl::StrCat(method, ": ", absl::StatusCodeToString(status.code()),
                        ": ", status.message())});
    }
    return status;
  }
  return peer;
}

// --- Federation -------------------------------------------------------------

grpc::ServerUnaryReactor* FederationService::Join(
    grpc::CallbackServerContext* context, const JoinRequest* request,
    JoinResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "Join");
  if (!peer.ok()) return FinishNow(context, peer.status());
  absl::StatusOr<JoinResponse> joined =
      coordinator_->Join(peer->identity, *request);
  if (joined.ok()) *response = *joined;
  return FinishNow(context, joined.status());
}

grpc::ServerUnaryReactor* FederationService::NextTask(
    grpc::CallbackServerContext* context, const NextTaskRequest* request,
    Task* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "NextTask");
  if (!peer.ok()) return FinishNow(context, peer.status());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  // The response and reactor stay valid until Finish: the call cannot end
  // before we finish it.
  coordinator_->NextTask(peer->identity, absl::Seconds(request->wait_seconds()),
                         [reactor, response](absl::StatusOr<Task> task) {
                           if (task.ok()) *response = std::move(*task);
                           reactor->Finish(ToGrpcStatus(task.status()));
                         });
  return reactor;
}

grpc::ServerWriteReactor<ModelChunk>* FederationService::DownloadModel(
    grpc::CallbackServerContext* context, const DownloadRequest* request) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "DownloadModel");
  if (!peer.ok()) return new ModelStreamer(peer.status());
  return new ModelStreamer(
      coordinator_->OpenModelForSite(peer->identity, *request));
}

grpc::ServerReadReactor<UploadChunk>* FederationService::UploadUpdate(
    grpc::CallbackServerContext* context, UploadReceipt* receipt) {
  return new UpdateReceiver(
      context, coordinator_,
      auth_->Authenticate(*context, {Role::kSite}, "UploadUpdate"), receipt);
}

grpc::ServerUnaryReactor* FederationService::ReportEvaluation(
    grpc::CallbackServerContext* context, const EvaluationReport* request,
    ReportReceipt* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "ReportEvaluation");
  if (!peer.ok()) return FinishNow(context, peer.status());
  return FinishNow(context,
                   coordinator_->ReportEvaluation(peer->identity, *request));
}

grpc::ServerUnaryReactor* FederationService::Heartbeat(
    grpc::CallbackServerContext* context, const HeartbeatRequest* request,
    HeartbeatResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "Heartbeat");
  if (!peer.ok()) return FinishNow(context, peer.status());
  return FinishNow(context, coordinator_->Heartbeat(peer->identity, *request));
}

// --- Admin ------------------------------------------------------------------

grpc::ServerUnaryReactor* AdminService::StartRun(
    grpc::CallbackServerContext* context, const StartRunRequest* request,
    StartRunResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kOperator}, "StartRun");
  if (!peer.ok()) return FinishNow(context, peer.status());
  absl::StatusOr<std::string> run_id = coordinator_->StartRun(request->plan());
  if (run_id.ok()) {
    response->set_run_id(*run_id);
    LogInfo("operator ", peer->identity, " started run ", *run_id);
    coordinator_->Audit(
        {peer->identity, "run-start", *run_id, -1, "", request->plan().name()});
  }
  return FinishNow(context, run_id.status());
}

grpc::ServerUnaryReactor* AdminService::StopRun(
    grpc::CallbackServerContext* context, const StopRunRequest* request,
    StopRunResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kOperator}, "StopRun");
  if (!peer.ok()) return FinishNow(context, peer.status());
  LogInfo("operator ", peer->identity, " stops run ", request->run_id());
  coordinator_->Audit(
      {peer->identity, "run-stop", request->run_id(), -1, "", ""});
  return FinishNow(context, coordinator_->StopRun(request->run_id()));
}

grpc::ServerUnaryReactor* AdminService::GetRunStatus(
    grpc::CallbackServerContext* context, const RunStatusRequest* request,
    RunStatus* response) {
  absl::StatusOr<PeerIdentity> peer = auth_->Authenticate(
      *context, {Role::kOperator, Role::kStatistician}, "GetRunStatus");
  if (!peer.ok()) return FinishNow(context, peer.status());
  absl::StatusOr<RunStatus> status =
      coordinator_->GetRunStatus(request->run_id());
  if (status.ok()) *response = std::move(*status);
  return FinishNow(context, status.status());
}

grpc::ServerUnaryReactor* AdminService::ListRuns(
    grpc::CallbackServerContext* context, const ListRunsRequest* request,
    ListRunsResponse* response) {
  absl::StatusOr<PeerIdentity> peer = auth_->Authenticate(
      *context, {Role::kOperator, Role::kStatistician}, "ListRuns");
  if (!peer.ok()) return FinishNow(context, peer.status());
  *response = coordinator_->ListRuns();
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerWriteReactor<ModelChunk>* AdminService::DownloadModel(
    grpc::CallbackServerContext* context, const AdminDownloadRequest* request) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kOperator}, "DownloadModel");
  if (!peer.ok()) return new ModelStreamer(peer.status());
  LogInfo("operator ", peer->identity, " downloads run ", request->run_id(),
          " round ", request->round());
  coordinator_->Audit({peer->identity, "model-download", request->run_id(),
                       request->round(), "", ""});
  return new ModelStreamer(
      coordinator_->OpenModel(request->run_id(), request->round()));
}

}  // namespace echofed
