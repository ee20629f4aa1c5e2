#include "common/pki.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <time.h>

#include <memory>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/files.h"

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
using CrlPtr = std::unique_ptr<X509_CRL, Deleter<X509_CRL, X509_CRL_free>>;
using RevokedPtr =
    std::unique_ptr<X509_REVOKED, Deleter<X509_REVOKED, X509_REVOKED_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, Deleter<BIGNUM, BN_free>>;
using Asn1TimePtr =
    std::unique_ptr<ASN1_TIME, Deleter<ASN1_TIME, ASN1_TIME_free>>;
using Asn1IntegerPtr =
    std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER, ASN1_INTEGER_free>>;
using Asn1EnumeratedPtr =
    std::unique_ptr<ASN1_ENUMERATED,
                    Deleter<ASN1_ENUMERATED, ASN1_ENUMERATED_free>>;
using GeneralNamesPtr =
    std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES, GENERAL_NAMES_free>>;

// The same slack as certificates' notBefore: a CRL signed on a machine
// whose clock runs a little ahead must not be "not yet valid" elsewhere,
// which would refuse everyone.
constexpr long kBackdateSeconds = 300;

absl::StatusOr<X509Ptr> ParseCert(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate");
  }
  return cert;
}

absl::StatusOr<CrlPtr> ParseCrl(absl::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
  if (!crl) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not a PEM certificate revocation list");
  }
  return crl;
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

absl::StatusOr<std::string> CrlToPem(X509_CRL* crl) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (PEM_write_bio_X509_CRL(bio.get(), crl) != 1) {
    return OpenSslError("PEM_write_bio_X509_CRL");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  BignumPtr number(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!number) return "";
  char* hex = BN_bn2hex(number.get());
  if (hex == nullptr) return "";
  std::string text(hex);
  OPENSSL_free(hex);
  return text;
}

absl::StatusOr<Asn1IntegerPtr> SerialFromHex(const std::string& hex) {
  BIGNUM* raw = nullptr;
  int parsed = BN_hex2bn(&raw, hex.c_str());
  BignumPtr number(raw);
  if (parsed <= 0 || static_cast<size_t>(parsed) != hex.size()) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("'", hex, "' is not a hexadecimal serial number"));
  }
  Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(number.get(), nullptr));
  if (!serial) return OpenSslError("BN_to_ASN1_INTEGER");
  return serial;
}

absl::Time FromAsn1Time(const ASN1_TIME* time) {
  struct tm parts = {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &parts) != 1) {
    return absl::InfinitePast();
  }
  return absl::FromTimeT(timegm(&parts));
}

int ReasonCode(RevocationReason reason) {
  switch (reason) {
    case RevocationReason::kUnspecified:
      return CRL_REASON_UNSPECIFIED;
    case RevocationReason::kKeyCompromise:
      return CRL_REASON_KEY_COMPROMISE;
    case RevocationReason::kAffiliationChanged:
      return CRL_REASON_AFFILIATION_CHANGED;
    case RevocationReason::kSuperseded:
      return CRL_REASON_SUPERSEDED;
    case RevocationReason::kCessationOfOperation:
      return CRL_REASON_CESSATION_OF_OPERATION;
    case RevocationReason::kPrivilegeWithdrawn:
      return CRL_REASON_PRIVILEGE_WITHDRAWN;
  }
  return CRL_REASON_UNSPECIFIED;
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
  std::optional<RevocationListInfo> crl;
  ~Store() { X509_STORE_free(store); }
};

absl::StatusOr<CertificateVerifier> CertificateVerifier::Create(
    absl::string_view ca_pem, absl::string_view crl_pem) {
  absl::StatusOr<CertificateVerifier> verifier = Create(ca_pem);
  if (!verifier.ok()) return verifier.status();
  absl::StatusOr<RevocationListInfo> info =
      CheckRevocationList(crl_pem, ca_pem);
  if (!info.ok()) return info.status();
  absl::StatusOr<CrlPtr> crl = ParseCrl(crl_pem);
  if (!crl.ok()) return crl.status();
  // CRL_CHECK: the leaf must be looked up in the CA's CRL, and a missing or
  // stale CRL fails verification rather than passing it.
  if (X509_STORE_add_crl(verifier->store_->store, crl->get()) != 1 ||
      X509_STORE_set_flags(verifier->store_->store, X509_V_FLAG_CRL_CHECK) !=
          1) {
    return OpenSslError("X509_STORE_add_crl");
  }
  verifier->store_->crl = std::move(*info);
  return verifier;
}

const RevocationListInfo* CertificateVerifier::revocation_list() const {
  return store_ != nullptr && store_->crl.has_value() ? &*store_->crl : nullptr;
}

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
    if (error == X509_V_ERR_CERT_REVOKED) {
      // The subject is only claimed here (OpenSSL looks up the CRL before
      // it checks signatures), so it is named as the certificate's, not as
      // the caller's identity.
      absl::StatusOr<PeerIdentity> claimed = SubjectOf(cert->get());
      return absl::UnauthenticatedError(absl::StrCat(
          "client certificate refused: it has been revoked (certificate of '",
          claimed.ok() ? claimed->identity : "?", "', serial ",
          SerialHex(X509_get0_serialNumber(cert->get())),
          ", listed in the study's CRL)"));
    }
    if (error == X509_V_ERR_CRL_HAS_EXPIRED ||
        error == X509_V_ERR_CRL_NOT_YET_VALID) {
      return absl::UnauthenticatedError(absl::StrCat(
          "client certificate refused: the study's certificate revocation "
          "list is not current (",
          X509_verify_cert_error_string(error),
          "); re-sign it with `echofed pki crl`"));
    }
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

absl::StatusOr<CertificateDetails> ReadCertificateDetails(
    absl::string_view cert_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<PeerIdentity> subject = SubjectOf(cert->get());
  if (!subject.ok()) return subject.status();
  CertificateDetails details;
  details.subject = *subject;
  details.serial = SerialHex(X509_get0_serialNumber(cert->get()));
  GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert->get(), NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    if (name->type == GEN_DNS) {
      const ASN1_STRING* dns = name->d.dNSName;
      details.host_names.emplace_back(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
          static_cast<size_t>(ASN1_STRING_length(dns)));
    } else if (name->type == GEN_IPADD) {
      const ASN1_STRING* ip = name->d.iPAddress;
      int length = ASN1_STRING_length(ip);
      char text[INET6_ADDRSTRLEN] = "";
      int family = length == 4 ? AF_INET : length == 16 ? AF_INET6 : -1;
      if (family != -1 &&
          inet_ntop(family, ASN1_STRING_get0_data(ip), text, sizeof(text))) {
        details.host_names.emplace_back(text);
      }
    }
  }
  return details;
}

absl::Status CheckIssuedBy(absl::string_view cert_pem,
                           absl::string_view ca_cert_pem) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<X509Ptr> ca = ParseCert(ca_cert_pem);
  if (!ca.ok()) return ca.status();
  if (X509_NAME_cmp(X509_get_issuer_name(cert->get()),
                    X509_get_subject_name(ca->get())) != 0 ||
      X509_verify(cert->get(), X509_get0_pubkey(ca->get())) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the certificate was not issued by this study CA");
  }
  return absl::OkStatus();
}

absl::string_view RevocationReasonName(RevocationReason reason) {
  switch (reason) {
    case RevocationReason::kUnspecified:
      return "unspecified";
    case RevocationReason::kKeyCompromise:
      return "keyCompromise";
    case RevocationReason::kAffiliationChanged:
      return "affiliationChanged";
    case RevocationReason::kSuperseded:
      return "superseded";
    case RevocationReason::kCessationOfOperation:
      return "cessationOfOperation";
    case RevocationReason::kPrivilegeWithdrawn:
      return "privilegeWithdrawn";
  }
  return "unspecified";
}

absl::StatusOr<RevocationReason> ParseRevocationReason(absl::string_view name) {
  auto fold = [](absl::string_view text) {
    std::string folded;
    for (char c : text) {
      if (c != '-' && c != '_') {
        folded.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
      }
    }
    return folded;
  };
  std::string wanted = fold(name);
  std::vector<std::string> known;
  for (RevocationReason reason :
       {RevocationReason::kUnspecified, RevocationReason::kKeyCompromise,
        RevocationReason::kAffiliationChanged, RevocationReason::kSuperseded,
        RevocationReason::kCessationOfOperation,
        RevocationReason::kPrivilegeWithdrawn}) {
    if (fold(RevocationReasonName(reason)) == wanted) return reason;
    known.emplace_back(RevocationReasonName(reason));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown revocation reason '", name, "' (expected ",
                   absl::StrJoin(known, ", "), ")"));
}

absl::StatusOr<std::string> CreateRevocationList(
    const PemPair& ca, const RevocationListRequest& request) {
  absl::StatusOr<X509Ptr> ca_cert = ParseCert(ca.cert);
  if (!ca_cert.ok()) return ca_cert.status();
  absl::StatusOr<KeyPtr> ca_key = ParseKey(ca.key);
  if (!ca_key.ok()) return ca_key.status();
  if (X509_check_private_key(ca_cert->get(), ca_key->get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the CA key does not belong to the CA certificate");
  }
  if (request.crl_number < 1) {
    return absl::InvalidArgumentError("CRL numbers start at 1");
  }
  if (request.valid_for <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("a CRL must be valid for some time");
  }
  CrlPtr crl(X509_CRL_new());
  if (!crl) return OpenSslError("X509_CRL_new");
  time_t this_update = absl::ToTimeT(request.this_update);
  Asn1TimePtr last(ASN1_TIME_set(nullptr, this_update - kBackdateSeconds));
  Asn1TimePtr next(ASN1_TIME_set(
      nullptr, absl::ToTimeT(request.this_update + request.valid_for)));
  if (!last || !next ||
      X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(),
                               X509_get_subject_name(ca_cert->get())) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return OpenSslError("CRL header");
  }
  for (const RevokedSerial& entry : request.revoked) {
    absl::StatusOr<Asn1IntegerPtr> serial = SerialFromHex(entry.serial);
    if (!serial.ok()) return serial.status();
    RevokedPtr revoked(X509_REVOKED_new());
    Asn1TimePtr when(ASN1_TIME_set(nullptr, absl::ToTimeT(entry.revoked_at)));
    Asn1EnumeratedPtr reason(ASN1_ENUMERATED_new());
    if (!revoked || !when || !reason ||
        X509_REVOKED_set_serialNumber(revoked.get(), serial->get()) != 1 ||
        X509_REVOKED_set_revocationDate(revoked.get(), when.get()) != 1 ||
        ASN1_ENUMERATED_set(reason.get(), ReasonCode(entry.reason)) != 1 ||
        X509_REVOKED_add1_ext_i2d(revoked.get(), NID_crl_reason, reason.get(),
                                  0, 0) != 1) {
      return OpenSslError("CRL entry");
    }
    if (X509_CRL_add0_revoked(crl.get(), revoked.get()) != 1) {
      return OpenSslError("X509_CRL_add0_revoked");
    }
    revoked.release();  // owned by the CRL now
  }
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca_cert->get(), nullptr, nullptr, crl.get(), 0);
  ExtPtr authority_key(X509V3_EXT_conf_nid(
      nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
  Asn1IntegerPtr number(ASN1_INTEGER_new());
  if (!authority_key || !number ||
      X509_CRL_add_ext(crl.get(), authority_key.get(), -1) != 1 ||
      ASN1_INTEGER_set_int64(number.get(), request.crl_number) != 1 ||
      X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, 0) !=
          1) {
    return OpenSslError("CRL extensions");
  }
  if (X509_CRL_sort(crl.get()) != 1) return OpenSslError("X509_CRL_sort");
  if (X509_CRL_sign(crl.get(), ca_key->get(), EVP_sha256()) <= 0) {
    return OpenSslError("X509_CRL_sign");
  }
  return CrlToPem(crl.get());
}

absl::StatusOr<RevocationListInfo> CheckRevocationList(
    absl::string_view crl_pem, absl::string_view ca_cert_pem) {
  absl::StatusOr<CrlPtr> crl = ParseCrl(crl_pem);
  if (!crl.ok()) return crl.status();
  absl::StatusOr<X509Ptr> ca = ParseCert(ca_cert_pem);
  if (!ca.ok()) return ca.status();
  if (X509_NAME_cmp(X509_CRL_get_issuer(crl->get()),
                    X509_get_subject_name(ca->get())) != 0) {
    return absl::InvalidArgumentError(
        "the revocation list was issued by another CA");
  }
  if (X509_CRL_verify(crl->get(), X509_get0_pubkey(ca->get())) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the revocation list is not signed by the study CA");
  }
  RevocationListInfo info;
  Asn1IntegerPtr number(static_cast<ASN1_INTEGER*>(
      X509_CRL_get_ext_d2i(crl->get(), NID_crl_number, nullptr, nullptr)));
  if (number && ASN1_INTEGER_get_int64(&info.crl_number, number.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError("the CRL number is out of range");
  }
  info.this_update = FromAsn1Time(X509_CRL_get0_lastUpdate(crl->get()));
  const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl->get());
  info.next_update =
      next == nullptr ? absl::InfiniteFuture() : FromAsn1Time(next);
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl->get());
  for (int i = 0; revoked != nullptr && i < sk_X509_REVOKED_num(revoked); ++i) {
    info.revoked_serials.push_back(SerialHex(
        X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i))));
  }
  return info;
}

absl::Status OpenSslError(absl::string_view what) {
  unsigned long code = ERR_get_error();
  char buffer[256] = "unknown error";
  if (code != 0) ERR_error_string_n(code, buffer, sizeof(buffer));
  ERR_clear_error();
  return absl::InternalError(absl::StrCat(what, ": ", buffer));
}

absl::StatusOr<std::string> SignWithKey(absl::string_view key_pem,
                                        absl::string_view message) {
  absl::StatusOr<KeyPtr> key = ParseKey(key_pem);
  if (!key.ok()) return key.status();
  std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>> context(
      EVP_MD_CTX_new());
  size_t size = 0;
  if (!context ||
      EVP_DigestSignInit(context.get(), nullptr, EVP_sha256(), nullptr,
                         key->get()) != 1 ||
      EVP_DigestSign(context.get(), nullptr, &size,
                     reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1) {
    return OpenSslError("EVP_DigestSign");
  }
  std::string signature(size, '\0');
  if (EVP_DigestSign(context.get(),
                     reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1) {
    return OpenSslError("EVP_DigestSign");
  }
  signature.resize(size);
  return signature;
}

absl::Status CheckSignature(absl::string_view cert_pem,
                            absl::string_view message,
                            absl::string_view signature) {
  absl::StatusOr<X509Ptr> cert = ParseCert(cert_pem);
  if (!cert.ok()) return cert.status();
  EVP_PKEY* key = X509_get0_pubkey(cert->get());
  std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>> context(
      EVP_MD_CTX_new());
  if (key == nullptr || !context ||
      EVP_DigestVerifyInit(context.get(), nullptr, EVP_sha256(), nullptr,
                           key) != 1) {
    return OpenSslError("EVP_DigestVerifyInit");
  }
  int verified = EVP_DigestVerify(
      context.get(), reinterpret_cast<const unsigned char*>(signature.data()),
      signature.size(), reinterpret_cast<const unsigned char*>(message.data()),
      message.size());
  ERR_clear_error();
  if (verified != 1) {
    return absl::InvalidArgumentError(
        "the signature does not match the certificate's key");
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsMaterial> LoadTlsMaterial(const TlsFiles& files) {
  TlsMaterial tls;
  for (auto [path, out] : {std::pair{&files.ca_cert(), &tls.ca_cert},
                           std::pair{&files.cert(), &tls.cert},
                           std::pair{&files.key(), &tls.key}}) {
    if (path->empty()) {
      return absl::InvalidArgumentError(
          "tls needs ca_cert, cert and key files");
    }
    absl::StatusOr<std::string> content = ReadFileToString(*path);
    if (!content.ok()) return content.status();
    *out = std::move(*content);
  }
  return tls;
}

}  // namespace echofed
