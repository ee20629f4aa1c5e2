// The agent's only gRPC code: CoordinatorClient over a Federation stub on a
// mutual-TLS channel. It translates (deadlines, chunk streams, statuses)
// and decides nothing; retries and backoff are the agent's.

#include <chrono>
#include <memory>
#include <string>

#include "common/grpc_util.h"
#include "grpcpp/grpcpp.h"
#include "proto/federation.grpc.pb.h"
#include "site-agent/coordinator_client.h"

namespace echofed {
namespace {

// Deadlines per call. A model moves in minutes on a slow hospital link;
// everything else is small.
constexpr absl::Duration kJoinTimeout = absl::Seconds(15);
constexpr absl::Duration kModelTimeout = absl::Minutes(30);
constexpr absl::Duration kSmallCallTimeout = absl::Seconds(30);
constexpr absl::Duration kHeartbeatTimeout = absl::Seconds(5);
// Beyond the long poll itself: time for the answer to travel back.
constexpr absl::Duration kLongPollMargin = absl::Seconds(15);

class GrpcCoordinatorClient : public CoordinatorClient {
 public:
  explicit GrpcCoordinatorClient(const CoordinatorConnection& connection)
      : address_(connection.address),
        stub_(Federation::NewStub(grpc::CreateCustomChannel(
            connection.address, MakeChannelCredentials(connection.tls),
            MakeChannelArguments(connection.server_name.empty()
                                     ? HostOf(connection.address)
                                     : connection.server_name)))) {}

  std::string Address() const override { return address_; }

  absl::StatusOr<JoinResponse> Join(const JoinRequest& request) override {
    JoinResponse response;
    auto context = NewContext(kJoinTimeout);
    // Fail at once when the coordinator is down: the agent's loop decides
    // when to try again.
    context->set_wait_for_ready(false);
    return Answer(stub_->Join(context.get(), request, &response), &response);
  }

  absl::StatusOr<Task> NextTask(const NextTaskRequest& request) override {
    Task task;
    auto context =
        NewContext(absl::Seconds(request.wait_seconds()) + kLongPollMargin);
    return Answer(stub_->NextTask(context.get(), request, &task), &task);
  }

  absl::StatusOr<TensorBundle> DownloadModel(
      const DownloadRequest& request) override {
    auto context = NewContext(kModelTimeout);
    std::unique_ptr<grpc::ClientReader<ModelChunk>> reader =
        stub_->DownloadModel(context.get(), request);
    BundleAssembler assembler;
    if (absl::Status status = ReceiveModelStream(
            *reader, *context,
            [&](const ModelChunk& chunk) { return assembler.Accept(chunk); });
        !status.ok()) {
      return status;
    }
    return assembler.Finish();
  }

  absl::StatusOr<UploadReceipt> UploadUpdate(
      const UploadHeader& header, const TensorBundle& model) override {
    auto context = NewContext(kModelTimeout);
    UploadReceipt receipt;
    std::unique_ptr<grpc::ClientWriter<UploadChunk>> writer =
        stub_->UploadUpdate(context.get(), &receipt);
    UploadChunk first;
    *first.mutable_header() = header;
    // A refused write means the server has ended the call; Finish says why.
    bool open = writer->Write(first);
    BundleSource source(&model);
    ModelChunker chunker(&source);
    UploadChunk chunk;
    while (open) {
      absl::StatusOr<bool> more = chunker.Next(chunk.mutable_chunk());
      if (!more.ok()) {
        context->TryCancel();
        writer->Finish();
        return more.status();
      }
      if (!*more) break;
      open = writer->Write(chunk);
    }
    writer->WritesDone();
    return Answer(writer->Finish(), &receipt);
  }

  absl::StatusOr<MaskingKeyResponse> SubmitMaskingKey(
      const MaskingKeyRequest& request) override {
    MaskingKeyResponse response;
    auto context = NewContext(kSmallCallTimeout);
    return Answer(stub_->SubmitMaskingKey(context.get(), request, &response),
                  &response);
  }

  absl::StatusOr<MaskingCohort> GetMaskingCohort(
      const MaskingCohortRequest& request) override {
    MaskingCohort cohort;
    auto context = NewContext(kSmallCallTimeout);
    return Answer(stub_->GetMaskingCohort(context.get(), request, &cohort),
                  &cohort);
  }

  absl::StatusOr<ReportReceipt> ReportEvaluation(
      const EvaluationReport& report) override {
    ReportReceipt receipt;
    auto context = NewContext(kSmallCallTimeout);
    return Answer(stub_->ReportEvaluation(context.get(), report, &receipt),
                  &receipt);
  }

  absl::StatusOr<HeartbeatResponse> Heartbeat(
      const HeartbeatRequest& request) override {
    HeartbeatResponse response;
    auto context = NewContext(kHeartbeatTimeout);
    return Answer(stub_->Heartbeat(context.get(), request, &response),
                  &response);
  }

  absl::StatusOr<PingResponse> Ping(absl::Duration timeout) override {
    PingRequest request;
    PingResponse response;
    auto context = NewContext(timeout);
    return Answer(stub_->Ping(context.get(), request, &response), &response);
  }

 private:
  static std::unique_ptr<grpc::ClientContext> NewContext(
      absl::Duration timeout) {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(std::chrono::system_clock::now() +
                          absl::ToChronoMilliseconds(timeout));
    return context;
  }

  // The message by pointer, not by value: the order in which a call's
  // arguments are evaluated is unspecified, and GCC built a by-value
  // parameter (moved from the still empty message) before making the call
  // that fills it, so every answer reached the agent empty.
  template <typename Message>
  static absl::StatusOr<Message> Answer(const grpc::Status& status,
                                        Message* message) {
    if (!status.ok()) return FromGrpcStatus(status);
    return std::move(*message);
  }

  const std::string address_;
  const std::unique_ptr<Federation::Stub> stub_;
};

}  // namespace

std::unique_ptr<CoordinatorClient> NewGrpcCoordinatorClient(
    const CoordinatorConnection& connection) {
  return std::make_unique<GrpcCoordinatorClient>(connection);
}

}  // namespace echofed
