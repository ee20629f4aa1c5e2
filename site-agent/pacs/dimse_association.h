#ifndef ECHOFED_SITE_AGENT_PACS_DIMSE_ASSOCIATION_H_
#define ECHOFED_SITE_AGENT_PACS_DIMSE_ASSOCIATION_H_

// Internal to the DIMSE client (dimse_client.cc): DCMTK's network, TLS
// layer and associations behind small RAII types, and the translation of
// DCMTK conditions into statuses whose messages site IT can act on. Not
// thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dimse.h"
#include "proto/config.pb.h"

namespace echofed::dimse_internal {

// Largest PDU we receive; DCMTK's tools default to 16 KiB, which makes a
// multi-frame cine loop cost thousands of PDUs.
inline constexpr long kMaxReceivePdu = 116794;

// Where and as whom to connect.
struct PeerSettings {
  std::string host;
  int port = 0;
  std::string calling_ae_title;
  std::string called_ae_title;
  int timeout_seconds = 30;
  // Set: DICOM over TLS with these files (ca_cert required; cert and key
  // together or neither).
  bool use_tls = false;
  TlsFiles tls;

  // "host:port"
  std::string Address() const;
  // "AE 'PACS' at host:port" with " (TLS)" when secured.
  std::string Describe() const;
};

// One abstract syntax offered with its transfer syntaxes (most wanted
// first) and the role this side asks for (SCP for storage under C-GET).
struct ContextProposal {
  std::string abstract_syntax;
  std::vector<std::string> transfer_syntaxes;
  T_ASC_SC_ROLE role = ASC_SC_ROLE_DEFAULT;
};

// Plain TCP whose connections (outgoing or accepted) have socket timeouts
// and Nagle off (see dimse_association.cc).
std::unique_ptr<DcmTransportLayer> NewTimedTcpLayer(int timeout_seconds);

// Makes sure the data dictionary is loaded and DCMTK's log is silent.
// FAILED_PRECONDITION without a dictionary.
absl::Status InitializeDcmtk();

// An open association. The destructor releases it if it is still usable
// and aborts it otherwise.
class Association {
 public:
  ~Association();
  Association(const Association&) = delete;
  Association& operator=(const Association&) = delete;

  T_ASC_Association* get() { return association_; }
  const PeerSettings& peer() const { return peer_; }

  // The first accepted presentation context for the abstract syntax, with
  // that transfer syntax when it is not empty; 0 when none.
  T_ASC_PresentationContextID FindContext(
      absl::string_view abstract_syntax,
      absl::string_view transfer_syntax = "") const;
  // The transfer syntax accepted for a context ("" when unknown).
  std::string AcceptedTransferSyntax(T_ASC_PresentationContextID id) const;

  uint16_t NextMessageId();
  T_DIMSE_BlockingMode block_mode() const { return DIMSE_NONBLOCKING; }
  int timeout() const { return peer_.timeout_seconds; }

  // The failure of a DIMSE exchange as a status naming the peer, and marks
  // the association unusable. A lost connection is remembered so that the
  // caller may reopen once (see connection_lost()).
  absl::Status ExchangeFailed(absl::string_view operation,
                              const OFCondition& condition);
  // The association stays open but must not be reused (a protocol error or
  // an operation left half way).
  void MarkUnusable() { usable_ = false; }
  bool usable() const { return usable_; }
  // The last failure was the peer going away (not a timeout): worth one
  // retry on a fresh association when this one was reused.
  bool connection_lost() const { return connection_lost_; }

  // A-RELEASE; an abort when the release fails.
  void Release();

 private:
  friend class Connector;
  Association(const PeerSettings& peer, T_ASC_Association* association)
      : peer_(peer), association_(association) {}

  PeerSettings peer_;
  T_ASC_Association* association_;
  bool usable_ = true;
  bool closed_ = false;  // released
  bool connection_lost_ = false;
};

// DCMTK's network for one peer, with the TLS layer when configured.
class Connector {
 public:
  // FAILED_PRECONDITION when the TLS files cannot be loaded or do not
  // match; INTERNAL when DCMTK cannot set up its network.
  static absl::StatusOr<std::unique_ptr<Connector>> Create(
      const PeerSettings& peer);
  ~Connector();
  Connector(const Connector&) = delete;
  Connector& operator=(const Connector&) = delete;

  const PeerSettings& peer() const { return peer_; }

  // Connects and negotiates. UNAVAILABLE (refused, no answer, TLS
  // handshake), PERMISSION_DENIED (rejected by the PACS), FAILED_PRECONDITION
  // (accepted, but none of the proposed contexts).
  absl::StatusOr<std::unique_ptr<Association>> Open(
      const std::vector<ContextProposal>& proposals);

 private:
  explicit Connector(const PeerSettings& peer) : peer_(peer) {}

  PeerSettings peer_;
  T_ASC_Network* network_ = nullptr;
  std::unique_ptr<DcmTransportLayer> transport_;
};

// A DIMSE status as "0xA700 (Refused: Out of resources)"-like text with the
// error comment of the status detail, when given.
std::string DescribeDimseStatus(uint16_t status, DcmDataset* status_detail);

}  // namespace echofed::dimse_internal

#endif  // ECHOFED_SITE_AGENT_PACS_DIMSE_ASSOCIATION_H_
