#include "tests/testing/dcmqrscp_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/files.h"

namespace echofed::testing {
namespace {

constexpr char kDcmqrscp[] = "/usr/bin/dcmqrscp";
constexpr char kStorescu[] = "/usr/bin/storescu";
constexpr char kStorescp[] = "/usr/bin/storescp";
constexpr int kStartAttempts = 5;

// storescu's option that proposes a transfer syntax (with the uncompressed
// ones).
const std::map<std::string, std::string> kProposeOptions = {
    {"1.2.840.10008.1.2", "-x="},      {"1.2.840.10008.1.2.1", "-x="},
    {"1.2.840.10008.1.2.4.50", "-xy"}, {"1.2.840.10008.1.2.4.70", "-xs"},
    {"1.2.840.10008.1.2.4.80", "-xt"}, {"1.2.840.10008.1.2.4.81", "-xu"},
    {"1.2.840.10008.1.2.4.90", "-xv"}, {"1.2.840.10008.1.2.4.91", "-xw"},
    {"1.2.840.10008.1.2.5", "-xr"},
};

// The Transfer Syntax UID (0002,0010) of a Part 10 file's meta header,
// which is always explicit VR little endian: tag, "UI", 16-bit length.
std::string MetaTransferSyntax(const std::string& bytes) {
  const std::string tag("\x02\x00\x10\x00UI", 6);
  const size_t at = bytes.find(tag, 132);
  if (at == std::string::npos || at + 8 > bytes.size()) return "";
  const size_t length = static_cast<uint8_t>(bytes[at + 6]) |
                        (static_cast<uint8_t>(bytes[at + 7]) << 8);
  std::string uid = bytes.substr(at + 8, length);
  while (!uid.empty() && (uid.back() == '\0' || uid.back() == ' ')) {
    uid.pop_back();
  }
  return uid;
}

bool Executable(const char* path) { return ::access(path, X_OK) == 0; }

// dcmqrscp forks one child per association; a crash or hang of "the PACS"
// must reach them too, or the open association would live on.
std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> children;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...; comm may hold spaces, so parse after ')'.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    pid_t ppid = 0;
    if (rest >> state >> ppid && ppid == parent) {
      children.push_back(static_cast<pid_t>(std::stoi(name)));
    }
  }
  return children;
}

bool Accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&address),
                                   sizeof(address)) == 0;
  ::close(fd);
  return connected;
}

std::string ReadLog(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  return text.ok() ? *text : "";
}

// Waits until the child listens on `port`; false when it exited first
// (typically: the port was taken between PickFreePort and bind).
bool WaitUntilListening(Subprocess& process, int port) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    if (!process.running()) return false;
    if (Accepts(port)) return true;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return false;
}

}  // namespace

std::string DcmtkToolsMissing() {
  for (const char* tool : {kDcmqrscp, kStorescu, kStorescp}) {
    if (!Executable(tool)) {
      return absl::StrCat(tool,
                          " is not installed (Debian package dcmtk; see "
                          "deploy/install-deps.sh)");
    }
  }
  return "";
}

int PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = 0;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<DcmqrscpServer>> DcmqrscpServer::Start(
    const Options& options) {
  if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
    return absl::FailedPreconditionError(missing);
  }
  std::unique_ptr<DcmqrscpServer> server(new DcmqrscpServer());
  server->options_ = options;
  if (absl::Status status = server->Launch(); !status.ok()) return status;
  return server;
}

absl::Status DcmqrscpServer::Launch() {
  const std::string storage = dir_.Join("storage");
  if (absl::Status status = MakeDirectories(storage); !status.ok()) {
    return status;
  }
  // dcmqrscp cannot listen on port 0, so a free port is picked and the
  // start retried when another process takes it first.
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    port_ = PickFreePort();
    std::string hosts;
    std::vector<std::string> peer_names;
    for (size_t i = 0; i < options_.allowed_peers.size(); ++i) {
      // The port is where C-MOVE would send to; 0 matches no listener.
      const std::string name = absl::StrCat("peer", i);
      absl::StrAppend(&hosts, name, " = (", options_.allowed_peers[i],
                      ", 127.0.0.1, ", PickFreePort(), ")\n");
      peer_names.push_back(name);
    }
    for (size_t i = 0; i < options_.move_destinations.size(); ++i) {
      absl::StrAppend(&hosts, "dest", i, " = (",
                      options_.move_destinations[i].ae_title, ", 127.0.0.1, ",
                      options_.move_destinations[i].port, ")\n");
    }
    const std::string peers =
        peer_names.empty() ? "ANY" : absl::StrJoin(peer_names, " ");
    const std::string config = absl::StrCat(
        "NetworkTCPPort = ", port_,
        "\nMaxPDUSize = 65536\nMaxAssociations = 16\n", "HostTable BEGIN\n",
        hosts, "HostTable END\n", "VendorTable BEGIN\nVendorTable END\n",
        "AETable BEGIN\n", options_.ae_title, " ", storage,
        " RW (1000, 1024mb) ", peers, "\n", "AETable END\n");
    const std::string config_path = dir_.Join("dcmqrscp.cfg");
    if (absl::Status status = WriteFileAtomically(config_path, config, 0644);
        !status.ok()) {
      return status;
    }
    // -dhl: peers are matched by address, not by a reverse lookup that
    // could turn 127.0.0.1 into "localhost". Forking mode: 3.6.7's single-
    // process mode ends after an association or a refused connection.
    std::vector<std::string> argv = {kDcmqrscp, "-dhl", "--log-level",
                                     "info",    "-c",   config_path};
    argv.insert(argv.end(), options_.extra_arguments.begin(),
                options_.extra_arguments.end());
    absl::StatusOr<Subprocess> process =
        Subprocess::Start(argv, dir_.Join("dcmqrscp.log"));
    if (!process.ok()) return process.status();
    process_.emplace(*std::move(process));
    if (WaitUntilListening(*process_, port_)) return absl::OkStatus();
    process_->Terminate(absl::Seconds(1));
    process_.reset();
  }
  return absl::UnavailableError(
      absl::StrCat("dcmqrscp did not start: ", Log()));
}

DcmqrscpServer::~DcmqrscpServer() { Kill(); }

void DcmqrscpServer::Kill() {
  if (!process_) return;
  for (pid_t child : ChildrenOf(process_->pid())) ::kill(child, SIGKILL);
  process_->Signal(SIGKILL);
  process_->Wait(absl::Seconds(5));
  process_.reset();
}

void DcmqrscpServer::Freeze() {
  if (!process_) return;
  process_->Signal(SIGSTOP);
  for (pid_t child : ChildrenOf(process_->pid())) ::kill(child, SIGSTOP);
}

void DcmqrscpServer::Thaw() {
  if (!process_) return;
  for (pid_t child : ChildrenOf(process_->pid())) ::kill(child, SIGCONT);
  process_->Signal(SIGCONT);
}

std::string DcmqrscpServer::Log() const {
  return ReadLog(dir_.Join("dcmqrscp.log"));
}

PacsConfig DcmqrscpServer::Config(const std::string& own_ae_title) const {
  PacsConfig config;
  config.set_peer_ae_title(options_.ae_title);
  config.set_host("127.0.0.1");
  config.set_port(static_cast<uint32_t>(port_));
  config.set_own_ae_title(own_ae_title);
  config.set_timeout_seconds(10);
  return config;
}

absl::Status DcmqrscpServer::Seed(
    const std::vector<std::string>& part10_files) {
  // storescu proposes uncompressed syntaxes unless told otherwise, and
  // would decompress (or fail on) the rest: one run per transfer syntax,
  // each proposing that syntax, so objects arrive as they are.
  std::map<std::string, std::vector<std::string>> paths_by_option;
  static int batch = 0;
  for (size_t i = 0; i < part10_files.size(); ++i) {
    const std::string syntax = MetaTransferSyntax(part10_files[i]);
    auto option = kProposeOptions.find(syntax);
    if (option == kProposeOptions.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("seed file ", i + 1, ": transfer syntax '", syntax,
                       "' has no storescu proposal option here"));
    }
    const std::string path =
        dir_.Join(absl::StrCat("seed-", batch, "-", i, ".dcm"));
    if (absl::Status status = WriteFileAtomically(path, part10_files[i], 0600);
        !status.ok()) {
      return status;
    }
    paths_by_option[option->second].push_back(path);
  }
  ++batch;
  for (const auto& [option, paths] : paths_by_option) {
    std::vector<std::string> argv = {
        kStorescu,         "-aet", "SEEDER",    "-aec",
        options_.ae_title, option, "127.0.0.1", std::to_string(port_)};
    argv.insert(argv.end(), paths.begin(), paths.end());
    const std::string log = dir_.Join("storescu.log");
    absl::StatusOr<Subprocess> process = Subprocess::Start(argv, log);
    if (!process.ok()) return process.status();
    std::optional<int> exit_code = process->Wait(absl::Seconds(60));
    if (!exit_code.has_value() || *exit_code != 0) {
      return absl::InternalError(
          absl::StrCat("storescu failed to seed dcmqrscp: ", ReadLog(log),
                       "\n--- dcmqrscp:\n", Log()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StorescpServer>> StorescpServer::Start(
    const Options& options) {
  if (std::string missing = DcmtkToolsMissing(); !missing.empty()) {
    return absl::FailedPreconditionError(missing);
  }
  std::unique_ptr<StorescpServer> server(new StorescpServer());
  server->options_ = options;
  const TempDir& dir = server->dir_;
  const std::string received = dir.Join("received");
  for (const auto& [name, text] : {std::pair{"ca.pem", options.ca_cert_pem},
                                   std::pair{"cert.pem", options.cert_pem},
                                   std::pair{"key.pem", options.key_pem}}) {
    if (absl::Status status = WriteFileAtomically(dir.Join(name), text, 0600);
        !status.ok()) {
      return status;
    }
  }
  if (absl::Status status = MakeDirectories(received); !status.ok()) {
    return status;
  }
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    server->port_ = PickFreePort();
    absl::StatusOr<Subprocess> process = Subprocess::Start(
        {kStorescp, "--log-level", "info", "-aet", options.ae_title,
         "--output-directory", received, "+tls", dir.Join("key.pem"),
         dir.Join("cert.pem"), "+cf", dir.Join("ca.pem"),
         std::to_string(server->port_)},
        dir.Join("storescp.log"));
    if (!process.ok()) return process.status();
    server->process_.emplace(*std::move(process));
    if (WaitUntilListening(*server->process_, server->port_)) return server;
    server->process_->Terminate(absl::Seconds(1));
    server->process_.reset();
  }
  return absl::UnavailableError(
      absl::StrCat("storescp did not start: ", server->Log()));
}

StorescpServer::~StorescpServer() {
  if (process_) process_->Terminate(absl::Seconds(2));
}

std::string StorescpServer::Log() const {
  return ReadLog(dir_.Join("storescp.log"));
}

std::vector<std::string> StorescpServer::ReceivedFiles() const {
  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(dir_.Join("received"), error)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  return files;
}

}  // namespace echofed::testing
