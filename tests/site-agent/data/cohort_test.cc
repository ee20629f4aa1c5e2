#include "site-agent/data/cohort.h"

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

// The step of a released flow, by name.
const FlowCount& Step(const PatientFlow& flow, const std::string& name) {
  for (const FlowCount& step : flow.steps()) {
    if (step.step() == name) return step;
  }
  ADD_FAILURE() << "no step " << name;
  static const FlowCount* missing = new FlowCount();
  return *missing;
}

TEST(PatientFlowTest, SmallStepsAreWithheldAndCannotBeRecovered) {
  FlowCounts counts;
  counts.cohort.screened = 120;
  counts.cohort.excluded = {{"older than 18 years", 2},
                            {"prior resection elsewhere", 0},
                            {"poor image quality (flag)", 9},
                            {"severe missing data", 14}};
  counts.cohort.included = 95;
  counts.cohort.notes = {"no clinical table"};
  counts.refused_manifest_lines = 3;
  counts.training_site = true;
  counts.training = 66;
  counts.validation = 29;
  counts.not_loaded = 0;
  counts.withheld = 3;
  counts.analysed = 26;
  counts.analysed_released = true;
  PatientFlow flow = ReleasePatientFlow(counts, 5);
  EXPECT_EQ(flow.min_cell_count(), 5);
  EXPECT_EQ(Step(flow, "screened").patients(), 120);
  // 2 is small; 9, the smallest other exclusion, hides it.
  EXPECT_TRUE(Step(flow, "excluded: older than 18 years").suppressed());
  EXPECT_EQ(Step(flow, "excluded: older than 18 years").patients(), 0);
  EXPECT_TRUE(Step(flow, "excluded: poor image quality (flag)").suppressed());
  EXPECT_FALSE(Step(flow, "excluded: prior resection elsewhere").suppressed());
  EXPECT_EQ(Step(flow, "excluded: severe missing data").patients(), 14);
  EXPECT_EQ(Step(flow, "included").patients(), 95);
  // 3 withheld patients: the analysed count is public (the evaluation says
  // it), no image failed to load, so only the validation set's size can
  // hide them, and then the training set's too.
  EXPECT_TRUE(
      Step(flow, "withheld: class below the minimum cell count").suppressed());
  EXPECT_EQ(Step(flow, "analysed").patients(), 26);
  EXPECT_TRUE(Step(flow, "internal validation").suppressed());
  EXPECT_TRUE(Step(flow, "training").suppressed());
  EXPECT_EQ(Step(flow, "evaluation set: no image could be loaded").patients(),
            0);
  EXPECT_TRUE(flow.refused_manifest_lines().suppressed());
  ASSERT_EQ(flow.notes_size(), 1);

  // Every released count is the site's; nothing small is released.
  for (const FlowCount& step : flow.steps()) {
    if (!step.suppressed()) {
      EXPECT_TRUE(step.patients() == 0 || step.patients() >= 5) << step.step();
    }
  }

  // An external site with nothing small releases every step.
  FlowCounts external;
  external.cohort.screened = 40;
  external.cohort.excluded = {{"older than 18 years", 0}};
  external.cohort.included = 40;
  external.analysed = 40;
  external.analysed_released = true;
  PatientFlow open = ReleasePatientFlow(external, 5);
  for (const FlowCount& step : open.steps()) {
    EXPECT_FALSE(step.suppressed()) << step.step();
  }
  EXPECT_EQ(Step(open, "analysed").patients(), 40);
  EXPECT_EQ(open.refused_manifest_lines().patients(), 0);
}

TEST(DeclaredDataTest, SmallLabelsAreWithheldAtJoin) {
  SiteManifest manifest;
  int next_patient = 0;
  auto add = [&](const std::string& label, int patients, int images_each) {
    for (int i = 0; i < patients; ++i) {
      const int p = next_patient++;
      for (int k = 0; k < images_each; ++k) {
        manifest.records.push_back({absl::StrCat(label, p),
                                    absl::StrCat(label, p, "-", k, ".png"),
                                    label, std::nullopt, ""});
      }
    }
  };
  add("NB", 30, 2);
  add("GNB", 12, 1);
  add("GN", 3, 4);
  DataSummary summary = Summarize(manifest, 5);
  EXPECT_EQ(summary.patients(), 45);
  EXPECT_EQ(summary.images(), 84);
  EXPECT_EQ(summary.min_cell_count(), 5);
  // GN (3 patients) is small; GNB goes with it, or 84 - 60 would be GN's.
  EXPECT_EQ(summary.images_per_label().size(), 1u);
  EXPECT_EQ(summary.images_per_label().at("NB"), 60);
  EXPECT_EQ(std::vector<std::string>(summary.withheld_labels().begin(),
                                     summary.withheld_labels().end()),
            (std::vector<std::string>{"GN", "GNB"}));
  // Counted by patients, not images: 3 patients with 12 images are small.
  add("GN", 2, 1);  // now 5 GN patients
  summary = Summarize(manifest, 5);
  EXPECT_EQ(summary.withheld_labels_size(), 0);
  EXPECT_EQ(summary.images_per_label().at("GN"), 14);
  EXPECT_EQ(summary.images_per_label().at("GNB"), 12);
  EXPECT_EQ(Summarize(manifest, 1).withheld_labels_size(), 0);
}

}  // namespace
}  // namespace echofed
