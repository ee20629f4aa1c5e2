#ifndef ECHOFED_COORDINATOR_ENROLMENT_H_
#define ECHOFED_COORDINATOR_ENROLMENT_H_

#include <map>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "common/pki.h"
#include "proto/config.pb.h"

namespace echofed {

// Who may connect to the coordinator, and in which role. Immutable; share
// freely between threads.
class Enrolment {
 public:
  static absl::StatusOr<Enrolment> Load(const std::string& path);
  static absl::StatusOr<Enrolment> FromProto(const EnrolmentList& list);

  // PERMISSION_DENIED unless the identity is enrolled with the role its
  // certificate states.
  absl::Status Check(const PeerIdentity& peer) const;
  std::set<std::string> Sites() const;

 private:
  std::map<std::string, Role> roles_;
};

}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_ENROLMENT_H_
