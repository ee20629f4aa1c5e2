// The doctor's checks of the way to the coordinator: the site's kit
// (certificate, key, CA), DNS, TCP, the mutual-TLS handshake through a
// real Ping, and the clock skew that Ping measures.

#include <fcntl.h>
#include <netdb.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "proto/federation.pb.h"
#include "site-agent/coordinator_client.h"
#include "site-agent/doctor.h"
#include "site-agent/doctor_internal.h"

namespace echofed {
namespace {

using doctor_internal::Fail;
using doctor_internal::Pass;
using doctor_internal::Warn;

// --- OpenSSL helpers --------------------------------------------------------

struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

X509Ptr ParseCertificate(const std::string& pem) {
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return nullptr;
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

PkeyPtr ParsePrivateKey(const std::string& pem) {
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return nullptr;
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

absl::Time FromAsn1Time(const ASN1_TIME* time) {
  std::tm tm{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    return absl::InfinitePast();
  }
  return absl::FromTimeT(timegm(&tm));
}

std::string NameOf(const X509_NAME* name) {
  char buffer[512];
  X509_NAME_oneline(name, buffer, sizeof(buffer));
  return buffer;
}

std::string Date(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d %H:%M UTC", time, absl::UTCTimeZone());
}

// --- Network helpers --------------------------------------------------------

struct HostPort {
  std::string host;
  std::string port;
};

absl::StatusOr<HostPort> SplitAddress(const std::string& address) {
  // "[v6]:port" or "host:port"; gRPC's "dns:///" and "ipv4:" forms are not
  // what the agent config documents.
  if (!address.empty() && address.front() == '[') {
    size_t close = address.find(']');
    if (close != std::string::npos && close + 1 < address.size() &&
        address[close + 1] == ':') {
      return HostPort{address.substr(1, close - 1), address.substr(close + 2)};
    }
  } else {
    size_t colon = address.rfind(':');
    if (colon != std::string::npos && colon > 0 && address.find(':') == colon) {
      return HostPort{address.substr(0, colon), address.substr(colon + 1)};
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("coordinator_address '", address, "' is not host:port"));
}

std::string AddressText(const sockaddr* address, socklen_t length) {
  char host[NI_MAXHOST];
  if (getnameinfo(address, length, host, sizeof(host), nullptr, 0,
                  NI_NUMERICHOST) != 0) {
    return "?";
  }
  return host;
}

// Connects without blocking longer than `timeout`; "" on success, else the
// reason.
std::string TryConnect(const addrinfo& info, absl::Duration timeout) {
  int fd =
      socket(info.ai_family, info.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
             info.ai_protocol);
  if (fd < 0) return std::strerror(errno);
  std::string error;
  if (connect(fd, info.ai_addr, info.ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      error = std::strerror(errno);
    } else {
      pollfd poll_fd{fd, POLLOUT, 0};
      int ready = poll(&poll_fd, 1,
                       static_cast<int>(absl::ToInt64Milliseconds(timeout)));
      if (ready == 0) {
        error = absl::StrCat("no answer within ", absl::FormatDuration(timeout),
                             " (a firewall dropping the packets?)");
      } else if (ready < 0) {
        error = std::strerror(errno);
      } else {
        int socket_error = 0;
        socklen_t length = sizeof(socket_error);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &socket_error, &length);
        if (socket_error != 0) error = std::strerror(socket_error);
      }
    }
  }
  close(fd);
  return error;
}

constexpr char kReissueFix[] =
    "ask the coordinating centre for a new kit (`echofed pki issue "
    "--identity <this hospital> --role site`) and install its three files";

}  // namespace

// --- Certificates -----------------------------------------------------------

std::vector<DoctorCheck> CheckCertificates(const TlsFiles& files,
                                           absl::Time now,
                                           int expiry_warning_days,
                                           CertificateFacts* facts) {
  std::vector<DoctorCheck> checks;
  absl::StatusOr<std::string> cert_pem = ReadFileToString(files.cert());
  absl::StatusOr<std::string> key_pem = ReadFileToString(files.key());
  absl::StatusOr<std::string> ca_pem = ReadFileToString(files.ca_cert());
  if (cert_pem.ok() && key_pem.ok() && ca_pem.ok()) {
    facts->tls = TlsMaterial{*ca_pem, *cert_pem, *key_pem};
  }

  // The site certificate: readable, a certificate, valid now.
  X509Ptr cert;
  if (!cert_pem.ok()) {
    checks.push_back(Fail("certificate",
                          absl::StrCat("cannot read ", files.cert(), ": ",
                                       cert_pem.status().message()),
                          "point tls.cert at the kit's cert.pem and let the "
                          "agent's user read it"));
  } else if ((cert = ParseCertificate(*cert_pem)) == nullptr) {
    checks.push_back(Fail(
        "certificate", absl::StrCat(files.cert(), " holds no PEM certificate"),
        "copy cert.pem from your kit again: it must start with "
        "-----BEGIN CERTIFICATE----- (or " +
            std::string(kReissueFix) + ")"));
  } else {
    absl::Time not_before = FromAsn1Time(X509_get0_notBefore(cert.get()));
    absl::Time not_after = FromAsn1Time(X509_get0_notAfter(cert.get()));
    if (now < not_before) {
      checks.push_back(
          Fail("certificate",
               absl::StrCat("not valid before ", Date(not_before),
                            "; this machine's clock says ", Date(now)),
               "set this machine's clock right (timedatectl set-ntp true), or "
               "wait until the certificate's start"));
    } else if (now > not_after) {
      checks.push_back(Fail("certificate",
                            absl::StrCat("expired on ", Date(not_after)),
                            kReissueFix));
    } else {
      checks.push_back(
          Pass("certificate",
               absl::StrCat(files.cert(), ", valid from ", Date(not_before),
                            " to ", Date(not_after))));
      int64_t days_left = (not_after - now) / absl::Hours(24);
      if (days_left < expiry_warning_days) {
        checks.push_back(Warn(
            "certificate expiry",
            absl::StrCat(days_left, " days left (expires ", Date(not_after),
                         ")"),
            absl::StrCat("renew before ", Date(not_after), ": ", kReissueFix)));
      } else {
        checks.push_back(
            Pass("certificate expiry", absl::StrCat(days_left, " days left")));
      }
    }
  }

  // The private key: readable, private, the certificate's.
  if (!key_pem.ok()) {
    checks.push_back(Fail("private key",
                          absl::StrCat("cannot read ", files.key(), ": ",
                                       key_pem.status().message()),
                          "point tls.key at the kit's key.pem and make the "
                          "agent's user its owner (mode 0600)"));
  } else {
    PkeyPtr key = ParsePrivateKey(*key_pem);
    struct stat info {};
    bool exposed = stat(files.key().c_str(), &info) == 0 &&
                   (info.st_mode & (S_IRWXG | S_IRWXO)) != 0;
    if (key == nullptr) {
      checks.push_back(Fail(
          "private key", absl::StrCat(files.key(), " holds no PEM private key"),
          "copy key.pem from your kit again (it must start with -----BEGIN "
          "PRIVATE KEY-----)"));
    } else if (cert != nullptr &&
               X509_check_private_key(cert.get(), key.get()) != 1) {
      checks.push_back(
          Fail("private key",
               absl::StrCat(files.key(), " does not belong to ", files.cert()),
               "use cert.pem and key.pem from the same kit (re-issuing a kit "
               "makes a new key)"));
    } else if (exposed) {
      checks.push_back(Warn(
          "private key",
          absl::StrFormat("%s matches, but other users may read it (mode %04o)",
                          files.key(), info.st_mode & 07777),
          absl::StrCat("chmod 600 ", files.key(),
                       " (owned by the agent's user)")));
    } else if (cert != nullptr) {
      checks.push_back(Pass(
          "private key", absl::StrCat("matches the certificate, mode 0600")));
    }
  }

  // The configured CA signed the certificate.
  if (!ca_pem.ok()) {
    checks.push_back(Fail("study CA",
                          absl::StrCat("cannot read ", files.ca_cert(), ": ",
                                       ca_pem.status().message()),
                          "point tls.ca_cert at the kit's ca.pem"));
  } else {
    X509Ptr ca = ParseCertificate(*ca_pem);
    if (ca == nullptr) {
      checks.push_back(
          Fail("study CA",
               absl::StrCat(files.ca_cert(), " holds no PEM certificate"),
               "copy ca.pem from your kit again"));
    } else if (X509_check_ca(ca.get()) == 0) {
      checks.push_back(
          Fail("study CA",
               absl::StrCat(files.ca_cert(), " is not a CA certificate (",
                            NameOf(X509_get_subject_name(ca.get())), ")"),
               "tls.ca_cert must name the kit's ca.pem, not a participant's "
               "cert.pem"));
    } else if (now > FromAsn1Time(X509_get0_notAfter(ca.get()))) {
      checks.push_back(Fail(
          "study CA",
          absl::StrCat("the study CA expired on ",
                       Date(FromAsn1Time(X509_get0_notAfter(ca.get())))),
          "the coordinating centre must renew the study CA and re-issue every "
          "kit"));
    } else if (cert != nullptr) {
      // Signature and issuer name: a certificate of another study (or a
      // hand-made one) fails here, whatever its dates.
      bool issued = X509_check_issued(ca.get(), cert.get()) == X509_V_OK &&
                    X509_verify(cert.get(), X509_get0_pubkey(ca.get())) == 1;
      if (issued) {
        checks.push_back(Pass(
            "study CA", absl::StrCat("certificate issued by ",
                                     NameOf(X509_get_subject_name(ca.get())))));
      } else {
        std::string issuer = NameOf(X509_get_issuer_name(cert.get()));
        std::string configured = NameOf(X509_get_subject_name(ca.get()));
        checks.push_back(Fail(
            "study CA",
            issuer == configured
                ? absl::StrCat("certificate not signed by the configured CA ",
                               configured, " (another CA with the same name)")
                : absl::StrCat("certificate issued by ", issuer,
                               ", not by the configured CA ", configured),
            "use ca.pem and cert.pem from the same kit; the certificate must "
            "come from this study's CA (`echofed pki issue`)"));
      }
    }
  }

  // Identity and role, from the certificate's subject.
  if (cert != nullptr) {
    absl::StatusOr<PeerIdentity> subject = ReadCertificateSubject(*cert_pem);
    if (!subject.ok()) {
      checks.push_back(Fail(
          "identity",
          absl::StrCat("certificate subject: ", subject.status().message()),
          kReissueFix));
    } else {
      facts->subject = *subject;
      if (subject->role != Role::kSite) {
        checks.push_back(Fail(
            "identity",
            absl::StrCat("the certificate is for ", RoleName(subject->role),
                         " '", subject->identity, "', not a site"),
            "install this hospital's site kit (`echofed pki issue --identity "
            "<hospital> --role site`); other kits cannot join"));
      } else {
        checks.push_back(
            Pass("identity", absl::StrCat("site '", subject->identity, "'")));
      }
    }
  }
  return checks;
}

// --- Coordinator ------------------------------------------------------------

DoctorCheck CheckClockSkew(absl::Duration skew, absl::Duration uncertainty,
                           const DoctorOptions& options) {
  std::string detail =
      absl::StrFormat("this machine is %.3f s %s the coordinator (+/- %.3f s)",
                      absl::ToDoubleSeconds(absl::AbsDuration(skew)),
                      skew > absl::ZeroDuration() ? "behind" : "ahead of",
                      absl::ToDoubleSeconds(uncertainty));
  constexpr char kFix[] =
      "synchronise this machine's clock (timedatectl set-ntp true, or chrony "
      "with the hospital's NTP server)";
  // The measurement's own uncertainty is given the benefit of the doubt.
  absl::Duration lower = absl::AbsDuration(skew) - uncertainty;
  if (lower > options.skew_failure) {
    return Fail("clock skew",
                absl::StrCat(detail, ": beyond the ",
                             absl::FormatDuration(options.skew_failure),
                             " that certificate validity tolerates"),
                kFix);
  }
  if (lower > options.skew_warning) return Warn("clock skew", detail, kFix);
  return Pass("clock skew", detail);
}

std::vector<DoctorCheck> CheckCoordinator(const DoctorOptions& options,
                                          const TlsMaterial* tls,
                                          absl::Duration* skew) {
  std::vector<DoctorCheck> checks;
  absl::StatusOr<HostPort> target = SplitAddress(options.coordinator_address);
  if (!target.ok()) {
    checks.push_back(Fail("coordinator DNS",
                          std::string(target.status().message()),
                          "set coordinator_address: \"<host>:<port>\" in the "
                          "agent's config (the coordinating centre gives it)"));
    return checks;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int error =
      getaddrinfo(target->host.c_str(), target->port.c_str(), &hints, &found);
  if (error != 0) {
    checks.push_back(Fail("coordinator DNS",
                          absl::StrCat("cannot resolve '", target->host,
                                       "': ", gai_strerror(error)),
                          "check this machine's DNS (resolvectl query " +
                              target->host +
                              "), or ask the network team for a hosts entry"));
    return checks;
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found,
                                                               freeaddrinfo);
  std::vector<std::string> names;
  for (addrinfo* info = found; info != nullptr; info = info->ai_next) {
    std::string text = AddressText(info->ai_addr, info->ai_addrlen);
    if (std::find(names.begin(), names.end(), text) == names.end()) {
      names.push_back(text);
    }
  }
  checks.push_back(
      Pass("coordinator DNS",
           absl::StrCat(target->host, " is ", absl::StrJoin(names, ", "))));

  std::vector<std::string> refusals;
  std::string reached;
  for (addrinfo* info = found; info != nullptr && reached.empty();
       info = info->ai_next) {
    std::string why = TryConnect(*info, options.network_timeout);
    std::string text = AddressText(info->ai_addr, info->ai_addrlen);
    if (why.empty()) {
      reached = text;
    } else {
      refusals.push_back(absl::StrCat(text, ": ", why));
    }
  }
  if (reached.empty()) {
    checks.push_back(Fail(
        "coordinator TCP",
        absl::StrCat("cannot connect to port ", target->port, " (",
                     absl::StrJoin(refusals, "; "), ")"),
        absl::StrCat("ask the hospital's network team to allow outbound TCP "
                     "to ",
                     options.coordinator_address,
                     ", and the coordinating centre whether it is running")));
    return checks;
  }
  checks.push_back(Pass("coordinator TCP", absl::StrCat("port ", target->port,
                                                        " open on ", reached)));
  if (tls == nullptr) return checks;

  std::string server_name = options.coordinator_name.empty()
                                ? target->host
                                : options.coordinator_name;
  std::unique_ptr<CoordinatorClient> coordinator = NewGrpcCoordinatorClient(
      {options.coordinator_address, server_name, *tls});
  absl::Time sent = options.clock->Now();
  absl::StatusOr<PingResponse> pinged =
      coordinator->Ping(options.network_timeout + absl::Seconds(1));
  absl::Time received = options.clock->Now();
  const absl::Status& status = pinged.status();
  switch (status.code()) {
    case absl::StatusCode::kOk:
      checks.push_back(
          Pass("TLS handshake", absl::StrCat("mutual TLS with ", server_name,
                                             "; the coordinator (version ",
                                             pinged->coordinator_version(),
                                             ") knows this agent as "
                                             "site '",
                                             pinged->site(), "'")));
      break;
    case absl::StatusCode::kUnauthenticated:
      checks.push_back(
          Fail("TLS handshake",
               absl::StrCat("the coordinator refused this certificate: ",
                            status.message()),
               kReissueFix));
      return checks;
    case absl::StatusCode::kPermissionDenied:
      checks.push_back(Fail(
          "TLS handshake",
          absl::StrCat("the coordinator refused this site: ", status.message()),
          "ask the coordinating centre to enrol this hospital's identity as "
          "a site (`echofed pki issue ... --role site` adds it)"));
      return checks;
    case absl::StatusCode::kUnimplemented:
      checks.push_back(
          Warn("TLS handshake",
               "mutual TLS works, but the coordinator is older than this agent "
               "(no Ping): clock skew not measured",
               "ask the coordinating centre to upgrade the coordinator"));
      return checks;
    default:
      checks.push_back(Fail(
          "TLS handshake",
          absl::StrCat("no mutual TLS with ", server_name, ": ",
                       status.message()),
          absl::StrCat("check that tls.ca_cert is the study CA that signed the "
                       "coordinator's certificate and that '",
                       server_name,
                       "' is one of its host names (coordinator_name in the "
                       "config)")));
      return checks;
  }
  absl::Time server = absl::FromUnixMicros(pinged->server_time_unix_micros());
  absl::Time midpoint = sent + (received - sent) / 2;
  if (skew != nullptr) *skew = server - midpoint;
  checks.push_back(
      CheckClockSkew(server - midpoint, (received - sent) / 2, options));
  return checks;
}
}  // namespace echofed
