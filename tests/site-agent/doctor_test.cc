// `echofed-agent doctor` without sockets: the certificate checks on kit
// files, and the verdicts of the skew, device, disk, data and timing checks.

#include "site-agent/doctor.h"

#include <sys/stat.h>

#include <fstream>

#include "absl/strings/match.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "site-agent/data/synthetic_cohort.h"
#include "tests/testing/doctor_checks.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using testing::DescribeChecks;
using testing::FindCheck;
using testing::TempDir;
using testing::TestPki;

class DoctorCertificateTest : public ::testing::Test {
 protected:
  // Writes a kit (ca.pem, cert.pem, key.pem with mode 0600) and returns its
  // file names.
  TlsFiles WriteKit(const TlsMaterial& tls) {
    EXPECT_TRUE(WriteFileAtomically(dir_.Join("ca.pem"), tls.ca_cert).ok());
    EXPECT_TRUE(WriteFileAtomically(dir_.Join("cert.pem"), tls.cert).ok());
    EXPECT_TRUE(WriteFileAtomically(dir_.Join("key.pem"), tls.key, 0600).ok());
    TlsFiles files;
    files.set_ca_cert(dir_.Join("ca.pem"));
    files.set_cert(dir_.Join("cert.pem"));
    files.set_key(dir_.Join("key.pem"));
    return files;
  }

  std::vector<DoctorCheck> Check(const TlsFiles& files) {
    return CheckCertificates(files, absl::Now(), 30, &facts_);
  }

  TestPki pki_;
  TempDir dir_;
  CertificateFacts facts_;
};

TEST_F(DoctorCertificateTest, HealthyKitPassesEveryCheck) {
  std::vector<DoctorCheck> checks =
      Check(WriteKit(pki_.Participant("site-a", Role::kSite, -300, 365)));
  for (const char* name : {"certificate", "certificate expiry", "private key",
                           "study CA", "identity"}) {
    const DoctorCheck* check = FindCheck(checks, name);
    ASSERT_NE(check, nullptr) << name << "\n" << DescribeChecks(checks);
    EXPECT_EQ(check->outcome, CheckOutcome::kPass) << DescribeChecks(checks);
  }
  ASSERT_TRUE(facts_.tls.has_value());
  ASSERT_TRUE(facts_.subject.has_value());
  EXPECT_EQ(facts_.subject->identity, "site-a");
  // Issued for 365 days a moment ago: whole days left, rounded down.
  EXPECT_TRUE(absl::StrContains(FindCheck(checks, "certificate expiry")->detail,
                                "364 days left"))
      << DescribeChecks(checks);
}

TEST_F(DoctorCertificateTest, GarbagePemFailsWithCopyAgainFix) {
  TlsFiles files = WriteKit(pki_.Participant("site-a", Role::kSite));
  ASSERT_TRUE(WriteFileAtomically(files.cert(),
                                  "-----BEGIN CERTIFICATE-----\nnot base64 "
                                  "at all\n-----END CERTIFICATE-----\n")
                  .ok());
  std::vector<DoctorCheck> checks = Check(files);
  const DoctorCheck* cert = FindCheck(checks, "certificate");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(cert->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(cert->detail, "holds no PEM certificate"))
      << cert->detail;
  EXPECT_TRUE(absl::StrContains(cert->fix, "copy cert.pem from your kit again"))
      << cert->fix;
  // Nothing that needs the certificate claims to have passed.
  EXPECT_EQ(FindCheck(checks, "identity"), nullptr);
  EXPECT_EQ(FindCheck(checks, "certificate expiry"), nullptr);
}

TEST_F(DoctorCertificateTest, MissingFilesFailWithTheirPath) {
  TlsFiles files;
  files.set_ca_cert(dir_.Join("nope/ca.pem"));
  files.set_cert(dir_.Join("nope/cert.pem"));
  files.set_key(dir_.Join("nope/key.pem"));
  std::vector<DoctorCheck> checks = Check(files);
  for (const char* name : {"certificate", "private key", "study CA"}) {
    const DoctorCheck* check = FindCheck(checks, name);
    ASSERT_NE(check, nullptr) << name;
    EXPECT_EQ(check->outcome, CheckOutcome::kFail);
    EXPECT_TRUE(absl::StrContains(check->detail, "cannot read " + dir_.path()))
        << check->detail;
  }
  EXPECT_FALSE(facts_.tls.has_value());
}

TEST_F(DoctorCertificateTest, WrongCaFailsWithSameKitFix) {
  TlsMaterial other = TestPki::FromOtherCa("site-a", Role::kSite);
  other.ca_cert = pki_.ca().cert;  // the study CA configured, a foreign cert
  std::vector<DoctorCheck> checks = Check(WriteKit(other));
  const DoctorCheck* ca = FindCheck(checks, "study CA");
  ASSERT_NE(ca, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(ca->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(ca->detail, "the configured CA")) << ca->detail;
  EXPECT_TRUE(
      absl::StrContains(ca->fix, "use ca.pem and cert.pem from the same kit"))
      << ca->fix;
  // The certificate itself is fine: only the CA check fails.
  EXPECT_EQ(FindCheck(checks, "certificate")->outcome, CheckOutcome::kPass);
}

TEST_F(DoctorCertificateTest, ExpiredCertificateFailsWithReissueFix) {
  // Valid for 10 days from 40 days ago.
  std::vector<DoctorCheck> checks = Check(
      WriteKit(pki_.Participant("site-a", Role::kSite, -40L * 86400, 10)));
  const DoctorCheck* cert = FindCheck(checks, "certificate");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(cert->outcome, CheckOutcome::kFail) << DescribeChecks(checks);
  EXPECT_TRUE(absl::StrContains(cert->detail, "expired on")) << cert->detail;
  EXPECT_TRUE(absl::StrContains(cert->fix, "echofed pki issue")) << cert->fix;
}

TEST_F(DoctorCertificateTest, NotYetValidCertificatePointsAtTheClock) {
  std::vector<DoctorCheck> checks =
      Check(WriteKit(pki_.Participant("site-a", Role::kSite, 86400, 30)));
  const DoctorCheck* cert = FindCheck(checks, "certificate");
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(cert->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(cert->fix, "clock")) << cert->fix;
}

TEST_F(DoctorCertificateTest, WarnsWhenExpiryIsNear) {
  std::vector<DoctorCheck> checks =
      Check(WriteKit(pki_.Participant("site-a", Role::kSite, -300, 12)));
  const DoctorCheck* expiry = FindCheck(checks, "certificate expiry");
  ASSERT_NE(expiry, nullptr) << DescribeChecks(checks);
  EXPECT_EQ(expiry->outcome, CheckOutcome::kWarn);
  EXPECT_TRUE(absl::StrContains(expiry->detail, "11 days left"))
      << expiry->detail;
  EXPECT_TRUE(absl::StrContains(expiry->fix, "renew before")) << expiry->fix;
}

TEST_F(DoctorCertificateTest, KeyOfAnotherCertificateFails) {
  TlsMaterial tls = pki_.Participant("site-a", Role::kSite, -300, 365);
  tls.key = pki_.Participant("site-a", Role::kSite, -300, 365).key;
  std::vector<DoctorCheck> checks = Check(WriteKit(tls));
  const DoctorCheck* key = FindCheck(checks, "private key");
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(key->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(key->detail, "does not belong to"))
      << key->detail;
}

TEST_F(DoctorCertificateTest, KeyReadableByOthersWarns) {
  TlsFiles files = WriteKit(pki_.Participant("site-a", Role::kSite, -300, 365));
  ASSERT_EQ(chmod(files.key().c_str(), 0644), 0);
  std::vector<DoctorCheck> checks = Check(files);
  const DoctorCheck* key = FindCheck(checks, "private key");
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(key->outcome, CheckOutcome::kWarn);
  EXPECT_TRUE(absl::StrContains(key->fix, "chmod 600")) << key->fix;
}

TEST_F(DoctorCertificateTest, OperatorKitIsNotASite) {
  std::vector<DoctorCheck> checks =
      Check(WriteKit(pki_.Participant("alice", Role::kOperator, -300, 365)));
  const DoctorCheck* identity = FindCheck(checks, "identity");
  ASSERT_NE(identity, nullptr);
  EXPECT_EQ(identity->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(identity->detail, "operator 'alice'"))
      << identity->detail;
  EXPECT_TRUE(absl::StrContains(identity->fix, "--role site")) << identity->fix;
}

TEST_F(DoctorCertificateTest, ParticipantCertificateAsCaFails) {
  TlsMaterial tls = pki_.Participant("site-a", Role::kSite, -300, 365);
  tls.ca_cert = tls.cert;
  std::vector<DoctorCheck> checks = Check(WriteKit(tls));
  const DoctorCheck* ca = FindCheck(checks, "study CA");
  ASSERT_NE(ca, nullptr);
  EXPECT_EQ(ca->outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(ca->detail, "is not a CA certificate"))
      << ca->detail;
}

TEST(DoctorClockSkewTest, ThresholdsAndDirection) {
  DoctorOptions options;
  DoctorCheck small =
      CheckClockSkew(absl::Milliseconds(120), absl::Milliseconds(5), options);
  EXPECT_EQ(small.outcome, CheckOutcome::kPass) << small.detail;
  DoctorCheck behind =
      CheckClockSkew(absl::Seconds(10), absl::Milliseconds(5), options);
  EXPECT_EQ(behind.outcome, CheckOutcome::kWarn);
  EXPECT_TRUE(absl::StrContains(behind.detail, "10.000 s behind"))
      << behind.detail;
  EXPECT_TRUE(absl::StrContains(behind.fix, "timedatectl")) << behind.fix;
  DoctorCheck ahead =
      CheckClockSkew(-absl::Minutes(10), absl::Milliseconds(5), options);
  EXPECT_EQ(ahead.outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(ahead.detail, "ahead of")) << ahead.detail;
  // A skew within the measurement's own uncertainty is not held against the
  // machine.
  EXPECT_EQ(CheckClockSkew(absl::Seconds(4), absl::Seconds(2), options).outcome,
            CheckOutcome::kPass);
}

TEST(DoctorDeviceTest, Verdicts) {
  std::vector<GpuInfo> h100 = {{"NVIDIA H100", int64_t{80} << 30}};
  EXPECT_EQ(CheckDevice("cpu", false, {}, 4).outcome, CheckOutcome::kPass);
  DoctorCheck cpu_auto = CheckDevice("auto", false, {}, 4);
  EXPECT_EQ(cpu_auto.outcome, CheckOutcome::kPass);
  EXPECT_TRUE(absl::StrContains(cpu_auto.detail, "CPU, 4 LibTorch threads"))
      << cpu_auto.detail;
  // A GPU that a CPU-only LibTorch cannot use.
  DoctorCheck unused = CheckDevice("auto", false, h100, 4);
  EXPECT_EQ(unused.outcome, CheckOutcome::kWarn);
  EXPECT_TRUE(absl::StrContains(unused.detail, "NVIDIA H100, 80.0 GiB"))
      << unused.detail;
  EXPECT_TRUE(absl::StrContains(unused.fix, "Torch_DIR")) << unused.fix;
  // The agent would refuse to start: a failure.
  EXPECT_EQ(CheckDevice("cuda", false, h100, 4).outcome, CheckOutcome::kFail);
  EXPECT_EQ(CheckDevice("cuda:1", true, h100, 4).outcome, CheckOutcome::kFail);
  EXPECT_EQ(CheckDevice("tpu", false, {}, 4).outcome, CheckOutcome::kFail);
  DoctorCheck cuda = CheckDevice("cuda:0", true, h100, 4);
  EXPECT_EQ(cuda.outcome, CheckOutcome::kPass);
  EXPECT_TRUE(absl::StrContains(cuda.detail, "CUDA: NVIDIA H100"))
      << cuda.detail;
}

TEST(DoctorDeviceTest, NamesLibTorchAndCuda) {
  std::vector<GpuInfo> h100 = {{"NVIDIA H100", int64_t{80} << 30}};
  TorchBuildInfo cpu_build = {"1.13.0", ""};
  TorchBuildInfo cuda_build = {"2.6.0", "12.4"};
  DoctorCheck cpu = CheckDevice("auto", false, {}, 4, cpu_build);
  EXPECT_EQ(cpu.outcome, CheckOutcome::kPass);
  EXPECT_TRUE(absl::StrContains(cpu.detail, "LibTorch 1.13.0, CPU-only"))
      << cpu.detail;
  DoctorCheck gpu = CheckDevice("auto", true, h100, 4, cuda_build);
  EXPECT_EQ(gpu.outcome, CheckOutcome::kPass);
  EXPECT_TRUE(absl::StrContains(
      gpu.detail, "CUDA: NVIDIA H100, 80.0 GiB; LibTorch 2.6.0 with CUDA 12.4"))
      << gpu.detail;
  // A CUDA build that cannot use the GPU the driver lists: the driver is
  // what to fix, not the build.
  DoctorCheck mismatch = CheckDevice("auto", false, h100, 4, cuda_build);
  EXPECT_EQ(mismatch.outcome, CheckOutcome::kWarn);
  EXPECT_TRUE(absl::StrContains(mismatch.fix, "CUDA 12.4")) << mismatch.fix;
  EXPECT_FALSE(absl::StrContains(mismatch.fix, "Torch_DIR")) << mismatch.fix;
  EXPECT_EQ(CheckDevice("cuda", false, h100, 4, cuda_build).outcome,
            CheckOutcome::kFail);
  // What this binary was built with.
  TorchBuildInfo self = ProbeTorchBuild();
  EXPECT_FALSE(self.version.empty());
}

TEST(DoctorDiskTest, Thresholds) {
  DoctorOptions options;
  EXPECT_EQ(CheckDiskSpace("/x", int64_t{50} << 30, options).outcome,
            CheckOutcome::kPass);
  EXPECT_EQ(CheckDiskSpace("/x", int64_t{1} << 30, options).outcome,
            CheckOutcome::kWarn);
  DoctorCheck full = CheckDiskSpace("/x", int64_t{10} << 20, options);
  EXPECT_EQ(full.outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(full.fix, "free space")) << full.fix;
}

class DoctorDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SyntheticCohortOptions options;
    options.out_dir = dir_.path();
    options.sites = 1;
    options.patients_per_site = 12;
    options.image_size = 64;
    ASSERT_TRUE(WriteSyntheticCohort(options).ok());
    site_dir_ = dir_.Join("site-1");
    plan_ = testing::MakePlan({"site-1"});
    plan_.set_model("small_cnn");
    plan_.set_image_size(32);
    plan_.set_batch_size(4);
  }

  TempDir dir_;
  std::string site_dir_;
  Plan plan_;
};

TEST_F(DoctorDataTest, SummarisesTheCohortAndSplit) {
  SiteDataCounts counts;
  DoctorCheck check = CheckSiteData(site_dir_, &plan_, "site-1", &counts);
  EXPECT_NE(check.outcome, CheckOutcome::kFail) << FormatCheck(check);
  EXPECT_EQ(counts.screened_patients, 12);
  EXPECT_GT(counts.included_patients, 0);
  EXPECT_EQ(counts.train_images + counts.validation_images,
            counts.included_images);
  EXPECT_GT(counts.train_images, counts.validation_images);
  EXPECT_TRUE(absl::StrContains(check.detail, "screened 12 patients"))
      << check.detail;
}

TEST_F(DoctorDataTest, ExternalSiteValidatesEverything) {
  Plan plan = testing::MakePlan({"site-9"}, {"site-1"});
  SiteDataCounts counts;
  CheckSiteData(site_dir_, &plan, "site-1", &counts);
  EXPECT_EQ(counts.train_images, 0);
  EXPECT_EQ(counts.validation_images, counts.included_images);
}

TEST_F(DoctorDataTest, SiteMissingFromPlanWarns) {
  SiteDataCounts counts;
  DoctorCheck check = CheckSiteData(site_dir_, &plan_, "site-7", &counts);
  EXPECT_EQ(check.outcome, CheckOutcome::kWarn);
  EXPECT_TRUE(absl::StrContains(check.detail, "names no site 'site-7'"))
      << check.detail;
}

TEST_F(DoctorDataTest, NoManifestFails) {
  SiteDataCounts counts;
  DoctorCheck check =
      CheckSiteData(dir_.Join("empty"), &plan_, "site-1", &counts);
  EXPECT_EQ(check.outcome, CheckOutcome::kFail);
  EXPECT_TRUE(absl::StrContains(check.fix, "manifest.csv")) << check.fix;
}

TEST_F(DoctorDataTest, NothingQualifyingFails) {
  // The plan's classes match none of the labels: nobody is included.
  plan_.clear_class_names();
  plan_.add_class_names("A");
  plan_.add_class_names("B");
  SiteDataCounts counts;
  DoctorCheck check = CheckSiteData(site_dir_, &plan_, "site-1", &counts);
  EXPECT_EQ(check.outcome, CheckOutcome::kFail) << FormatCheck(check);
  EXPECT_TRUE(absl::StrContains(check.fix, "echofed-agent check-data"))
      << check.fix;
}

TEST_F(DoctorDataTest, RoundTimeEstimateScalesTimedSteps) {
  DoctorOptions options;
  SiteDataCounts counts;
  counts.train_images = 40;
  counts.validation_images = 8;
  DoctorCheck check = EstimateRoundTime(plan_, counts, "cpu", options);
  EXPECT_EQ(check.outcome, CheckOutcome::kPass) << FormatCheck(check);
  // 40 images in batches of 4, one local epoch.
  EXPECT_TRUE(absl::StrContains(check.detail, "1 epoch(s) x 10 batches"))
      << check.detail;
  EXPECT_TRUE(absl::StrContains(check.detail, "2 evaluation batches"))
      << check.detail;
  EXPECT_TRUE(absl::StrContains(check.detail, "estimate")) << check.detail;

  // A deadline no CPU meets: a warning that says what to do.
  plan_.set_round_deadline_seconds(1);
  plan_.set_local_epochs(100000);
  DoctorCheck slow = EstimateRoundTime(plan_, counts, "cpu", options);
  EXPECT_EQ(slow.outcome, CheckOutcome::kWarn) << FormatCheck(slow);
  EXPECT_TRUE(absl::StrContains(slow.fix, "round_deadline_seconds"))
      << slow.fix;
}

TEST_F(DoctorDataTest, UnknownModelFails) {
  plan_.set_model("no_such_model");
  DoctorCheck check =
      EstimateRoundTime(plan_, SiteDataCounts{}, "cpu", DoctorOptions());
  EXPECT_EQ(check.outcome, CheckOutcome::kFail);
}

TEST(DoctorFormatTest, FixLineOnlyUnlessPassed) {
  std::string failed =
      FormatCheck({"study CA", CheckOutcome::kFail, "wrong", "do this"});
  EXPECT_TRUE(absl::StrContains(failed, "FAIL  study CA")) << failed;
  EXPECT_TRUE(absl::StrContains(failed, "fix: do this")) << failed;
  EXPECT_FALSE(absl::StrContains(
      FormatCheck({"study CA", CheckOutcome::kPass, "fine", ""}), "fix:"));
}

}  // namespace
}  // namespace echofed
