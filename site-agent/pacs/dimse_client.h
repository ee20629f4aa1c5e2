#ifndef ECHOFED_SITE_AGENT_PACS_DIMSE_CLIENT_H_
#define ECHOFED_SITE_AGENT_PACS_DIMSE_CLIENT_H_

// The PacsClient over DICOM networking (DIMSE) with DCMTK's dcmnet, and
// DICOM over TLS with dcmtls when the config has a tls block:
//   Echo              C-ECHO;
//   FindInstances     C-FIND, Study Root model, study then series then
//                     image level;
//   RetrieveInstance  C-GET at image level on the same association (the
//                     PACS sends the instance back as a C-STORE
//                     sub-operation, so the agent needs no inbound port),
//                     or with retrieve: "c-move" a C-MOVE at image level to
//                     own_ae_title, received by the agent's own storage SCP
//                     on move_port (dimse_move.h; not over TLS yet);
//   Store             C-STORE of each file with its own SOP class and
//                     transfer syntax.
// One association is kept open across calls of the same kind (a search's
// three levels, a run of retrieves) and replaced when the next call needs
// other presentation contexts; a broken one is reopened once.
//
// Timeouts (timeout_seconds, default 30) bound the TCP connect, the TLS
// handshake, association negotiation and every DIMSE message, so that a
// PACS that stops answering ends in UNAVAILABLE, never in a hang.
//
// DCMTK's own log is switched off, as in site-agent/data: its messages can
// quote patient names and IDs, and every failure comes back as a status.
// Not thread-safe (one operation at a time per client, as PacsClient says).

#include <memory>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"
#include "site-agent/pacs/pacs_client.h"

namespace echofed {

// INVALID_ARGUMENT for a config without host, port or peer AE title, an AE
// title longer than 16 characters, an unknown retrieve mode, c-move without
// move_port, or a tls block with a certificate but no key; UNIMPLEMENTED
// for c-move with a tls block; FAILED_PRECONDITION when DCMTK's data
// dictionary is missing or the TLS files cannot be read. Connects lazily:
// a PACS that is down fails the first call, not this one.
absl::StatusOr<std::unique_ptr<PacsClient>> NewDimsePacsClient(
    const PacsConfig& config);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_DIMSE_CLIENT_H_
