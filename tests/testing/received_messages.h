#ifndef ECHOFED_TESTS_TESTING_RECEIVED_MESSAGES_H_
#define ECHOFED_TESTS_TESTING_RECEIVED_MESSAGES_H_

// Lets a test see every message a real gRPC server receives, as the server
// parsed it, without touching the service code.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "grpcpp/support/server_interceptor.h"

namespace echofed::testing {

// `message` points at the parsed request; its type follows from `method`
// ("/echofed.Federation/UploadUpdate": UploadChunk, ...). Called on gRPC's
// threads: the callback guards its own state.
using ReceivedMessageCallback =
    std::function<void(const std::string& method, void* message)>;

class ReceivedMessageInterceptor : public grpc::experimental::Interceptor {
 public:
  ReceivedMessageInterceptor(std::string method,
                             const ReceivedMessageCallback* callback)
      : method_(std::move(method)), callback_(callback) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      (*callback_)(method_, methods->GetRecvMessage());
    }
    methods->Proceed();
  }

 private:
  std::string method_;
  const ReceivedMessageCallback* callback_;
};

class ReceivedMessageFactory
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit ReceivedMessageFactory(ReceivedMessageCallback callback)
      : callback_(std::move(callback)) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new ReceivedMessageInterceptor(info->method(), &callback_);
  }

 private:
  ReceivedMessageCallback callback_;
};

// For CoordinatorServerOptions::make_interceptors.
inline std::function<std::vector<
    std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>()>
ObserveReceivedMessages(ReceivedMessageCallback callback) {
  return [callback] {
    std::vector<
        std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
        factories;
    factories.push_back(std::make_unique<ReceivedMessageFactory>(callback));
    return factories;
  };
}

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_RECEIVED_MESSAGES_H_
