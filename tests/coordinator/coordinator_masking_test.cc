// Secure aggregation within a training round
// (coordinator/coordinator_masking.cc): masking keys, the cohort, redoing
// an attempt without the sites that dropped out, and the plans and runs
// that must refuse it.

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/pki.h"
#include "common/secure_aggregation.h"
#include "coordinator/coordinator.h"
#include "gtest/gtest.h"
#include "tests/coordinator/coordinator_test_fixture.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::CoordinatorTest;
using ::echofed::testing::MakeBundle;
using ::echofed::testing::MakePlan;

class SecureAggregationTest : public CoordinatorTest {
 protected:
  Plan SecurePlan() {
    Plan plan = MakePlan({"a", "b", "c"}, {}, 1);
    plan.set_secure_aggregation(true);
    plan.set_min_sites(2);
    return plan;
  }

  // Each site's certificate, as an agent signs its masking keys with it.
  const PemPair& SiteCertificate(const std::string& site) {
    static const PemPair ca = *CreateCertificateAuthority("test", 2);
    auto it = certificates_.find(site);
    if (it == certificates_.end()) {
      it = certificates_
               .emplace(site, *IssueCertificate(ca, {site, Role::kSite, {}, 2}))
               .first;
    }
    return it->second;
  }

  absl::Status SubmitKey(const std::string& site, const std::string& run_id,
                         int attempt, const MaskingKey& key,
                         const std::string& signer = "") {
    MaskingKeyRequest request;
    request.set_run_id(run_id);
    request.set_round(1);
    request.set_attempt(attempt);
    request.set_public_key(key.public_key());
    const PemPair& certificate =
        SiteCertificate(signer.empty() ? site : signer);
    request.set_certificate_pem(certificate.cert);
    request.set_key_signature(*SignWithKey(
        certificate.key,
        MaskingKeyStatement(run_id, 1, attempt, site, key.public_key())));
    return coordinator_->SubmitMaskingKey(site, request);
  }

  absl::StatusOr<MaskingCohort> Cohort(const std::string& site,
                                       const std::string& run_id, int attempt) {
    MaskingCohortRequest request;
    request.set_run_id(run_id);
    request.set_round(1);
    request.set_attempt(attempt);
    return coordinator_->GetMaskingCohort(site, request);
  }

  // Masks `local` against the initial model (all zeros) as a site does
  // and uploads it for round 1.
  absl::StatusOr<UploadReceipt> MaskedUpload(const std::string& site,
                                             const std::string& run_id,
                                             int attempt, const MaskingKey& key,
                                             float local, int64_t samples) {
    absl::StatusOr<MaskingCohort> cohort = Cohort(site, run_id, attempt);
    if (!cohort.ok()) return cohort.status();
    std::vector<MaskingPeerKey> peers;
    for (const MaskingPeer& peer : cohort->peers()) {
      peers.push_back({peer.site(), peer.public_key(), peer.certificate_pem(),
                       peer.key_signature()});
    }
    absl::StatusOr<UpdateMasker> masker =
        UpdateMasker::Create(key, site, peers, run_id, 1, attempt, 2);
    if (!masker.ok()) return masker.status();
    absl::StatusOr<TensorBundle> masked =
        masker->Mask(MakeBundle("test_model", local),
                     MakeBundle("test_model", 0.0f), samples);
    if (!masked.ok()) return masked.status();
    return UploadAs(site, run_id, *masked, samples, attempt);
  }

  absl::StatusOr<UploadReceipt> UploadAs(const std::string& site,
                                         const std::string& run_id,
                                         const TensorBundle& bundle,
                                         int64_t samples, int attempt) {
    UploadHeader header;
    header.set_run_id(run_id);
    header.set_round(1);
    header.set_num_samples(samples);
    header.set_upload_id(absl::StrCat(site, "-a", attempt));
    header.set_masking_attempt(attempt);
    return Send(site, header, bundle);
  }

  std::map<std::string, PemPair> certificates_;

  float CommittedValue(const std::string& run_id) {
    absl::StatusOr<std::unique_ptr<ModelFileReader>> model =
        coordinator_->OpenModel(run_id, 1);
    EXPECT_TRUE(model.ok());
    TensorBundle bundle = *(*model)->ReadAll();
    float value;
    std::memcpy(&value, bundle.data[0].data(), 4);
    return value;
  }
};

TEST_F(SecureAggregationTest, CoordinatorLearnsOnlyTheCohortsSum) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  std::string run = StartAndInitialize(SecurePlan());
  for (const char* site : {"a", "b", "c"}) {
    absl::StatusOr<Task> task = Poll(site);
    ASSERT_TRUE(task.ok());
    EXPECT_EQ(task->kind(), Task::TRAIN);
    EXPECT_EQ(task->masking_attempt(), 1);
  }
  MaskingKey key_a = *MaskingKey::Generate();
  MaskingKey key_b = *MaskingKey::Generate();
  MaskingKey key_c = *MaskingKey::Generate();
  // No update before the cohort is fixed, and none in the clear.
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 1).status()));
  ASSERT_TRUE(SubmitKey("a", run, 1, key_a).ok());
  ASSERT_TRUE(SubmitKey("b", run, 1, key_b).ok());
  EXPECT_FALSE(Cohort("a", run, 1)->ready());
  MaskingKeyRequest malformed;
  malformed.set_run_id(run);
  malformed.set_round(1);
  malformed.set_attempt(1);
  malformed.set_public_key("short");
  EXPECT_TRUE(
      absl::IsInvalidArgument(coordinator_->SubmitMaskingKey("c", malformed)));
  // A key must come signed with the caller's own certificate.
  EXPECT_TRUE(absl::IsInvalidArgument(SubmitKey("c", run, 1, key_c, "a")));
  MaskingKeyRequest unsigned_key;
  unsigned_key.set_run_id(run);
  unsigned_key.set_round(1);
  unsigned_key.set_attempt(1);
  unsigned_key.set_public_key(key_c.public_key());
  unsigned_key.set_certificate_pem(SiteCertificate("c").cert);
  EXPECT_TRUE(absl::IsInvalidArgument(
      coordinator_->SubmitMaskingKey("c", unsigned_key)));
  EXPECT_FALSE(Cohort("a", run, 1)->ready());
  ASSERT_TRUE(SubmitKey("c", run, 1, key_c).ok());
  absl::StatusOr<MaskingCohort> cohort = Cohort("c", run, 1);
  ASSERT_TRUE(cohort.ok());
  ASSERT_TRUE(cohort->ready());
  ASSERT_EQ(cohort->peers_size(), 3);
  EXPECT_EQ(cohort->peers(2).site(), "c");
  EXPECT_EQ(cohort->peers(2).public_key(), key_c.public_key());
  EXPECT_TRUE(absl::IsInvalidArgument(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 1).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 2).status()));

  ASSERT_TRUE(MaskedUpload("a", run, 1, key_a, 1.0f, 30).ok());
  ASSERT_TRUE(MaskedUpload("b", run, 1, key_b, 2.0f, 10).ok());
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
  ASSERT_TRUE(MaskedUpload("c", run, 1, key_c, 6.0f, 20).ok());
  RunStatus status = Status();
  ASSERT_EQ(status.rounds_size(), 2);
  EXPECT_EQ(status.rounds(1).total_weight(), 60);
  EXPECT_EQ(status.rounds(1).masking_attempts(), 1);
  EXPECT_EQ(status.rounds(1).masking_dropouts_size(), 0);
  // (30 x 1 + 10 x 2 + 20 x 6) / 60, to the fixed-point resolution.
  EXPECT_NEAR(CommittedValue(run), 170.0 / 60, 1e-6);
}

TEST_F(SecureAggregationTest, DropoutAfterMaskingRedoesTheRoundWithout) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  std::string run = StartAndInitialize(SecurePlan());
  for (const char* site : {"a", "b", "c"}) ASSERT_TRUE(Poll(site).ok());
  MaskingKey key_a = *MaskingKey::Generate();
  MaskingKey key_b = *MaskingKey::Generate();
  MaskingKey key_c = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 1, key_a).ok());
  ASSERT_TRUE(SubmitKey("b", run, 1, key_b).ok());
  ASSERT_TRUE(SubmitKey("c", run, 1, key_c).ok());
  ASSERT_TRUE(MaskedUpload("a", run, 1, key_a, 1.0f, 30).ok());
  ASSERT_TRUE(MaskedUpload("b", run, 1, key_b, 2.0f, 10).ok());
  // c goes silent; a and b stay in touch.
  clock_.Advance(absl::Seconds(61));
  ASSERT_TRUE(Poll("a").ok());
  ASSERT_TRUE(Poll("b").ok());
  coordinator_->Tick();
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
  absl::StatusOr<Task> again = Poll("a");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->kind(), Task::TRAIN);
  EXPECT_EQ(again->masking_attempt(), 2);
  EXPECT_EQ(Poll("c")->kind(), Task::WAIT);
  // The first attempt is over for everyone.
  EXPECT_TRUE(absl::IsAborted(Cohort("a", run, 1).status()));
  EXPECT_TRUE(
      absl::IsAborted(MaskedUpload("c", run, 1, key_c, 6.0f, 20).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(SubmitKey("c", run, 2, key_c)));

  MaskingKey key_a2 = *MaskingKey::Generate();
  MaskingKey key_b2 = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 2, key_a2).ok());
  ASSERT_TRUE(SubmitKey("b", run, 2, key_b2).ok());
  ASSERT_TRUE(MaskedUpload("a", run, 2, key_a2, 1.0f, 30).ok());
  ASSERT_TRUE(MaskedUpload("b", run, 2, key_b2, 2.0f, 10).ok());
  RunStatus status = Status();
  ASSERT_EQ(status.rounds_size(), 2);
  EXPECT_EQ(status.rounds(1).masking_attempts(), 2);
  ASSERT_EQ(status.rounds(1).masking_dropouts_size(), 1);
  EXPECT_EQ(status.rounds(1).masking_dropouts(0), "c");
  EXPECT_EQ(status.rounds(1).total_weight(), 40);
  EXPECT_NEAR(CommittedValue(run), 50.0 / 40, 1e-6);
}

TEST_F(SecureAggregationTest, NoCohortOfOneAndNoUnusableKeys) {
  Join("a");
  Join("b");
  Plan plan = MakePlan({"a", "b"}, {}, 1);
  plan.set_secure_aggregation(true);
  std::string run = StartAndInitialize(plan);
  ASSERT_TRUE(Poll("a").ok());
  ASSERT_TRUE(Poll("b").ok());
  // The all-zero point: no peer could agree a seed with it.
  MaskingKeyRequest zero;
  zero.set_run_id(run);
  zero.set_round(1);
  zero.set_attempt(1);
  zero.set_public_key(std::string(kMaskingKeyBytes, '\0'));
  zero.set_certificate_pem(SiteCertificate("a").cert);
  zero.set_key_signature(
      *SignWithKey(SiteCertificate("a").key,
                   MaskingKeyStatement(run, 1, 1, "a", zero.public_key())));
  EXPECT_TRUE(
      absl::IsInvalidArgument(coordinator_->SubmitMaskingKey("a", zero)));

  MaskingKey key_a = *MaskingKey::Generate();
  MaskingKey key_b = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 1, key_a).ok());
  ASSERT_TRUE(SubmitKey("b", run, 1, key_b).ok());
  ASSERT_TRUE(MaskedUpload("a", run, 1, key_a, 1.0f, 30).ok());
  // b leaves after masking: the redo has a alone, and a cohort of one
  // would publish a's update, so none is fixed, at the deadline either.
  // (95 s: b is past the liveness window, so the redo selects a alone.)
  clock_.Advance(absl::Seconds(95));
  ASSERT_TRUE(Poll("a").ok());
  coordinator_->Tick();
  EXPECT_EQ(Poll("a")->masking_attempt(), 2);
  MaskingKey key_a2 = *MaskingKey::Generate();
  ASSERT_TRUE(SubmitKey("a", run, 2, key_a2).ok());
  clock_.Advance(absl::Seconds(100));
  ASSERT_TRUE(Poll("a").ok());
  coordinator_->Tick();
  absl::StatusOr<MaskingCohort> cohort = Cohort("a", run, 2);
  ASSERT_TRUE(cohort.ok()) << cohort.status();
  EXPECT_FALSE(cohort->ready());
  EXPECT_EQ(Status().state(), RunStatus::TRAINING);
}

TEST_F(SecureAggregationTest, RestartRemovesAnUncommittedModel) {
  for (const char* site : {"a", "b", "c"}) Join(site);
  std::string run = StartAndInitialize(SecurePlan());
  // As if the coordinator died between writing round 1's model and
  // committing it.
  std::string orphan =
      dir_.Join("state") + "/models/" + run + "/round-00001.efm";
  ASSERT_TRUE(WriteModelFile(orphan, MakeBundle("test_model", 3.0f)).ok());
  Restart();
  EXPECT_FALSE(std::filesystem::exists(orphan));
  EXPECT_TRUE(std::filesystem::exists(dir_.Join("state") + "/models/" + run +
                                      "/round-00000.efm"));
}

TEST_F(SecureAggregationTest, PlansThatNeedSingleUpdatesAreRefused) {
  Plan median = SecurePlan();
  median.set_strategy(Plan::MEDIAN);
  EXPECT_TRUE(absl::IsInvalidArgument(coordinator_->StartRun(median).status()));
  Plan bounded = SecurePlan();
  bounded.set_max_update_norm(10);
  EXPECT_TRUE(
      absl::IsInvalidArgument(coordinator_->StartRun(bounded).status()));
  Plan alone = MakePlan({"a"}, {"x"}, 1);
  alone.set_secure_aggregation(true);
  EXPECT_TRUE(absl::IsInvalidArgument(coordinator_->StartRun(alone).status()));
}

TEST_F(SecureAggregationTest, PlainRunsRefuseMaskedUploadsAndMaskingCalls) {
  Join("a");
  Join("b");
  std::string run = StartAndInitialize(MakePlan({"a", "b"}, {}, 1));
  ASSERT_EQ(Poll("a")->kind(), Task::TRAIN);
  EXPECT_EQ(Poll("b")->masking_attempt(), 0);
  EXPECT_TRUE(absl::IsInvalidArgument(
      UploadAs("a", run, MakeBundle("test_model", 1.0f), 30, 1).status()));
  MaskingKey key = *MaskingKey::Generate();
  EXPECT_TRUE(absl::IsFailedPrecondition(SubmitKey("a", run, 1, key)));
}

}  // namespace
}  // namespace echofed
