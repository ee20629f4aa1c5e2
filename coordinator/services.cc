#include "coordinator/services.h"

#include <functional>

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

// The request of a raw method.
template <typename Message>
absl::StatusOr<Message> ParseRequest(const grpc::ByteBuffer& request) {
  grpc::ByteBuffer copy = request;  // shares the slices
  Message message;
  if (!grpc::SerializationTraits<Message>::Deserialize(&copy, &message).ok()) {
    return absl::InvalidArgumentError("unparsable request");
  }
  return message;
}

// Streams a model file to the caller, one slice per write, once the gate
// lets it move. A caller that stops reading is cancelled by the stream watch.
// Bytes sent are counted in `telemetry`; `on_progress` (if set) hears of the
// first byte (false) and of a whole model sent (true), for round timelines.
class ModelStreamer final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  using Progress = std::function<void(bool finished)>;
  ModelStreamer(grpc::CallbackServerContext* context, StreamWatch* watch,
                StreamGate* gate, Telemetry* telemetry, std::string description,
                absl::StatusOr<std::unique_ptr<ChunkStream>> model,
                Progress on_progress = nullptr)
      : context_(context),
        watch_(watch),
        gate_(gate),
        telemetry_(telemetry),
        description_(std::move(description)),
        on_progress_(std::move(on_progress)),
        model_(std::move(model)) {
    if (!model_.ok()) {
      FinishOnce(ToGrpcStatus(model_.status()));
      return;
    }
    if (gate_ == nullptr) {
      Start();
    } else {
      gate_->Enter(&ticket_, [this] { Start(); });
    }
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishOnce(
          grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
      return;
    }
    telemetry_->AddBytesSent(static_cast<int64_t>(chunk_.Length()));
    if (watch_ != nullptr) watch_->Touch(token_, absl::Now());
    WriteNext();
  }
  // A caller that gives up while waiting at the gate has no write to fail:
  // finish here. Once moving, the failed write finishes the stream.
  void OnCancel() override {
    {
      // Decided in one step: a Start() racing in from the gate either runs
      // first (and its failed write finishes the stream) or sees finished_.
      absl::MutexLock lock(&mu_);
      if (started_ || finished_) return;
      finished_ = true;
    }
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "download cancelled"));
  }
  void OnDone() override {
    if (watch_ != nullptr && token_ != 0) watch_->Unregister(token_);
    if (gate_ != nullptr && ticket_ != 0) gate_->Leave(ticket_);
    delete this;
  }

 private:
  void Start() {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;  // cancelled while it waited
      started_ = true;
    }
    // Watched from now: time at the gate is not idleness.
    if (watch_ != nullptr) {
      grpc::CallbackServerContext* context = context_;
      token_ = watch_->Register(description_, absl::Now(),
                                [context] { context->TryCancel(); });
    }
    if (on_progress_) on_progress_(false);
    WriteNext();
  }

  void WriteNext() {
    absl::StatusOr<bool> more = (*model_)->Next(&chunk_);
    if (!more.ok()) {
      FinishOnce(ToGrpcStatus(more.status()));
    } else if (!*more) {
      if (on_progress_) on_progress_(true);
      FinishOnce(grpc::Status::OK);
    } else {
      StartWrite(&chunk_);
    }
  }

  void FinishOnce(const grpc::Status& status) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      finished_ = true;
    }
    Finish(status);
  }

  grpc::CallbackServerContext* context_;
  StreamWatch* watch_;
  StreamGate* gate_;
  Telemetry* telemetry_;
  std::string description_;
  Progress on_progress_;
  StreamWatch::Token token_ = 0;
  StreamGate::Ticket ticket_ = 0;
  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusOr<std::unique_ptr<ChunkStream>> model_;
  // The serialized chunk being written.
  grpc::ByteBuffer chunk_;
};

// Receives an update: header first, then model chunks, each checked as it
// arrives. A stream that breaks discards the partial update.
class UpdateReceiver final : public grpc::ServerReadReactor<UploadChunk> {
 public:
  UpdateReceiver(grpc::CallbackServerContext* context, Coordinator* coordinator,
                 StreamWatch* watch, absl::StatusOr<PeerIdentity> peer,
                 UploadReceipt* receipt)
      : context_(context),
        coordinator_(coordinator),
        watch_(watch),
        receipt_(receipt) {
    if (!peer.ok()) {
      Finish(ToGrpcStatus(peer.status()));
      return;
    }
    site_ = peer->identity;
    if (watch_ != nullptr) {
      token_ =
          watch_->Register(absl::StrCat("upload from ", site_), absl::Now(),
                           [context] { context->TryCancel(); });
    }
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (watch_ != nullptr && token_ != 0) watch_->Touch(token_, absl::Now());
    if (!ok) {
      OnEndOfStream();
      return;
    }
    coordinator_->telemetry().AddBytesReceived(
        static_cast<int64_t>(chunk_.ByteSizeLong()));
    absl::Status status;
    if (session_ == nullptr) {
      if (!chunk_.has_header()) {
        status = absl::InvalidArgumentError("an upload starts with its header");
      } else {
        header_ = chunk_.header();
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
    // Let the slice go: a reused message would keep a megabyte per waiting
    // upload, i.e. memory growing with the number of sites.
    chunk_ = UploadChunk();
    StartRead(&chunk_);
  }

  void OnDone() override {
    if (watch_ != nullptr && token_ != 0) watch_->Unregister(token_);
    delete this;
  }

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
    coordinator_->telemetry().CountUploadRefusal(status.code());
    // Refused content is audited like refused connections: a hostile or
    // broken site leaves a trace beyond the log.
    coordinator_->Audit({site_, "update-refused", header_.run_id(),
                         header_.run_id().empty() ? -1 : header_.round(), "",
                         absl::StrCat(absl::StatusCodeToString(status.code()),
                                      ": ", status.message())});
    session_.reset();
    Finish(ToGrpcStatus(status));
  }

  grpc::CallbackServerContext* context_;
  Coordinator* coordinator_;
  StreamWatch* watch_;
  StreamWatch::Token token_ = 0;
  UploadReceipt* receipt_;
  std::string site_;
  UploadChunk chunk_;
  UploadHeader header_;
  std::unique_ptr<UploadSession> session_;
};

}  // namespace

absl::StatusOr<PeerIdentity> Authenticator::Authenticate(
    const grpc::CallbackServerContext& context,
    std::initializer_list<Role> allowed, const char* method) const {
  return AuthenticateCertificate(PeerCertificatePem(context), context.peer(),
                                 allowed, method, "grpc");
}

absl::StatusOr<PeerIdentity> Authenticator::AuthenticateCertificate(
    const std::string& cert_pem, const std::string& peer_address,
    std::initializer_list<Role> allowed, const char* method,
    absl::string_view listener) const {
  absl::StatusOr<PeerIdentity> peer = verifier_->Verify(cert_pem);
  absl::Status status = peer.status();
  absl::string_view reason =
      cert_pem.empty() ? kRefusedNoCertificate : kRefusedBadCertificate;
  if (status.ok()) {
    status = enrolment_.Check(*peer);
    reason = kRefusedNotEnrolled;
  }
  if (status.ok() &&
      std::find(allowed.begin(), allowed.end(), peer->role) == allowed.end()) {
    status = absl::PermissionDeniedError(absl::StrCat(
        "the role ", RoleName(peer->role), " may not call ", method));
    reason = kRefusedRole;
  }
  if (!status.ok()) {
    if (coordinator_ != nullptr) {
      coordinator_->telemetry().CountConnectionRefusal(listener, reason);
    }
    LogWarning("refused ", method, " from ", peer_address,
               peer.ok() ? absl::StrCat(" (", peer->identity, ")") : "", ": ",
               status.message());
    if (coordinator_ != nullptr) {
      coordinator_->Audit(
          {peer.ok() ? peer->identity : absl::StrCat("peer ", peer_address),
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

grpc::ServerWriteReactor<grpc::ByteBuffer>* FederationService::DownloadModel(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "DownloadModel");
  if (!peer.ok()) {
    return new ModelStreamer(context, nullptr, nullptr,
                             &coordinator_->telemetry(), "", peer.status());
  }
  absl::StatusOr<DownloadRequest> request = ParseRequest<DownloadRequest>(*raw);
  if (!request.ok()) {
    return new ModelStreamer(context, nullptr, nullptr,
                             &coordinator_->telemetry(), "", request.status());
  }
  Coordinator* coordinator = coordinator_;
  return new ModelStreamer(
      context, watch_, gate_, &coordinator_->telemetry(),
      absl::StrCat("download by ", peer->identity),
      coordinator_->OpenModelForSite(peer->identity, *request),
      [coordinator, run_id = request->run_id(),
       round = request->round()](bool finished) {
        coordinator->NoteDownload(run_id, round, finished);
      });
}

grpc::ServerReadReactor<UploadChunk>* FederationService::UploadUpdate(
    grpc::CallbackServerContext* context, UploadReceipt* receipt) {
  return new UpdateReceiver(
      context, coordinator_, watch_,
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

grpc::ServerUnaryReactor* FederationService::Ping(
    grpc::CallbackServerContext* context, const PingRequest* /*request*/,
    PingResponse* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "Ping");
  if (!peer.ok()) return FinishNow(context, peer.status());
  response->set_site(peer->identity);
  response->set_coordinator_version(ECHOFED_VERSION);
  response->set_server_time_unix_micros(
      absl::ToUnixMicros(coordinator_->Now()));
  return FinishNow(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* FederationService::SubmitMaskingKey(
    grpc::CallbackServerContext* context, const MaskingKeyRequest* request,
    MaskingKeyResponse* /*response*/) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "SubmitMaskingKey");
  if (!peer.ok()) return FinishNow(context, peer.status());
  return FinishNow(context,
                   coordinator_->SubmitMaskingKey(peer->identity, *request));
}

grpc::ServerUnaryReactor* FederationService::GetMaskingCohort(
    grpc::CallbackServerContext* context, const MaskingCohortRequest* request,
    MaskingCohort* response) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kSite}, "GetMaskingCohort");
  if (!peer.ok()) return FinishNow(context, peer.status());
  absl::StatusOr<MaskingCohort> cohort =
      coordinator_->GetMaskingCohort(peer->identity, *request);
  if (cohort.ok()) *response = std::move(*cohort);
  return FinishNow(context, cohort.status());
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

grpc::ServerWriteReactor<grpc::ByteBuffer>* AdminService::DownloadModel(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  absl::StatusOr<PeerIdentity> peer =
      auth_->Authenticate(*context, {Role::kOperator}, "DownloadModel");
  if (!peer.ok()) {
    return new ModelStreamer(context, nullptr, nullptr,
                             &coordinator_->telemetry(), "", peer.status());
  }
  absl::StatusOr<AdminDownloadRequest> request =
      ParseRequest<AdminDownloadRequest>(*raw);
  if (!request.ok()) {
    return new ModelStreamer(context, nullptr, nullptr,
                             &coordinator_->telemetry(), "", request.status());
  }
  LogInfo("operator ", peer->identity, " downloads run ", request->run_id(),
          " round ", request->round());
  coordinator_->Audit({peer->identity, "model-download", request->run_id(),
                       request->round(), "", ""});
  absl::StatusOr<std::unique_ptr<ModelFileReader>> reader =
      coordinator_->OpenModel(request->run_id(), request->round());
  absl::StatusOr<std::unique_ptr<ChunkStream>> stream =
      reader.ok() ? absl::StatusOr<std::unique_ptr<ChunkStream>>(
                        std::make_unique<SourceChunkStream>(std::move(*reader)))
                  : reader.status();
  return new ModelStreamer(context, watch_, gate_, &coordinator_->telemetry(),
                           absl::StrCat("download by ", peer->identity),
                           std::move(stream));
}

}  // namespace echofed
