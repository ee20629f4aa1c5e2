#ifndef ECHOFED_COMMON_PLAN_UTIL_H_
#define ECHOFED_COMMON_PLAN_UTIL_H_

#include "absl/status/status.h"
#include "proto/plan.pb.h"

namespace echofed {

// Fills unset fields with the documented defaults (see deploy/plans/).
void ApplyPlanDefaults(Plan* plan);

// Whether validation and diagnosis score images with the test-time flip
// (the plan's test_time_flip; default off).
bool UsesTestTimeFlip(const Plan& plan);

// The weight decay of a trainer when the plan names none: 1e-2 for AdamW
// (decoupled), 1e-4 for SGD and Adam (L2).
double DefaultWeightDecay(Plan::Trainer trainer);

// Checks a plan after defaults; errors name the field.
absl::Status ValidatePlan(const Plan& plan);

// The role of `site` in the plan, or ROLE_UNSPECIFIED if it takes no part.
Plan::Role RoleInPlan(const Plan& plan, const std::string& site);

}  // namespace echofed

#endif  // ECHOFED_COMMON_PLAN_UTIL_H_
