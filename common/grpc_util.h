#ifndef ECHOFED_COMMON_GRPC_UTIL_H_
#define ECHOFED_COMMON_GRPC_UTIL_H_

// The few places where gRPC meets the rest of the code: status conversion,
// mutual-TLS credentials and channel settings. No services here.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/pki.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/sync_stream.h"
#include "proto/config.pb.h"
#include "proto/tensor.pb.h"

namespace echofed {

// Abseil's status codes map one-to-one onto gRPC's.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Server side: TLS with a client certificate requested. Verification of the
// client's chain happens in the service (CertificateVerifier), so that every
// refusal becomes a clear UNAUTHENTICATED status and a log line rather than
// a silent handshake failure. TLS itself still proves the client holds the
// key of the certificate it presents.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsMaterial& tls);

// Client side: verifies the coordinator against the study CA and presents
// our certificate. Empty cert/key gives a client without a certificate
// (only for tests of the refusal).
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsMaterial& tls);

// Channel settings shared by agents and the CLI: no message-size limits
// beyond what chunking needs, keepalive for long polls, the expected name of
// the coordinator certificate.
grpc::ChannelArguments MakeChannelArguments(const std::string& server_name);

// Message size allowed on both sides: slices are 1 MiB, so 64 MiB is ample
// while still bounding what a hostile peer can make us buffer.
inline constexpr int kMaxMessageBytes = 64 << 20;

// Drains a model download stream into `accept` (e.g. a ChunkAssembler).
// On the first refused chunk the call is cancelled and that refusal is
// returned; otherwise the stream's own status.
absl::Status ReceiveModelStream(
    grpc::ClientReader<ModelChunk>& reader, grpc::ClientContext& context,
    const std::function<absl::Status(const ModelChunk&)>& accept);

// The verified-or-not client certificate of a call ("" if none).
std::string PeerCertificatePem(const grpc::ServerContextBase& context);

// "host" part of "host:port".
std::string HostOf(const std::string& address);

}  // namespace echofed

#endif  // ECHOFED_COMMON_GRPC_UTIL_H_
