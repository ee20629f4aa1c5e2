#include "site-agent/doctor.h"

#include <dlfcn.h>
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

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "common/plan_util.h"
#include "models/classifier.h"
#include "models/torch_compat.h"
#include "proto/federation.pb.h"
#include "site-agent/coordinator_client.h"
#include "site-agent/data/clinical_features.h"
#include "site-agent/data/cohort.h"
#include "site-agent/data/manifest.h"
#include "site-agent/training/dataset.h"
#include "site-agent/training/trainer.h"
#include "torch/torch.h"

namespace echofed {
namespace {

DoctorCheck Pass(std::string name, std::string detail) {
  return {std::move(name), CheckOutcome::kPass, std::move(detail), ""};
}
DoctorCheck Warn(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckOutcome::kWarn, std::move(detail),
          std::move(fix)};
}
DoctorCheck Fail(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckOutcome::kFail, std::move(detail),
          std::move(fix)};
}

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

std::string ReadableBytes(int64_t bytes) {
  if (bytes >= (int64_t{1} << 30)) {
    return absl::StrFormat("%.1f GiB", bytes / double(int64_t{1} << 30));
  }
  return absl::StrFormat("%.0f MiB", bytes / double(int64_t{1} << 20));
}

std::string ReadableSeconds(double seconds) {
  if (seconds < 10) return absl::StrFormat("%.1f s", seconds);
  if (seconds < 120) return absl::StrFormat("%.0f s", seconds);
  if (seconds < 7200) return absl::StrFormat("%.0f min", seconds / 60);
  return absl::StrFormat("%.1f h", seconds / 3600);
}

constexpr char kReissueFix[] =
    "ask the coordinating centre for a new kit (`echofed pki issue "
    "--identity <this hospital> --role site`) and install its three files";
constexpr char kCudaBuildFix[] =
    "build the agent against a CUDA-enabled LibTorch (cmake "
    "-DTorch_DIR=<libtorch>/share/cmake/Torch, see README) or set device: "
    "\"cpu\"";

}  // namespace

absl::string_view OutcomeName(CheckOutcome outcome) {
  switch (outcome) {
    case CheckOutcome::kPass:
      return "PASS";
    case CheckOutcome::kWarn:
      return "WARN";
    case CheckOutcome::kFail:
      return "FAIL";
  }
  return "?";
}

std::string FormatCheck(const DoctorCheck& check) {
  std::string line = absl::StrFormat(
      "%s  %-18s %s\n", OutcomeName(check.outcome), check.name, check.detail);
  if (check.outcome != CheckOutcome::kPass && !check.fix.empty()) {
    absl::StrAppend(&line, "      fix: ", check.fix, "\n");
  }
  return line;
}

bool DoctorReport::failed() const {
  return std::any_of(checks.begin(), checks.end(), [](const DoctorCheck& c) {
    return c.outcome == CheckOutcome::kFail;
  });
}

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

// --- Device -----------------------------------------------------------------

std::vector<GpuInfo> ProbeNvidiaGpus() {
  // The driver API through dlopen: present on any machine with the NVIDIA
  // driver, whether or not this LibTorch build has CUDA. The library stays
  // loaded; unloading the driver mid-process is not supported by it.
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return {};
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  using GetFn = int (*)(int*, int);
  using NameFn = int (*)(char*, int, int);
  using MemoryFn = int (*)(size_t*, int);
  auto init = reinterpret_cast<InitFn>(dlsym(driver, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(driver, "cuDeviceGetCount"));
  auto get = reinterpret_cast<GetFn>(dlsym(driver, "cuDeviceGet"));
  auto name = reinterpret_cast<NameFn>(dlsym(driver, "cuDeviceGetName"));
  auto memory =
      reinterpret_cast<MemoryFn>(dlsym(driver, "cuDeviceTotalMem_v2"));
  std::vector<GpuInfo> gpus;
  int devices = 0;
  if (init == nullptr || count == nullptr || get == nullptr ||
      name == nullptr || memory == nullptr || init(0) != 0 ||
      count(&devices) != 0) {
    return gpus;
  }
  for (int ordinal = 0; ordinal < devices; ++ordinal) {
    int device = 0;
    if (get(&device, ordinal) != 0) continue;
    char text[256] = {};
    size_t bytes = 0;
    GpuInfo info;
    if (name(text, sizeof(text) - 1, device) == 0) info.name = text;
    if (memory(&bytes, device) == 0) {
      info.total_memory_bytes = static_cast<int64_t>(bytes);
    }
    gpus.push_back(std::move(info));
  }
  return gpus;
}

TorchBuildInfo ProbeTorchBuild() {
  TorchBuildInfo info;
  info.version = torch_compat::kTorchVersion;
  // True only when the CUDA part of LibTorch (libtorch_cuda) is linked in;
  // neither call touches the GPU.
  if (at::Context::hasCUDART()) {
    try {
      const int64_t version = at::Context::versionCUDART();  // 12040: 12.4
      info.cuda_version =
          absl::StrCat(version / 1000, ".", version % 1000 / 10);
    } catch (const c10::Error&) {
      info.cuda_version = "(version unknown)";
    }
  }
  return info;
}

DoctorCheck CheckDevice(const std::string& requested, bool torch_cuda_available,
                        const std::vector<GpuInfo>& gpus, int cpu_threads,
                        const TorchBuildInfo& torch) {
  auto describe = [&](size_t index) {
    if (index >= gpus.size()) return std::string("a CUDA GPU");
    return absl::StrCat(gpus[index].name, ", ",
                        ReadableBytes(gpus[index].total_memory_bytes));
  };
  // "; LibTorch 2.6.0 with CUDA 12.4" after every verdict.
  const std::string build =
      torch.version.empty()
          ? std::string()
          : absl::StrCat("; LibTorch ", torch.version,
                         torch.cuda_version.empty()
                             ? ", CPU-only"
                             : absl::StrCat(" with CUDA ", torch.cuda_version));
  // A CUDA build that sees no GPU the driver lists: the driver, not the
  // build, is what to fix.
  const bool driver_mismatch =
      !torch_cuda_available && !torch.cuda_version.empty() && !gpus.empty();
  const std::string driver_detail = absl::StrCat(
      "this LibTorch has CUDA but cannot use ", describe(0),
      " (NVIDIA driver older than its CUDA, or CUDA_VISIBLE_DEVICES)");
  const std::string driver_fix = absl::StrCat(
      "install an NVIDIA driver that supports CUDA ", torch.cuda_version,
      " (nvidia-smi shows the newest CUDA the driver supports) and check "
      "CUDA_VISIBLE_DEVICES in the agent's environment");
  std::string cpu = absl::StrCat("CPU, ", cpu_threads, " LibTorch threads");
  if (requested == "cpu") {
    return Pass(
        "device",
        absl::StrCat(cpu,
                     gpus.empty() ? ""
                                  : absl::StrCat(" (device: cpu in the "
                                                 "config; ",
                                                 describe(0), " unused)"),
                     build));
  }
  if (requested.empty() || requested == "auto") {
    if (torch_cuda_available) {
      return Pass("device", absl::StrCat("CUDA: ", describe(0), build));
    }
    if (driver_mismatch) {
      return Warn("device",
                  absl::StrCat(driver_detail, "; training on ", cpu, build),
                  driver_fix);
    }
    if (!gpus.empty()) {
      return Warn("device",
                  absl::StrCat("this LibTorch has no CUDA: ", describe(0),
                               " stays unused; training on ", cpu, build),
                  kCudaBuildFix);
    }
    return Pass("device", absl::StrCat(cpu, " (no CUDA GPU found)", build));
  }
  if (requested.rfind("cuda", 0) == 0) {
    size_t index = 0;
    if (requested.size() > 4) {
      if (requested[4] != ':' ||
          !absl::SimpleAtoi(requested.substr(5), &index)) {
        return Fail("device", absl::StrCat("bad device '", requested, "'"),
                    "set device: \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"");
      }
    }
    if (driver_mismatch) {
      return Fail("device",
                  absl::StrCat("the config asks for ", requested, ", but ",
                               driver_detail, build),
                  driver_fix);
    }
    if (!torch_cuda_available) {
      return Fail("device",
                  absl::StrCat("the config asks for ", requested, ", but ",
                               gpus.empty()
                                   ? "no CUDA GPU is visible"
                                   : absl::StrCat("this LibTorch has no CUDA (",
                                                  describe(0), " present)"),
                               build),
                  torch.cuda_version.empty()
                      ? std::string(kCudaBuildFix)
                      : "install the NVIDIA driver (nvidia-smi must list the "
                        "GPU) or set device: \"cpu\"");
    }
    if (!gpus.empty() && index >= gpus.size()) {
      return Fail("device",
                  absl::StrCat("the config asks for ", requested, ", but ",
                               gpus.size(), " GPU(s) are visible", build),
                  "set device: \"cuda:0\" (or \"auto\")");
    }
    return Pass("device", absl::StrCat("CUDA: ", describe(index), build));
  }
  return Fail("device", absl::StrCat("bad device '", requested, "'"),
              "set device: \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"");
}

// --- Disk -------------------------------------------------------------------

DoctorCheck CheckDiskSpace(const std::string& path, int64_t available_bytes,
                           const DoctorOptions& options) {
  std::string name = absl::StrCat("disk ", path);
  std::string detail = absl::StrCat(ReadableBytes(available_bytes), " free");
  std::string fix =
      absl::StrCat("free space on the file system of ", path, " (at least ",
                   ReadableBytes(options.disk_warning_bytes), ")");
  if (available_bytes < options.disk_failure_bytes) {
    return Fail(name, detail, fix);
  }
  if (available_bytes < options.disk_warning_bytes) {
    return Warn(name, detail, fix);
  }
  return Pass(name, detail);
}

// --- Site data --------------------------------------------------------------

DoctorCheck CheckSiteData(const std::string& data_dir, const Plan* plan,
                          const std::string& site, SiteDataCounts* counts) {
  constexpr char kName[] = "site data";
  if (data_dir.empty()) {
    return Fail(kName, "no data_dir in the config",
                "set data_dir to the folder holding manifest.csv");
  }
  absl::StatusOr<SiteInputs> inputs = LoadSiteInputs(data_dir);
  if (!inputs.ok()) {
    return Fail(kName, std::string(inputs.status().message()),
                "point data_dir at the folder holding manifest.csv (README, "
                "Site data), readable by the agent's user");
  }
  std::vector<std::string> classes;
  if (plan != nullptr) {
    classes.assign(plan->class_names().begin(), plan->class_names().end());
  } else {
    // As check-data does without a plan: every label present is a class.
    std::set<std::string> labels;
    for (const ImageRecord& record : inputs->manifest.records) {
      labels.insert(record.label);
    }
    if (inputs->clinical) labels = {"NB", "GNB", "GN"};
    classes.assign(labels.begin(), labels.end());
  }
  CohortOptions cohort_options;
  cohort_options.class_names = classes;
  Cohort cohort = SelectCohort(inputs->manifest,
                               inputs->clinical ? &*inputs->clinical : nullptr,
                               cohort_options);
  const CohortFlow& flow = cohort.flow;
  counts->screened_patients = flow.screened;
  counts->included_patients = flow.included;
  counts->included_images = flow.included_images;
  Plan::Role role = Plan::TRAIN;
  if (plan != nullptr) role = RoleInPlan(*plan, site);
  if (role == Plan::TRAIN) {
    Plan defaults = plan != nullptr ? *plan : Plan();
    ApplyPlanDefaults(&defaults);
    std::vector<ImageRecord> included = cohort.Records();
    std::set<std::string> training = TrainingPatients(
        included, defaults.train_fraction(), defaults.split_seed());
    for (const ImageRecord& record : included) {
      ++(training.count(record.patient_id) ? counts->train_images
                                           : counts->validation_images);
    }
  } else {
    counts->validation_images = flow.included_images;
  }

  std::string detail = absl::StrCat(
      "screened ", flow.screened, " patients, included ", flow.included,
      " patients / ", flow.included_images, " images (", counts->train_images,
      " train, ", counts->validation_images, " validation)");
  std::string check_data = absl::StrCat(
      "run `echofed-agent check-data ", data_dir,
      plan != nullptr ? absl::StrCat(" --classes ", absl::StrJoin(classes, ","))
                      : "",
      "` for the reasons, patient by patient");
  if (flow.included == 0) {
    return Fail(kName, detail, check_data);
  }
  if (plan != nullptr && role == Plan::ROLE_UNSPECIFIED) {
    return Warn(
        kName,
        absl::StrCat(detail, "; but the plan names no site '", site, "'"),
        "ask the coordinating centre to list this site in the plan's "
        "sites");
  }
  size_t problems = inputs->manifest.errors.size() +
                    static_cast<size_t>(flow.unreadable_images) +
                    (inputs->clinical ? inputs->clinical->errors.size() : 0);
  if (problems > 0) {
    return Warn(kName,
                absl::StrCat(detail, "; ", problems,
                             " manifest/clinical lines or images with errors"),
                check_data);
  }
  return Pass(kName, detail);
}

// --- Round time -------------------------------------------------------------

DoctorCheck EstimateRoundTime(const Plan& given_plan,
                              const SiteDataCounts& data,
                              const std::string& device_name,
                              const DoctorOptions& options) {
  constexpr char kName[] = "round time";
  Plan plan = given_plan;
  ApplyPlanDefaults(&plan);
  absl::StatusOr<torch::Device> resolved = ResolveDevice(device_name);
  torch::Device device = resolved.ok() ? *resolved : torch::Device(torch::kCPU);
  ModelOptions model_options;
  model_options.name = plan.model();
  model_options.num_classes = std::max(plan.class_names_size(), 2);
  model_options.heads.assign(plan.heads().begin(), plan.heads().end());
  model_options.clinical_features =
      static_cast<int>(ClinicalFeatureNames().size());
  absl::StatusOr<std::shared_ptr<ImageClassifierImpl>> created =
      CreateClassifier(model_options);
  if (!created.ok()) {
    return Fail(kName,
                absl::StrCat("the plan's model: ", created.status().message()),
                "this agent is older than the plan: install the study's "
                "agent version");
  }
  ImageClassifierImpl& model = **created;
  model.to(device);
  model.train();
  const int batch = std::max(plan.batch_size(), 1);
  const int size = PreprocessingFromPlan(plan).image_size;
  // Synthetic input of the plan's shape: the cost of a step depends on
  // shapes, not on pixel values, and no patient image is needed.
  torch::Tensor images = torch::randn({batch, 1, size, size}).to(device);
  torch::Tensor labels =
      torch::randint(model_options.num_classes, {batch}, torch::kLong)
          .to(device);
  torch::Tensor clinical =
      torch::randn({batch, model_options.clinical_features}).to(device);
  torch::optim::SGD optimizer(model.parameters(),
                              torch::optim::SGDOptions(0.001).momentum(0.9));
  auto step = [&] {
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        model.Predict(images, clinical).subtype, labels);
    loss.backward();
    optimizer.step();
    // item() waits for the device, so CUDA steps are timed to their end.
    return loss.item<float>();
  };
  try {
    step();  // warm-up: allocations and kernel selection
    absl::Time start = absl::Now();
    int timed = 0;
    while (timed < options.max_timed_batches &&
           (timed == 0 || absl::Now() - start < options.timing_budget)) {
      step();
      ++timed;
    }
    double step_seconds = absl::ToDoubleSeconds(absl::Now() - start) / timed;
    model.eval();
    absl::Time eval_start = absl::Now();
    {
      torch::NoGradGuard no_grad;
      model.Predict(images, clinical).subtype.sum().item<float>();
    }
    double forward_seconds = absl::ToDoubleSeconds(absl::Now() - eval_start);
    int64_t train_batches = (data.train_images + batch - 1) / batch;
    int64_t eval_batches = (data.validation_images + batch - 1) / batch;
    double round_seconds = plan.local_epochs() * train_batches * step_seconds +
                           eval_batches * forward_seconds;
    std::string detail = absl::StrFormat(
        "about %s per round (estimate: %d epoch(s) x %d batches at %.2f s "
        "plus %d evaluation batches; %s, %d px, batch %d on %s, timed over %d "
        "synthetic steps; transfers and image decoding not included)",
        ReadableSeconds(round_seconds), plan.local_epochs(), train_batches,
        step_seconds, eval_batches, plan.model(), size, batch, device.str(),
        timed);
    if (plan.round_deadline_seconds() > 0 &&
        round_seconds > plan.round_deadline_seconds()) {
      return Warn(kName,
                  absl::StrCat(detail,
                               "; longer than the plan's round "
                               "deadline of ",
                               plan.round_deadline_seconds(), " s"),
                  "train on a GPU (device: \"auto\" with a CUDA LibTorch), or "
                  "ask the coordinating centre for a longer "
                  "round_deadline_seconds");
    }
    return Pass(kName, detail);
  } catch (const c10::Error& error) {
    return Fail(kName,
                absl::StrCat("a training step of ", plan.model(),
                             " failed: ", error.what_without_backtrace()),
                "check the device's memory (a smaller batch_size in the plan) "
                "and the LibTorch installation");
  }
}

// --- All together -----------------------------------------------------------

DoctorReport RunDoctor(const DoctorOptions& options) {
  DoctorReport report;
  auto add = [&](DoctorCheck check) {
    if (options.on_check) options.on_check(check);
    report.checks.push_back(std::move(check));
  };
  auto add_all = [&](std::vector<DoctorCheck> checks) {
    for (DoctorCheck& check : checks) add(std::move(check));
  };
  CertificateFacts facts;
  add_all(CheckCertificates(options.tls, options.clock->Now(),
                            options.expiry_warning_days, &facts));
  // A certificate or key that cannot work would only fail the handshake
  // again, less clearly; name resolution and the port still say something
  // about the network while the files are being fixed.
  bool kit_usable =
      facts.tls.has_value() &&
      std::none_of(
          report.checks.begin(), report.checks.end(),
          [](const DoctorCheck& check) {
            return check.outcome == CheckOutcome::kFail &&
                   (check.name == "certificate" || check.name == "private key");
          });
  add_all(CheckCoordinator(options, kit_usable ? &*facts.tls : nullptr));
  add(CheckDevice(options.device, torch::cuda::is_available(),
                  ProbeNvidiaGpus(), torch::get_num_threads(),
                  ProbeTorchBuild()));
  for (const std::string& path : options.disk_paths) {
    std::error_code error;
    std::filesystem::space_info space = std::filesystem::space(path, error);
    if (error) {
      add(Fail(absl::StrCat("disk ", path), error.message(),
               absl::StrCat("create ", path,
                            " writable by the agent's user (the systemd "
                            "unit's StateDirectory does this)")));
    } else {
      add(CheckDiskSpace(path, static_cast<int64_t>(space.available), options));
    }
  }
  std::string site = facts.subject ? facts.subject->identity : "";
  SiteDataCounts counts;
  const Plan* plan = options.plan ? &*options.plan : nullptr;
  DoctorCheck data = CheckSiteData(options.data_dir, plan, site, &counts);
  bool data_ok = data.outcome != CheckOutcome::kFail;
  add(std::move(data));
  if (plan == nullptr) {
    add(Warn("round time", "not estimated: no plan given",
             "pass --plan <the study's plan.textproto> to time its model"));
  } else if (data_ok) {
    add(EstimateRoundTime(*plan, counts, options.device, options));
  }
  return report;
}

}  // namespace echofed
