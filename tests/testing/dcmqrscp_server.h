#ifndef ECHOFED_TESTS_TESTING_DCMQRSCP_SERVER_H_
#define ECHOFED_TESTS_TESTING_DCMQRSCP_SERVER_H_

// Real DICOM peers for the DIMSE client's tests, from Debian's dcmtk
// package (deploy/install-deps.sh):
//   DcmqrscpServer  dcmqrscp, DCMTK's query/retrieve archive: C-ECHO,
//                   C-FIND, C-GET, C-MOVE and C-STORE on one AE title;
//   StorescpServer  storescp, a storage SCP (C-ECHO, C-STORE) that also
//                   speaks DICOM over TLS, which dcmqrscp does not.
// Each runs on a free loopback port with its configuration and storage in
// a temporary folder, and is killed by the destructor. Tests skip when the
// programs are absent (see DcmtkToolsMissing()).

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/subprocess.h"
#include "proto/config.pb.h"
#include "tests/testing/fixtures.h"

namespace echofed::testing {

// Why the DCMTK programs cannot be run ("" when they can), for GTEST_SKIP().
std::string DcmtkToolsMissing();

// A loopback TCP port that was free a moment ago (bind to 0, then close).
int PickFreePort();

class DcmqrscpServer {
 public:
  struct Options {
    std::string ae_title = "PACS";
    // Calling AE titles the archive accepts; others are rejected. Empty:
    // any calling AE title.
    std::vector<std::string> allowed_peers;
    // AE titles the archive sends C-MOVE results to (HostTable entries on
    // 127.0.0.1 with these ports); others are unknown move destinations.
    struct MoveDestination {
      std::string ae_title;
      int port = 0;
    };
    std::vector<MoveDestination> move_destinations;
    // More command-line options, e.g. "+xy" to accept JPEG baseline.
    std::vector<std::string> extra_arguments;
  };

  // Starts dcmqrscp (one child process per association) and waits until
  // it accepts connections.
  static absl::StatusOr<std::unique_ptr<DcmqrscpServer>> Start(
      const Options& options);
  ~DcmqrscpServer();

  int port() const { return port_; }
  const std::string& ae_title() const { return options_.ae_title; }
  // What the archive's log says so far (for failure messages).
  std::string Log() const;

  // A PacsConfig pointing at this archive as `own_ae_title`.
  PacsConfig Config(const std::string& own_ae_title = "ECHOFED") const;

  // C-STORE of Part 10 files with DCMTK's storescu (not with the client
  // under test), each in its own transfer syntax.
  absl::Status Seed(const std::vector<std::string>& part10_files);

  // SIGKILL to the archive and its association processes: it dies as a
  // crashed PACS does.
  void Kill();
  // SIGSTOP / SIGCONT: a PACS that hangs (keeps its connections open and
  // answers nothing).
  void Freeze();
  void Thaw();

 private:
  DcmqrscpServer() = default;
  absl::Status Launch();

  Options options_;
  TempDir dir_;
  int port_ = 0;
  std::optional<Subprocess> process_;
};

// storescp over DICOM TLS with the given PEM files (written to a temporary
// folder): accepts C-ECHO and C-STORE from clients whose certificate the CA
// signed.
class StorescpServer {
 public:
  struct Options {
    std::string ae_title = "TLSPACS";
    std::string ca_cert_pem;
    std::string cert_pem;
    std::string key_pem;
  };
  static absl::StatusOr<std::unique_ptr<StorescpServer>> Start(
      const Options& options);
  ~StorescpServer();

  int port() const { return port_; }
  const std::string& ae_title() const { return options_.ae_title; }
  std::string Log() const;
  // Files storescp has written so far.
  std::vector<std::string> ReceivedFiles() const;

 private:
  StorescpServer() = default;

  Options options_;
  TempDir dir_;
  int port_ = 0;
  std::optional<Subprocess> process_;
};

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_DCMQRSCP_SERVER_H_
