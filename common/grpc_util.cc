#include "common/grpc_util.h"

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "proto/federation.grpc.pb.h"  // protobuf serialisation for streams

namespace echofed {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsMaterial& tls) {
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  options.pem_root_certs = tls.ca_cert;
  options.pem_key_cert_pairs.push_back({tls.key, tls.cert});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsMaterial& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_cert;
  options.pem_private_key = tls.key;
  options.pem_cert_chain = tls.cert;
  return grpc::SslCredentials(options);
}

grpc::ChannelArguments MakeChannelArguments(const std::string& server_name) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Reconnect quickly after a coordinator restart; the agent adds its own
  // backoff with jitter on top.
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  if (!server_name.empty()) args.SetSslTargetNameOverride(server_name);
  return args;
}

absl::Status ReceiveModelStream(
    grpc::ClientReader<ModelChunk>& reader, grpc::ClientContext& context,
    const std::function<absl::Status(const ModelChunk&)>& accept) {
  ModelChunk chunk;
  absl::Status failure;
  while (reader.Read(&chunk)) {
    if (!failure.ok()) continue;  // draining after a cancel
    failure = accept(chunk);
    if (!failure.ok()) context.TryCancel();
  }
  absl::Status status = FromGrpcStatus(reader.Finish());
  return failure.ok() ? status : failure;
}

std::string PeerCertificatePem(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (!auth) return "";
  std::vector<grpc::string_ref> values =
      auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME);
  if (values.empty()) return "";
  return std::string(values.front().data(), values.front().size());
}

std::string HostOf(const std::string& address) {
  if (!address.empty() && address[0] == '[') {
    size_t close = address.find(']');
    return address.substr(
        1, close == std::string::npos ? std::string::npos : close - 1);
  }
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

}  // namespace echofed
