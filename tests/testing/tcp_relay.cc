#include "tests/testing/tcp_relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/log.h"

namespace echofed::testing {
namespace {

// Closing with a zero linger sends RST: the peer sees "connection reset",
// as it would when a firewall or router drops the link.
void ResetAndClose(int fd) {
  struct linger hard = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  close(fd);
}

sockaddr_in Loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

}  // namespace

TcpRelay::TcpRelay(int target_port) : target_port_(target_port) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in address = Loopback(0);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&address),
           sizeof(address)) != 0 ||
      listen(listen_fd_, 64) != 0) {
    LogError("tcp relay: cannot listen: ", errno);
    return;
  }
  socklen_t length = sizeof(address);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpRelay::~TcpRelay() {
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  Cut();
  absl::MutexLock lock(&mu_);
  for (auto& connection : connections_) {
    if (connection->upstream.joinable()) connection->upstream.join();
    if (connection->downstream.joinable()) connection->downstream.join();
    if (connection->client >= 0) close(connection->client);
    if (connection->server >= 0) close(connection->server);
  }
  if (listen_fd_ >= 0) close(listen_fd_);
}

void TcpRelay::Cut() {
  cut_ = true;
  absl::MutexLock lock(&mu_);
  for (auto& connection : connections_) {
    if (!connection->cut) {
      connection->cut = true;
      ++resets_;
    }
    // Shutting down wakes both pumps; the descriptors are closed (with a
    // reset towards the client) once the pumps are gone.
    if (connection->client >= 0) {
      struct linger hard = {1, 0};
      setsockopt(connection->client, SOL_SOCKET, SO_LINGER, &hard,
                 sizeof(hard));
      shutdown(connection->client, SHUT_RDWR);
    }
    if (connection->server >= 0) shutdown(connection->server, SHUT_RDWR);
  }
}

void TcpRelay::Restore() { cut_ = false; }

void TcpRelay::AcceptLoop() {
  while (!stopping_) {
    pollfd ready = {listen_fd_, POLLIN, 0};
    if (poll(&ready, 1, 100) <= 0) continue;
    int client = accept(listen_fd_, nullptr, nullptr);
    if (client < 0) continue;
    if (cut_) {
      ++resets_;
      ResetAndClose(client);
      continue;
    }
    int server = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in target = Loopback(target_port_);
    if (connect(server, reinterpret_cast<sockaddr*>(&target), sizeof(target)) !=
        0) {
      ResetAndClose(client);
      close(server);
      continue;
    }
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto connection = std::make_unique<Connection>();
    absl::MutexLock lock(&mu_);
    if (cut_) {  // cut while this one was being connected
      ++resets_;
      ResetAndClose(client);
      close(server);
      continue;
    }
    connection->client = client;
    connection->server = server;
    connection->upstream =
        std::thread([this, client, server] { Pump(client, server); });
    connection->downstream =
        std::thread([this, client, server] { Pump(server, client); });
    connections_.push_back(std::move(connection));
  }
}

void TcpRelay::Pump(int from, int to) {
  char buffer[1 << 16];
  while (true) {
    ssize_t got = read(from, buffer, sizeof(buffer));
    if (got <= 0) break;
    ssize_t sent = 0;
    while (sent < got) {
      // MSG_NOSIGNAL: a peer gone mid-write is an error here, not SIGPIPE.
      ssize_t n = send(to, buffer + sent, static_cast<size_t>(got - sent),
                       MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += n;
    }
    if (sent < got) break;
  }
  // One side is gone: so is the link, both ways.
  shutdown(from, SHUT_RDWR);
  shutdown(to, SHUT_RDWR);
}

}  // namespace echofed::testing
