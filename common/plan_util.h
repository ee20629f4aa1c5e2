#ifndef ECHOFED_COMMON_PLAN_UTIL_H_
#define ECHOFED_COMMON_PLAN_UTIL_H_

#include "absl/status/status.h"
#include "proto/plan.pb.h"

namespace echofed {

// Fills unset fields with the documented defaults (see deploy/plans/).
void ApplyPlanDefaults(Plan* plan);

// Checks a plan after defaults; errors name the field.
absl::Status ValidatePlan(const Plan& plan);

// The role of `site` in the plan, or ROLE_UNSPECIFIED if it takes no part.
Plan::Role RoleInPlan(const Plan& plan, const std::string& site);

}  // namespace echofed

#endif  // ECHOFED_COMMON_PLAN_UTIL_H_
