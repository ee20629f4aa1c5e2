#include "coordinator/enrolment.h"

#include "absl/strings/str_cat.h"
#include "common/files.h"

namespace echofed {

absl::StatusOr<Enrolment> Enrolment::Load(const std::string& path) {
  EnrolmentList list;
  if (absl::Status status = LoadTextProto(path, &list); !status.ok()) {
    return status;
  }
  return FromProto(list);
}

absl::StatusOr<Enrolment> Enrolment::FromProto(const EnrolmentList& list) {
  Enrolment enrolment;
  for (const Participant& entry : list.participants()) {
    if (absl::Status status = ValidateIdentityName(entry.identity());
        !status.ok()) {
      return status;
    }
    absl::StatusOr<Role> role = ParseRole(entry.role());
    if (!role.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "enrolment of '", entry.identity(), "': ", role.status().message()));
    }
    if (!enrolment.roles_.emplace(entry.identity(), *role).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", entry.identity(), "' is enrolled twice"));
    }
  }
  return enrolment;
}

absl::Status Enrolment::Check(const PeerIdentity& peer) const {
  auto it = roles_.find(peer.identity);
  if (it == roles_.end()) {
    return absl::PermissionDeniedError(
        absl::StrCat("'", peer.identity, "' is not enrolled in this study"));
  }
  if (it->second != peer.role) {
    return absl::PermissionDeniedError(absl::StrCat(
        "'", peer.identity, "' is enrolled as ", RoleName(it->second),
        ", its certificate says ", RoleName(peer.role)));
  }
  return absl::OkStatus();
}

std::set<std::string> Enrolment::Sites() const {
  std::set<std::string> sites;
  for (const auto& [identity, role] : roles_) {
    if (role == Role::kSite) sites.insert(identity);
  }
  return sites;
}

}  // namespace echofed
