#ifndef ECHOFED_COMMON_SECURE_AGGREGATION_H_
#define ECHOFED_COMMON_SECURE_AGGREGATION_H_

// Secure aggregation by pairwise masks (after Bonawitz et al., "Practical
// Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017,
// without its secret-shared recovery: a dropout makes the round mask again
// without the site that left; README, "Secure aggregation").
//
// Every site of a masking attempt makes a fresh X25519 key pair. Two sites
// i < j (by name) agree on a seed with X25519 and HKDF-SHA256 bound to the
// run, round, attempt and both names; ChaCha20 expands it into one 64-bit
// mask per value. Site i adds the mask, site j subtracts it, so in the sum
// of all sites' uploads (mod 2^64) every mask cancels and only the sum of
// the encoded updates remains. A site encodes weight x (trained - global) of
// every value as a signed fixed-point number with kFixedPointFractionBits
// fractional bits.
//
// Both ends use this file: sites to mask, the coordinator to check the
// layout and decode the sum (coordinator/masked_sum.h).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/pki.h"
#include "common/tensor_bundle.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace echofed {

inline constexpr size_t kMaskingKeyBytes = 32;
// Resolution 2^-24 (6e-8) of weight x change.
inline constexpr int kFixedPointFractionBits = 24;
// The sum of a cohort's values must stay below this in magnitude (2^38:
// 2^62 once encoded), so that the signed 64-bit sum cannot wrap. A site of
// a cohort of n refuses to encode |weight x change| at or above
// kMaxEncodedMagnitude / n: such an update is broken anyway.
inline constexpr double kMaxEncodedMagnitude = 1099511627776.0 / 4;  // 2^38

// One site's X25519 key pair for one masking attempt. Movable, not
// copyable; the private key never leaves the object.
class MaskingKey {
 public:
  static absl::StatusOr<MaskingKey> Generate();
  MaskingKey(MaskingKey&&) noexcept;
  MaskingKey& operator=(MaskingKey&&) noexcept;
  ~MaskingKey();

  // Raw 32-byte public key.
  const std::string& public_key() const { return public_key_; }

  // The 32-byte seed shared with the owner of `peer_public_key`: X25519,
  // then HKDF-SHA256 with `label` as info. INVALID_ARGUMENT for a malformed
  // or low-order peer key.
  absl::StatusOr<std::string> PairSeed(absl::string_view peer_public_key,
                                       absl::string_view label) const;

 private:
  explicit MaskingKey(EVP_PKEY* key, std::string public_key);
  EVP_PKEY* key_ = nullptr;
  std::string public_key_;
};

// What binds a pair's seed to one attempt of one round of one run, for the
// two sites (in either order).
std::string PairLabel(absl::string_view run_id, int round, int attempt,
                      absl::string_view site_a, absl::string_view site_b);

// ChaCha20 keystream of a 32-byte seed, read as little-endian uint64s.
class MaskStream {
 public:
  static absl::StatusOr<MaskStream> Create(absl::string_view seed);
  MaskStream(MaskStream&&) noexcept;
  MaskStream& operator=(MaskStream&&) noexcept;
  ~MaskStream();
  absl::Status Next(uint64_t* out, size_t count);

 private:
  explicit MaskStream(EVP_CIPHER_CTX* context) : context_(context) {}
  EVP_CIPHER_CTX* context_ = nullptr;
};

// The layout of a masked upload: the global model's names, shapes and
// buffer flags, every tensor INT64 (ring elements), no digests.
ModelManifest MaskedLayout(const ModelManifest& global_layout);

// round(value x 2^kFixedPointFractionBits) as a ring element;
// INVALID_ARGUMENT when not finite or beyond kMaxEncodedMagnitude.
absl::StatusOr<uint64_t> EncodeFixedPoint(double value);
// A sum of encoded values (masks cancelled) back to a real number.
double DecodeFixedPoint(uint64_t sum);

struct MaskingPeerKey {
  std::string site;
  std::string public_key;
  // The site's certificate and its signature of MaskingKeyStatement.
  std::string certificate_pem;
  std::string signature;
};

// What a site signs with its certificate's key to vouch for its masking
// key of one attempt.
std::string MaskingKeyStatement(absl::string_view run_id, int round,
                                int attempt, absl::string_view site,
                                absl::string_view public_key);

// Checks that every key of `cohort` but `own_site`'s belongs to the site it
// is listed for: a site certificate of the study CA (`verifier`) naming
// that site, whose key signed the key statement. PERMISSION_DENIED
// otherwise: the coordinator relayed a key that is not the site's.
absl::Status VerifyCohortKeys(const CertificateVerifier& verifier,
                              const std::vector<MaskingPeerKey>& cohort,
                              absl::string_view own_site,
                              absl::string_view run_id, int round, int attempt);

// Masks this site's update for one attempt. `cohort` lists every site of
// the attempt (this one included, with the public key of `own_key`), as the
// coordinator sent it.
class UpdateMasker {
 public:
  // FAILED_PRECONDITION when the cohort does not hold this site with its
  // own key, holds a site twice, or has fewer than `min_cohort` sites (a
  // cohort of one would publish the update unmasked).
  static absl::StatusOr<UpdateMasker> Create(
      const MaskingKey& own_key, const std::string& own_site,
      const std::vector<MaskingPeerKey>& cohort, const std::string& run_id,
      int round, int attempt, int min_cohort);

  // weight x (update - global), fixed point, plus this site's masks, in the
  // masked layout. `update` and `global` must share names and shapes;
  // INVALID_ARGUMENT for a value that is not finite or, with the cohort's
  // size n, not below kMaxEncodedMagnitude / n.
  absl::StatusOr<TensorBundle> Mask(const TensorBundle& update,
                                    const TensorBundle& global, double weight);

 private:
  struct Pair {
    MaskStream stream;
    bool add = true;  // this site sorts before its peer
  };
  explicit UpdateMasker(std::vector<Pair> pairs) : pairs_(std::move(pairs)) {}
  std::vector<Pair> pairs_;  // one per other member of the cohort
};

}  // namespace echofed

#endif  // ECHOFED_COMMON_SECURE_AGGREGATION_H_
