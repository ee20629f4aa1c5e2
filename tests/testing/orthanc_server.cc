#include "tests/testing/orthanc_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/json_writer.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "httplib.h"

namespace echofed::testing {
namespace {

constexpr int kStartAttempts = 5;
// Ports an Orthanc system service (Debian's package starts one) listens on.
const std::set<int> kReservedPorts = {4242, 8042};

// A port nobody listens on right now. Bound on every interface because
// Orthanc binds there too (RemoteAccessAllowed false only refuses remote
// peers after accepting them).
absl::StatusOr<int> FreePort() {
  for (int attempt = 0; attempt < 10; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
      return absl::InternalError(
          absl::StrCat("socket: ", std::strerror(errno)));
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    address.sin_port = 0;
    socklen_t length = sizeof(address);
    int port = -1;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) ==
            0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) ==
            0) {
      port = ntohs(address.sin_port);
    }
    ::close(fd);
    if (port > 0 && kReservedPorts.count(port) == 0) return port;
  }
  return absl::InternalError("no free TCP port found");
}

absl::StatusOr<google::protobuf::Struct> ParseJsonObject(
    const std::string& text) {
  google::protobuf::Struct object;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto parsed =
      google::protobuf::util::JsonStringToMessage(text, &object, options);
  if (!parsed.ok()) {
    return absl::InternalError(absl::StrCat(
        "Orthanc answered with something that is not a JSON object: ",
        text.substr(0, 200)));
  }
  return object;
}

std::string LogTail(const std::string& log, size_t bytes = 2000) {
  return log.size() <= bytes ? log : log.substr(log.size() - bytes);
}

}  // namespace

std::string OrthancMissing(bool dicomweb) {
  std::error_code error;
  if (!std::filesystem::exists(OrthancServer::kBinary, error)) {
    return absl::StrCat("Orthanc is not installed (", OrthancServer::kBinary,
                        "; Debian package `orthanc`, see "
                        "deploy/install-deps.sh)");
  }
  if (dicomweb &&
      !std::filesystem::exists(OrthancServer::kDicomWebPlugin, error)) {
    return absl::StrCat("Orthanc's DICOMweb plugin is not installed (",
                        OrthancServer::kDicomWebPlugin,
                        "; Debian package `orthanc-dicomweb`, see "
                        "deploy/install-deps.sh)");
  }
  return "";
}

OrthancServer::OrthancServer(const OrthancOptions& options,
                             std::unique_ptr<TempDir> folder)
    : options_(options), folder_(std::move(folder)) {
  name_ =
      absl::StrCat("echofed-test-",
                   std::filesystem::path(folder_->path()).filename().string());
}

// Killed rather than stopped: its folder is deleted next, and a graceful
// stop takes seconds per test.
OrthancServer::~OrthancServer() { Kill(); }

absl::StatusOr<std::unique_ptr<OrthancServer>> OrthancServer::Start(
    const OrthancOptions& options) {
  if (std::string why = OrthancMissing(options.dicomweb); !why.empty()) {
    return absl::FailedPreconditionError(why);
  }
  std::unique_ptr<OrthancServer> server(
      new OrthancServer(options, std::make_unique<TempDir>()));
  absl::Status last;
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    absl::StatusOr<int> http_port = FreePort();
    absl::StatusOr<int> dicom_port = FreePort();
    if (!http_port.ok()) return http_port.status();
    if (!dicom_port.ok()) return dicom_port.status();
    if (*http_port == *dicom_port) continue;
    last = server->TryStart(*http_port, *dicom_port);
    if (last.ok()) return server;
  }
  return last;
}

absl::Status OrthancServer::WriteConfiguration(const std::string& path) const {
  JsonWriter json;
  json.BeginObject();
  json.Field("Name", name_);
  json.Field("StorageDirectory", folder_->Join("storage"));
  json.Field("IndexDirectory", folder_->Join("index"));
  json.Field("HttpPort", http_port_);
  json.Field("DicomPort", dicom_port_);
  json.Field("RemoteAccessAllowed", false);
  json.Field("AuthenticationEnabled", !options_.users.empty());
  json.Key("RegisteredUsers");
  json.BeginObject();
  for (const auto& [user, password] : options_.users) {
    json.Field(user, password);
  }
  json.EndObject();
  json.Field("DicomAet", options_.ae_title);
  json.Field("DicomCheckCalledAet", true);
  // Orthanc lets anyone echo and store unless told otherwise; a hospital
  // PACS usually does not, and the clients' "unknown calling AE title"
  // message is only tested when the association is refused.
  const bool open = options_.accept_unknown_ae_titles;
  for (const char* key :
       {"DicomAlwaysAllowEcho", "DicomAlwaysAllowStore", "DicomAlwaysAllowFind",
        "DicomAlwaysAllowGet", "DicomAlwaysAllowMove"}) {
    json.Field(key, open);
  }
  json.Key("DicomModalities");
  json.BeginObject();
  for (const OrthancModality& modality : options_.modalities) {
    json.Key(modality.ae_title);
    json.BeginObject();
    json.Field("AET", modality.ae_title);
    json.Field("Host", modality.host);
    // Orthanc refuses a modality without a valid port; 104 stands in for
    // peers that never receive a C-MOVE.
    json.Field("Port", modality.port > 0 ? modality.port : 104);
    json.EndObject();
  }
  json.EndObject();
  json.Key("Plugins");
  json.BeginArray();
  if (options_.dicomweb) json.String(kDicomWebPlugin);
  json.EndArray();
  json.Key("DicomWeb");
  json.BeginObject();
  json.Field("Enable", options_.dicomweb);
  json.Field("Root", "/dicom-web/");
  json.Field("EnableWado", false);
  json.EndObject();
  // A test server: few threads, no jobs kept across restarts, no private
  // dictionary to load (each saves start-up time on a busy machine).
  json.Field("HttpThreadsCount", 8);
  json.Field("DicomThreadsCount", 2);
  json.Field("ConcurrentJobs", 1);
  json.Field("SaveJobs", false);
  json.Field("LoadPrivateDictionary", false);
  json.Field("HttpCompressionEnabled", false);
  json.EndObject();
  return WriteFileAtomically(path, json.Take(), 0600);
}

absl::Status OrthancServer::TryStart(int http_port, int dicom_port) {
  Stop();
  http_port_ = http_port;
  dicom_port_ = dicom_port;
  const std::string config = folder_->Join("orthanc.json");
  if (absl::Status written = WriteConfiguration(config); !written.ok()) {
    return written;
  }
  absl::StatusOr<Subprocess> process =
      Subprocess::Start({kBinary, "--no-jobs", config}, log_path());
  if (!process.ok()) return process.status();
  process_.emplace(std::move(*process));

  const absl::Time deadline = absl::Now() + options_.startup_timeout;
  while (absl::Now() < deadline) {
    if (!process_->running()) {
      process_.reset();
      return absl::UnavailableError(
          absl::StrCat("Orthanc exited during start-up (HTTP port ", http_port,
                       ", DICOM port ", dicom_port, "); its log ends with:\n",
                       LogTail(ReadLog())));
    }
    absl::StatusOr<std::string> system = Get("/system");
    // Another server may answer on a port we just lost to it: only our
    // own name counts.
    if (system.ok() && absl::StrContains(*system, name_)) {
      return absl::OkStatus();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Kill();
  return absl::UnavailableError(
      absl::StrCat("Orthanc did not answer GET /system within ",
                   absl::FormatDuration(options_.startup_timeout),
                   "; its log ends with:\n", LogTail(ReadLog())));
}

std::string OrthancServer::http_url() const {
  return absl::StrCat("http://127.0.0.1:", http_port_);
}

std::string OrthancServer::dicomweb_url() const {
  return absl::StrCat(http_url(), "/dicom-web");
}

std::string OrthancServer::ReadLog() const {
  absl::StatusOr<std::string> log = ReadFileToString(log_path());
  return log.ok() ? *log : "(no log)";
}

namespace {

std::unique_ptr<httplib::Client> NewClient(
    int port, const std::map<std::string, std::string>& users) {
  auto client = std::make_unique<httplib::Client>("127.0.0.1", port);
  client->set_connection_timeout(2, 0);
  client->set_read_timeout(30, 0);
  client->set_write_timeout(30, 0);
  if (!users.empty()) {
    client->set_basic_auth(users.begin()->first.c_str(),
                           users.begin()->second.c_str());
  }
  return client;
}

}  // namespace

absl::StatusOr<std::string> OrthancServer::Get(const std::string& path) {
  std::unique_ptr<httplib::Client> client =
      NewClient(http_port_, options_.users);
  httplib::Result result = client->Get(path.c_str());
  if (!result) {
    return absl::UnavailableError(absl::StrCat(
        "GET ", path, " on Orthanc: ", httplib::to_string(result.error())));
  }
  if (result->status != 200) {
    return absl::InternalError(absl::StrCat("GET ", path, " on Orthanc: HTTP ",
                                            result->status, " ",
                                            result->body.substr(0, 200)));
  }
  return result->body;
}

absl::StatusOr<std::string> OrthancServer::Upload(
    const std::string& dicom_file) {
  std::unique_ptr<httplib::Client> client =
      NewClient(http_port_, options_.users);
  httplib::Result result =
      client->Post("/instances", dicom_file, "application/dicom");
  if (!result) {
    return absl::UnavailableError(absl::StrCat(
        "POST /instances on Orthanc: ", httplib::to_string(result.error())));
  }
  if (result->status != 200) {
    return absl::InternalError(absl::StrCat("POST /instances on Orthanc: HTTP ",
                                            result->status, " ",
                                            result->body.substr(0, 200)));
  }
  absl::StatusOr<google::protobuf::Struct> answer =
      ParseJsonObject(result->body);
  if (!answer.ok()) return answer.status();
  auto id = answer->fields().find("ID");
  if (id == answer->fields().end() || id->second.string_value().empty()) {
    return absl::InternalError(absl::StrCat(
        "POST /instances on Orthanc: no ID in ", result->body.substr(0, 200)));
  }
  return id->second.string_value();
}

absl::StatusOr<int> OrthancServer::CountInstances() {
  absl::StatusOr<std::string> body = Get("/statistics");
  if (!body.ok()) return body.status();
  absl::StatusOr<google::protobuf::Struct> statistics = ParseJsonObject(*body);
  if (!statistics.ok()) return statistics.status();
  auto count = statistics->fields().find("CountInstances");
  if (count == statistics->fields().end()) {
    return absl::InternalError("GET /statistics on Orthanc: no CountInstances");
  }
  return static_cast<int>(count->second.number_value());
}

bool OrthancServer::running() { return process_ && process_->running(); }

void OrthancServer::Kill() {
  if (!process_) return;
  process_->Signal(SIGKILL);
  process_->Wait(absl::Seconds(10));
  process_.reset();
}

void OrthancServer::Stop() {
  if (!process_) return;
  process_->Terminate(absl::Seconds(10));
  process_.reset();
}

}  // namespace echofed::testing
