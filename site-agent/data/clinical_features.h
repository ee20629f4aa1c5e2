#ifndef ECHOFED_SITE_AGENT_DATA_CLINICAL_FEATURES_H_
#define ECHOFED_SITE_AGENT_DATA_CLINICAL_FEATURES_H_

// The clinical table as fusion-model input and head labels. Inputs are the
// pretreatment findings a clinician has before surgery; the pathology that
// defines the subtype (histology, differentiation, MKI) and every outcome
// (risk group, metastasis, response, survival) are never inputs, so a head
// cannot read its own answer.

#include <optional>
#include <string>
#include <vector>

#include "proto/plan.pb.h"
#include "site-agent/data/clinical.h"

namespace echofed {

// Feature names in model input order (documented in CLINICAL_SCHEMA.md).
const std::vector<std::string>& ClinicalFeatureNames();

// One patient's features, NaN where missing. Laboratory values are log(1+x)
// (they span orders of magnitude), age is in years, codes are 0/1
// indicators (the stage one-hot is all NaN when the stage is missing).
std::vector<float> ClinicalFeatures(const ClinicalRecord& record);

// The label of a binary head (HIGH_RISK: recorded INRG group high;
// BONE_MARROW: metastasis; RESPONSE: CR or PR), or nullopt when unknown.
std::optional<bool> BinaryHeadLabel(const ClinicalRecord& record,
                                    Plan::Head head);

// Event-free survival for PROGNOSIS, when both time and event are known.
struct SurvivalLabel {
  double months = 0;
  bool event = false;
};
std::optional<SurvivalLabel> PrognosisLabel(const ClinicalRecord& record);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DATA_CLINICAL_FEATURES_H_
