#include "common/pki.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace echofed {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using KeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using ExtPtr = std::unique_ptr<X509_EXTENSION,
                               Deleter<X509_EXTENSION, X509_EXTENSION_free>>;

absl::Status OpenSslError(absl::string_view what) {
  unsigned long code = ERR_get_error();
  char buffer[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, buffer, sizeof(buffer));
  ERR_clear_error();
  return absl::InternalError(absl::StrCat(what, ": ", buffer));
}

absl::StatusOr<X509Ptr> ParseCert(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  return cert;
}

absl::StatusOr<KeyPtr> ParseKey(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM private key");
  }
  return key;
}

absl::StatusOr<std::string> CertToPem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM_write_bio_X509");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<std::string> KeyToPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr,
                               nullptr) != 1) {
    return OpenSslError("PEM_write_bio_PrivateKey");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string NameEntry(X509_NAME* name, int nid) {
  int index = X509_NAME_get_index_by_NID(name, nid, -1);
  if (index < 0) return "";
  ASN1_STRING* data =
      X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int size = ASN1_STRING_to_UTF8(&utf8, data);
  if (size < 0) return "";
  std::string value(reinterpret_cast<char*>(utf8), static_cast<size_t>(size));
  OPENSSL_free(utf8);
  return value;
}

absl::StatusOr<PeerIdentity> SubjectOf(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  PeerIdentity peer;
  peer.identity = NameEntry(subject, NID_commonName);
  absl::StatusOr<Role> role =
      ParseRole(NameEntry(subject, NID_organizationalUnitName));
  if (peer.identity.empty() || !role.ok()) {
    return absl::UnauthenticatedError(
        "certificate has no echofed identity (CN) and role (OU)");
  }
  peer.role = *role;
  return peer;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid,
                          const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext) return OpenSslError(absl::StrCat("extension ", value));
  if (X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError("X509_add_ext");
  }
  return absl::OkStatus();
}

absl::StatusOr<KeyPtr> NewKey() {
  KeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("EVP_EC_gen");
  return key;
}

// Builds and signs a certificate. `issuer == nullptr` means self-signed.
absl::StatusOr<X509Ptr> BuildCertificate(EVP_PKEY* subject_key,
                                         const std::string& common_name,
                                         const std::string& role_name,
                                         const std::string& organisation,
                                         X509* issuer, EVP_PKEY* issuer_key,
                                         long not_before_offset, int days) {
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>> serial(BN_new());
  BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY);
  BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get()));
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), not_before_offset);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                  not_before_offset + 300 + static_cast<long>(days) * 86400);
  X509_set_pubkey(cert.get(), subject_key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  auto add = [&](const char* field, const std::string& value) {
    X509_NAME_add_entry_by_txt(
        name, field, MBSTRING_UTF8,
        reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1, 0);
  };
  add("O", organisation);
  add("OU", role_name);
  add("CN", common_name);
  X509* signer = issuer != nullptr ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  return cert;
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kCoordinator:
      return "coordinator";
    case Role::kSite:
      return "site";
    case Role::kOperator:
      return "operator";
    case Role::kStatistician:
      return "statistician";
  }
  return "unknown";
}

absl::StatusOr<Role> ParseRole(absl::string_view name) {
  for (Role role : {Role::kCoordinator, Role::kSite, Role::kOperator,
                    Role::kStatistician}) {
    if (name == RoleName(role)) return role;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role '", name,
                   "' (expected coordinator, site, operator or statistician)"));
}

absl::Status ValidateIdentityName(absl::string_view identity) {
  if (identity.empty() || identity.size() > 64) {
    return absl::InvalidArgumentError("identity must be 1 to 64 characters");
  }
  for (char c : identity) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' &&
        c != '_' && c != '.') {
      return absl::InvalidArgumentError(
          absl::StrCat("identity '", identity,
                       "' may hold only letters, digits, '-', '_' and '.'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<PemPair> CreateCertificateAuthority(absl::string_view study_name,
                                                   int valid_days) {
  absl::StatusOr<KeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  std::string name = absl::StrCat(study_name, " CA");
  absl::StatusOr<X509Ptr> cert =
      BuildCertificate(key->get(), name, "ca", std::string(study_name), nullptr,
                       key->get(), -300, valid_days);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  for (auto [nid, value] : std::vector<std::pair<int, std::string>>{
           {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"}}) {
    if (absl::Status status = AddExtension(c, c, nid, value); !status.ok()) {
      return status;
    }
  }
  if (X509_sign(c, key->get(), EVP_sha256()) == 0) {
    return OpenSslError("X509_sign");
  }
  PemPair pair;
  absl::StatusOr<std::string> cert_pem = CertToPem(c);
  absl::StatusOr<std::string> key_pem = KeyToPem(key->get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (!key_pem.ok()) return key_pem.status();
  pair.cert = *cert_pem;
  pair.key = *key_pem;
  return pair;
}

absl::StatusOr<PemPair> IssueCertificate(const PemPair& ca,
                                         const CertificateRequest& request) {
  if (absl::Status status = ValidateIdentityName(request.identity);
      !status.ok()) {
    return status;
  }
  absl::StatusOr<X509Ptr> ca_cert = ParseCert(ca.cert);
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<KeyPtr> ca_key = ParseKey(ca.key);
  if (!ca_key.ok()) return ca_key.status();
  absl::StatusOr<KeyPtr> key = NewKey();
  if (!key.ok()) return key.status();
  std::string organisation =
      NameEntry(X509_get_subject_name(ca_cert->get()), NID_organizationName);
  absl::StatusOr<X509Ptr> cert = BuildCertificate(
      key->get(), request.identity, std::string(RoleName(request.role)),
      organisation, ca_cert->get(), ca_key->get(),
      request.not_before_offset_seconds, request.valid_days);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  std::vector<std::pair<int, std::string>> extensions = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature,keyAgreement"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
  };
  if (request.role == Role::kCoordinator) {
    extensions.push_back({NID_ext_key_usage, "serverAuth,clientAuth"});
    std::vector<std::string> names;
    for (const std::string& host : request.host_names) {
      bool is_ip = !host.empty() &&
                   (host.find(':') != std::string::npos ||
                    host.find_first_not_of("0123456789.") == std::string::npos);
      names.push_back(absl::StrCat(is_ip ? "IP:" : "DNS:", host));
    }
    if (names.empty()) {
      return absl::InvalidArgumentError(
          "a coordinator certificate needs at least one host name");
    }
    extensions.push_back({NID_subject_alt_name, absl::StrJoin(names, ",")});
  } else {
    extensions.push_back({NID_ext_key_usage, "clientAuth"});
  }
  for (const auto& [nid, value] : extensions) {
    if (absl::Status status = AddExtension(c, ca_cert->get(), nid, value);
        !status.ok()) {
      return status;
    }
  }
  if (X509_sign(c, ca_key->get(), EVP_sha256()) == 0) {
    return OpenSslError("X509_sign");
  }
  absl::StatusOr<std::string> cert_pem = CertToPem(c);
  absl::StatusOr<std::string> key_pem = KeyToPem(key->get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (!key_pem.ok()) return key_pem.status();
  return PemPair{*cert_pem, *key_pem};
}

struct CertificateVerifier::Store {
  X509_STORE* store = nullptr;
  ~Store() { X509_STORE_free(store); }
};

absl::StatusOr<CertificateVerifier> CertificateVerifier::Create(
    absl::string_view ca_pem) {
  absl::StatusOr<X509Ptr> ca = ParseCert(ca_pem);
  if (!ca.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CA certificate: ", ca.status().message()));
  }
  CertificateVerifier verifier;
  verifier.store_ = new Store;
  verifier.store_->store = X509_STORE_new();
  if (X509_STORE_add_cert(verifier.store_->store, ca->get()) != 1) {
    return OpenSslError("X509_STORE_add_cert");
  }
  return verifier;
}

CertificateVerifier::CertificateVerifier(CertificateVerifier&& other) noexcept
    : store_(other.store_) {
  other.store_ = nullptr;
}

CertificateVerifier& CertificateVerifier::operator=(
    CertificateVerifier&& other) noexcept {
  std::swap(store_, other.store_);
  return *this;
}

CertificateVerifier::~CertificateVerifier() { delete store_; }

absl::StatusOr<PeerIdentity> CertificateVerifier::Verify(
    absl::string_view cert_pem) const {
  if (cert_pem.empty()) {
    return absl::UnauthenticatedError("no client certificate was presented");
  }
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) {
    return absl::UnauthenticatedError("client certificate is not readable");
  }
  std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>
      ctx(X509_STORE_CTX_new());
  X509_STORE_CTX_init(ctx.get(), store_->store, cert->get(), nullptr);
  X509_STORE_CTX_set_purpose(ctx.get(), X509_PURPOSE_SSL_CLIENT);
  if (X509_verify_cert(ctx.get()) != 1) {
    int error = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return absl::UnauthenticatedError(absl::StrCat(
        "client certificate refused: ", X509_verify_cert_error_string(error)));
  }
  return SubjectOf(cert->get());
}

absl::StatusOr<PeerIdentity> ReadCertificateSubject(
    absl::string_view cert_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  return SubjectOf(cert->get());
}

}  // namespace echofed
