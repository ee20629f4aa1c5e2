#ifndef ECHOFED_SITE_AGENT_PACS_PACS_CLIENT_H_
#define ECHOFED_SITE_AGENT_PACS_PACS_CLIENT_H_

// The agent's view of a hospital PACS: search a patient's ultrasound
// instances, retrieve one instance, store a result object. Two
// implementations behind one interface: DICOM networking (DIMSE through
// DCMTK's dcmnet, optionally over TLS with dcmtls; dimse_client.h) and
// DICOMweb (QIDO-RS, WADO-RS, STOW-RS over HTTP(S); dicomweb_client.h).
// The cohort pull (pull.h) and `diagnose --to-pacs` use only this
// interface, so they are tested the same way against either.
//
// Everything here handles identifiers (PatientID, UIDs) and stays at the
// site. Errors are absl::Status values whose message names the PACS and the
// cause in words site IT can act on:
//   UNAVAILABLE         the PACS does not answer (connection refused, TLS
//                       handshake failed, timeout);
//   PERMISSION_DENIED   association rejected (unknown calling AE title,
//                       wrong called AE title) or HTTP 401/403;
//   NOT_FOUND           the instance is not (or no longer) in the PACS;
//   DATA_LOSS           a retrieve that returned nothing or a damaged
//                       object;
//   FAILED_PRECONDITION the PACS refused a store (status and reason given).
// Not thread-safe: one operation at a time per client.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/config.pb.h"

namespace echofed {

// One patient of a worklist, looked up by PatientID or by AccessionNumber
// (exactly one of the two is set).
struct PacsPatientQuery {
  std::string patient_id;        // (0010,0020)
  std::string accession_number;  // (0008,0050)
  // Series-level filter (0008,0060); empty: any modality.
  std::string modality = "US";
  // Study date range, DICOM dates YYYYMMDD; either may be empty.
  std::string study_date_from;
  std::string study_date_to;
};

// One instance the PACS holds for a patient, as its search answered.
struct PacsInstance {
  std::string patient_id;  // as the PACS gives it (site-local)
  std::string accession_number;
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string sop_instance_uid;
  std::string sop_class_uid;  // empty when the PACS did not say
  std::string modality;
  std::string study_date;   // YYYYMMDD or empty
  int instance_number = 0;  // 0 when absent
};

class PacsClient {
 public:
  virtual ~PacsClient() = default;

  // A human-readable name of the peer for messages: "AE PACS at
  // 10.0.0.5:104 (TLS)" or "DICOMweb https://pacs/dicom-web".
  virtual std::string Describe() const = 0;

  // Checks that the PACS answers and accepts us (C-ECHO, or a small QIDO-RS
  // search).
  virtual absl::Status Echo() = 0;

  // Every instance of the patient's studies (within the date range) in the
  // series of the query's modality: study-level, series-level and
  // instance-level searches. No match is an empty list, not an error. Sorted
  // by study, series and instance number so that runs are reproducible.
  virtual absl::StatusOr<std::vector<PacsInstance>> FindInstances(
      const PacsPatientQuery& query) = 0;

  // One instance as a DICOM Part 10 file (with its file meta header), in
  // memory, exactly as the PACS sent it (no transcoding asked for beyond
  // what the transfer syntax negotiation needs).
  virtual absl::StatusOr<std::string> RetrieveInstance(
      const PacsInstance& instance) = 0;

  // Stores DICOM objects (a structured report, a secondary capture), each
  // given as the content of a Part 10 file, in the PACS (C-STORE, or
  // STOW-RS). Each must carry its Study Instance UID; the PACS files it
  // under that study.
  virtual absl::Status Store(const std::vector<std::string>& dicom_files) = 0;
};

// The client the configuration asks for: DICOMweb when dicomweb_url is set,
// DIMSE otherwise. Paths in the config are used as they are (the caller
// resolves them against the config file's folder). INVALID_ARGUMENT names a
// missing or bad field.
absl::StatusOr<std::unique_ptr<PacsClient>> NewPacsClient(
    const PacsConfig& config);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_PACS_CLIENT_H_
