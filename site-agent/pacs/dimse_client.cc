#include "site-agent/pacs/dimse_client.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "site-agent/pacs/dimse_association.h"
#include "site-agent/pacs/dimse_move.h"
#include "site-agent/pacs/dimse_operations.h"

namespace echofed {
namespace {

using dimse_internal::Association;
using dimse_internal::Connector;
using dimse_internal::ContextProposal;
using dimse_internal::MoveDestination;
using dimse_internal::MoveSettings;
using dimse_internal::PeerSettings;

constexpr int kDefaultTimeoutSeconds = 30;
constexpr size_t kMaxAeTitleLength = 16;

std::string GetString(DcmItem& item, const DcmTagKey& tag) {
  OFString value;
  if (item.findAndGetOFString(tag, value).bad()) return "";
  return std::string(absl::StripAsciiWhitespace(value.c_str()));
}

absl::Status CheckAeTitle(absl::string_view field, const std::string& title) {
  if (title.empty() || title.size() > kMaxAeTitleLength ||
      absl::StrContains(title, '\\') ||
      absl::StripAsciiWhitespace(title) != title) {
    return absl::InvalidArgumentError(
        absl::StrCat("pacs.", field, " '", title,
                     "': an AE title has 1 to 16 characters, no backslash and "
                     "no leading or trailing spaces"));
  }
  return absl::OkStatus();
}

// A key that must match one patient exactly: DICOM matching would read '*'
// and '?' as wildcards and '\' as a list, and an empty key matches every
// patient in the archive.
absl::Status CheckSingleValueKey(absl::string_view name,
                                 const std::string& value) {
  if (value.empty() || value.find_first_of("*?\\") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("PACS query: ", name, " '", value,
                     "' must be one exact value (no '*', '?' or '\\')"));
  }
  return absl::OkStatus();
}

absl::Status CheckDate(absl::string_view name, const std::string& date) {
  if (date.empty()) return absl::OkStatus();
  int unused = 0;
  if (date.size() != 8 || !absl::SimpleAtoi(date, &unused) ||
      date.find_first_not_of("0123456789") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "PACS query: ", name, " '", date, "' is not a DICOM date YYYYMMDD"));
  }
  return absl::OkStatus();
}

bool InDateRange(const std::string& date, const PacsPatientQuery& query) {
  // A study without a date cannot be shown to be outside the range; the
  // PACS matched it, so it stays.
  if (date.empty()) return true;
  if (!query.study_date_from.empty() && date < query.study_date_from) {
    return false;
  }
  return query.study_date_to.empty() || date <= query.study_date_to;
}

class DimsePacsClient : public PacsClient {
 public:
  // `move` set: retrieve by C-MOVE to our own storage SCP.
  DimsePacsClient(std::unique_ptr<Connector> connector,
                  std::optional<MoveSettings> move)
      : connector_(std::move(connector)), move_(std::move(move)) {}

  std::string Describe() const override {
    return connector_->peer().Describe();
  }

  absl::Status Echo() override {
    return Run(SessionProposals(""), [](Association& association) {
      return dimse_internal::Echo(association);
    });
  }

  absl::StatusOr<std::vector<PacsInstance>> FindInstances(
      const PacsPatientQuery& query) override;

  absl::StatusOr<std::string> RetrieveInstance(
      const PacsInstance& instance) override;

  absl::Status Store(const std::vector<std::string>& dicom_files) override;

 private:
  // What a pull's association proposes: searches with C-GET and its
  // storage contexts, or searches with C-MOVE.
  std::vector<ContextProposal> SessionProposals(
      absl::string_view sop_class_uid) const {
    return move_.has_value() ? dimse_internal::MoveSessionProposals()
                             : dimse_internal::SessionProposals(sop_class_uid);
  }

  // Runs `work` on an association with these proposals: the open one when
  // it was negotiated for the same proposals and is still usable, else a
  // new one. A reused association that turns out to be gone (the PACS
  // closed it while idle, or restarted) is replaced once; a fresh one is
  // never retried, so a PACS that is down fails at once.
  absl::Status Run(const std::vector<ContextProposal>& proposals,
                   const std::function<absl::Status(Association&)>& work);

  absl::Status FindOnAssociation(Association& association,
                                 const PacsPatientQuery& query,
                                 std::vector<PacsInstance>& found);

  std::unique_ptr<Connector> connector_;
  std::optional<MoveSettings> move_;
  // Our storage SCP for C-MOVE: listening from the first C-MOVE on until
  // the client goes, so that a pull does not rebind the port per instance.
  std::unique_ptr<MoveDestination> move_destination_;
  std::unique_ptr<Association> association_;
  std::string association_key_;
};

absl::Status DimsePacsClient::Run(
    const std::vector<ContextProposal>& proposals,
    const std::function<absl::Status(Association&)>& work) {
  const std::string key = dimse_internal::ProposalKey(proposals);
  bool reused = association_ != nullptr && association_->usable() &&
                association_key_ == key;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!reused) {
      association_.reset();  // releases the old one first
      absl::StatusOr<std::unique_ptr<Association>> opened =
          connector_->Open(proposals);
      if (!opened.ok()) return opened.status();
      association_ = *std::move(opened);
      association_key_ = key;
    }
    absl::Status status = work(*association_);
    const bool lost = association_->connection_lost();
    if (!association_->usable()) association_.reset();
    if (status.ok() || !reused || !lost) return status;
    reused = false;
  }
  return absl::InternalError("unreachable");
}

absl::StatusOr<std::vector<PacsInstance>> DimsePacsClient::FindInstances(
    const PacsPatientQuery& query) {
  if (query.patient_id.empty() == query.accession_number.empty()) {
    return absl::InvalidArgumentError(
        "PACS query: give exactly one of PatientID and AccessionNumber");
  }
  if (!query.patient_id.empty()) {
    if (absl::Status s = CheckSingleValueKey("PatientID", query.patient_id);
        !s.ok()) {
      return s;
    }
  } else if (absl::Status s =
                 CheckSingleValueKey("AccessionNumber", query.accession_number);
             !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDate("study_date_from", query.study_date_from);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckDate("study_date_to", query.study_date_to);
      !s.ok()) {
    return s;
  }
  std::vector<PacsInstance> found;
  absl::Status status =
      Run(SessionProposals(""), [&](Association& association) {
        found.clear();
        return FindOnAssociation(association, query, found);
      });
  if (!status.ok()) return status;
  std::sort(found.begin(), found.end(),
            [](const PacsInstance& a, const PacsInstance& b) {
              return std::tie(a.study_date, a.study_instance_uid,
                              a.series_instance_uid, a.instance_number,
                              a.sop_instance_uid) <
                     std::tie(b.study_date, b.study_instance_uid,
                              b.series_instance_uid, b.instance_number,
                              b.sop_instance_uid);
            });
  return found;
}

absl::Status DimsePacsClient::FindOnAssociation(
    Association& association, const PacsPatientQuery& query,
    std::vector<PacsInstance>& found) {
  DcmDataset study_keys;
  study_keys.putAndInsertString(DCM_QueryRetrieveLevel, "STUDY");
  study_keys.putAndInsertString(DCM_PatientID, query.patient_id.c_str());
  study_keys.putAndInsertString(DCM_AccessionNumber,
                                query.accession_number.c_str());
  study_keys.putAndInsertString(DCM_StudyInstanceUID, "");
  std::string date_range;
  if (!query.study_date_from.empty() || !query.study_date_to.empty()) {
    date_range = absl::StrCat(query.study_date_from, "-", query.study_date_to);
  }
  study_keys.putAndInsertString(DCM_StudyDate, date_range.c_str());
  absl::StatusOr<std::vector<std::unique_ptr<DcmDataset>>> studies =
      dimse_internal::Find(association, study_keys, "study");
  if (!studies.ok()) return studies.status();

  for (const auto& study : *studies) {
    PacsInstance base;
    base.patient_id = GetString(*study, DCM_PatientID);
    base.accession_number = GetString(*study, DCM_AccessionNumber);
    base.study_instance_uid = GetString(*study, DCM_StudyInstanceUID);
    base.study_date = GetString(*study, DCM_StudyDate);
    if (base.study_instance_uid.empty()) continue;
    // Pulling another patient's images is the worst failure a pull can
    // have, so a PACS answer that does not match the key exactly (sloppy
    // matching, a key it ignored) is dropped rather than trusted.
    if (!query.patient_id.empty() && !base.patient_id.empty() &&
        base.patient_id != query.patient_id) {
      continue;
    }
    if (!query.accession_number.empty() && !base.accession_number.empty() &&
        base.accession_number != query.accession_number) {
      continue;
    }
    if (!InDateRange(base.study_date, query)) continue;

    DcmDataset series_keys;
    series_keys.putAndInsertString(DCM_QueryRetrieveLevel, "SERIES");
    series_keys.putAndInsertString(DCM_StudyInstanceUID,
                                   base.study_instance_uid.c_str());
    series_keys.putAndInsertString(DCM_SeriesInstanceUID, "");
    series_keys.putAndInsertString(DCM_Modality, query.modality.c_str());
    absl::StatusOr<std::vector<std::unique_ptr<DcmDataset>>> series_list =
        dimse_internal::Find(association, series_keys, "series");
    if (!series_list.ok()) return series_list.status();

    for (const auto& series : *series_list) {
      PacsInstance series_base = base;
      series_base.series_instance_uid =
          GetString(*series, DCM_SeriesInstanceUID);
      series_base.modality = GetString(*series, DCM_Modality);
      if (series_base.series_instance_uid.empty()) continue;
      // Some archives ignore the Modality key; the answer says what the
      // series is.
      if (!query.modality.empty() && !series_base.modality.empty() &&
          series_base.modality != query.modality) {
        continue;
      }
      DcmDataset image_keys;
      image_keys.putAndInsertString(DCM_QueryRetrieveLevel, "IMAGE");
      image_keys.putAndInsertString(DCM_StudyInstanceUID,
                                    base.study_instance_uid.c_str());
      image_keys.putAndInsertString(DCM_SeriesInstanceUID,
                                    series_base.series_instance_uid.c_str());
      image_keys.putAndInsertString(DCM_SOPInstanceUID, "");
      image_keys.putAndInsertString(DCM_SOPClassUID, "");
      image_keys.putAndInsertString(DCM_InstanceNumber, "");
      absl::StatusOr<std::vector<std::unique_ptr<DcmDataset>>> images =
          dimse_internal::Find(association, image_keys, "image");
      if (!images.ok()) return images.status();
      for (const auto& image : *images) {
        PacsInstance instance = series_base;
        instance.sop_instance_uid = GetString(*image, DCM_SOPInstanceUID);
        instance.sop_class_uid = GetString(*image, DCM_SOPClassUID);
        if (instance.sop_instance_uid.empty()) continue;
        int number = 0;
        if (absl::SimpleAtoi(GetString(*image, DCM_InstanceNumber), &number)) {
          instance.instance_number = number;
        }
        found.push_back(std::move(instance));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> DimsePacsClient::RetrieveInstance(
    const PacsInstance& instance) {
  if (instance.study_instance_uid.empty() ||
      instance.series_instance_uid.empty() ||
      instance.sop_instance_uid.empty()) {
    return absl::InvalidArgumentError(
        "PACS retrieve: the instance needs its Study, Series and SOP "
        "Instance UIDs");
  }
  if (move_.has_value() && move_destination_ == nullptr) {
    absl::StatusOr<std::unique_ptr<MoveDestination>> listening =
        MoveDestination::Listen(*move_);
    if (!listening.ok()) return listening.status();
    move_destination_ = *std::move(listening);
  }
  std::string part10;
  absl::Status status =
      Run(SessionProposals(instance.sop_class_uid),
          [&](Association& association) -> absl::Status {
            absl::StatusOr<std::string> got =
                move_destination_ != nullptr
                    ? move_destination_->Move(association, instance)
                    : dimse_internal::Get(association, instance);
            if (!got.ok()) return got.status();
            part10 = *std::move(got);
            return absl::OkStatus();
          });
  if (!status.ok()) return status;
  return part10;
}

absl::Status DimsePacsClient::Store(
    const std::vector<std::string>& dicom_files) {
  if (dicom_files.empty()) return absl::OkStatus();
  std::vector<std::unique_ptr<DcmFileFormat>> files;
  for (size_t i = 0; i < dicom_files.size(); ++i) {
    absl::StatusOr<std::unique_ptr<DcmFileFormat>> file =
        dimse_internal::ParsePart10(dicom_files[i],
                                    absl::StrCat("file ", i + 1));
    if (!file.ok()) return file.status();
    files.push_back(*std::move(file));
  }
  return Run(dimse_internal::StoreProposals(files),
             [&](Association& association) -> absl::Status {
               for (size_t i = 0; i < files.size(); ++i) {
                 absl::Status stored = dimse_internal::Store(
                     association, *files[i], absl::StrCat("file ", i + 1));
                 if (!stored.ok()) return stored;
               }
               return absl::OkStatus();
             });
}

}  // namespace

absl::StatusOr<std::unique_ptr<PacsClient>> NewDimsePacsClient(
    const PacsConfig& config) {
  PeerSettings peer;
  peer.host = config.host();
  if (peer.host.empty()) {
    return absl::InvalidArgumentError("pacs.host is empty");
  }
  if (config.port() == 0 || config.port() > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("pacs.port ", config.port(), " is not a TCP port"));
  }
  peer.port = static_cast<int>(config.port());
  peer.called_ae_title = config.peer_ae_title();
  peer.calling_ae_title =
      config.own_ae_title().empty() ? "ECHOFED" : config.own_ae_title();
  if (absl::Status s = CheckAeTitle("peer_ae_title", peer.called_ae_title);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = CheckAeTitle("own_ae_title", peer.calling_ae_title);
      !s.ok()) {
    return s;
  }
  peer.timeout_seconds = config.timeout_seconds() == 0
                             ? kDefaultTimeoutSeconds
                             : static_cast<int>(config.timeout_seconds());
  const std::string& retrieve = config.retrieve();
  if (!retrieve.empty() && retrieve != "c-get" && retrieve != "c-move") {
    return absl::InvalidArgumentError(absl::StrCat(
        "pacs.retrieve '", retrieve, "': use \"c-get\" or \"c-move\""));
  }
  if (config.has_tls()) {
    const TlsFiles& tls = config.tls();
    if (tls.ca_cert().empty()) {
      return absl::InvalidArgumentError(
          "pacs.tls.ca_cert is empty: DICOM over TLS needs the hospital CA "
          "that signed the PACS's certificate");
    }
    if (tls.cert().empty() != tls.key().empty()) {
      return absl::InvalidArgumentError(
          "pacs.tls: give both cert and key, or neither");
    }
    peer.use_tls = true;
    peer.tls = tls;
  }
  std::optional<MoveSettings> move;
  if (retrieve == "c-move") {
    if (config.move_port() == 0 || config.move_port() > 65535) {
      return absl::InvalidArgumentError(absl::StrCat(
          "pacs.move_port ", config.move_port(),
          " is not a TCP port: retrieve \"c-move\" needs the port of the "
          "agent's storage SCP, registered at the PACS under own_ae_title"));
    }
    if (peer.use_tls) {
      // Our SCP would need the server side of DICOM TLS (a certificate the
      // PACS trusts as a server, and its client certificate checked).
      return absl::UnimplementedError(
          "pacs.retrieve \"c-move\" over DICOM TLS is not implemented: use "
          "retrieve \"c-get\" (one association, no inbound port) with TLS, "
          "or c-move without a tls block on a trusted network");
    }
    move = MoveSettings{peer.calling_ae_title, peer.called_ae_title,
                        static_cast<int>(config.move_port()),
                        peer.timeout_seconds};
  }
  absl::StatusOr<std::unique_ptr<Connector>> connector =
      Connector::Create(peer);
  if (!connector.ok()) return connector.status();
  return std::make_unique<DimsePacsClient>(*std::move(connector),
                                           std::move(move));
}

}  // namespace echofed
