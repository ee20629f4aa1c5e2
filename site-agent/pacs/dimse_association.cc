#include "site-agent/pacs/dimse_association.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <mutex>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/cond.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmtls/tlslayer.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/ofstd/ofstd.h"

namespace echofed::dimse_internal {
namespace {

// DCMTK bounds the TCP connect and its own reads in non-blocking mode, but
// reads the TLS handshake and the release answer on a blocking socket: a
// PACS that accepts the connection and then says nothing would hang us
// there. Socket timeouts on every connection close that gap.
//
// And Nagle off: DCMTK writes each PDV header and its body in separate
// small writes, and Debian's DCMTK leaves Nagle on, so every request waited
// for the peer's delayed ACK (40 ms on Linux): a pull of 40 instances took
// 25 s instead of 2.
void SetSocketTimeouts(DcmNativeSocketType socket, int seconds) {
  timeval limit{};
  limit.tv_sec = seconds;
  setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  int no_delay = 1;
  setsockopt(socket, IPPROTO_TCP, TCP_NODELAY, &no_delay, sizeof(no_delay));
}

// Most PACSs are DCMTK-based and leave Nagle on too: a response's command
// and data set go out as two small segments, and the second waits for our
// ACK of the first, which Linux delays up to 40 ms. Quick-ACK mode is not
// sticky (the kernel leaves it on its own), so it is asked for again
// around every read and write.
class QuickAckTcpConnection : public DcmTCPConnection {
 public:
  explicit QuickAckTcpConnection(DcmNativeSocketType socket)
      : DcmTCPConnection(socket), socket_(socket) {}
  ssize_t read(void* buffer, size_t bytes) override {
    QuickAck();
    ssize_t result = DcmTCPConnection::read(buffer, bytes);
    QuickAck();
    return result;
  }
  ssize_t write(void* buffer, size_t bytes) override {
    ssize_t result = DcmTCPConnection::write(buffer, bytes);
    QuickAck();
    return result;
  }

 private:
  void QuickAck() {
    int on = 1;
    setsockopt(socket_, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof(on));
  }
  DcmNativeSocketType socket_;
};

class TimedTcpLayer : public DcmTransportLayer {
 public:
  explicit TimedTcpLayer(int seconds) : seconds_(seconds) {}
  DcmTransportConnection* createConnection(DcmNativeSocketType socket,
                                           OFBool secure) override {
    SetSocketTimeouts(socket, seconds_);
    if (secure) return DcmTransportLayer::createConnection(socket, secure);
    return new QuickAckTcpConnection(socket);
  }

 private:
  int seconds_;
};

class TimedTlsLayer : public DcmTLSTransportLayer {
 public:
  explicit TimedTlsLayer(int seconds)
      : DcmTLSTransportLayer(NET_REQUESTOR, /*randFile=*/nullptr,
                             /*initializeOpenSSL=*/OFTrue),
        seconds_(seconds) {}
  DcmTransportConnection* createConnection(DcmNativeSocketType socket,
                                           OFBool secure) override {
    SetSocketTimeouts(socket, seconds_);
    return DcmTLSTransportLayer::createConnection(socket, secure);
  }

 private:
  int seconds_;
};

std::string RejectReason(const T_ASC_RejectParameters& reject,
                         const PeerSettings& peer) {
  switch (reject.reason) {
    case ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED:
      return absl::StrCat("called AE title '", peer.called_ae_title,
                          "' not recognised");
    case ASC_REASON_SU_CALLINGAETITLENOTRECOGNIZED:
      return absl::StrCat("calling AE title '", peer.calling_ae_title,
                          "' not recognised (register it at the PACS with "
                          "this host's address)");
    case ASC_REASON_SU_APPCONTEXTNAMENOTSUPPORTED:
      return "DICOM application context not supported";
    case ASC_REASON_SU_NOREASON:
    case ASC_REASON_SP_ACSE_NOREASON:
      return "no reason given";
    case ASC_REASON_SP_ACSE_PROTOCOLVERSIONNOTSUPPORTED:
      return "protocol version not supported";
    case ASC_REASON_SP_PRES_TEMPORARYCONGESTION:
      return "temporary congestion";
    case ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED:
      return "local limit exceeded (too many associations)";
  }
  return absl::StrFormat("reason 0x%04x", static_cast<int>(reject.reason));
}

absl::Status RejectionStatus(const T_ASC_RejectParameters& reject,
                             const PeerSettings& peer) {
  const bool permanent = reject.result == ASC_RESULT_REJECTEDPERMANENT;
  std::string source;
  switch (reject.source) {
    case ASC_SOURCE_SERVICEUSER:
      source = "the service user";
      break;
    case ASC_SOURCE_SERVICEPROVIDER_ACSE_RELATED:
      source = "the service provider (ACSE)";
      break;
    case ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED:
      source = "the service provider (presentation)";
      break;
  }
  std::string message = absl::StrCat(
      "association rejected by PACS at ", peer.Address(), ": ",
      RejectReason(reject, peer), " (rejected ",
      permanent ? "permanently" : "transiently", " by ", source, ")");
  if (reject.reason == ASC_REASON_SU_CALLEDAETITLENOTRECOGNIZED) {
    // dcmqrscp, for one, gives this reason for a calling AE title it does
    // not know; site IT should check both.
    absl::StrAppend(&message,
                    "; some archives give this reason when they do not know "
                    "the calling AE title '",
                    peer.calling_ae_title, "' from this address");
  }
  // A busy PACS is worth retrying later; every other rejection needs a
  // change of configuration on one side or the other, whatever the PACS
  // says about permanence (dcmqrscp calls an unsupported application
  // context transient).
  if (reject.source == ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED) {
    return absl::UnavailableError(message);
  }
  return absl::PermissionDeniedError(message);
}

bool IsTimeout(const OFCondition& condition) {
  return condition == DIMSE_NODATAAVAILABLE || condition == DUL_READTIMEOUT ||
         absl::StrContains(condition.text(), "(Timeout)") ||
         absl::StrContains(condition.text(), "timed out") ||
         absl::StrContains(condition.text(), "temporarily unavailable");
}

bool IsTlsFailure(const OFCondition& condition) {
  return condition.module() == OFM_dcmtls ||
         (condition.module() == OFM_dcmnet &&
          condition.code() == DULC_TLSERROR);
}

absl::Status ConnectFailure(const OFCondition& condition,
                            const PeerSettings& peer) {
  const std::string text = condition.text();
  if (IsTlsFailure(condition)) {
    return absl::UnavailableError(absl::StrCat(
        "TLS handshake with ", peer.Address(), " failed: ", text,
        " (check that the PACS port speaks DICOM over TLS, that the "
        "hospital CA file signed the PACS's certificate, and that the PACS "
        "trusts this agent's certificate)"));
  }
  if (condition.module() == OFM_dcmnet &&
      condition.code() == DULC_UNKNOWNHOST) {
    return absl::UnavailableError(
        absl::StrCat("PACS host '", peer.host, "' not found (", text, ")"));
  }
  if (IsTimeout(condition)) {
    return absl::UnavailableError(
        absl::StrCat("no answer from ", peer.Address(), " within ",
                     peer.timeout_seconds, " s (", text, ")"));
  }
  if (absl::StrContains(text, "refused")) {
    return absl::UnavailableError(
        absl::StrCat("connection refused by ", peer.Address(),
                     ": no DICOM service listens on that port"));
  }
  if (condition == DUL_PEERABORTEDASSOCIATION ||
      condition == DUL_NETWORKCLOSED) {
    return absl::UnavailableError(absl::StrCat(
        "PACS at ", peer.Address(),
        " closed the connection during association negotiation",
        peer.use_tls ? "" : " (does that port expect DICOM over TLS?)", ": ",
        text));
  }
  return absl::UnavailableError(absl::StrCat("cannot open an association with ",
                                             peer.Describe(), ": ", text));
}

absl::Status LoadTls(TimedTlsLayer& layer, const TlsFiles& files) {
  auto failed = [](absl::string_view what, const std::string& path,
                   const OFCondition& condition) {
    return absl::FailedPreconditionError(absl::StrCat(
        "PACS TLS: cannot load ", what, " '", path, "': ", condition.text()));
  };
  OFCondition condition = layer.setTLSProfile(TSP_Profile_BCP195_ND);
  if (condition.bad()) {
    return absl::InternalError(absl::StrCat(
        "PACS TLS: BCP 195 profile not available: ", condition.text()));
  }
  condition = layer.activateCipherSuites();
  if (condition.bad()) {
    return absl::InternalError(
        absl::StrCat("PACS TLS: cipher suites: ", condition.text()));
  }
  condition = layer.addTrustedCertificateFile(files.ca_cert().c_str(),
                                              DCF_Filetype_PEM);
  if (condition.bad())
    return failed("CA certificate", files.ca_cert(), condition);
  if (!files.cert().empty()) {
    condition =
        layer.setCertificateFile(files.cert().c_str(), DCF_Filetype_PEM);
    if (condition.bad()) return failed("certificate", files.cert(), condition);
    condition = layer.setPrivateKeyFile(files.key().c_str(), DCF_Filetype_PEM);
    if (condition.bad()) return failed("private key", files.key(), condition);
    if (!layer.checkPrivateKeyMatchesCertificate()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "PACS TLS: private key '", files.key(),
          "' does not belong to certificate '", files.cert(), "'"));
    }
  }
  layer.setCertificateVerification(DCV_requireCertificate);
  return absl::OkStatus();
}

}  // namespace

std::unique_ptr<DcmTransportLayer> NewTimedTcpLayer(int timeout_seconds) {
  return std::make_unique<TimedTcpLayer>(timeout_seconds);
}

std::string PeerSettings::Address() const {
  return absl::StrCat(host, ":", port);
}

std::string PeerSettings::Describe() const {
  return absl::StrCat("AE '", called_ae_title, "' at ", Address(),
                      use_tls ? " (TLS)" : "");
}

absl::Status InitializeDcmtk() {
  static std::once_flag once;
  std::call_once(once, [] {
    // As in site-agent/data: DCMTK's messages can quote element values
    // (a patient's name in a dumped identifier), and everything a caller
    // needs comes back in the status instead.
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
  });
  if (!dcmDataDict.isDictionaryLoaded()) {
    return absl::FailedPreconditionError(
        "DCMTK's DICOM data dictionary is not loaded (install libdcmtk's "
        "dicom.dic or set DCMDICTPATH)");
  }
  return absl::OkStatus();
}

Association::~Association() {
  if (association_ == nullptr) return;
  if (!closed_) {
    if (usable_) {
      Release();
    } else {
      // After a failure the peer's state is unknown: an A-ABORT ends the
      // association without waiting for an answer that may never come.
      ASC_abortAssociation(association_);
    }
  }
  ASC_dropAssociation(association_);
  ASC_destroyAssociation(&association_);
}

void Association::Release() {
  if (association_ == nullptr || closed_) return;
  closed_ = true;
  usable_ = false;
  if (ASC_releaseAssociation(association_).bad()) {
    ASC_abortAssociation(association_);
  }
}

T_ASC_PresentationContextID Association::FindContext(
    absl::string_view abstract_syntax,
    absl::string_view transfer_syntax) const {
  T_ASC_Parameters* params = association_->params;
  const int count = ASC_countPresentationContexts(params);
  for (int i = 0; i < count; ++i) {
    T_ASC_PresentationContext context;
    if (ASC_getPresentationContext(params, i, &context).bad()) continue;
    if (context.resultReason != ASC_P_ACCEPTANCE) continue;
    if (abstract_syntax != context.abstractSyntax) continue;
    if (!transfer_syntax.empty() &&
        transfer_syntax != context.acceptedTransferSyntax) {
      continue;
    }
    return context.presentationContextID;
  }
  return 0;
}

std::string Association::AcceptedTransferSyntax(
    T_ASC_PresentationContextID id) const {
  T_ASC_PresentationContext context;
  if (ASC_findAcceptedPresentationContext(association_->params, id, &context)
          .bad()) {
    return "";
  }
  return context.acceptedTransferSyntax;
}

uint16_t Association::NextMessageId() { return association_->nextMsgID++; }

absl::Status Association::ExchangeFailed(absl::string_view operation,
                                         const OFCondition& condition) {
  usable_ = false;
  if (IsTimeout(condition)) {
    connection_lost_ = false;
    return absl::UnavailableError(absl::StrCat(
        "no answer from ", peer_.Address(), " within ", peer_.timeout_seconds,
        " s during ", operation, " (", condition.text(), ")"));
  }
  connection_lost_ = true;
  return absl::UnavailableError(absl::StrCat(
      operation, " with ", peer_.Describe(), " failed: ", condition.text()));
}

Connector::~Connector() {
  if (network_ != nullptr) ASC_dropNetwork(&network_);
}

absl::StatusOr<std::unique_ptr<Connector>> Connector::Create(
    const PeerSettings& peer) {
  if (absl::Status status = InitializeDcmtk(); !status.ok()) return status;
  std::unique_ptr<Connector> connector(new Connector(peer));
  OFCondition condition = ASC_initializeNetwork(
      NET_REQUESTOR, 0, peer.timeout_seconds, &connector->network_);
  if (condition.bad()) {
    return absl::InternalError(absl::StrCat(
        "DCMTK cannot initialise its network: ", condition.text()));
  }
  if (peer.use_tls) {
    auto tls = std::make_unique<TimedTlsLayer>(peer.timeout_seconds);
    if (!*tls) {
      return absl::InternalError("PACS TLS: OpenSSL context not created");
    }
    if (absl::Status status = LoadTls(*tls, peer.tls); !status.ok()) {
      return status;
    }
    connector->transport_ = std::move(tls);
  } else {
    connector->transport_ = NewTimedTcpLayer(peer.timeout_seconds);
  }
  condition =
      ASC_setTransportLayer(connector->network_, connector->transport_.get(),
                            /*takeoverOwnership=*/0);
  if (condition.bad()) {
    return absl::InternalError(
        absl::StrCat("DCMTK rejected the transport layer: ", condition.text()));
  }
  return connector;
}

absl::StatusOr<std::unique_ptr<Association>> Connector::Open(
    const std::vector<ContextProposal>& proposals) {
  if (proposals.empty() || proposals.size() > 128) {
    return absl::InternalError(absl::StrCat("DIMSE: ", proposals.size(),
                                            " presentation contexts (1..128)"));
  }
  T_ASC_Parameters* params = nullptr;
  OFCondition condition =
      ASC_createAssociationParameters(&params, kMaxReceivePdu);
  if (condition.bad()) {
    return absl::InternalError(absl::StrCat(
        "DCMTK cannot create association parameters: ", condition.text()));
  }
  ASC_setAPTitles(params, peer_.calling_ae_title.c_str(),
                  peer_.called_ae_title.c_str(), nullptr);
  ASC_setTransportLayerType(params, peer_.use_tls ? OFTrue : OFFalse);
  ASC_setPresentationAddresses(params, OFStandard::getHostName().c_str(),
                               peer_.Address().c_str());
  T_ASC_PresentationContextID id = 1;
  for (const ContextProposal& proposal : proposals) {
    std::vector<const char*> syntaxes;
    for (const std::string& uid : proposal.transfer_syntaxes) {
      syntaxes.push_back(uid.c_str());
    }
    condition = ASC_addPresentationContext(
        params, id, proposal.abstract_syntax.c_str(), syntaxes.data(),
        static_cast<int>(syntaxes.size()), proposal.role);
    if (condition.bad()) {
      ASC_destroyAssociationParameters(&params);
      return absl::InternalError(
          absl::StrCat("DCMTK refused presentation context ",
                       proposal.abstract_syntax, ": ", condition.text()));
    }
    id += 2;
  }

  // Process-wide in DCMTK; set right before each connect so that clients
  // with different timeouts (one at a time) each get their own.
  dcmConnectionTimeout.set(peer_.timeout_seconds);
  T_ASC_Association* raw = nullptr;
  condition = ASC_requestAssociation(network_, params, &raw, nullptr, nullptr,
                                     DUL_NOBLOCK, peer_.timeout_seconds);
  if (condition.bad()) {
    absl::Status status;
    if (condition == DUL_ASSOCIATIONREJECTED) {
      T_ASC_RejectParameters reject;
      ASC_getRejectParameters(params, &reject);
      status = RejectionStatus(reject, peer_);
    } else {
      status = ConnectFailure(condition, peer_);
    }
    if (raw != nullptr) {
      ASC_dropAssociation(raw);
      ASC_destroyAssociation(&raw);  // frees params too
    } else {
      ASC_destroyAssociationParameters(&params);
    }
    return status;
  }
  std::unique_ptr<Association> association(new Association(peer_, raw));
  if (ASC_countAcceptedPresentationContexts(params) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        peer_.Describe(),
        " accepted the association but none of the proposed services "
        "(its configuration must allow this AE title the needed SOP "
        "classes)"));
  }
  return association;
}

std::string DescribeDimseStatus(uint16_t status, DcmDataset* status_detail) {
  std::string meaning;
  if (status == 0x0000) {
    meaning = "success";
  } else if (status == 0xFF00 || status == 0xFF01) {
    meaning = "pending";
  } else if (status == 0xFE00) {
    meaning = "cancelled";
  } else if (status == 0x0122) {
    meaning = "SOP class not supported";
  } else if (status == 0x0124) {
    meaning = "not authorised";
  } else if ((status & 0xFF00) == 0xA700) {
    meaning = "refused: out of resources";
  } else if (status == 0xA801) {
    meaning = "refused: move destination unknown";
  } else if ((status & 0xFF00) == 0xA900) {
    meaning = "error: data set does not match SOP class";
  } else if ((status & 0xF000) == 0xC000) {
    meaning = "error: cannot understand / unable to process";
  } else if ((status & 0xF000) == 0xB000 || status == 0x0001 ||
             status == 0x0107 || status == 0x0116) {
    meaning = "warning";
  } else {
    meaning = "failure";
  }
  std::string text = absl::StrFormat("status 0x%04X (%s)", status, meaning);
  OFString comment;
  if (status_detail != nullptr &&
      status_detail->findAndGetOFString(DCM_ErrorComment, comment).good() &&
      !comment.empty()) {
    absl::StrAppend(&text, ": ", comment.c_str());
  }
  return text;
}

}  // namespace echofed::dimse_internal
