#ifndef ECHOFED_SITE_AGENT_PACS_DIMSE_OPERATIONS_H_
#define ECHOFED_SITE_AGENT_PACS_DIMSE_OPERATIONS_H_

// Internal to the DIMSE client: the presentation contexts each kind of call
// proposes, and the DIMSE services run on an open association. Errors from
// the network mark the association unusable (Association::ExchangeFailed);
// errors the PACS reports in a DIMSE status leave it open for the next call.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdatset.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "site-agent/pacs/dimse_association.h"
#include "site-agent/pacs/pacs_client.h"

namespace echofed::dimse_internal {

// Verification and Study Root C-FIND.
std::vector<ContextProposal> QueryProposals();

// Study Root C-GET, and the storage SOP classes of ultrasound work (US
// image and multi-frame, their retired forms, Enhanced US Volume, Secondary
// Capture, the SR classes) with this side in the SCP role, each transfer
// syntax in a context of its own so that a PACS can send an instance as it
// holds it: uncompressed (explicit, implicit little endian) first, then
// JPEG baseline and lossless, JPEG-LS, JPEG 2000, RLE, and HTJ2K where the
// DCMTK build knows it (3.6.7 does not: it could not read what it asked
// for). `sop_class_uid`, when not among them, is added.
std::vector<ContextProposal> RetrieveProposals(absl::string_view sop_class_uid);

// The storage SOP classes above, with `sop_class_uid` when not among them
// (and not empty): what this side receives, by C-GET or as a C-MOVE
// destination.
std::vector<std::string> StorageSopClasses(absl::string_view sop_class_uid);
// The transfer syntaxes this side receives, in the order a storage SCP
// prefers them when a PACS proposes several in one context.
std::vector<std::string> StorageTransferSyntaxes();

// Query and retrieve together: one association serves a whole pull (echo,
// searches and C-GETs alternate patient by patient), where separate
// proposals would renegotiate twice per patient.
std::vector<ContextProposal> SessionProposals(absl::string_view sop_class_uid);

// One context per (SOP class, transfer syntax) of the files: a file's own
// syntax first, and for uncompressed ones explicit and implicit little
// endian as fallbacks.
std::vector<ContextProposal> StoreProposals(
    const std::vector<std::unique_ptr<DcmFileFormat>>& files);

// A stable key for a list of proposals: an open association serves a call
// whose proposals have the same key.
std::string ProposalKey(const std::vector<ContextProposal>& proposals);

absl::Status Echo(Association& association);

// The identifiers of every pending response of one C-FIND (Study Root).
// FAILED_PRECONDITION when the PACS refuses the query, UNAVAILABLE when it
// is out of resources.
absl::StatusOr<std::vector<std::unique_ptr<DcmDataset>>> Find(
    Association& association, DcmDataset& keys, absl::string_view level);

// The image-level identifier of one instance, for C-GET and C-MOVE.
void SetInstanceKeys(const PacsInstance& instance, DcmDataset& keys);

// C-GET of one instance at image level, received in memory and returned
// as Part 10 bytes. NOT_FOUND when the PACS matched nothing, DATA_LOSS when
// it failed to send the instance.
absl::StatusOr<std::string> Get(Association& association,
                                const PacsInstance& instance);

// What the C-STORE sub-operations of one retrieve brought.
struct Receipt {
  std::string part10;         // the wanted instance as Part 10 bytes
  std::string receive_error;  // our side failed to keep it
  int other_instances = 0;    // sent, acknowledged and dropped
};

// A retrieve's receipt and the final response of the C-GET or C-MOVE.
struct RetrieveOutcome {
  Receipt receipt;
  uint16_t final_status = 0;
  std::string final_text;
  int completed = 0;
  int failed = 0;
  int warning = 0;
};

// Reads the data set of a C-STORE request that arrived on `association`
// (a C-GET's, or one the PACS opened to this side for a C-MOVE), keeps it
// in `receipt` as Part 10 bytes when it is the wanted instance (with
// `source_ae_title` in the meta header), and answers it. A bad condition
// is the network's: the association is broken.
OFCondition ReceiveStore(T_ASC_Association* association, int timeout_seconds,
                         T_ASC_PresentationContextID command_context,
                         const T_DIMSE_C_StoreRQ& request,
                         absl::string_view wanted_sop_instance_uid,
                         absl::string_view source_ae_title, Receipt& receipt);
// Answers a C-STORE request with `status`.
OFCondition AnswerStore(T_ASC_Association* association,
                        T_ASC_PresentationContextID context,
                        const T_DIMSE_C_StoreRQ& request, uint16_t status);

// The retrieved instance, or the error the outcome means: DATA_LOSS when
// our side could not keep it, a sub-operation failed or the PACS sent
// other instances only; NOT_FOUND when it matched nothing. `operation` is
// "C-GET" or "C-MOVE", `what` names the instance and the PACS.
absl::StatusOr<std::string> RetrieveResult(absl::string_view operation,
                                           absl::string_view what,
                                           RetrieveOutcome& outcome);

// C-STORE of one parsed file. FAILED_PRECONDITION with the DIMSE status and
// error comment when the PACS refuses it or accepts none of its contexts.
absl::Status Store(Association& association, DcmFileFormat& file,
                   absl::string_view origin);

// Part 10 bytes parsed into a DcmFileFormat. INVALID_ARGUMENT when they
// are not DICOM or lack SOP Class, SOP Instance or Study Instance UID.
absl::StatusOr<std::unique_ptr<DcmFileFormat>> ParsePart10(
    const std::string& bytes, absl::string_view origin);

}  // namespace echofed::dimse_internal

#endif  // ECHOFED_SITE_AGENT_PACS_DIMSE_OPERATIONS_H_
