#ifndef ECHOFED_SITE_AGENT_PACS_DICOMWEB_CLIENT_H_
#define ECHOFED_SITE_AGENT_PACS_DICOMWEB_CLIENT_H_

// The PacsClient over DICOMweb (PS3.18): QIDO-RS searches, WADO-RS
// retrieval of one instance as stored (multipart/related), STOW-RS stores,
// over HTTP or HTTPS through cpp-httplib.
//
// From PacsConfig it reads:
//   dicomweb_url               http:// or https:// base URL, path included
//                              ("https://pacs.local/dicom-web"); no user
//                              name, query or fragment in it;
//   tls.ca_cert                https: the CA the server's certificate must
//                              chain to (empty: the system's trust store);
//   tls.cert, tls.key          https: a client certificate, both or neither;
//   dicomweb_credentials_file  "user:password" for HTTP basic
//                              authentication; refused when group or
//                              others may read it;
//   timeout_seconds            connect, send and each read (default 30).
//
// Searches page with limit and offset (DicomWebOptions), so that an
// archive that caps its answers cannot shorten a patient's list silently;
// one that ignores offset is FAILED_PRECONDITION.
//
// Errors are those of pacs_client.h. NewDicomWebPacsClient adds
// INVALID_ARGUMENT for a bad URL, TLS or credentials field, and
// FAILED_PRECONDITION for a credentials file with a permissive mode.
// Identifiers travel in query strings; they are never logged at info level
// nor put into error messages (UIDs are, PatientIDs are not).

#include <memory>

#include "absl/status/statusor.h"
#include "proto/config.pb.h"
#include "site-agent/pacs/pacs_client.h"

namespace echofed {

struct DicomWebOptions {
  // Results asked for per QIDO-RS request (limit); searches page with
  // offset until an answer comes back short without a 299 warning of
  // further results. Tests lower it to page over few objects.
  int qido_page_size = 500;
};

absl::StatusOr<std::unique_ptr<PacsClient>> NewDicomWebPacsClient(
    const PacsConfig& config, const DicomWebOptions& options = {});

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_DICOMWEB_CLIENT_H_
