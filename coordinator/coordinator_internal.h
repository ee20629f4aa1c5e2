#ifndef ECHOFED_COORDINATOR_COORDINATOR_INTERNAL_H_
#define ECHOFED_COORDINATOR_COORDINATOR_INTERNAL_H_

// Helpers shared by the files that implement Coordinator (coordinator.cc,
// coordinator_rounds.cc, ...); not for use outside them.

#include <string>

#include "absl/strings/ascii.h"
#include "proto/admin.pb.h"

namespace echofed {
namespace coordinator_internal {

// A run state as logs and errors name it: "training", "waiting_for_sites".
inline std::string PhaseName(RunStatus::State state) {
  return absl::AsciiStrToLower(RunStatus::State_Name(state));
}

}  // namespace coordinator_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_COORDINATOR_INTERNAL_H_
