#include "site-agent/cohort.h"

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

ClinicalRecord Patient(const std::string& id, Histology histology,
                       double age = 20) {
  ClinicalRecord r;
  r.patient_id = id;
  r.histology = histology;
  r.age_months = age;
  return r;
}

int Excluded(const CohortFlow& flow, const std::string& reason) {
  for (const auto& [name, count] : flow.excluded) {
    if (name.find(reason) != std::string::npos) return count;
  }
  return -1;
}

class CohortTest : public ::testing::Test {
 protected:
  void AddImage(const std::string& id, const std::string& label,
                bool readable = true) {
    ImageRecord record{id,
                       absl::StrCat(id, "_", manifest_.records.size(),
                                    readable ? ".ok" : ".bad"),
                       label, std::nullopt};
    manifest_.records.push_back(record);
  }
  Cohort Select(const ClinicalTable* clinical) {
    CohortOptions options;
    options.class_names = {"NB", "GNB", "GN"};
    options.check_image = [](const ImageRecord& record) {
      return record.image_path.find(".ok") != std::string::npos
                 ? absl::OkStatus()
                 : absl::InvalidArgumentError("unreadable");
    };
    options.required_fields = required_;
    return SelectCohort(manifest_, clinical, options);
  }
  SiteManifest manifest_;
  std::vector<std::string> required_;
};

TEST_F(CohortTest, EveryProtocolRuleCountsInTheFlow) {
  ClinicalTable clinical;
  auto add = [&](ClinicalRecord record, const std::string& label,
                 bool readable = true) {
    AddImage(record.patient_id, label, readable);
    clinical.records[record.patient_id] = record;
  };
  add(Patient("ok-nb", Histology::kNB), "NB");
  add(Patient("ok-gn", Histology::kGN), "GN");
  ClinicalRecord no_histology = Patient("no-hist", Histology::kNB);
  no_histology.histology.reset();
  add(no_histology, "NB");
  add(Patient("conflict", Histology::kGN), "NB");
  add(Patient("adult", Histology::kGN, 19 * 12), "GN");
  ClinicalRecord resected = Patient("resected", Histology::kNB);
  resected.prior_resection_elsewhere = true;
  add(resected, "NB");
  ClinicalRecord poor = Patient("poor", Histology::kNB);
  poor.image_quality = ImageQuality::kPoor;
  add(poor, "NB");
  add(Patient("unreadable", Histology::kNB), "NB", /*readable=*/false);
  ClinicalRecord no_age = Patient("no-age", Histology::kGNB);
  no_age.age_months.reset();
  add(no_age, "GNB");
  AddImage("no-clinical-row", "NB");
  clinical.errors.push_back({7, "broken", "age_months: bad"});

  Cohort cohort = Select(&clinical);
  const CohortFlow& flow = cohort.flow;
  EXPECT_EQ(flow.screened, 11);
  EXPECT_EQ(flow.included, 2);
  EXPECT_EQ(flow.included_per_class.at("NB"), 1);
  EXPECT_EQ(flow.included_per_class.at("GN"), 1);
  EXPECT_EQ(Excluded(flow, "invalid record"), 1);
  EXPECT_EQ(Excluded(flow, "histology not confirmed"), 2);
  EXPECT_EQ(Excluded(flow, "disagrees"), 1);
  EXPECT_EQ(Excluded(flow, "older than 18"), 1);
  EXPECT_EQ(Excluded(flow, "prior resection"), 1);
  EXPECT_EQ(Excluded(flow, "poor image quality"), 1);
  EXPECT_EQ(Excluded(flow, "no readable image"), 1);
  EXPECT_EQ(Excluded(flow, "severe missing"), 1);
  // Counts add up: nobody is lost between screening and inclusion.
  int excluded = 0;
  for (const auto& [reason, count] : flow.excluded) excluded += count;
  EXPECT_EQ(excluded + flow.included, flow.screened);
  EXPECT_EQ(static_cast<int>(cohort.exclusions.size()), excluded);
}

TEST_F(CohortTest, TaskFieldsAreRequired) {
  ClinicalTable clinical;
  ClinicalRecord with_stage = Patient("a", Histology::kNB);
  with_stage.inrg_stage = InrgStage::kL1;
  clinical.records["a"] = with_stage;
  clinical.records["b"] = Patient("b", Histology::kNB);
  AddImage("a", "NB");
  AddImage("b", "NB");
  required_ = {"inrg_stage"};
  Cohort cohort = Select(&clinical);
  EXPECT_EQ(cohort.flow.included, 1);
  ASSERT_EQ(cohort.exclusions.size(), 1u);
  EXPECT_EQ(cohort.exclusions[0].detail, "inrg_stage");
}

TEST_F(CohortTest, WithoutClinicalTableLabelsComeFromTheManifest) {
  AddImage("a", "NB");
  AddImage("a", "NB", /*readable=*/false);
  AddImage("b", "benign");
  Cohort cohort = Select(nullptr);
  EXPECT_EQ(cohort.flow.included, 1);
  EXPECT_EQ(cohort.flow.included_images, 1);
  EXPECT_EQ(cohort.flow.unreadable_images, 1);
  EXPECT_EQ(Excluded(cohort.flow, "not a class"), 1);
  EXPECT_FALSE(cohort.flow.notes.empty());
  EXPECT_EQ(cohort.Records().size(), 1u);
}

}  // namespace
}  // namespace echofed
