#ifndef ECHOFED_TESTS_TESTING_TCP_RELAY_H_
#define ECHOFED_TESTS_TESTING_TCP_RELAY_H_

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace echofed::testing {

// A TCP relay on loopback between clients and a server, which a test can
// cut like a failed network link: Cut() shuts every relayed connection down
// and resets new ones on arrival until Restore(). Bytes pass through
// untouched (TLS stays end to end).
class TcpRelay {
 public:
  // Listens on a free loopback port; relays to 127.0.0.1:target_port.
  explicit TcpRelay(int target_port);
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  int port() const { return port_; }
  void Cut();
  void Restore();
  // Connections cut, or refused during a cut, so far.
  int resets() const { return resets_.load(); }

 private:
  struct Connection {
    int client = -1;
    int server = -1;
    bool cut = false;
    std::thread upstream;
    std::thread downstream;
  };

  void AcceptLoop();
  void Pump(int from, int to);

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> cut_{false};
  std::atomic<int> resets_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_TCP_RELAY_H_
