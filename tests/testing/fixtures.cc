#include "tests/testing/fixtures.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/subprocess.h"

namespace echofed::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr ? base : "/tmp", "/echofed-test-XXXXXX");
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  char* made = ::mkdtemp(buffer.data());
  path_ = made != nullptr ? made : "/tmp";
}

TempDir::~TempDir() {
  std::error_code error;
  if (path_ != "/tmp") std::filesystem::remove_all(path_, error);
}

TestPki::TestPki() { ca_ = *CreateCertificateAuthority("test study", 30); }

TlsMaterial TestPki::Coordinator() const {
  CertificateRequest request{
      "coordinator", Role::kCoordinator, {"localhost", "127.0.0.1"}, 30};
  PemPair pair = *IssueCertificate(ca_, request);
  return TlsMaterial{ca_.cert, pair.cert, pair.key};
}

TlsMaterial TestPki::Participant(const std::string& identity, Role role,
                                 long not_before_offset_seconds,
                                 int valid_days) const {
  CertificateRequest request{
      identity, role, {}, valid_days, not_before_offset_seconds};
  PemPair pair = *IssueCertificate(ca_, request);
  return TlsMaterial{ca_.cert, pair.cert, pair.key};
}

TlsMaterial TestPki::FromOtherCa(const std::string& identity, Role role) {
  TestPki other;
  TlsMaterial material = other.Participant(identity, role);
  return material;
}

TlsMaterial TestPki::NoClientCertificate() const {
  return TlsMaterial{ca_.cert, "", ""};
}

EnrolmentList MakeEnrolment(
    const std::vector<std::pair<std::string, std::string>>& identity_roles) {
  EnrolmentList list;
  for (const auto& [identity, role] : identity_roles) {
    Participant* participant = list.add_participants();
    participant->set_identity(identity);
    participant->set_role(role);
  }
  return list;
}

TensorBundle MakeBundle(const std::string& model_name, float value, int tensors,
                        int elements) {
  TensorBundle bundle;
  bundle.manifest.set_model_name(model_name);
  for (int t = 0; t < tensors; ++t) {
    TensorSpec* spec = bundle.manifest.add_tensors();
    spec->set_name(absl::StrCat("layer", t, ".weight"));
    spec->set_dtype(FLOAT32);
    spec->add_shape(elements);
    std::vector<float> values(elements, value);
    bundle.data.emplace_back(reinterpret_cast<const char*>(values.data()),
                             values.size() * sizeof(float));
  }
  TensorSpec* counter = bundle.manifest.add_tensors();
  counter->set_name("bn.num_batches_tracked");
  counter->set_dtype(INT64);
  int64_t count = static_cast<int64_t>(value);
  bundle.data.emplace_back(reinterpret_cast<const char*>(&count),
                           sizeof(count));
  SealBundle(&bundle).IgnoreError();
  return bundle;
}

Plan MakePlan(const std::vector<std::string>& train_sites,
              const std::vector<std::string>& external_sites, int rounds) {
  Plan plan;
  plan.set_name("test plan");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  plan.set_model("test_model");
  plan.set_rounds(rounds);
  plan.set_min_sites(1);
  plan.set_round_deadline_seconds(60);
  plan.set_evaluate_every_round(true);
  for (const std::string& site : train_sites) {
    Plan::SiteRole* role = plan.add_sites();
    role->set_site(site);
    role->set_role(Plan::TRAIN);
  }
  for (const std::string& site : external_sites) {
    Plan::SiteRole* role = plan.add_sites();
    role->set_site(site);
    role->set_role(Plan::EXTERNAL_VALIDATION);
  }
  return plan;
}

std::string BinaryPath(const std::string& name) {
  const char* dir = std::getenv("ECHOFED_BIN_DIR");
  return absl::StrCat(dir != nullptr ? dir : ExecutableDir() + "/../bin", "/",
                      name);
}

std::string BusiSitesDir() {
  const char* source = std::getenv("ECHOFED_SOURCE_DIR");
  std::string dir = absl::StrCat(source != nullptr ? source : ".",
                                 "/../shared/data/busi-sites");
  return std::filesystem::exists(dir + "/site-a/manifest.csv") ? dir : "";
}

}  // namespace echofed::testing
