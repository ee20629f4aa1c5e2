#ifndef ECHOFED_SITE_AGENT_DOCTOR_INTERNAL_H_
#define ECHOFED_SITE_AGENT_DOCTOR_INTERNAL_H_

// What the doctor's check files share: verdict constructors and readable
// quantities. Not an interface of the agent.

#include <cstdint>
#include <string>
#include <utility>

#include "site-agent/doctor.h"

namespace echofed::doctor_internal {

inline DoctorCheck Pass(std::string name, std::string detail) {
  return {std::move(name), CheckOutcome::kPass, std::move(detail), ""};
}
inline DoctorCheck Warn(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckOutcome::kWarn, std::move(detail),
          std::move(fix)};
}
inline DoctorCheck Fail(std::string name, std::string detail, std::string fix) {
  return {std::move(name), CheckOutcome::kFail, std::move(detail),
          std::move(fix)};
}

// "3.2 GiB", "512 MiB".
std::string ReadableBytes(int64_t bytes);
// "4.2 s", "35 s", "12 min", "2.5 h".
std::string ReadableSeconds(double seconds);

}  // namespace echofed::doctor_internal

#endif  // ECHOFED_SITE_AGENT_DOCTOR_INTERNAL_H_
