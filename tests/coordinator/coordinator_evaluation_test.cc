// Evaluation of a committed model (coordinator/coordinator_evaluation.cc):
// the sites' reports checked and stored, patient-level aggregates included,
// and suppressed reports.

#include <string>
#include <utility>
#include <vector>

#include "common/metrics.h"
#include "coordinator/coordinator.h"
#include "gtest/gtest.h"
#include "tests/coordinator/coordinator_test_fixture.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::CoordinatorTest;
using ::echofed::testing::MakeBundle;
using ::echofed::testing::MakePlan;

TEST_F(CoordinatorTest, BadEvaluationReportsAreRefused) {
  Join("a");
  Join("x");
  std::string run = StartAndInitialize(MakePlan({"a"}, {"x"}, 1));
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  // A training site reporting as external, and counts that do not add up.
  EXPECT_EQ(Report("a", run, 1, EXTERNAL_VALIDATION).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("a", run, 1, INTERNAL_VALIDATION, -1, 3).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Report("a", run, 7, INTERNAL_VALIDATION).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Report("a", run, 1, INTERNAL_VALIDATION).ok());
  EXPECT_EQ(Report("a", run, 1, INTERNAL_VALIDATION).code(),
            absl::StatusCode::kAlreadyExists);
}

// An evaluation as a current agent sends it: 8 images of 5 patients (of
// two of the three classes), and the same 5 patients at the patient level
// (one case each, scored with the mean of their images' probabilities).
EvaluationReport PatientLevelReport(const std::string& run_id, int round,
                                    EvalSplit split) {
  EvaluationReport report;
  report.set_run_id(run_id);
  report.set_round(round);
  EvalAggregate* images = report.mutable_aggregate();
  InitAggregate(3, images);
  images->set_split(split);
  for (int i = 0; i < 8; ++i) {
    EXPECT_TRUE(AddCase(images, i % 2,
                        i % 4 == 3 ? std::vector<double>{0.2, 0.5, 0.3}
                                   : std::vector<double>{0.1, 0.1, 0.8})
                    .ok());
  }
  images->set_num_patients(5);
  images->set_loss_sum(4.0);
  EvalAggregate* patients = report.mutable_patient_aggregate();
  InitAggregate(3, patients);
  patients->set_split(split);
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(AddCase(patients, i % 2, {0.6, 0.3, 0.1}).ok());
  }
  patients->set_num_patients(5);
  return report;
}

TEST_F(CoordinatorTest, PatientLevelAggregatesAreCheckedAndStored) {
  Join("a");
  Join("x");
  std::string run = StartAndInitialize(MakePlan({"a"}, {"x"}, 1));
  ASSERT_TRUE(Upload("a", run, 1, MakeBundle("test_model", 1.0f)).ok());
  const EvaluationReport good = PatientLevelReport(run, 1, INTERNAL_VALIDATION);
  ASSERT_EQ(good.patient_aggregate().num_images(), 5);

  // Malformed patient-level aggregates refuse the whole report.
  std::vector<std::pair<std::string, EvaluationReport>> bad;
  EvaluationReport wrong_classes = good;
  InitAggregate(2, wrong_classes.mutable_patient_aggregate());
  bad.emplace_back("classes", wrong_classes);
  EvaluationReport wrong_split = good;
  wrong_split.mutable_patient_aggregate()->set_split(EXTERNAL_VALIDATION);
  bad.emplace_back("split", wrong_split);
  EvaluationReport inconsistent = good;
  inconsistent.mutable_patient_aggregate()->set_confusion(0, 7);
  bad.emplace_back("counts", inconsistent);
  EvaluationReport two_cases_a_patient = good;
  two_cases_a_patient.mutable_patient_aggregate()->set_num_patients(3);
  bad.emplace_back("cases per patient", two_cases_a_patient);
  EvaluationReport other_patients = good;
  other_patients.mutable_aggregate()->set_num_patients(6);
  bad.emplace_back("patients", other_patients);
  EvaluationReport suppressed_alone = good;
  *suppressed_alone.mutable_patient_aggregate() = EvalAggregate();
  suppressed_alone.mutable_patient_aggregate()->set_split(INTERNAL_VALIDATION);
  suppressed_alone.mutable_patient_aggregate()->set_class_count(3);
  suppressed_alone.mutable_patient_aggregate()->mutable_confusion()->Resize(9,
                                                                            0);
  suppressed_alone.mutable_patient_aggregate()->set_suppressed(true);
  bad.emplace_back("suppressed", suppressed_alone);
  // Class 2 has no images, so either may withhold it, but not just one.
  EvaluationReport other_withheld = good;
  other_withheld.mutable_aggregate()->add_withheld_classes(2);
  bad.emplace_back("withheld", other_withheld);
  for (const auto& [what, report] : bad) {
    absl::Status status = coordinator_->ReportEvaluation("a", report);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_NE(status.message().find("patient-level aggregate"),
              std::string::npos)
        << what << ": " << status.message();
  }
  EXPECT_TRUE(Status().rounds(1).evaluations().empty());

  // The well-formed one is stored beside the image-level aggregate; a site
  // whose agent sends none (before patient-level reporting) is still heard.
  ASSERT_TRUE(coordinator_->ReportEvaluation("a", good).ok());
  ASSERT_TRUE(Report("x", run, 1, EXTERNAL_VALIDATION).ok());
  for (bool restarted : {false, true}) {
    if (restarted) Restart();
    RunStatus status = Status(run);
    EXPECT_EQ(status.state(), RunStatus::DONE);
    ASSERT_EQ(status.rounds(1).evaluations_size(), 2);
    for (const SiteEvaluation& evaluation : status.rounds(1).evaluations()) {
      if (evaluation.site() == "a") {
        ASSERT_TRUE(evaluation.has_patient_aggregate()) << restarted;
        EXPECT_EQ(evaluation.patient_aggregate().SerializeAsString(),
                  good.patient_aggregate().SerializeAsString());
        EXPECT_EQ(evaluation.aggregate().num_images(), 8);
      } else {
        EXPECT_FALSE(evaluation.has_patient_aggregate()) << restarted;
      }
    }
  }
}

TEST(SuppressedEvaluationTest, SuppressedReportsCarryNoCounts) {
  EvalAggregate suppressed;
  suppressed.set_class_count(3);
  suppressed.mutable_confusion()->Resize(9, 0);
  suppressed.set_suppressed(true);
  EXPECT_TRUE(ValidateAggregate(suppressed, 3).ok());
  suppressed.set_confusion(4, 1);
  suppressed.set_num_images(1);
  EXPECT_EQ(ValidateAggregate(suppressed, 3).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace echofed
