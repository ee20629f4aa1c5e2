#ifndef ECHOFED_TESTS_TESTING_DOCTOR_CHECKS_H_
#define ECHOFED_TESTS_TESTING_DOCTOR_CHECKS_H_

// Looking up and printing `echofed-agent doctor` results in tests.

#include <string>
#include <vector>

#include "site-agent/doctor.h"

namespace echofed::testing {

// The check called `name`, or null.
inline const DoctorCheck* FindCheck(const std::vector<DoctorCheck>& checks,
                                    const std::string& name) {
  for (const DoctorCheck& check : checks) {
    if (check.name == name) return &check;
  }
  return nullptr;
}

// All checks as doctor prints them (for failure messages).
inline std::string DescribeChecks(const std::vector<DoctorCheck>& checks) {
  std::string text;
  for (const DoctorCheck& check : checks) text += FormatCheck(check);
  return text;
}

}  // namespace echofed::testing

#endif  // ECHOFED_TESTS_TESTING_DOCTOR_CHECKS_H_
