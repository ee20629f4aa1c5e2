#include "common/secure_aggregation.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/half.h"

namespace echofed {
namespace {

constexpr char kHkdfSalt[] = "echofed secure aggregation v1";

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* context) const { EVP_PKEY_CTX_free(context); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

void AppendField(std::string* out, absl::string_view field) {
  uint32_t size = static_cast<uint32_t>(field.size());
  for (int i = 0; i < 4; ++i)
    out->push_back(static_cast<char>(size >> (8 * i)));
  out->append(field.data(), field.size());
}

}  // namespace

// --- MaskingKey

MaskingKey::MaskingKey(EVP_PKEY* key, std::string public_key)
    : key_(key), public_key_(std::move(public_key)) {}

MaskingKey::MaskingKey(MaskingKey&& other) noexcept
    : key_(std::exchange(other.key_, nullptr)),
      public_key_(std::move(other.public_key_)) {}

MaskingKey& MaskingKey::operator=(MaskingKey&& other) noexcept {
  if (this != &other) {
    EVP_PKEY_free(key_);
    key_ = std::exchange(other.key_, nullptr);
    public_key_ = std::move(other.public_key_);
  }
  return *this;
}

MaskingKey::~MaskingKey() { EVP_PKEY_free(key_); }

absl::StatusOr<MaskingKey> MaskingKey::Generate() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (!key) return OpenSslError("X25519 key generation");
  std::string public_key(kMaskingKeyBytes, '\0');
  size_t size = public_key.size();
  if (EVP_PKEY_get_raw_public_key(
          key.get(), reinterpret_cast<unsigned char*>(public_key.data()),
          &size) != 1 ||
      size != kMaskingKeyBytes) {
    return OpenSslError("reading the X25519 public key");
  }
  return MaskingKey(key.release(), std::move(public_key));
}

absl::StatusOr<std::string> MaskingKey::PairSeed(
    absl::string_view peer_public_key, absl::string_view label) const {
  if (peer_public_key.size() != kMaskingKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a masking public key has ", kMaskingKeyBytes,
                     " bytes, not ", peer_public_key.size()));
  }
  PkeyPtr peer(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_X25519, nullptr,
      reinterpret_cast<const unsigned char*>(peer_public_key.data()),
      peer_public_key.size()));
  if (!peer) return OpenSslError("reading a peer's X25519 key");
  PkeyCtxPtr agree(EVP_PKEY_CTX_new(key_, nullptr));
  std::string secret(kMaskingKeyBytes, '\0');
  size_t secret_size = secret.size();
  if (!agree || EVP_PKEY_derive_init(agree.get()) != 1 ||
      EVP_PKEY_derive_set_peer(agree.get(), peer.get()) != 1) {
    return OpenSslError("X25519 key agreement");
  }
  // OpenSSL refuses an all-zero shared secret (a low-order peer key).
  if (EVP_PKEY_derive(agree.get(),
                      reinterpret_cast<unsigned char*>(secret.data()),
                      &secret_size) != 1 ||
      secret_size != kMaskingKeyBytes) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "a peer's masking key gives no usable shared secret");
  }
  PkeyCtxPtr hkdf(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  std::string seed(kMaskingKeyBytes, '\0');
  size_t seed_size = seed.size();
  if (!hkdf || EVP_PKEY_derive_init(hkdf.get()) != 1 ||
      EVP_PKEY_CTX_set_hkdf_md(hkdf.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_salt(
          hkdf.get(), reinterpret_cast<const unsigned char*>(kHkdfSalt),
          sizeof(kHkdfSalt) - 1) != 1 ||
      EVP_PKEY_CTX_set1_hkdf_key(
          hkdf.get(), reinterpret_cast<const unsigned char*>(secret.data()),
          static_cast<int>(secret.size())) != 1 ||
      EVP_PKEY_CTX_add1_hkdf_info(
          hkdf.get(), reinterpret_cast<const unsigned char*>(label.data()),
          static_cast<int>(label.size())) != 1 ||
      EVP_PKEY_derive(hkdf.get(), reinterpret_cast<unsigned char*>(seed.data()),
                      &seed_size) != 1) {
    return OpenSslError("HKDF");
  }
  OPENSSL_cleanse(secret.data(), secret.size());
  return seed;
}

std::string PairLabel(absl::string_view run_id, int round, int attempt,
                      absl::string_view site_a, absl::string_view site_b) {
  std::string label = "pairwise mask";
  AppendField(&label, run_id);
  AppendField(&label, absl::StrCat(round));
  AppendField(&label, absl::StrCat(attempt));
  AppendField(&label, std::min(site_a, site_b));
  AppendField(&label, std::max(site_a, site_b));
  return label;
}

std::string MaskingKeyStatement(absl::string_view run_id, int round,
                                int attempt, absl::string_view site,
                                absl::string_view public_key) {
  std::string statement = "masking key";
  AppendField(&statement, run_id);
  AppendField(&statement, absl::StrCat(round));
  AppendField(&statement, absl::StrCat(attempt));
  AppendField(&statement, site);
  AppendField(&statement, public_key);
  return statement;
}

absl::Status VerifyCohortKeys(const CertificateVerifier& verifier,
                              const std::vector<MaskingPeerKey>& cohort,
                              absl::string_view own_site,
                              absl::string_view run_id, int round,
                              int attempt) {
  for (const MaskingPeerKey& peer : cohort) {
    if (peer.site == own_site) continue;
    absl::StatusOr<PeerIdentity> owner = verifier.Verify(peer.certificate_pem);
    if (!owner.ok()) {
      return absl::PermissionDeniedError(
          absl::StrCat("the masking key of ", peer.site,
                       " comes with no valid study certificate: ",
                       owner.status().message()));
    }
    if (owner->identity != peer.site || owner->role != Role::kSite) {
      return absl::PermissionDeniedError(
          absl::StrCat("the masking key listed for ", peer.site,
                       " comes with the certificate of ", owner->identity));
    }
    if (absl::Status status =
            CheckSignature(peer.certificate_pem,
                           MaskingKeyStatement(run_id, round, attempt,
                                               peer.site, peer.public_key),
                           peer.signature);
        !status.ok()) {
      return absl::PermissionDeniedError(
          absl::StrCat("the masking key listed for ", peer.site,
                       " is not signed by that site: ", status.message()));
    }
  }
  return absl::OkStatus();
}

// --- MaskStream

absl::StatusOr<MaskStream> MaskStream::Create(absl::string_view seed) {
  if (seed.size() != 32) {
    return absl::InvalidArgumentError("a mask seed has 32 bytes");
  }
  EVP_CIPHER_CTX* context = EVP_CIPHER_CTX_new();
  // Counter and nonce zero: every seed is used for one stream only.
  const unsigned char iv[16] = {};
  if (context == nullptr ||
      EVP_EncryptInit_ex(context, EVP_chacha20(), nullptr,
                         reinterpret_cast<const unsigned char*>(seed.data()),
                         iv) != 1) {
    EVP_CIPHER_CTX_free(context);
    return OpenSslError("ChaCha20 set-up");
  }
  return MaskStream(context);
}

MaskStream::MaskStream(MaskStream&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)) {}

MaskStream& MaskStream::operator=(MaskStream&& other) noexcept {
  if (this != &other) {
    EVP_CIPHER_CTX_free(context_);
    context_ = std::exchange(other.context_, nullptr);
  }
  return *this;
}

MaskStream::~MaskStream() { EVP_CIPHER_CTX_free(context_); }

absl::Status MaskStream::Next(uint64_t* out, size_t count) {
  // The keystream is the encryption of zeros, in place.
  std::memset(out, 0, count * sizeof(uint64_t));
  unsigned char* bytes = reinterpret_cast<unsigned char*>(out);
  size_t remaining = count * sizeof(uint64_t);
  while (remaining > 0) {
    int piece = static_cast<int>(std::min<size_t>(remaining, 1 << 30));
    int written = 0;
    if (EVP_EncryptUpdate(context_, bytes, &written, bytes, piece) != 1 ||
        written != piece) {
      return OpenSslError("ChaCha20");
    }
    bytes += piece;
    remaining -= piece;
  }
  // Little-endian hosts only (as the tensor codec): nothing to swap.
  return absl::OkStatus();
}

// --- Encoding

ModelManifest MaskedLayout(const ModelManifest& global_layout) {
  ModelManifest masked = global_layout;
  for (TensorSpec& spec : *masked.mutable_tensors()) {
    spec.set_dtype(INT64);
    spec.clear_sha256();
  }
  return masked;
}

absl::StatusOr<uint64_t> EncodeFixedPoint(double value) {
  if (!std::isfinite(value) || std::fabs(value) >= kMaxEncodedMagnitude) {
    return absl::InvalidArgumentError(
        absl::StrCat("value ", value,
                     " cannot be masked (not finite, or weight x change "
                     "beyond 2^38)"));
  }
  int64_t fixed = std::llround(std::ldexp(value, kFixedPointFractionBits));
  return static_cast<uint64_t>(fixed);
}

double DecodeFixedPoint(uint64_t sum) {
  return std::ldexp(static_cast<double>(static_cast<int64_t>(sum)),
                    -kFixedPointFractionBits);
}

// --- UpdateMasker

absl::StatusOr<UpdateMasker> UpdateMasker::Create(
    const MaskingKey& own_key, const std::string& own_site,
    const std::vector<MaskingPeerKey>& cohort, const std::string& run_id,
    int round, int attempt, int min_cohort) {
  std::set<std::string> seen;
  bool found_self = false;
  for (const MaskingPeerKey& peer : cohort) {
    if (!seen.insert(peer.site).second) {
      return absl::FailedPreconditionError(
          absl::StrCat("the masking cohort lists ", peer.site, " twice"));
    }
    if (peer.site == own_site) {
      if (peer.public_key != own_key.public_key()) {
        return absl::FailedPreconditionError(
            "the masking cohort carries another key for this site");
      }
      found_self = true;
    }
  }
  if (!found_self) {
    return absl::FailedPreconditionError(
        "this site is not in the masking cohort");
  }
  if (static_cast<int>(cohort.size()) < std::max(2, min_cohort)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a masking cohort of ", cohort.size(), " sites is below the ",
        std::max(2, min_cohort), " needed: masks would not hide the update"));
  }
  std::vector<Pair> pairs;
  for (const MaskingPeerKey& peer : cohort) {
    if (peer.site == own_site) continue;
    absl::StatusOr<std::string> seed = own_key.PairSeed(
        peer.public_key,
        PairLabel(run_id, round, attempt, own_site, peer.site));
    if (!seed.ok()) {
      return absl::Status(seed.status().code(),
                          absl::StrCat("masking key of ", peer.site, ": ",
                                       seed.status().message()));
    }
    absl::StatusOr<MaskStream> stream = MaskStream::Create(*seed);
    OPENSSL_cleanse(seed->data(), seed->size());
    if (!stream.ok()) return stream.status();
    pairs.push_back(Pair{std::move(*stream), own_site < peer.site});
  }
  return UpdateMasker(std::move(pairs));
}

absl::StatusOr<TensorBundle> UpdateMasker::Mask(const TensorBundle& update,
                                                const TensorBundle& global,
                                                double weight) {
  if (!std::isfinite(weight) || weight <= 0) {
    return absl::InvalidArgumentError("the update weight must be positive");
  }
  const ModelManifest& layout = global.manifest;
  if (update.manifest.tensors_size() != layout.tensors_size()) {
    return absl::InvalidArgumentError(
        "the update and the global model differ in tensors");
  }
  const double per_site_limit =
      kMaxEncodedMagnitude / static_cast<double>(pairs_.size() + 1);
  TensorBundle masked;
  masked.manifest = MaskedLayout(layout);
  masked.manifest.set_model_name(update.manifest.model_name());
  masked.data.resize(layout.tensors_size());
  std::vector<uint64_t> mask;
  for (int t = 0; t < layout.tensors_size(); ++t) {
    const TensorSpec& global_spec = layout.tensors(t);
    const TensorSpec& update_spec = update.manifest.tensors(t);
    if (global_spec.name() != update_spec.name() ||
        global_spec.shape_size() != update_spec.shape_size() ||
        !std::equal(global_spec.shape().begin(), global_spec.shape().end(),
                    update_spec.shape().begin())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", update_spec.name(), " does not match the global model's ",
          global_spec.name()));
    }
    absl::StatusOr<size_t> update_size = DTypeSize(update_spec.dtype());
    absl::StatusOr<size_t> global_size = DTypeSize(global_spec.dtype());
    if (!update_size.ok()) return update_size.status();
    if (!global_size.ok()) return global_size.status();
    size_t count = update.data[t].size() / *update_size;
    if (count != global.data[t].size() / *global_size) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", update_spec.name(), " has a different element count"));
    }
    std::vector<uint64_t> values(count);
    for (size_t k = 0; k < count; ++k) {
      double change =
          ElementToDouble(update_spec.dtype(),
                          update.data[t].data() + k * *update_size) -
          ElementToDouble(global_spec.dtype(),
                          global.data[t].data() + k * *global_size);
      const double value = weight * change;
      absl::StatusOr<uint64_t> encoded =
          std::fabs(value) < per_site_limit
              ? EncodeFixedPoint(value)
              : absl::InvalidArgumentError(absl::StrCat(
                    "weight x change ", value, " is beyond the ",
                    per_site_limit, " a site of ", pairs_.size() + 1,
                    " may add without the sum wrapping"));
      if (!encoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "tensor ", update_spec.name(), ": ", encoded.status().message()));
      }
      values[k] = *encoded;
    }
    mask.resize(count);
    for (Pair& pair : pairs_) {
      if (absl::Status status = pair.stream.Next(mask.data(), count);
          !status.ok()) {
        return status;
      }
      // Unsigned arithmetic wraps: the ring Z / 2^64.
      for (size_t k = 0; k < count; ++k) {
        values[k] = pair.add ? values[k] + mask[k] : values[k] - mask[k];
      }
    }
    masked.data[t].assign(reinterpret_cast<const char*>(values.data()),
                          count * sizeof(uint64_t));
  }
  if (absl::Status status = SealBundle(&masked); !status.ok()) return status;
  return masked;
}

}  // namespace echofed
