#include "site-agent/pacs/dimse_move.h"

#include <poll.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/ofstd/ofstd.h"
#include "site-agent/pacs/dimse_operations.h"

namespace echofed::dimse_internal {
namespace {

constexpr uint16_t kStatusSuccess = 0x0000;
constexpr uint16_t kStatusPending = 0xFF00;
constexpr uint16_t kStatusPendingWarning = 0xFF01;
constexpr uint16_t kStatusMoveDestinationUnknown = 0xA801;
// A PACS sends one instance at a time; a few associations cover one that
// opens a fresh one per sub-operation while older ones are still closing.
constexpr size_t kMaxIncomingAssociations = 4;

// DCMTK keeps a connection's socket protected and offers only a select()
// with whole seconds over associations, which would add up to a second per
// instance; this reads the socket through a member pointer taken in a
// derived class, which the language allows.
struct SocketAccess : DcmTransportConnection {
  static DcmNativeSocketType Of(DcmTransportConnection* connection) {
    DcmNativeSocketType (DcmTransportConnection::*get)() =
        &SocketAccess::getSocket;
    return (connection->*get)();
  }
};

DcmNativeSocketType SocketOf(T_ASC_Association* association) {
  DcmTransportConnection* connection =
      DUL_getTransportConnection(association->DULassociation);
  return connection == nullptr ? DCMNET_INVALID_SOCKET
                               : SocketAccess::Of(connection);
}

// Data the transport already holds (a TLS record read ahead) or the socket
// has, without waiting.
bool HasData(T_ASC_Association* association) {
  return ASC_dataWaiting(association, 0);
}

void Destroy(T_ASC_Association*& association, bool abort) {
  if (association == nullptr) return;
  if (abort) ASC_abortAssociation(association);
  ASC_dropAssociation(association);
  ASC_destroyAssociation(&association);
}

std::string Trimmed(const char* text) {
  return std::string(absl::StripAsciiWhitespace(text));
}

}  // namespace

std::vector<ContextProposal> MoveSessionProposals() {
  std::vector<ContextProposal> proposals = QueryProposals();
  proposals.push_back({UID_MOVEStudyRootQueryRetrieveInformationModel,
                       {UID_LittleEndianExplicitTransferSyntax,
                        UID_LittleEndianImplicitTransferSyntax}});
  return proposals;
}

absl::StatusOr<std::unique_ptr<MoveDestination>> MoveDestination::Listen(
    const MoveSettings& settings) {
  if (absl::Status status = InitializeDcmtk(); !status.ok()) return status;
  std::unique_ptr<MoveDestination> destination(new MoveDestination(settings));
  // Every interface, because the PACS connects to us from wherever it
  // stands. The port is an inbound door through the site's firewall: site
  // IT should open it to the PACS's address only (the AE title check
  // below is no authentication).
  OFCondition condition =
      ASC_initializeNetwork(NET_ACCEPTOR, settings.port,
                            settings.timeout_seconds, &destination->network_);
  if (condition.bad()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the C-MOVE destination cannot listen on pacs.move_port ",
        settings.port, ": ", condition.text(),
        " (is another program on that port, or is it below 1024?)"));
  }
  destination->transport_ = NewTimedTcpLayer(settings.timeout_seconds);
  condition = ASC_setTransportLayer(destination->network_,
                                    destination->transport_.get(),
                                    /*takeoverOwnership=*/0);
  if (condition.bad()) {
    return absl::InternalError(
        absl::StrCat("DCMTK rejected the transport layer: ", condition.text()));
  }
  return destination;
}

MoveDestination::~MoveDestination() {
  while (!incoming_.empty()) Drop(incoming_.size() - 1, /*abort=*/true);
  if (network_ != nullptr) ASC_dropNetwork(&network_);
}

void MoveDestination::Drop(size_t index, bool abort) {
  Destroy(incoming_[index]->association, abort);
  incoming_.erase(incoming_.begin() + static_cast<std::ptrdiff_t>(index));
}

void MoveDestination::Accept(absl::string_view sop_class_uid) {
  T_ASC_Association* association = nullptr;
  OFCondition condition = ASC_receiveAssociation(
      network_, &association, kMaxReceivePdu, nullptr, nullptr,
      /*useSecureLayer=*/OFFalse, DUL_NOBLOCK, settings_.timeout_seconds);
  if (condition.bad()) {
    // A port scan or a peer that gave up: nothing to answer.
    Destroy(association, /*abort=*/false);
    return;
  }
  char calling[64] = {};
  char called[64] = {};
  char context_name[128] = {};
  char address[128] = {};
  ASC_getAPTitles(association->params, calling, sizeof(calling), called,
                  sizeof(called), nullptr, 0);
  ASC_getApplicationContextName(association->params, context_name,
                                sizeof(context_name));
  ASC_getPresentationAddresses(association->params, address, sizeof(address),
                               nullptr, 0);
  const std::string calling_ae = Trimmed(calling);
  const std::string called_ae = Trimmed(called);

  T_ASC_RejectParameters reject{ASC_RESULT_REJECTEDPERMANENT,
                                ASC_SOURCE_SERVICEUSER, ASC_REASON_SU_NOREASON};
  std::string why;
  if (std::strcmp(context_name, UID_StandardApplicationContext) != 0) {
    reject.reason = ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED;
    why = absl::StrCat("application context ", context_name);
  } else if (called_ae != settings_.own_ae_title) {
    reject.reason = ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED;
    why = absl::StrCat("called AE title '", called_ae, "' is not ours ('",
                       settings_.own_ae_title, "')");
  } else if (calling_ae != settings_.pacs_ae_title) {
    // Only the PACS sends us instances: anyone else on the network could
    // otherwise feed the pull objects of its own making.
    reject.reason = ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED;
    why = absl::StrCat("calling AE title '", calling_ae,
                       "' is not the PACS's ('", settings_.pacs_ae_title, "')");
  } else if (incoming_.size() >= kMaxIncomingAssociations) {
    reject = {ASC_RESULT_REJECTEDTRANSIENT,
              ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
              ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED};
    why = "too many associations at once";
  }
  if (!why.empty()) {
    LogWarning("C-MOVE destination on port ", settings_.port,
               ": association from ", address, " rejected: ", why);
    ASC_rejectAssociation(association, &reject);
    Destroy(association, /*abort=*/false);
    return;
  }

  const char* verification[] = {UID_VerificationSOPClass};
  const char* uncompressed[] = {UID_LittleEndianExplicitTransferSyntax,
                                UID_LittleEndianImplicitTransferSyntax};
  ASC_acceptContextsWithPreferredTransferSyntaxes(
      association->params, verification, 1, uncompressed, 2);
  const std::vector<std::string> classes = StorageSopClasses(sop_class_uid);
  const std::vector<std::string> syntaxes = StorageTransferSyntaxes();
  std::vector<const char*> class_ptrs;
  std::vector<const char*> syntax_ptrs;
  for (const std::string& uid : classes) class_ptrs.push_back(uid.c_str());
  for (const std::string& uid : syntaxes) syntax_ptrs.push_back(uid.c_str());
  ASC_acceptContextsWithPreferredTransferSyntaxes(
      association->params, class_ptrs.data(),
      static_cast<int>(class_ptrs.size()), syntax_ptrs.data(),
      static_cast<int>(syntax_ptrs.size()));
  ASC_setAPTitles(association->params, nullptr, nullptr,
                  settings_.own_ae_title.c_str());
  condition = ASC_acknowledgeAssociation(association);
  if (condition.bad()) {
    Destroy(association, /*abort=*/true);
    return;
  }
  auto incoming = std::make_unique<Incoming>();
  incoming->association = association;
  incoming->peer = absl::StrCat("AE '", calling_ae, "' from ", address);
  incoming_.push_back(std::move(incoming));
}

bool MoveDestination::Serve(Incoming& incoming,
                            absl::string_view wanted_sop_instance_uid,
                            Receipt& receipt) {
  T_ASC_Association* association = incoming.association;
  T_DIMSE_Message message;
  std::memset(&message, 0, sizeof(message));
  T_ASC_PresentationContextID context = 0;
  OFCondition condition =
      DIMSE_receiveCommand(association, DIMSE_NONBLOCKING,
                           settings_.timeout_seconds, &context, &message,
                           /*statusDetail=*/nullptr);
  if (condition == DUL_PEERREQUESTEDRELEASE) {
    ASC_acknowledgeRelease(association);
    return false;
  }
  if (condition.bad()) return false;  // aborted or broken: the PACS counts it
  switch (message.CommandField) {
    case DIMSE_C_STORE_RQ:
      condition = ReceiveStore(association, settings_.timeout_seconds, context,
                               message.msg.CStoreRQ, wanted_sop_instance_uid,
                               settings_.pacs_ae_title, receipt);
      break;
    case DIMSE_C_ECHO_RQ:
      // Lets site IT check the route from the PACS with its own echo.
      condition = DIMSE_sendEchoResponse(
          association, context, &message.msg.CEchoRQ, kStatusSuccess, nullptr);
      break;
    default:
      LogWarning("C-MOVE destination: ", incoming.peer,
                 absl::StrFormat(" sent DIMSE command 0x%04x; aborting",
                                 static_cast<int>(message.CommandField)));
      return false;
  }
  return condition.good();
}

void MoveDestination::ServeWaiting(absl::string_view wanted_sop_instance_uid,
                                   Receipt& receipt) {
  // The PACS releases its association to us right after (or just before)
  // the final C-MOVE response, and waits for our answer: left unanswered
  // until our next call, Orthanc held the next search for its 10 s SCU
  // timeout (a 30-patient pull took 20-40 s instead of 1). So the release
  // is waited for here, briefly; a PACS that keeps its association open is
  // served at the next C-MOVE as before.
  const absl::Time deadline = absl::Now() + absl::Milliseconds(500);
  int rounds = 0;
  while (!incoming_.empty() && rounds++ < 16) {
    std::vector<pollfd> fds;
    bool ready = false;
    for (const auto& incoming : incoming_) {
      fds.push_back({SocketOf(incoming->association), POLLIN, 0});
      if (HasData(incoming->association)) {
        fds.back().revents = POLLIN;
        ready = true;
      }
    }
    if (!ready) {
      const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      if (wait_ms <= 0) break;
      const int found =
          ::poll(fds.data(), fds.size(), static_cast<int>(wait_ms));
      if (found < 0 && errno == EINTR) continue;
      if (found <= 0) break;
    }
    for (size_t i = incoming_.size(); i-- > 0;) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      if (!Serve(*incoming_[i], wanted_sop_instance_uid, receipt)) {
        Drop(i, /*abort=*/false);
      }
    }
  }
}

absl::StatusOr<std::string> MoveDestination::Move(
    Association& association, const PacsInstance& instance) {
  const T_ASC_PresentationContextID context =
      association.FindContext(UID_MOVEStudyRootQueryRetrieveInformationModel);
  if (context == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        association.peer().Describe(),
        " does not offer C-MOVE with the Study Root model (ask the PACS "
        "administrators to allow it for this AE title, or use retrieve "
        "\"c-get\")"));
  }
  DcmDataset keys;
  SetInstanceKeys(instance, keys);

  T_DIMSE_Message message;
  std::memset(&message, 0, sizeof(message));
  message.CommandField = DIMSE_C_MOVE_RQ;
  T_DIMSE_C_MoveRQ& request = message.msg.CMoveRQ;
  request.MessageID = association.NextMessageId();
  OFStandard::strlcpy(request.AffectedSOPClassUID,
                      UID_MOVEStudyRootQueryRetrieveInformationModel,
                      sizeof(request.AffectedSOPClassUID));
  request.Priority = DIMSE_PRIORITY_MEDIUM;
  request.DataSetType = DIMSE_DATASET_PRESENT;
  OFStandard::strlcpy(request.MoveDestination, settings_.own_ae_title.c_str(),
                      sizeof(request.MoveDestination));
  OFCondition condition = DIMSE_sendMessageUsingMemoryData(
      association.get(), context, &message, nullptr, &keys, nullptr, nullptr);
  if (condition.bad()) return association.ExchangeFailed("C-MOVE", condition);

  RetrieveOutcome outcome;
  Receipt& receipt = outcome.receipt;
  const std::string& wanted = instance.sop_instance_uid;
  const absl::Duration limit = absl::Seconds(settings_.timeout_seconds);
  absl::Time deadline = absl::Now() + limit;
  T_ASC_Association* main = association.get();
  bool finished = false;
  while (!finished) {
    // One wait over the PACS's association, the listening socket and the
    // PACS's associations to us: [0] main, [1] listener, [2..] incoming.
    std::vector<pollfd> fds = {
        {SocketOf(main), POLLIN, 0},
        {DUL_networkSocket(network_->network), POLLIN, 0}};
    for (const auto& incoming : incoming_) {
      fds.push_back({SocketOf(incoming->association), POLLIN, 0});
    }
    bool ready = HasData(main);
    if (ready) fds[0].revents = POLLIN;
    for (size_t i = 0; i < incoming_.size(); ++i) {
      if (HasData(incoming_[i]->association)) {
        fds[i + 2].revents = POLLIN;
        ready = true;
      }
    }
    if (!ready) {
      const int64_t wait_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
      const int found = wait_ms <= 0 ? 0
                                     : ::poll(fds.data(), fds.size(),
                                              static_cast<int>(wait_ms));
      if (found < 0 && errno == EINTR) continue;
      if (found <= 0) {
        association.MarkUnusable();
        return absl::UnavailableError(absl::StrCat(
            "no answer from ", association.peer().Address(), " within ",
            settings_.timeout_seconds, " s during C-MOVE of instance ", wanted,
            receipt.part10.empty() && incoming_.empty()
                ? absl::StrCat(" (the PACS has not connected to port ",
                               settings_.port,
                               "; check the firewall and the move "
                               "destination's host and port at the PACS)")
                : ""));
      }
    }
    constexpr short kReadable = POLLIN | POLLHUP | POLLERR;
    // The PACS's associations to us first: it answers the C-MOVE only
    // after we answered its C-STOREs.
    for (size_t i = incoming_.size(); i-- > 0;) {
      if ((fds[i + 2].revents & kReadable) == 0) continue;
      if (!Serve(*incoming_[i], wanted, receipt)) Drop(i, /*abort=*/false);
    }
    if (fds[1].revents & kReadable) Accept(instance.sop_class_uid);
    if (fds[0].revents & kReadable) {
      T_DIMSE_Message response_message;
      std::memset(&response_message, 0, sizeof(response_message));
      T_ASC_PresentationContextID response_context = 0;
      DcmDataset* detail = nullptr;
      condition = DIMSE_receiveCommand(
          main, DIMSE_NONBLOCKING, settings_.timeout_seconds, &response_context,
          &response_message, &detail);
      std::unique_ptr<DcmDataset> detail_owner(detail);
      if (condition.bad()) {
        return association.ExchangeFailed("C-MOVE", condition);
      }
      const T_DIMSE_C_MoveRSP& response = response_message.msg.CMoveRSP;
      if (response_message.CommandField != DIMSE_C_MOVE_RSP ||
          response.MessageIDBeingRespondedTo != request.MessageID) {
        association.MarkUnusable();
        return absl::UnavailableError(absl::StrFormat(
            "%s sent an unexpected DIMSE command 0x%04x during C-MOVE",
            association.peer().Describe(),
            static_cast<int>(response_message.CommandField)));
      }
      if (response.DataSetType != DIMSE_DATASET_NULL) {
        // The failed SOP Instance UID list (or, from some archives, a data
        // set on a pending response): read so that the association stays
        // in step, then dropped.
        DcmDataset* identifiers = nullptr;
        condition = DIMSE_receiveDataSetInMemory(
            main, DIMSE_NONBLOCKING, settings_.timeout_seconds,
            &response_context, &identifiers, nullptr, nullptr);
        delete identifiers;
        if (condition.bad()) {
          return association.ExchangeFailed("C-MOVE", condition);
        }
      }
      if (response.DimseStatus != kStatusPending &&
          response.DimseStatus != kStatusPendingWarning) {
        finished = true;
        outcome.final_status = response.DimseStatus;
        outcome.final_text = DescribeDimseStatus(response.DimseStatus, detail);
        if (response.opts & O_MOVE_NUMBEROFCOMPLETEDSUBOPERATIONS) {
          outcome.completed = response.NumberOfCompletedSubOperations;
        }
        if (response.opts & O_MOVE_NUMBEROFFAILEDSUBOPERATIONS) {
          outcome.failed = response.NumberOfFailedSubOperations;
        }
        if (response.opts & O_MOVE_NUMBEROFWARNINGSUBOPERATIONS) {
          outcome.warning = response.NumberOfWarningSubOperations;
        }
      }
    }
    deadline = absl::Now() + limit;  // something happened
  }
  // dcmqrscp releases its association before the final response, Orthanc
  // may do so right after: answer what is already there so that the PACS
  // is not left waiting until our next call.
  ServeWaiting(wanted, receipt);

  if (outcome.final_status == kStatusMoveDestinationUnknown) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the PACS does not know AE title ", settings_.own_ae_title,
        " as a move destination: register it with host and port (this "
        "agent's address and pacs.move_port ",
        settings_.port, ") at ", association.peer().Describe(),
        " (it answered ", outcome.final_text, ")"));
  }
  const bool nothing_arrived = receipt.part10.empty() &&
                               receipt.receive_error.empty() &&
                               receipt.other_instances == 0;
  absl::StatusOr<std::string> result =
      RetrieveResult("C-MOVE",
                     absl::StrCat("instance ", wanted, " from ",
                                  association.peer().Describe()),
                     outcome);
  if (result.status().code() == absl::StatusCode::kDataLoss &&
      nothing_arrived) {
    // The usual causes: the PACS could not reach our port, or (Orthanc
    // 1.10 answers an unknown destination with a plain 0xC000) it does not
    // know our AE title at all.
    return absl::Status(
        result.status().code(),
        absl::StrCat(result.status().message(),
                     "; nothing arrived at this agent's port ", settings_.port,
                     ": check that the PACS knows AE title ",
                     settings_.own_ae_title,
                     " as a move destination with this host and port, and "
                     "that the firewall lets the PACS in"));
  }
  return result;
}

}  // namespace echofed::dimse_internal
