#ifndef ECHOFED_TESTS_TESTING_ORTHANC_SERVER_H_
#define ECHOFED_TESTS_TESTING_ORTHANC_SERVER_H_

// A real PACS for tests: Debian's Orthanc (packages `orthanc` and
// `orthanc-dicomweb`) started as a child process on free loopback ports,
// with its database in a temporary folder. The PACS clients
// (site-agent/pacs) are tested against it over DIMSE and DICOMweb, so that
// their requests meet a server that was not written by us.
//
// Orthanc cannot be told to bind port 0, so free ports are found by
// binding port 0 ourselves and releasing it; another process may take the
// port in between, and Start() then retries with fresh ports. The default
// ports (4242, 8042), which an installed system service may hold, are never
// used.
//
// Typical use:
//
//   if (std::string why = OrthancMissing(); !why.empty()) GTEST_SKIP() << why;
//   auto orthanc = OrthancServer::Start(options);
//   ASSERT_TRUE(orthanc.ok()) << orthanc.status();
//   ASSERT_TRUE((*orthanc)->Upload(dicom_bytes).ok());
//
// Not thread-safe. The destructor kills Orthanc and removes its folder.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/subprocess.h"
#include "tests/testing/fixtures.h"

namespace echofed::testing {

// A DICOM peer the PACS knows (DicomModalities): the calling AE titles a
// test's client uses. host and port are where Orthanc sends C-MOVE results
// (the client's storage SCP); port 0 when the test does no C-MOVE.
struct OrthancModality {
  std::string ae_title;
  std::string host = "127.0.0.1";
  int port = 0;
};

struct OrthancOptions {
  // Orthanc's own (called) AE title. A wrong called AE title is rejected
  // (DicomCheckCalledAet).
  std::string ae_title = "ECHOFED_PACS";
  std::vector<OrthancModality> modalities = {{"ECHOFED"}};
  // When false, an association from an AE title not in `modalities` is
  // refused for every command (echo and store included), as a hospital
  // PACS that only serves registered peers does.
  bool accept_unknown_ae_titles = false;
  // HTTP basic authentication for the REST API and DICOMweb. Empty:
  // authentication off. The fixture's own requests use the first user.
  std::map<std::string, std::string> users;
  // Load the DICOMweb plugin (DicomWeb.Root "/dicom-web/").
  bool dicomweb = true;
  // How long Start() waits for GET /system to answer, per attempt.
  absl::Duration startup_timeout = absl::Seconds(30);
};

// Why Orthanc (or, with `dicomweb`, its DICOMweb plugin) cannot be started
// on this machine, in words for GTEST_SKIP(); empty when it can.
std::string OrthancMissing(bool dicomweb = true);

class OrthancServer {
 public:
  static constexpr char kBinary[] = "/usr/sbin/Orthanc";
  static constexpr char kDicomWebPlugin[] =
      "/usr/share/orthanc/plugins/libOrthancDicomWeb.so";

  // Starts Orthanc and waits until its REST API answers. UNAVAILABLE with
  // the end of Orthanc's log when it did not come up; FAILED_PRECONDITION
  // when it is not installed (OrthancMissing()).
  static absl::StatusOr<std::unique_ptr<OrthancServer>> Start(
      const OrthancOptions& options = {});

  ~OrthancServer();
  OrthancServer(const OrthancServer&) = delete;
  OrthancServer& operator=(const OrthancServer&) = delete;

  int http_port() const { return http_port_; }
  int dicom_port() const { return dicom_port_; }
  const std::string& ae_title() const { return options_.ae_title; }
  // "http://127.0.0.1:<port>".
  std::string http_url() const;
  // "http://127.0.0.1:<port>/dicom-web" (no trailing slash).
  std::string dicomweb_url() const;
  // Orthanc's log (stdout and stderr), for failure messages.
  std::string log_path() const { return folder_->Join("orthanc.log"); }
  std::string ReadLog() const;

  // Stores one DICOM Part 10 file through the REST API (POST /instances);
  // returns Orthanc's identifier of the instance.
  absl::StatusOr<std::string> Upload(const std::string& dicom_file);
  // GET of a REST path ("/instances"), the body on 200.
  absl::StatusOr<std::string> Get(const std::string& path);
  // Number of instances stored (GET /statistics).
  absl::StatusOr<int> CountInstances();

  bool running();
  // SIGKILL, for "the PACS went down" tests: nothing is flushed, the ports
  // close at once. Idempotent.
  void Kill();
  // SIGTERM and a wait for the exit.
  void Stop();

 private:
  OrthancServer(const OrthancOptions& options, std::unique_ptr<TempDir> folder);
  // One attempt on the given ports; UNAVAILABLE when Orthanc exited (a port
  // clash, usually) or did not answer in time.
  absl::Status TryStart(int http_port, int dicom_port);
  absl::Status WriteConfiguration(const std::string& path) const;

  OrthancOptions options_;
  std::unique_ptr<TempDir> folder_;
  std::string name_;  // Orthanc's "Name", to know /system is ours
  int http_port_ = 0;
  int dicom_port_ = 0;
  std::optional<Subprocess> process_;
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_ORTHANC_SERVER_H_
