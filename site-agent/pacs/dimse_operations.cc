#include "site-agent/pacs/dimse_operations.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcwcache.h"
#include "dcmtk/dcmdata/dcxfer.h"
#include "dcmtk/ofstd/ofstd.h"

namespace echofed::dimse_internal {
namespace {

// High-Throughput JPEG 2000 (DICOM 2023b). DCMTK 3.6.7 predates it.
constexpr const char* kHtj2kLosslessUid = "1.2.840.10008.1.2.4.201";
constexpr const char* kHtj2kLosslessRpclUid = "1.2.840.10008.1.2.4.202";
constexpr const char* kHtj2kUid = "1.2.840.10008.1.2.4.203";

constexpr uint16_t kStatusSuccess = 0x0000;
constexpr uint16_t kStatusPending = 0xFF00;
constexpr uint16_t kStatusPendingWarning = 0xFF01;
// C-STORE-RSP "processing failure" for an instance we could not keep.
constexpr uint16_t kStatusProcessingFailure = 0x0110;

bool IsUncompressed(absl::string_view transfer_syntax) {
  return transfer_syntax == UID_LittleEndianExplicitTransferSyntax ||
         transfer_syntax == UID_LittleEndianImplicitTransferSyntax ||
         transfer_syntax == UID_BigEndianExplicitTransferSyntax;
}

bool DcmtkKnows(const char* transfer_syntax) {
  return DcmXfer(transfer_syntax).getXfer() != EXS_Unknown;
}

// Encapsulated syntaxes a PACS may hold ultrasound in, most common first.
std::vector<std::string> CompressedSyntaxes() {
  std::vector<std::string> syntaxes = {
      UID_JPEGProcess1TransferSyntax,   UID_JPEGProcess14SV1TransferSyntax,
      UID_JPEGProcess14TransferSyntax,  UID_JPEGLSLosslessTransferSyntax,
      UID_JPEGLSLossyTransferSyntax,    UID_JPEG2000LosslessOnlyTransferSyntax,
      UID_JPEG2000TransferSyntax,       UID_RLELosslessTransferSyntax,
      UID_JPEGProcess2_4TransferSyntax,
  };
  for (const char* uid :
       {kHtj2kLosslessUid, kHtj2kLosslessRpclUid, kHtj2kUid}) {
    if (DcmtkKnows(uid)) syntaxes.push_back(uid);
  }
  return syntaxes;
}

std::vector<std::string> UncompressedSyntaxes() {
  return {UID_LittleEndianExplicitTransferSyntax,
          UID_LittleEndianImplicitTransferSyntax};
}

void AddImageClass(const std::string& sop_class,
                   std::vector<ContextProposal>& proposals) {
  proposals.push_back({sop_class, UncompressedSyntaxes(), ASC_SC_ROLE_SCP});
  for (const std::string& syntax : CompressedSyntaxes()) {
    proposals.push_back({sop_class, {syntax}, ASC_SC_ROLE_SCP});
  }
}

// Structured reports hold no pixels, so uncompressed syntaxes serve them.
bool IsDocumentClass(absl::string_view sop_class) {
  return sop_class == UID_BasicTextSRStorage ||
         sop_class == UID_EnhancedSRStorage ||
         sop_class == UID_ComprehensiveSRStorage ||
         sop_class == UID_Comprehensive3DSRStorage;
}

std::string GetString(DcmItem* item, const DcmTagKey& tag) {
  OFString value;
  if (item == nullptr || item->findAndGetOFString(tag, value).bad()) return "";
  return value.c_str();
}

absl::StatusOr<std::string> SerializePart10(DcmFileFormat& file,
                                            E_TransferSyntax xfer) {
  std::string out;
  std::vector<char> buffer(64 * 1024);
  DcmOutputBufferStream stream(buffer.data(),
                               static_cast<offile_off_t>(buffer.size()));
  DcmWriteCache cache;
  file.transferInit();
  OFCondition status;
  do {
    status = file.write(stream, xfer, EET_ExplicitLength, &cache, EGL_recalcGL,
                        EPD_noChange, 0, 0, 0, EWM_fileformat);
    void* data = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(data, length);
    out.append(static_cast<const char*>(data), static_cast<size_t>(length));
  } while (status == EC_StreamNotifyClient);
  file.transferEnd();
  if (status.bad()) return absl::InternalError(status.text());
  return out;
}

bool IsFailure(uint16_t status) {
  return status != kStatusSuccess && status != kStatusPending &&
         status != kStatusPendingWarning && (status & 0xF000) != 0xB000;
}

}  // namespace

OFCondition ReceiveStore(T_ASC_Association* association, int timeout_seconds,
                         T_ASC_PresentationContextID command_context,
                         const T_DIMSE_C_StoreRQ& request,
                         absl::string_view wanted_sop_instance_uid,
                         absl::string_view source_ae_title, Receipt& receipt) {
  T_ASC_PresentationContextID data_context = command_context;
  DcmDataset* raw = nullptr;
  OFCondition condition = DIMSE_receiveDataSetInMemory(
      association, DIMSE_NONBLOCKING, timeout_seconds, &data_context, &raw,
      nullptr, nullptr);
  std::unique_ptr<DcmDataset> dataset(raw);
  if (condition.bad()) return condition;
  uint16_t status = kStatusSuccess;
  if (wanted_sop_instance_uid != request.AffectedSOPInstanceUID) {
    // Not ours to keep; acknowledged so that the PACS carries on.
    ++receipt.other_instances;
  } else {
    T_ASC_PresentationContext context;
    std::string syntax;
    if (ASC_findAcceptedPresentationContext(association->params, data_context,
                                            &context)
            .good()) {
      syntax = context.acceptedTransferSyntax;
    }
    DcmFileFormat file(dataset.release(), /*deepCopy=*/OFFalse);
    DcmMetaInfo* meta = file.getMetaInfo();
    meta->putAndInsertString(DCM_SourceApplicationEntityTitle,
                             std::string(source_ae_title).c_str());
    absl::StatusOr<std::string> bytes =
        SerializePart10(file, DcmXfer(syntax.c_str()).getXfer());
    if (bytes.ok()) {
      receipt.part10 = *std::move(bytes);
    } else {
      receipt.receive_error =
          absl::StrCat("cannot write the received instance (transfer syntax ",
                       syntax, "): ", bytes.status().message());
      status = kStatusProcessingFailure;
    }
  }
  return AnswerStore(association, command_context, request, status);
}

OFCondition AnswerStore(T_ASC_Association* association,
                        T_ASC_PresentationContextID context,
                        const T_DIMSE_C_StoreRQ& request, uint16_t status) {
  T_DIMSE_C_StoreRSP response;
  std::memset(&response, 0, sizeof(response));
  response.MessageIDBeingRespondedTo = request.MessageID;
  response.DimseStatus = status;
  response.DataSetType = DIMSE_DATASET_NULL;
  OFStandard::strlcpy(response.AffectedSOPClassUID, request.AffectedSOPClassUID,
                      sizeof(response.AffectedSOPClassUID));
  OFStandard::strlcpy(response.AffectedSOPInstanceUID,
                      request.AffectedSOPInstanceUID,
                      sizeof(response.AffectedSOPInstanceUID));
  response.opts = O_STORE_AFFECTEDSOPCLASSUID | O_STORE_AFFECTEDSOPINSTANCEUID;
  return DIMSE_sendStoreResponse(association, context, &request, &response,
                                 nullptr);
}

absl::StatusOr<std::string> RetrieveResult(absl::string_view operation,
                                           absl::string_view what,
                                           RetrieveOutcome& outcome) {
  const Receipt& receipt = outcome.receipt;
  if (!receipt.part10.empty()) return std::move(outcome.receipt.part10);
  if (!receipt.receive_error.empty()) {
    return absl::DataLossError(
        absl::StrCat(operation, " of ", what, ": ", receipt.receive_error));
  }
  if (outcome.failed > 0 || IsFailure(outcome.final_status)) {
    return absl::DataLossError(absl::StrCat(
        operation, " of ", what, " failed: ", outcome.failed,
        " failed sub-operation(s), final ", outcome.final_text,
        " (the PACS may hold it in a SOP class or transfer syntax it could "
        "not send on the accepted presentation contexts)"));
  }
  if (outcome.completed + outcome.warning + receipt.other_instances > 0) {
    return absl::DataLossError(absl::StrCat(
        operation, " of ", what, " completed without sending that instance (",
        receipt.other_instances, " other instance(s) received)"));
  }
  return absl::NotFoundError(absl::StrCat(
      operation, " of ", what, ": the PACS matched nothing (",
      outcome.final_text, "); the instance is not, or no longer, in the PACS"));
}

std::vector<ContextProposal> QueryProposals() {
  return {
      {UID_VerificationSOPClass, UncompressedSyntaxes()},
      {UID_FINDStudyRootQueryRetrieveInformationModel, UncompressedSyntaxes()},
  };
}

std::vector<ContextProposal> SessionProposals(absl::string_view sop_class_uid) {
  std::vector<ContextProposal> proposals = QueryProposals();
  for (ContextProposal& proposal : RetrieveProposals(sop_class_uid)) {
    proposals.push_back(std::move(proposal));
  }
  return proposals;
}

std::vector<std::string> StorageSopClasses(absl::string_view sop_class_uid) {
  std::vector<std::string> classes = {
      UID_UltrasoundImageStorage,
      UID_UltrasoundMultiframeImageStorage,
      UID_SecondaryCaptureImageStorage,
      UID_EnhancedUSVolumeStorage,
      UID_RETIRED_UltrasoundImageStorage,
      UID_RETIRED_UltrasoundMultiframeImageStorage,
      UID_BasicTextSRStorage,
      UID_EnhancedSRStorage,
      UID_ComprehensiveSRStorage,
      UID_Comprehensive3DSRStorage,
  };
  if (!sop_class_uid.empty() && std::find(classes.begin(), classes.end(),
                                          sop_class_uid) == classes.end()) {
    classes.emplace_back(sop_class_uid);
  }
  return classes;
}

std::vector<std::string> StorageTransferSyntaxes() {
  // Encapsulated first: a PACS proposes a compressed syntax only for what
  // it holds compressed (or when it is told to compress), so taking it
  // keeps the instance as stored; uncompressed last for everything else.
  std::vector<std::string> syntaxes = CompressedSyntaxes();
  for (std::string& syntax : UncompressedSyntaxes()) {
    syntaxes.push_back(std::move(syntax));
  }
  return syntaxes;
}

std::vector<ContextProposal> RetrieveProposals(
    absl::string_view sop_class_uid) {
  std::vector<ContextProposal> proposals = {
      {UID_GETStudyRootQueryRetrieveInformationModel, UncompressedSyntaxes()}};
  for (const std::string& sop_class : StorageSopClasses(sop_class_uid)) {
    if (IsDocumentClass(sop_class)) {
      proposals.push_back({sop_class, UncompressedSyntaxes(), ASC_SC_ROLE_SCP});
    } else {
      AddImageClass(sop_class, proposals);
    }
  }
  return proposals;
}

std::vector<ContextProposal> StoreProposals(
    const std::vector<std::unique_ptr<DcmFileFormat>>& files) {
  std::set<std::pair<std::string, std::string>> seen;
  std::vector<ContextProposal> proposals;
  for (const auto& file : files) {
    const std::string sop_class =
        GetString(file->getDataset(), DCM_SOPClassUID);
    std::string syntax = GetString(file->getMetaInfo(), DCM_TransferSyntaxUID);
    if (!seen.insert({sop_class, syntax}).second) continue;
    ContextProposal proposal{sop_class, {syntax}, ASC_SC_ROLE_DEFAULT};
    if (IsUncompressed(syntax)) {
      for (const std::string& fallback : UncompressedSyntaxes()) {
        if (fallback != syntax) proposal.transfer_syntaxes.push_back(fallback);
      }
    }
    proposals.push_back(std::move(proposal));
  }
  return proposals;
}

std::string ProposalKey(const std::vector<ContextProposal>& proposals) {
  std::string key;
  for (const ContextProposal& proposal : proposals) {
    absl::StrAppend(&key, proposal.abstract_syntax, "/",
                    static_cast<int>(proposal.role), "/",
                    absl::StrJoin(proposal.transfer_syntaxes, ","), ";");
  }
  return key;
}

absl::Status Echo(Association& association) {
  if (association.FindContext(UID_VerificationSOPClass) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(association.peer().Describe(), " does not accept C-ECHO"));
  }
  DIC_US status = 0;
  DcmDataset* detail = nullptr;
  OFCondition condition = DIMSE_echoUser(
      association.get(), association.NextMessageId(), association.block_mode(),
      association.timeout(), &status, &detail);
  std::unique_ptr<DcmDataset> detail_owner(detail);
  if (condition.bad()) return association.ExchangeFailed("C-ECHO", condition);
  if (status != kStatusSuccess) {
    return absl::UnavailableError(
        absl::StrCat(association.peer().Describe(), " answered C-ECHO with ",
                     DescribeDimseStatus(status, detail)));
  }
  return absl::OkStatus();
}

namespace {

struct FindCollector {
  std::vector<std::unique_ptr<DcmDataset>> found;
};

void CollectFindResponse(void* data, T_DIMSE_C_FindRQ* /*request*/,
                         int /*count*/, T_DIMSE_C_FindRSP* /*response*/,
                         DcmDataset* identifiers) {
  // DCMTK deletes the identifiers after the callback.
  if (identifiers == nullptr) return;
  static_cast<FindCollector*>(data)->found.push_back(
      std::make_unique<DcmDataset>(*identifiers));
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<DcmDataset>>> Find(
    Association& association, DcmDataset& keys, absl::string_view level) {
  const T_ASC_PresentationContextID context =
      association.FindContext(UID_FINDStudyRootQueryRetrieveInformationModel);
  if (context == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(association.peer().Describe(),
                     " does not offer C-FIND with the Study Root model"));
  }
  T_DIMSE_C_FindRQ request;
  std::memset(&request, 0, sizeof(request));
  request.MessageID = association.NextMessageId();
  OFStandard::strlcpy(request.AffectedSOPClassUID,
                      UID_FINDStudyRootQueryRetrieveInformationModel,
                      sizeof(request.AffectedSOPClassUID));
  request.DataSetType = DIMSE_DATASET_PRESENT;
  request.Priority = DIMSE_PRIORITY_MEDIUM;
  T_DIMSE_C_FindRSP response;
  std::memset(&response, 0, sizeof(response));
  DcmDataset* detail = nullptr;
  FindCollector collector;
  int response_count = 0;
  OFCondition condition = DIMSE_findUser(
      association.get(), context, &request, &keys, response_count,
      CollectFindResponse, &collector, association.block_mode(),
      association.timeout(), &response, &detail);
  std::unique_ptr<DcmDataset> detail_owner(detail);
  if (condition.bad()) {
    return association.ExchangeFailed(absl::StrCat("C-FIND (", level, ")"),
                                      condition);
  }
  const uint16_t status = response.DimseStatus;
  if (status == kStatusSuccess || (status & 0xF000) == 0xB000) {
    return std::move(collector.found);
  }
  const std::string message =
      absl::StrCat(association.peer().Describe(), " refused the ", level,
                   "-level C-FIND: ", DescribeDimseStatus(status, detail));
  if ((status & 0xFF00) == 0xA700) return absl::UnavailableError(message);
  return absl::FailedPreconditionError(message);
}

void SetInstanceKeys(const PacsInstance& instance, DcmDataset& keys) {
  keys.putAndInsertString(DCM_QueryRetrieveLevel, "IMAGE");
  keys.putAndInsertString(DCM_StudyInstanceUID,
                          instance.study_instance_uid.c_str());
  keys.putAndInsertString(DCM_SeriesInstanceUID,
                          instance.series_instance_uid.c_str());
  keys.putAndInsertString(DCM_SOPInstanceUID,
                          instance.sop_instance_uid.c_str());
}

absl::StatusOr<std::string> Get(Association& association,
                                const PacsInstance& instance) {
  const T_ASC_PresentationContextID context =
      association.FindContext(UID_GETStudyRootQueryRetrieveInformationModel);
  if (context == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        association.peer().Describe(),
        " does not offer C-GET with the Study Root model (ask the PACS "
        "administrators to allow it for this AE title)"));
  }
  if (!instance.sop_class_uid.empty() &&
      association.FindContext(instance.sop_class_uid) == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(association.peer().Describe(),
                     " accepted no storage context for SOP "
                     "class ",
                     instance.sop_class_uid,
                     " with this agent as SCP, so it "
                     "cannot send instance ",
                     instance.sop_instance_uid, " by C-GET"));
  }
  DcmDataset keys;
  SetInstanceKeys(instance, keys);

  T_DIMSE_Message message;
  std::memset(&message, 0, sizeof(message));
  message.CommandField = DIMSE_C_GET_RQ;
  T_DIMSE_C_GetRQ& request = message.msg.CGetRQ;
  request.MessageID = association.NextMessageId();
  OFStandard::strlcpy(request.AffectedSOPClassUID,
                      UID_GETStudyRootQueryRetrieveInformationModel,
                      sizeof(request.AffectedSOPClassUID));
  request.Priority = DIMSE_PRIORITY_MEDIUM;
  request.DataSetType = DIMSE_DATASET_PRESENT;
  OFCondition condition = DIMSE_sendMessageUsingMemoryData(
      association.get(), context, &message, nullptr, &keys, nullptr, nullptr);
  if (condition.bad()) return association.ExchangeFailed("C-GET", condition);

  RetrieveOutcome outcome;
  while (true) {
    T_DIMSE_Message incoming;
    std::memset(&incoming, 0, sizeof(incoming));
    T_ASC_PresentationContextID incoming_context = 0;
    DcmDataset* detail = nullptr;
    condition = DIMSE_receiveCommand(
        association.get(), association.block_mode(), association.timeout(),
        &incoming_context, &incoming, &detail);
    std::unique_ptr<DcmDataset> detail_owner(detail);
    if (condition.bad()) return association.ExchangeFailed("C-GET", condition);
    if (incoming.CommandField == DIMSE_C_STORE_RQ) {
      condition = ReceiveStore(
          association.get(), association.timeout(), incoming_context,
          incoming.msg.CStoreRQ, instance.sop_instance_uid,
          association.peer().called_ae_title, outcome.receipt);
      if (condition.bad()) {
        return association.ExchangeFailed("receiving an instance (C-GET)",
                                          condition);
      }
      continue;
    }
    if (incoming.CommandField != DIMSE_C_GET_RSP ||
        incoming.msg.CGetRSP.MessageIDBeingRespondedTo != request.MessageID) {
      association.MarkUnusable();
      return absl::UnavailableError(absl::StrFormat(
          "%s sent an unexpected DIMSE command 0x%04x during C-GET",
          association.peer().Describe(),
          static_cast<int>(incoming.CommandField)));
    }
    const T_DIMSE_C_GetRSP& response = incoming.msg.CGetRSP;
    if (response.DimseStatus == kStatusPending ||
        response.DimseStatus == kStatusPendingWarning) {
      continue;
    }
    outcome.final_status = response.DimseStatus;
    outcome.final_text = DescribeDimseStatus(response.DimseStatus, detail);
    if (response.opts & O_GET_NUMBEROFCOMPLETEDSUBOPERATIONS) {
      outcome.completed = response.NumberOfCompletedSubOperations;
    }
    if (response.opts & O_GET_NUMBEROFFAILEDSUBOPERATIONS) {
      outcome.failed = response.NumberOfFailedSubOperations;
    }
    if (response.opts & O_GET_NUMBEROFWARNINGSUBOPERATIONS) {
      outcome.warning = response.NumberOfWarningSubOperations;
    }
    break;
  }

  return RetrieveResult("C-GET",
                        absl::StrCat("instance ", instance.sop_instance_uid,
                                     " from ", association.peer().Describe()),
                        outcome);
}

absl::Status Store(Association& association, DcmFileFormat& file,
                   absl::string_view origin) {
  DcmDataset* dataset = file.getDataset();
  const std::string sop_class = GetString(dataset, DCM_SOPClassUID);
  const std::string sop_instance = GetString(dataset, DCM_SOPInstanceUID);
  const std::string syntax =
      GetString(file.getMetaInfo(), DCM_TransferSyntaxUID);
  T_ASC_PresentationContextID context =
      association.FindContext(sop_class, syntax);
  if (context == 0 && IsUncompressed(syntax)) {
    for (const std::string& fallback : UncompressedSyntaxes()) {
      context = association.FindContext(sop_class, fallback);
      if (context != 0) break;
    }
  }
  if (context == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        association.peer().Describe(), " refused to store ", origin,
        ": it accepts SOP class ", sop_class, " in transfer syntax ", syntax,
        " from this AE title on no presentation context"));
  }
  T_DIMSE_C_StoreRQ request;
  std::memset(&request, 0, sizeof(request));
  request.MessageID = association.NextMessageId();
  OFStandard::strlcpy(request.AffectedSOPClassUID, sop_class.c_str(),
                      sizeof(request.AffectedSOPClassUID));
  OFStandard::strlcpy(request.AffectedSOPInstanceUID, sop_instance.c_str(),
                      sizeof(request.AffectedSOPInstanceUID));
  request.DataSetType = DIMSE_DATASET_PRESENT;
  request.Priority = DIMSE_PRIORITY_MEDIUM;
  T_DIMSE_C_StoreRSP response;
  std::memset(&response, 0, sizeof(response));
  DcmDataset* detail = nullptr;
  OFCondition condition = DIMSE_storeUser(
      association.get(), context, &request, nullptr, dataset, nullptr, nullptr,
      association.block_mode(), association.timeout(), &response, &detail);
  std::unique_ptr<DcmDataset> detail_owner(detail);
  if (condition.bad()) {
    return association.ExchangeFailed(absl::StrCat("C-STORE of ", origin),
                                      condition);
  }
  if (response.DimseStatus == kStatusSuccess) return absl::OkStatus();
  const std::string status = DescribeDimseStatus(response.DimseStatus, detail);
  if ((response.DimseStatus & 0xF000) == 0xB000) {
    LogWarning("PACS stored ", origin, " with a warning: ", status);
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat(association.peer().Describe(), " refused to store ", origin,
                   " (SOP class ", sop_class, "): ", status));
}

absl::StatusOr<std::unique_ptr<DcmFileFormat>> ParsePart10(
    const std::string& bytes, absl::string_view origin) {
  if (bytes.size() < 132 || bytes.compare(128, 4, "DICM") != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": not a DICOM Part 10 file (no \"DICM\" marker at byte 128)"));
  }
  auto file = std::make_unique<DcmFileFormat>();
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  stream.setEos();
  file->transferInit();
  const OFCondition condition = file->read(stream);
  file->transferEnd();
  if (condition.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": cannot parse DICOM: ", condition.text()));
  }
  DcmDataset* dataset = file->getDataset();
  for (const auto& [tag, name] :
       {std::pair{DCM_SOPClassUID, "SOP Class UID"},
        std::pair{DCM_SOPInstanceUID, "SOP Instance UID"},
        std::pair{DCM_StudyInstanceUID, "Study Instance UID"}}) {
    if (GetString(dataset, tag).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": no ", name, " in the file"));
    }
  }
  if (GetString(file->getMetaInfo(), DCM_TransferSyntaxUID).empty()) {
    const char* syntax = DcmXfer(dataset->getOriginalXfer()).getXferID();
    file->getMetaInfo()->putAndInsertString(DCM_TransferSyntaxUID, syntax);
  }
  return file;
}

}  // namespace echofed::dimse_internal
