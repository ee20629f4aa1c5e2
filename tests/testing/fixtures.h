#ifndef ECHOFED_TESTS_TESTING_FIXTURES_H_
#define ECHOFED_TESTS_TESTING_FIXTURES_H_

#include <string>
#include <vector>

#include "common/grpc_util.h"
#include "common/pki.h"
#include "common/tensor_bundle.h"
#include "proto/config.pb.h"
#include "proto/plan.pb.h"

namespace echofed::testing {

// A fresh folder under $TEST_TMPDIR or /tmp, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Join(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A study PKI in memory: CA, a coordinator certificate for localhost and
// 127.0.0.1, and kits on demand.
class TestPki {
 public:
  TestPki();
  const PemPair& ca() const { return ca_; }
  TlsMaterial Coordinator() const;
  TlsMaterial Participant(const std::string& identity, Role role,
                          long not_before_offset_seconds = -300,
                          int valid_days = 30) const;
  // A participant whose certificate comes from another CA.
  static TlsMaterial FromOtherCa(const std::string& identity, Role role);
  // TLS material with our CA but no client certificate.
  TlsMaterial NoClientCertificate() const;

 private:
  PemPair ca_;
};

EnrolmentList MakeEnrolment(
    const std::vector<std::pair<std::string, std::string>>& identity_roles);

// A small float32 model: `tensors` tensors of `elements` values each, plus
// an int64 counter, filled with `value`.
TensorBundle MakeBundle(const std::string& model_name, float value,
                        int tensors = 3, int elements = 10);

// A plan with the given training sites and sensible test defaults.
Plan MakePlan(const std::vector<std::string>& train_sites,
              const std::vector<std::string>& external_sites = {},
              int rounds = 2);

// Path of a built program (ECHOFED_BIN_DIR set by ctest).
std::string BinaryPath(const std::string& name);

// ../shared/data/busi-sites beside the source tree, or "" if absent.
std::string BusiSitesDir();

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_FIXTURES_H_
