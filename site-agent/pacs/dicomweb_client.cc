#include "site-agent/pacs/dicomweb_client.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/log.h"
#include "httplib.h"
#include "openssl/x509.h"
#include "site-agent/pacs/dicomweb_json.h"
#include "site-agent/pacs/multipart.h"

namespace echofed {
namespace {

using google::protobuf::Struct;

constexpr int kDefaultTimeoutSeconds = 30;
constexpr char kDicomJson[] = "application/dicom+json";
// "As stored": the contract promises the instance exactly as the PACS holds
// it, and the reader decodes every syntax a scanner sends.
constexpr char kRetrieveAccept[] =
    "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

// Tags of the attributes read from QIDO-RS answers.
constexpr char kStudyDate[] = "00080020";
constexpr char kAccessionNumber[] = "00080050";
constexpr char kModality[] = "00080060";
constexpr char kSopClassUid[] = "00080016";
constexpr char kSopInstanceUid[] = "00080018";
constexpr char kPatientId[] = "00100020";
constexpr char kStudyInstanceUid[] = "0020000D";
constexpr char kSeriesInstanceUid[] = "0020000E";
constexpr char kInstanceNumber[] = "00200013";

struct ParsedUrl {
  std::string scheme_host_port;  // "https://pacs:8443", for httplib
  std::string base_path;         // "/dicom-web", no trailing slash
  bool https = false;
};

absl::StatusOr<ParsedUrl> ParseUrl(const std::string& url) {
  ParsedUrl parsed;
  absl::string_view rest = url;
  const std::string lower = absl::AsciiStrToLower(url);
  if (absl::StartsWith(lower, "https://")) {
    parsed.https = true;
    rest.remove_prefix(8);
  } else if (absl::StartsWith(lower, "http://")) {
    rest.remove_prefix(7);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "pacs.dicomweb_url \"", url, "\" must start with http:// or https://"));
  }
  if (rest.find_first_of("?#") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pacs.dicomweb_url \"", url, "\" must not hold a query or fragment"));
  }
  const size_t slash = rest.find('/');
  const absl::string_view authority = rest.substr(0, slash);
  if (authority.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("pacs.dicomweb_url \"", url, "\" names no host"));
  }
  if (authority.find('@') != absl::string_view::npos) {
    // Never echo it back: the part before '@' may be a password.
    return absl::InvalidArgumentError(
        "pacs.dicomweb_url holds a user name: put \"user:password\" into "
        "pacs.dicomweb_credentials_file (mode 0600) instead");
  }
  parsed.scheme_host_port =
      absl::StrCat(parsed.https ? "https" : "http", "://", authority);
  if (slash != absl::string_view::npos) {
    parsed.base_path = std::string(rest.substr(slash));
    while (absl::EndsWith(parsed.base_path, "/")) parsed.base_path.pop_back();
  }
  return parsed;
}

struct Credentials {
  std::string user;
  std::string password;
};

absl::StatusOr<Credentials> ReadCredentials(const std::string& path) {
  struct stat info;
  if (::stat(path.c_str(), &info) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pacs.dicomweb_credentials_file ", path,
                     " cannot be read: ", std::strerror(errno)));
  }
  if ((info.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "pacs.dicomweb_credentials_file %s holds a password but group or "
        "others may access it (mode %04o): run chmod 600 %s",
        path, info.st_mode & 07777, path));
  }
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  const absl::string_view line = absl::StripTrailingAsciiWhitespace(*text);
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos || colon == 0 ||
      line.find('\n') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("pacs.dicomweb_credentials_file ", path,
                     " must hold one line \"user:password\""));
  }
  return Credentials{std::string(line.substr(0, colon)),
                     std::string(line.substr(colon + 1))};
}

// RFC 3986 percent-encoding of a query value, of only what must be: the
// characters that split or change a query ('&', '=', '+', ';', '#', '%'),
// spaces and anything outside printable ASCII. Characters that are legal
// in a query as they are ('/', ':', '@', ...: hospital IDs such as
// "4595/2021") stay, because some servers (Orthanc 1.10 among them) match
// the query text without decoding it.
std::string EncodeQueryValue(absl::string_view value) {
  std::string out;
  for (unsigned char c : value) {
    if (absl::ascii_isalnum(c) ||
        absl::string_view("-._~/:@!$'(),").find(static_cast<char>(c)) !=
            absl::string_view::npos) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "%%%02X", c);
    }
  }
  return out;
}

// A UID goes into a URL path: digits and dots only (PS3.5 9.1), which
// also keeps a hostile answer from steering the next request elsewhere.
bool IsUid(absl::string_view uid) {
  if (uid.empty() || uid.size() > 64) return false;
  for (char c : uid) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != '.') {
      return false;
    }
  }
  return true;
}

bool IsDicomDate(absl::string_view date) {
  return date.size() == 8 && std::all_of(date.begin(), date.end(), [](char c) {
           return absl::ascii_isdigit(static_cast<unsigned char>(c));
         });
}

// Matching keys with these characters are wildcards or lists in DICOM
// (PS3.4 C.2.2.2): a PatientID holding one would match other patients.
bool HasMatchingSyntax(absl::string_view value) {
  return value.find_first_of("*?\\") != absl::string_view::npos;
}

bool IsPart10(absl::string_view file) {
  return file.size() >= 132 && file.substr(128, 4) == "DICM";
}

struct HttpAnswer {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::string> warnings;  // Warning header values
};

// A QIDO-RS origin server that caps its answers below the limit asked for
// says so with `Warning: 299 {+service}: "There are N additional results
// that can be requested"` (PS3.18, QIDO-RS query results); other 299
// warnings (fuzzy matching not supported) do not concern the page.
bool SaysMoreResults(const std::vector<std::string>& warnings) {
  for (const std::string& warning : warnings) {
    const std::string lower = absl::AsciiStrToLower(warning);
    if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(lower), "299") &&
        absl::StrContains(lower, "additional result")) {
      return true;
    }
  }
  return false;
}

// Beyond this many results one search is a runaway server, not a patient.
constexpr size_t kMaxSearchResults = 100000;

// A fresh HTTP connection per request: the searches are few and small,
// and a kept-alive connection that the server closed meanwhile (Orthanc
// closes after one second) would fail the next request. Owns copies of its
// configuration and credentials; not thread-safe (pacs_client.h).
class DicomWebPacsClient : public PacsClient {
 public:
  DicomWebPacsClient(const PacsConfig& config, const DicomWebOptions& options,
                     ParsedUrl url, std::optional<Credentials> credentials)
      : config_(config),
        page_size_(std::max(1, options.qido_page_size)),
        url_(std::move(url)),
        credentials_(std::move(credentials)),
        timeout_seconds_(config.timeout_seconds() > 0
                             ? static_cast<int>(config.timeout_seconds())
                             : kDefaultTimeoutSeconds) {}

  std::string Describe() const override {
    return absl::StrCat("DICOMweb ", url_.scheme_host_port, url_.base_path);
  }

  absl::Status Echo() override;
  absl::StatusOr<std::vector<PacsInstance>> FindInstances(
      const PacsPatientQuery& query) override;
  absl::StatusOr<std::string> RetrieveInstance(
      const PacsInstance& instance) override;
  absl::Status Store(const std::vector<std::string>& dicom_files) override;

  // A client that cannot load its TLS files fails here rather than at the
  // first request.
  absl::Status CheckTlsFiles() const { return NewHttpClient().status(); }

 private:
  absl::StatusOr<std::unique_ptr<httplib::Client>> NewHttpClient() const;
  // One request; `what` names it in messages ("QIDO-RS study search").
  absl::StatusOr<HttpAnswer> Send(const std::string& what,
                                  const std::string& method,
                                  const std::string& path_and_query,
                                  const httplib::Headers& headers,
                                  const std::string& body = "",
                                  const std::string& content_type = "");
  absl::Status TransportError(const std::string& what, httplib::Error error,
                              const httplib::Client& client) const;
  absl::Status HttpError(const std::string& what,
                         const HttpAnswer& answer) const;
  // One QIDO-RS request and its answer; `body` and `more` (a 299 warning
  // of further results) for paging.
  struct Page {
    std::vector<Struct> objects;
    std::string body;
    bool more = false;
  };
  absl::StatusOr<Page> SearchOnce(const std::string& what,
                                  const std::string& path_and_query);
  // Every result of a search (whose query string is begun), page by page
  // with limit and offset.
  absl::StatusOr<std::vector<Struct>> Search(const std::string& what,
                                             const std::string& path_and_query);

  PacsConfig config_;
  int page_size_;
  ParsedUrl url_;
  std::optional<Credentials> credentials_;
  int timeout_seconds_;
};

absl::StatusOr<std::unique_ptr<httplib::Client>>
DicomWebPacsClient::NewHttpClient() const {
  const TlsFiles& tls = config_.tls();
  std::unique_ptr<httplib::Client> client;
  if (url_.https && !tls.cert().empty()) {
    client = std::make_unique<httplib::Client>(url_.scheme_host_port,
                                               tls.cert(), tls.key());
  } else {
    client = std::make_unique<httplib::Client>(url_.scheme_host_port);
  }
  if (!client->is_valid()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot set up ", Describe(),
        url_.https ? ": check pacs.tls.cert and pacs.tls.key (PEM files that "
                     "belong together)"
                   : ""));
  }
  if (url_.https) {
    if (!tls.ca_cert().empty()) client->set_ca_cert_path(tls.ca_cert());
    client->enable_server_certificate_verification(true);
  }
  client->set_connection_timeout(timeout_seconds_, 0);
  client->set_read_timeout(timeout_seconds_, 0);
  client->set_write_timeout(timeout_seconds_, 0);
  // Query values arrive encoded (EncodeQueryValue); encoding them again
  // would change what the server matches.
  client->set_url_encode(false);
  client->set_follow_location(false);
  if (credentials_) {
    client->set_basic_auth(credentials_->user, credentials_->password);
  }
  return client;
}

absl::StatusOr<HttpAnswer> DicomWebPacsClient::Send(
    const std::string& what, const std::string& method,
    const std::string& path_and_query, const httplib::Headers& headers,
    const std::string& body, const std::string& content_type) {
  absl::StatusOr<std::unique_ptr<httplib::Client>> client = NewHttpClient();
  if (!client.ok()) return client.status();
  httplib::Headers all = headers;
  all.emplace("User-Agent", absl::StrCat("echofed/", ECHOFED_VERSION));
  const std::string path = url_.base_path + path_and_query;
  httplib::Result result = method == "POST"
                               ? (*client)->Post(path, all, body, content_type)
                               : (*client)->Get(path, all);
  if (!result) return TransportError(what, result.error(), **client);
  HttpAnswer answer;
  answer.status = result->status;
  answer.content_type = result->get_header_value("Content-Type");
  answer.body = std::move(result->body);
  const size_t warnings = result->get_header_value_count("Warning");
  for (size_t i = 0; i < warnings; ++i) {
    answer.warnings.push_back(result->get_header_value("Warning", i));
  }
  return answer;
}

absl::Status DicomWebPacsClient::TransportError(
    const std::string& what, httplib::Error error,
    const httplib::Client& client) const {
  std::string cause;
  switch (error) {
    case httplib::Error::Connection:
      cause = "connection failed (refused, or the host is unreachable)";
      break;
    case httplib::Error::ConnectionTimeout:
      cause = absl::StrCat("no connection within ", timeout_seconds_, " s");
      break;
    case httplib::Error::Read:
      cause = absl::StrCat("no complete answer within ", timeout_seconds_,
                           " s (pacs.timeout_seconds), or the connection "
                           "was closed");
      break;
    case httplib::Error::Write:
      cause = "the request could not be sent";
      break;
    case httplib::Error::SSLConnection:
      cause = "TLS handshake failed";
      break;
    case httplib::Error::SSLServerVerification: {
      const long verify = client.get_openssl_verify_result();
      cause = absl::StrCat(
          "the server's certificate is not trusted",
          verify != 0
              ? absl::StrCat(" (", X509_verify_cert_error_string(verify), ")")
              : "",
          ": check pacs.tls.ca_cert and the host name in "
          "pacs.dicomweb_url");
      break;
    }
    case httplib::Error::SSLLoadingCerts:
      return absl::InvalidArgumentError(absl::StrCat(
          Describe(), ": cannot load pacs.tls.ca_cert \"",
          config_.tls().ca_cert(), "\" (a PEM file of CA certificates)"));
    default:
      cause = httplib::to_string(error);
  }
  return absl::UnavailableError(
      absl::StrCat(Describe(), " does not answer (", what, ": ", cause, ")"));
}

absl::Status DicomWebPacsClient::HttpError(const std::string& what,
                                           const HttpAnswer& answer) const {
  const std::string prefix =
      absl::StrCat(Describe(), " refused the ", what, " (HTTP ", answer.status);
  const int status = answer.status;
  if (status == 401 || status == 403) {
    return absl::PermissionDeniedError(
        absl::StrCat(prefix, "): check pacs.dicomweb_credentials_file",
                     credentials_ ? "" : " (none is set)"));
  }
  if (status == 404) {
    return absl::NotFoundError(absl::StrCat(prefix, ", not found)"));
  }
  if (status >= 300 && status < 400) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix,
                     ", a redirect): point pacs.dicomweb_url at the service "
                     "itself"));
  }
  if (status == 406 || status == 415) {
    return absl::FailedPreconditionError(
        absl::StrCat(prefix, "): it does not offer the media type asked for"));
  }
  if (status == 400) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "): it did not understand the request"));
  }
  if (status == 408 || status == 429 || status == 502 || status == 503 ||
      status == 504) {
    return absl::UnavailableError(
        absl::StrCat(prefix, "): busy or unreachable behind a proxy"));
  }
  if (status >= 500) {
    return absl::InternalError(absl::StrCat(prefix, "): a server error"));
  }
  return absl::UnknownError(absl::StrCat(prefix, ")"));
}

absl::StatusOr<DicomWebPacsClient::Page> DicomWebPacsClient::SearchOnce(
    const std::string& what, const std::string& path_and_query) {
  absl::StatusOr<HttpAnswer> answer =
      Send(what, "GET", path_and_query, {{"Accept", kDicomJson}});
  if (!answer.ok()) return answer.status();
  Page page;
  if (answer->status == 204) return page;
  if (answer->status != 200) return HttpError(what, *answer);
  absl::StatusOr<std::vector<Struct>> objects =
      ParseDicomJsonArray(answer->body);
  if (!objects.ok()) {
    return absl::Status(
        objects.status().code(),
        absl::StrCat(Describe(), ", ", what, ": ", objects.status().message()));
  }
  page.objects = *std::move(objects);
  page.body = std::move(answer->body);
  page.more = SaysMoreResults(answer->warnings);
  return page;
}

absl::StatusOr<std::vector<Struct>> DicomWebPacsClient::Search(
    const std::string& what, const std::string& path_and_query) {
  // Archives cap QIDO-RS answers (often at a few hundred), and a capped
  // list would silently leave a patient's images out of the pull: ask page
  // by page until one comes back short and unflagged.
  std::vector<Struct> all;
  std::string previous_body;
  for (size_t offset = 0;;) {
    absl::StatusOr<Page> page =
        SearchOnce(what, absl::StrCat(path_and_query, "&limit=", page_size_,
                                      "&offset=", offset));
    if (!page.ok()) return page.status();
    const size_t got = page->objects.size();
    if (offset > 0 && got > 0 && page->body == previous_body) {
      return absl::FailedPreconditionError(absl::StrCat(
          Describe(), " answered the ", what, " at offset ", offset,
          " with the same results as before: it ignores the offset "
          "parameter, so results beyond its first answer cannot be read "
          "(raise its QIDO-RS result limit)"));
    }
    for (Struct& object : page->objects) all.push_back(std::move(object));
    // A full page may have a successor; a server that capped the answer
    // below our limit flags it. More than asked for: it ignored the limit
    // and sent everything.
    const bool more = got == static_cast<size_t>(page_size_) || page->more;
    if (!more) break;
    if (got == 0) {
      return absl::DataLossError(
          absl::StrCat(Describe(), " announced further results of the ", what,
                       " at offset ", offset, " but sent none"));
    }
    if (all.size() > kMaxSearchResults) {
      return absl::ResourceExhaustedError(
          absl::StrCat(Describe(), ": the ", what, " matched more than ",
                       kMaxSearchResults, " results"));
    }
    offset += got;
    previous_body = std::move(page->body);
  }
  return all;
}

absl::Status DicomWebPacsClient::Echo() {
  absl::StatusOr<Page> studies =
      SearchOnce("QIDO-RS echo search", "/studies?limit=1");
  if (studies.ok()) return absl::OkStatus();
  if (absl::IsNotFound(studies.status()) ||
      absl::IsDataLoss(studies.status())) {
    return absl::FailedPreconditionError(
        absl::StrCat(studies.status().message(),
                     ": no DICOMweb service there, check pacs.dicomweb_url"));
  }
  return studies.status();
}

absl::StatusOr<std::vector<PacsInstance>> DicomWebPacsClient::FindInstances(
    const PacsPatientQuery& query) {
  const bool by_patient = !query.patient_id.empty();
  if (by_patient == !query.accession_number.empty()) {
    return absl::InvalidArgumentError(
        "a PACS search needs exactly one of PatientID and AccessionNumber");
  }
  if (HasMatchingSyntax(query.patient_id) ||
      HasMatchingSyntax(query.accession_number) ||
      HasMatchingSyntax(query.modality)) {
    return absl::InvalidArgumentError(
        "a PACS search key holds '*', '?' or '\\', which DICOM matching "
        "reads as a wildcard or a list");
  }
  for (const std::string* date :
       {&query.study_date_from, &query.study_date_to}) {
    if (!date->empty() && !IsDicomDate(*date)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "study date \"", *date, "\" is not a DICOM date (YYYYMMDD)"));
    }
  }

  std::string study_query = absl::StrCat(
      "/studies?",
      by_patient
          ? absl::StrCat("PatientID=", EncodeQueryValue(query.patient_id))
          : absl::StrCat("AccessionNumber=",
                         EncodeQueryValue(query.accession_number)),
      "&includefield=", kPatientId, "&includefield=", kAccessionNumber,
      "&includefield=", kStudyDate);
  if (!query.study_date_from.empty() || !query.study_date_to.empty()) {
    absl::StrAppend(&study_query, "&StudyDate=", query.study_date_from, "-",
                    query.study_date_to);
  }
  absl::StatusOr<std::vector<Struct>> studies =
      Search("QIDO-RS study search", study_query);
  if (!studies.ok()) return studies.status();

  std::vector<PacsInstance> found;
  for (const Struct& study : *studies) {
    PacsInstance base;
    base.patient_id = DicomJsonString(study, kPatientId);
    base.accession_number = DicomJsonString(study, kAccessionNumber);
    base.study_instance_uid = DicomJsonString(study, kStudyInstanceUid);
    base.study_date = DicomJsonString(study, kStudyDate);
    // The PACS may match loosely (case, fuzzy matching, a server that
    // ignores a key): only exact matches belong to the patient.
    if ((by_patient && base.patient_id != query.patient_id) ||
        (!by_patient && base.accession_number != query.accession_number)) {
      LogDebug("DICOMweb: skipped a study that does not match the key exactly");
      continue;
    }
    if (!base.study_date.empty() &&
        ((!query.study_date_from.empty() &&
          base.study_date < query.study_date_from) ||
         (!query.study_date_to.empty() &&
          base.study_date > query.study_date_to))) {
      continue;
    }
    if (!IsUid(base.study_instance_uid)) {
      return absl::DataLossError(absl::StrCat(
          Describe(), " answered a study without a valid Study Instance UID"));
    }
    std::string series_query =
        absl::StrCat("/studies/", base.study_instance_uid,
                     "/series?includefield=", kModality);
    if (!query.modality.empty()) {
      absl::StrAppend(&series_query,
                      "&Modality=", EncodeQueryValue(query.modality));
    }
    absl::StatusOr<std::vector<Struct>> series =
        Search("QIDO-RS series search", series_query);
    if (!series.ok()) return series.status();
    for (const Struct& one_series : *series) {
      PacsInstance in_series = base;
      in_series.series_instance_uid =
          DicomJsonString(one_series, kSeriesInstanceUid);
      in_series.modality = DicomJsonString(one_series, kModality);
      if (!query.modality.empty() && in_series.modality != query.modality) {
        continue;
      }
      if (!IsUid(in_series.series_instance_uid)) {
        return absl::DataLossError(absl::StrCat(
            Describe(),
            " answered a series without a valid Series Instance UID"));
      }
      absl::StatusOr<std::vector<Struct>> instances =
          Search("QIDO-RS instance search",
                 absl::StrCat("/studies/", in_series.study_instance_uid,
                              "/series/", in_series.series_instance_uid,
                              "/instances?includefield=", kSopClassUid,
                              "&includefield=", kInstanceNumber));
      if (!instances.ok()) return instances.status();
      for (const Struct& object : *instances) {
        PacsInstance instance = in_series;
        instance.sop_instance_uid = DicomJsonString(object, kSopInstanceUid);
        instance.sop_class_uid = DicomJsonString(object, kSopClassUid);
        if (!absl::SimpleAtoi(DicomJsonString(object, kInstanceNumber),
                              &instance.instance_number)) {
          instance.instance_number = 0;
        }
        if (!IsUid(instance.sop_instance_uid)) {
          return absl::DataLossError(absl::StrCat(
              Describe(),
              " answered an instance without a valid SOP Instance UID"));
        }
        found.push_back(std::move(instance));
      }
    }
  }
  std::sort(found.begin(), found.end(),
            [](const PacsInstance& a, const PacsInstance& b) {
              return std::tie(a.study_instance_uid, a.series_instance_uid,
                              a.instance_number, a.sop_instance_uid) <
                     std::tie(b.study_instance_uid, b.series_instance_uid,
                              b.instance_number, b.sop_instance_uid);
            });
  LogDebug("DICOMweb: ", studies->size(), " studies, ", found.size(),
           " instances found");
  return found;
}

absl::StatusOr<std::string> DicomWebPacsClient::RetrieveInstance(
    const PacsInstance& instance) {
  if (!IsUid(instance.study_instance_uid) ||
      !IsUid(instance.series_instance_uid) ||
      !IsUid(instance.sop_instance_uid)) {
    return absl::InvalidArgumentError(
        "an instance to retrieve needs valid study, series and SOP instance "
        "UIDs");
  }
  const std::string what =
      absl::StrCat("WADO-RS retrieve of ", instance.sop_instance_uid);
  absl::StatusOr<HttpAnswer> answer =
      Send(what, "GET",
           absl::StrCat("/studies/", instance.study_instance_uid, "/series/",
                        instance.series_instance_uid, "/instances/",
                        instance.sop_instance_uid),
           {{"Accept", kRetrieveAccept}});
  if (!answer.ok()) return answer.status();
  if (answer->status == 404) {
    return absl::NotFoundError(
        absl::StrCat(Describe(), ": instance ", instance.sop_instance_uid,
                     " is not (or no longer) in the PACS"));
  }
  if (answer->status != 200) return HttpError(what, *answer);
  const std::string damaged = absl::StrCat(Describe(), ", ", what, ": ");

  absl::StatusOr<MediaType> media = ParseMediaType(answer->content_type);
  if (!media.ok()) {
    return absl::DataLossError(absl::StrCat(damaged, media.status().message()));
  }
  std::string file;
  if (media->type == "application/dicom") {
    file = std::move(answer->body);
  } else if (media->type == "multipart/related") {
    absl::StatusOr<std::vector<MultipartPart>> parts =
        ParseMultipart(answer->body, media->Parameter("boundary"));
    if (!parts.ok()) {
      return absl::DataLossError(
          absl::StrCat(damaged, parts.status().message()));
    }
    if (parts->size() != 1) {
      return absl::DataLossError(absl::StrCat(
          damaged, parts->size(), " objects came for one instance"));
    }
    const std::string part_type = (*parts)[0].Header("content-type");
    absl::StatusOr<MediaType> part_media = ParseMediaType(part_type);
    if (!part_type.empty() &&
        (!part_media.ok() || part_media->type != "application/dicom")) {
      return absl::DataLossError(
          absl::StrCat(damaged, "a part of type \"", part_type.substr(0, 100),
                       "\" instead of application/dicom"));
    }
    file = std::move((*parts)[0].body);
  } else {
    return absl::DataLossError(absl::StrCat(damaged, "an answer of type \"",
                                            answer->content_type.substr(0, 100),
                                            "\""));
  }
  if (!IsPart10(file)) {
    return absl::DataLossError(
        absl::StrCat(damaged, "not a DICOM Part 10 file (", file.size(),
                     " bytes without the DICM prefix)"));
  }
  // UIDs are stored as text, so the right object names its own UID.
  if (!absl::StrContains(file, instance.sop_instance_uid)) {
    return absl::DataLossError(
        absl::StrCat(damaged, "the PACS sent another object"));
  }
  return file;
}

absl::Status DicomWebPacsClient::Store(
    const std::vector<std::string>& dicom_files) {
  if (dicom_files.empty()) return absl::OkStatus();
  for (size_t i = 0; i < dicom_files.size(); ++i) {
    if (!IsPart10(dicom_files[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "object ", i + 1, " to store is not a DICOM Part 10 file"));
    }
  }
  const std::string boundary = ChooseBoundary(dicom_files);
  const std::string what =
      absl::StrCat("STOW-RS store of ", dicom_files.size(), " objects");
  absl::StatusOr<HttpAnswer> answer =
      Send(what, "POST", "/studies", {{"Accept", kDicomJson}},
           BuildMultipart(dicom_files, "application/dicom", boundary),
           absl::StrCat("multipart/related; type=\"application/dicom\"; "
                        "boundary=",
                        boundary));
  if (!answer.ok()) return answer.status();
  const int status = answer->status;
  // 409 is STOW-RS's "none stored"; some servers (Orthanc among them) say
  // 400 for objects they cannot parse, with the same kind of body.
  const bool refused = status == 400 || status == 409;
  if (status != 200 && status != 202 && !refused) {
    return HttpError(what, *answer);
  }
  absl::StatusOr<std::vector<StowFailure>> failures =
      ParseStowFailures(answer->body);
  if (!failures.ok() && !refused) {
    return absl::Status(failures.status().code(),
                        absl::StrCat(Describe(), ", ", what, ": ",
                                     failures.status().message()));
  }
  if (failures.ok() && !failures->empty()) {
    std::vector<std::string> listed;
    for (const StowFailure& failure : *failures) {
      if (listed.size() == 5) {
        listed.push_back("...");
        break;
      }
      listed.push_back(absl::StrCat(
          failure.sop_instance_uid.empty() ? "(no UID)"
                                           : failure.sop_instance_uid,
          ": ", DescribeStowFailureReason(failure.reason)));
    }
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(), " refused to store ", failures->size(), " of ",
                     dicom_files.size(), " objects (HTTP ", status,
                     "): ", absl::StrJoin(listed, "; ")));
  }
  if (refused) {
    return absl::FailedPreconditionError(
        absl::StrCat(Describe(), " refused the ", what, " (HTTP ", status,
                     status == 400 ? ": it could not read the objects)"
                                   : ", no reason given)"));
  }
  if (status == 202) {
    LogWarning(Describe(), ": stored with warnings (HTTP 202)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PacsClient>> NewDicomWebPacsClient(
    const PacsConfig& config, const DicomWebOptions& options) {
  absl::StatusOr<ParsedUrl> url = ParseUrl(config.dicomweb_url());
  if (!url.ok()) return url.status();
  const TlsFiles& tls = config.tls();
  if (tls.cert().empty() != tls.key().empty()) {
    return absl::InvalidArgumentError(
        "pacs.tls.cert and pacs.tls.key go together: set both or neither");
  }
  if (!url->https && (!tls.ca_cert().empty() || !tls.cert().empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pacs.tls is set but pacs.dicomweb_url \"", config.dicomweb_url(),
        "\" is plain http://: use https:// or remove pacs.tls"));
  }
  std::optional<Credentials> credentials;
  if (!config.dicomweb_credentials_file().empty()) {
    absl::StatusOr<Credentials> read =
        ReadCredentials(config.dicomweb_credentials_file());
    if (!read.ok()) return read.status();
    credentials = std::move(*read);
    if (!url->https) {
      LogWarning("DICOMweb ", config.dicomweb_url(),
                 ": basic authentication over plain http sends the password "
                 "unencrypted; prefer https://");
    }
  }
  auto client = std::make_unique<DicomWebPacsClient>(
      config, options, std::move(*url), std::move(credentials));
  if (absl::Status tls_files = client->CheckTlsFiles(); !tls_files.ok()) {
    return tls_files;
  }
  return client;
}

}  // namespace echofed
