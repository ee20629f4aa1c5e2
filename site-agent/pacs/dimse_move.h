#ifndef ECHOFED_SITE_AGENT_PACS_DIMSE_MOVE_H_
#define ECHOFED_SITE_AGENT_PACS_DIMSE_MOVE_H_

// Internal to the DIMSE client: retrieve by C-MOVE. The PACS does not send
// the instance back on our association (as for C-GET) but opens one of its
// own to the move destination, an AE title it maps to a host and port: the
// agent's storage SCP, which listens on pacs.move_port.
//
// Everything runs on the caller's thread: while a C-MOVE waits for its
// responses, the same loop accepts the PACS's associations and serves
// their C-STOREs (as DCMTK's movescu does), so that no thread and no
// shared state are needed. Between calls nobody answers on the port: a
// PACS connects only while a C-MOVE asks it to, and what it sends later on
// an association it keeps open (a release after the final response) is
// answered at the next C-MOVE. A stranger's association request is
// answered (rejected) during a C-MOVE too; one that connects and says
// nothing holds that C-MOVE up for at most timeout_seconds. Not
// thread-safe.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "site-agent/pacs/dimse_association.h"
#include "site-agent/pacs/dimse_operations.h"
#include "site-agent/pacs/pacs_client.h"

namespace echofed::dimse_internal {

struct MoveSettings {
  // Our AE title: the Move Destination, and the only called AE title the
  // SCP answers to.
  std::string own_ae_title;
  // The PACS's AE title: the only calling AE title the SCP accepts.
  std::string pacs_ae_title;
  int port = 0;
  int timeout_seconds = 30;
};

// Study Root C-MOVE next to the searches of a pull, so that one
// association serves both (C-MOVE needs no storage contexts on it).
std::vector<ContextProposal> MoveSessionProposals();

// The agent's storage SCP and the C-MOVEs that fill it. The listening
// socket lives as long as this object (one per client, opened on its first
// C-MOVE); associations the PACS leaves open between moves are reused and
// aborted by the destructor.
class MoveDestination {
 public:
  // Listens on `settings.port` on every interface. FAILED_PRECONDITION
  // when the port cannot be bound (taken, or privileged).
  static absl::StatusOr<std::unique_ptr<MoveDestination>> Listen(
      const MoveSettings& settings);
  ~MoveDestination();
  MoveDestination(const MoveDestination&) = delete;
  MoveDestination& operator=(const MoveDestination&) = delete;

  // C-MOVE of one instance at image level on `association`, with this SCP
  // as the destination; the instance as Part 10 bytes. FAILED_PRECONDITION
  // when the PACS does not know our AE title as a move destination or does
  // not offer C-MOVE; NOT_FOUND and DATA_LOSS as for C-GET (RetrieveResult);
  // UNAVAILABLE when nothing happens for timeout_seconds.
  absl::StatusOr<std::string> Move(Association& association,
                                   const PacsInstance& instance);

 private:
  // An association the PACS opened to our SCP.
  struct Incoming {
    T_ASC_Association* association = nullptr;
    std::string peer;  // "AE 'PACS' from 10.0.0.5" for messages
  };

  explicit MoveDestination(const MoveSettings& settings)
      : settings_(settings) {}

  // Answers the association request waiting on the listening socket.
  void Accept(absl::string_view sop_class_uid);
  // Reads and answers one message on an incoming association; false when
  // the association ended (released, aborted, broken).
  bool Serve(Incoming& incoming, absl::string_view wanted_sop_instance_uid,
             Receipt& receipt);
  // Serves what the incoming associations have already sent (a release
  // that follows the last C-STORE) without waiting for more.
  void ServeWaiting(absl::string_view wanted_sop_instance_uid,
                    Receipt& receipt);
  void Drop(size_t index, bool abort);

  MoveSettings settings_;
  T_ASC_Network* network_ = nullptr;
  std::unique_ptr<DcmTransportLayer> transport_;
  std::vector<std::unique_ptr<Incoming>> incoming_;
};

}  // namespace echofed::dimse_internal

#endif  // ECHOFED_SITE_AGENT_PACS_DIMSE_MOVE_H_
