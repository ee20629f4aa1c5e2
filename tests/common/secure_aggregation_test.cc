#include "common/secure_aggregation.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

MaskingKey NewKey() {
  absl::StatusOr<MaskingKey> key = MaskingKey::Generate();
  EXPECT_TRUE(key.ok()) << key.status();
  return std::move(*key);
}

TEST(MaskingKeyTest, BothEndsOfAPairAgreeOnTheSeedOfTheirContextOnly) {
  MaskingKey a = NewKey();
  MaskingKey b = NewKey();
  MaskingKey c = NewKey();
  EXPECT_EQ(a.public_key().size(), kMaskingKeyBytes);
  EXPECT_NE(a.public_key(), b.public_key());

  std::string label = PairLabel("run-1", 3, 1, "hospital-a", "hospital-b");
  // The label does not depend on which end computes it.
  EXPECT_EQ(label, PairLabel("run-1", 3, 1, "hospital-b", "hospital-a"));
  absl::StatusOr<std::string> ab = a.PairSeed(b.public_key(), label);
  absl::StatusOr<std::string> ba = b.PairSeed(a.public_key(), label);
  ASSERT_TRUE(ab.ok()) << ab.status();
  ASSERT_TRUE(ba.ok()) << ba.status();
  EXPECT_EQ(ab->size(), 32u);
  EXPECT_EQ(*ab, *ba);
  // Another peer, round or attempt gives another seed.
  EXPECT_NE(*ab, *a.PairSeed(c.public_key(), label));
  EXPECT_NE(*ab,
            *a.PairSeed(b.public_key(),
                        PairLabel("run-1", 4, 1, "hospital-a", "hospital-b")));
  EXPECT_NE(*ab,
            *a.PairSeed(b.public_key(),
                        PairLabel("run-1", 3, 2, "hospital-a", "hospital-b")));
  // Fields are length-prefixed: shifting a character between names differs.
  EXPECT_NE(PairLabel("r", 1, 1, "ab", "c"), PairLabel("r", 1, 1, "a", "bc"));
}

TEST(MaskingKeyTest, MalformedAndLowOrderPeerKeysAreRefused) {
  MaskingKey a = NewKey();
  EXPECT_TRUE(absl::IsInvalidArgument(a.PairSeed("short", "x").status()));
  // The all-zero point gives an all-zero shared secret: it would make the
  // masks of this pair public.
  EXPECT_FALSE(a.PairSeed(std::string(32, '\0'), "x").ok());
}

TEST(MaskStreamTest, IsChaCha20) {
  // RFC 8439 appendix A.1, test vector 1: key, nonce and counter zero.
  absl::StatusOr<MaskStream> stream = MaskStream::Create(std::string(32, '\0'));
  ASSERT_TRUE(stream.ok()) << stream.status();
  uint64_t words[4];
  ASSERT_TRUE(stream->Next(words, 4).ok());
  EXPECT_EQ(absl::BytesToHexString(absl::string_view(
                reinterpret_cast<const char*>(words), sizeof(words))),
            "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7");
  // The stream goes on where it stopped.
  uint64_t next;
  ASSERT_TRUE(stream->Next(&next, 1).ok());
  EXPECT_EQ(absl::BytesToHexString(absl::string_view(
                reinterpret_cast<const char*>(&next), sizeof(next))),
            "da41597c5157488d");
  EXPECT_TRUE(absl::IsInvalidArgument(MaskStream::Create("short").status()));
}

TEST(FixedPointTest, RoundTripsAndRefusesWhatCannotBeSummedExactly) {
  for (double value : {0.0, 1.0, -1.0, 0.123456, -98765.4321, 1e9}) {
    absl::StatusOr<uint64_t> encoded = EncodeFixedPoint(value);
    ASSERT_TRUE(encoded.ok()) << value;
    EXPECT_NEAR(DecodeFixedPoint(*encoded), value, std::ldexp(1.0, -24))
        << value;
  }
  // Sums of signed values wrap correctly.
  EXPECT_NEAR(DecodeFixedPoint(*EncodeFixedPoint(2.5) + *EncodeFixedPoint(-4)),
              -1.5, 1e-7);
  EXPECT_FALSE(EncodeFixedPoint(std::nan("")).ok());
  EXPECT_FALSE(EncodeFixedPoint(INFINITY).ok());
  EXPECT_FALSE(EncodeFixedPoint(kMaxEncodedMagnitude).ok());
  EXPECT_FALSE(EncodeFixedPoint(-kMaxEncodedMagnitude).ok());
}

TensorBundle FloatBundle(const std::vector<float>& values) {
  TensorBundle bundle;
  bundle.manifest.set_model_name("test_model");
  TensorSpec* spec = bundle.manifest.add_tensors();
  spec->set_name("w");
  spec->set_dtype(FLOAT32);
  spec->add_shape(static_cast<int64_t>(values.size()));
  bundle.data.emplace_back(reinterpret_cast<const char*>(values.data()),
                           values.size() * sizeof(float));
  EXPECT_TRUE(SealBundle(&bundle).ok());
  return bundle;
}

TEST(UpdateMaskerTest, RefusesACohortThatWouldNotHideTheUpdate) {
  MaskingKey own = NewKey();
  MaskingKey other = NewKey();
  std::vector<MaskingPeerKey> cohort = {{"a", own.public_key()},
                                        {"b", other.public_key()}};
  EXPECT_TRUE(UpdateMasker::Create(own, "a", cohort, "run", 1, 1, 2).ok());
  // Alone, or below the plan's minimum.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateMasker::Create(own, "a", {{"a", own.public_key()}}, "run", 1, 1, 1)
          .status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateMasker::Create(own, "a", cohort, "run", 1, 1, 3).status()));
  // Not in it, in it with another key, or a site listed twice.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateMasker::Create(own, "c", cohort, "run", 1, 1, 2).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateMasker::Create(own, "b", cohort, "run", 1, 1, 2).status()));
  std::vector<MaskingPeerKey> twice = cohort;
  twice.push_back({"b", other.public_key()});
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UpdateMasker::Create(own, "a", twice, "run", 1, 1, 2).status()));
}

TEST(UpdateMaskerTest, MaskedValuesLookUniformAndPairMasksCancel) {
  MaskingKey key_a = NewKey();
  MaskingKey key_b = NewKey();
  std::vector<MaskingPeerKey> cohort = {{"a", key_a.public_key()},
                                        {"b", key_b.public_key()}};
  const int n = 4096;
  TensorBundle global = FloatBundle(std::vector<float>(n, 0.0f));
  TensorBundle update_a = FloatBundle(std::vector<float>(n, 0.25f));
  TensorBundle update_b = FloatBundle(std::vector<float>(n, -0.5f));
  absl::StatusOr<UpdateMasker> masker_a =
      UpdateMasker::Create(key_a, "a", cohort, "run", 1, 1, 2);
  absl::StatusOr<UpdateMasker> masker_b =
      UpdateMasker::Create(key_b, "b", cohort, "run", 1, 1, 2);
  ASSERT_TRUE(masker_a.ok() && masker_b.ok());
  absl::StatusOr<TensorBundle> masked_a = masker_a->Mask(update_a, global, 10);
  absl::StatusOr<TensorBundle> masked_b = masker_b->Mask(update_b, global, 30);
  ASSERT_TRUE(masked_a.ok()) << masked_a.status();
  ASSERT_TRUE(masked_b.ok()) << masked_b.status();
  ASSERT_EQ(masked_a->manifest.tensors(0).dtype(), INT64);
  ASSERT_EQ(masked_a->data[0].size(), n * sizeof(uint64_t));

  std::vector<uint64_t> a(n), b(n);
  std::memcpy(a.data(), masked_a->data[0].data(), n * 8);
  std::memcpy(b.data(), masked_b->data[0].data(), n * 8);
  // One upload alone: the constant 10 x 0.25 is nowhere to be seen; every
  // bit is set about half the time.
  int near_plain = 0;
  std::vector<int> bit_counts(64, 0);
  for (uint64_t value : a) {
    if (std::fabs(DecodeFixedPoint(value) - 2.5) < 1000) ++near_plain;
    for (int bit = 0; bit < 64; ++bit) bit_counts[bit] += (value >> bit) & 1;
  }
  EXPECT_LT(near_plain, 3);
  for (int bit = 0; bit < 64; ++bit) {
    EXPECT_NEAR(bit_counts[bit], n / 2, 5 * std::sqrt(n / 4.0)) << bit;
  }
  // Both together: 10 x 0.25 + 30 x (-0.5) = -12.5 everywhere.
  for (int k = 0; k < n; ++k) {
    ASSERT_NEAR(DecodeFixedPoint(a[k] + b[k]), -12.5, 1e-6) << k;
  }
}

TEST(UpdateMaskerTest, RefusesUpdatesThatCannotBeEncoded) {
  MaskingKey key_a = NewKey();
  MaskingKey key_b = NewKey();
  std::vector<MaskingPeerKey> cohort = {{"a", key_a.public_key()},
                                        {"b", key_b.public_key()}};
  absl::StatusOr<UpdateMasker> masker =
      UpdateMasker::Create(key_a, "a", cohort, "run", 1, 1, 2);
  ASSERT_TRUE(masker.ok());
  TensorBundle global = FloatBundle({0.0f, 0.0f});
  EXPECT_TRUE(absl::IsInvalidArgument(
      masker->Mask(FloatBundle({1.0f, NAN}), global, 1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      masker->Mask(FloatBundle({1.0f, 1e30f}), global, 1).status()));
  // Two sites may each add up to half the bound, so the sum cannot wrap.
  EXPECT_TRUE(masker->Mask(FloatBundle({1.0f, 1e11f}), global, 1).ok());
  EXPECT_TRUE(absl::IsInvalidArgument(
      masker->Mask(FloatBundle({1.0f, 1e11f}), global, 2).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      masker->Mask(FloatBundle({1.0f}), global, 1).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      masker->Mask(FloatBundle({1.0f, 1.0f}), global, 0).status()));
}

TEST(VerifyCohortKeysTest, OnlyKeysSignedByTheListedSiteArePassed) {
  PemPair ca = *CreateCertificateAuthority("study", 2);
  PemPair other_ca = *CreateCertificateAuthority("elsewhere", 2);
  PemPair cert_a = *IssueCertificate(ca, {"a", Role::kSite, {}, 2});
  PemPair cert_b = *IssueCertificate(ca, {"b", Role::kSite, {}, 2});
  PemPair operator_b = *IssueCertificate(ca, {"b", Role::kOperator, {}, 2});
  PemPair foreign_b = *IssueCertificate(other_ca, {"b", Role::kSite, {}, 2});
  CertificateVerifier verifier = *CertificateVerifier::Create(ca.cert);
  MaskingKey key_a = NewKey();
  MaskingKey key_b = NewKey();
  MaskingKey intruder = NewKey();
  auto entry = [](const std::string& site, const MaskingKey& key,
                  const PemPair& signer, int round = 1) {
    return MaskingPeerKey{
        site, key.public_key(), signer.cert,
        *SignWithKey(signer.key, MaskingKeyStatement("run", round, 1, site,
                                                     key.public_key()))};
  };
  MaskingPeerKey own = entry("a", key_a, cert_a);
  EXPECT_TRUE(VerifyCohortKeys(verifier, {own, entry("b", key_b, cert_b)}, "a",
                               "run", 1, 1)
                  .ok());
  // The coordinator swaps b's key for its own, keeping b's signature.
  MaskingPeerKey swapped = entry("b", key_b, cert_b);
  swapped.public_key = intruder.public_key();
  EXPECT_TRUE(absl::IsPermissionDenied(
      VerifyCohortKeys(verifier, {own, swapped}, "a", "run", 1, 1)));
  // ... or signs a key with another site's certificate, a certificate that
  // is not a site's, or one from another CA, or replays an old round's.
  for (const MaskingPeerKey& forged :
       {entry("b", intruder, cert_a), entry("b", intruder, operator_b),
        entry("b", intruder, foreign_b), entry("b", key_b, cert_b, 2)}) {
    EXPECT_TRUE(absl::IsPermissionDenied(
        VerifyCohortKeys(verifier, {own, forged}, "a", "run", 1, 1)));
  }
}

}  // namespace
}  // namespace echofed
