#include "site-agent/data/clinical_features.h"

#include <cmath>
#include <limits>

namespace echofed {
namespace {

constexpr float kMissing = std::numeric_limits<float>::quiet_NaN();

float Indicator(const std::optional<bool>& value) {
  return value ? (*value ? 1.0f : 0.0f) : kMissing;
}

float LogLab(const std::optional<double>& value) {
  return value ? static_cast<float>(std::log1p(*value)) : kMissing;
}

}  // namespace

const std::vector<std::string>& ClinicalFeatureNames() {
  static const auto* names = new std::vector<std::string>{
      "age_years",         "sex_female",    "log_ldh",  "log_nse",
      "log_ferritin",      "log_vma",       "log_hva",  "stage_l1",
      "stage_l2",          "stage_m",       "stage_ms", "mycn_amplified",
      "chr11q_aberration", "ploidy_diploid"};
  return *names;
}

std::vector<float> ClinicalFeatures(const ClinicalRecord& record) {
  std::vector<float> features;
  features.reserve(ClinicalFeatureNames().size());
  features.push_back(record.age_months
                         ? static_cast<float>(*record.age_months / 12.0)
                         : kMissing);
  features.push_back(record.sex ? (*record.sex == Sex::kFemale ? 1.0f : 0.0f)
                                : kMissing);
  for (const std::optional<double>* lab :
       {&record.ldh, &record.nse, &record.ferritin, &record.vma, &record.hva}) {
    features.push_back(LogLab(*lab));
  }
  for (InrgStage stage :
       {InrgStage::kL1, InrgStage::kL2, InrgStage::kM, InrgStage::kMS}) {
    features.push_back(record.inrg_stage
                           ? (*record.inrg_stage == stage ? 1.0f : 0.0f)
                           : kMissing);
  }
  features.push_back(Indicator(record.mycn_amplified));
  features.push_back(Indicator(record.chr11q_aberration));
  features.push_back(record.ploidy
                         ? (*record.ploidy == Ploidy::kDiploid ? 1.0f : 0.0f)
                         : kMissing);
  return features;
}

std::optional<bool> BinaryHeadLabel(const ClinicalRecord& record,
                                    Plan::Head head) {
  switch (head) {
    case Plan::HIGH_RISK:
      if (!record.inrg_risk) return std::nullopt;
      return *record.inrg_risk == RiskGroup::kHigh;
    case Plan::BONE_MARROW:
      return record.bone_marrow_metastasis;
    case Plan::RESPONSE:
      if (!record.response) return std::nullopt;
      return *record.response == Response::kCR ||
             *record.response == Response::kPR;
    default:
      return std::nullopt;
  }
}

std::optional<SurvivalLabel> PrognosisLabel(const ClinicalRecord& record) {
  if (!record.efs_months || !record.efs_event) return std::nullopt;
  return SurvivalLabel{*record.efs_months, *record.efs_event};
}

}  // namespace echofed
