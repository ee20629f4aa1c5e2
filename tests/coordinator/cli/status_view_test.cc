// The table of `echofed status`, from a hand-made RunStatus.

#include "coordinator/cli/status_view.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/dp_accountant.h"
#include "coordinator/cli/admin_client.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

SiteStatus* AddSite(RunStatus& run, const std::string& name, bool joined,
                    bool live, const std::string& activity,
                    absl::Duration since_seen) {
  SiteStatus* site = run.add_sites();
  site->set_site(name);
  site->set_role(Plan::TRAIN);
  site->set_joined(joined);
  site->set_live(live);
  site->set_activity(activity);
  if (since_seen > absl::ZeroDuration()) {
    site->set_last_seen_unix_ms(absl::ToUnixMillis(kNow - since_seen));
  }
  return site;
}

RunStatus MakeRun() {
  RunStatus run;
  run.set_run_id("run-42");
  run.mutable_plan()->set_name("nb-subtype");
  run.mutable_plan()->set_rounds(5);
  run.mutable_plan()->set_local_epochs(6);
  run.set_state(RunStatus::TRAINING);
  run.set_round(3);
  run.set_phase_deadline_unix_ms(
      absl::ToUnixMillis(kNow + absl::Minutes(4) + absl::Seconds(12)));
  SiteStatus* training =
      AddSite(run, "hospital-a", true, true, "training", absl::Seconds(3));
  training->set_epoch(2);
  training->set_batch(14);
  training->set_loss(0.4123);
  AddSite(run, "hospital-b", true, true, "uploaded", absl::Seconds(12));
  AddSite(run, "hospital-c", true, true, "evaluated", absl::Seconds(1));
  AddSite(run, "hospital-d", true, false, "training",
          absl::Minutes(8) + absl::Seconds(2));
  AddSite(run, "hospital-e", false, false, "never seen", absl::ZeroDuration());
  AddSite(run, "hospital-f", true, true, "joined\x1b[2Jevil", absl::Seconds(1));
  run.add_rounds()->set_round(0);
  for (int round = 1; round <= 2; ++round) {
    RoundRecord* record = run.add_rounds();
    record->set_round(round);
    record->add_contributors("hospital-a");
    record->set_mean_train_loss(round == 1 ? 0.9 : 0.6125);
    SiteEvaluation* evaluation = record->add_evaluations();
    evaluation->set_site("hospital-a");
    EvalAggregate* aggregate = evaluation->mutable_aggregate();
    aggregate->set_split(INTERNAL_VALIDATION);
    aggregate->set_class_count(2);
    aggregate->set_num_images(20);
    aggregate->set_num_patients(20);
    for (int count : {9, 1, 2, 8}) aggregate->add_confusion(count);
  }
  return run;
}

// The table's line for one site.
std::string LineOf(const std::string& table, const std::string& site) {
  for (absl::string_view line : absl::StrSplit(table, '\n')) {
    if (absl::StrContains(line, site)) return std::string(line);
  }
  return "";
}

TEST(StatusViewTest, HeaderShowsRoundPhaseAndDeadline) {
  const std::string table = FormatLiveStatus(MakeRun(), kNow);
  EXPECT_TRUE(absl::StartsWith(
      table,
      "run run-42  'nb-subtype'  TRAINING  round 3/5  deadline in "
      "4m 12s\n"))
      << table;
}

TEST(StatusViewTest, EachSiteState) {
  const std::string table = FormatLiveStatus(MakeRun(), kNow);
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-a"),
                                "training epoch 2/6 batch 14 loss 0.4123"))
      << table;
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-a"), "3s ago"));
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-b"), "uploaded"));
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-c"), "evaluated"));
  // Silent past the liveness window: missing, with the time it was last
  // heard from (08:00:00 - 8m 02s).
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-d"),
                                "MISSING since 07:51:58 UTC (8m 02s)"))
      << table;
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-e"), "not joined"));
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-e"), "never"));
}

TEST(StatusViewTest, NoControlCharactersFromSites) {
  const std::string table = FormatLiveStatus(MakeRun(), kNow);
  EXPECT_EQ(table.find('\x1b'), std::string::npos);
  EXPECT_TRUE(absl::StrContains(LineOf(table, "hospital-f"), "joined?[2Jevil"));
}

// `echofed run status` too: what a site sent reaches the terminal printable.
TEST(StatusViewTest, RunStatusSiteLinesHaveNoControlCharactersEither) {
  RunStatus run = MakeRun();
  run.mutable_sites(0)->set_device("cuda\x1b]0;pwned\x07");
  const std::string lines = FormatSites(run);
  EXPECT_EQ(lines.find('\x1b'), std::string::npos) << lines;
  EXPECT_EQ(lines.find('\x07'), std::string::npos) << lines;
  EXPECT_TRUE(absl::StrContains(lines, "joined?[2Jevil")) << lines;
  EXPECT_TRUE(absl::StrContains(lines, "cuda?]0;pwned?")) << lines;
}

TEST(StatusViewTest, LastCommittedRoundWithItsMetrics) {
  const std::string table = FormatLiveStatus(MakeRun(), kNow);
  EXPECT_TRUE(absl::StrContains(table, "last committed round 2/5")) << table;
  EXPECT_FALSE(absl::StrContains(table, "round 1/5"));
  EXPECT_TRUE(absl::StrContains(table, "mean train loss 0.6125"));
  // FormatRound's per-site line: 17 of 20 right.
  EXPECT_TRUE(absl::StrContains(LineOf(table, "POOLED"), "85.0%")) << table;
}

TEST(StatusViewTest, PatientLevelRowsBesideTheImageRows) {
  RunStatus run = MakeRun();
  RoundRecord* round = run.mutable_rounds(run.rounds_size() - 1);
  ASSERT_GT(round->evaluations_size(), 0);
  // hospital-a's 20 images are 8 patients, 7 of them right.
  EvalAggregate* patients =
      round->mutable_evaluations(0)->mutable_patient_aggregate();
  patients->set_split(INTERNAL_VALIDATION);
  patients->set_class_count(2);
  patients->set_num_images(8);
  patients->set_num_patients(8);
  for (int count : {4, 0, 1, 3}) patients->add_confusion(count);
  const std::string table = FormatLiveStatus(run, kNow);
  const std::string line = LineOf(table, "POOLED patients");
  EXPECT_TRUE(absl::StrContains(line, "internal")) << table;
  EXPECT_TRUE(absl::StrContains(line, " 8 ")) << table;
  EXPECT_TRUE(absl::StrContains(line, "87.5%")) << table;
  // Without it (an older agent), no patient row.
  round->mutable_evaluations(0)->clear_patient_aggregate();
  EXPECT_FALSE(
      absl::StrContains(FormatLiveStatus(run, kNow), "POOLED patients"));
}

TEST(StatusViewTest, FinishedRunHasNoDeadlineAndNoRoundYet) {
  RunStatus run = MakeRun();
  run.set_state(RunStatus::STOPPED);
  run.clear_rounds();
  const std::string table = FormatLiveStatus(run, kNow);
  EXPECT_FALSE(absl::StrContains(table, "deadline"));
  EXPECT_TRUE(absl::StrContains(table, "STOPPED"));
  EXPECT_TRUE(absl::StrContains(table, "no round committed yet"));
}

// A differential privacy run: the plan's settings, the whole run's
// projected epsilon (the accountant's) and each site's latest epsilon, in
// both `echofed status` and `echofed run status`.
TEST(StatusViewTest, DifferentialPrivacyShowsEpsilonPerSite) {
  RunStatus run = MakeRun();
  DifferentialPrivacy* dp = run.mutable_plan()->mutable_differential_privacy();
  dp->set_clip_norm(0.5);
  dp->set_noise_multiplier(1.0);
  dp->set_delta(1e-5);
  for (int round = 1; round <= 2; ++round) {
    SitePrivacy* privacy = run.mutable_rounds(round)->add_privacy();
    privacy->set_site("hospital-a");
    privacy->set_epsilon(round == 1 ? 10.7248 : 16.5);
    privacy->set_delta(1e-5);
  }
  const std::string projected =
      absl::StrFormat("%.4g", SiteLevelEpsilon(1.0, 5, 1e-5)->epsilon);
  for (const std::string& text :
       {FormatLiveStatus(run, kNow), FormatPrivacy(run)}) {
    EXPECT_TRUE(absl::StrContains(
        text,
        "differential privacy: clip norm 0.5, noise multiplier 1; "
        "epsilon per training site over 5 rounds: " +
            projected + " at delta 1e-05"))
        << text;
    // The latest round's figure, not the first one's.
    EXPECT_TRUE(absl::StrContains(
        text, "hospital-a       epsilon 16.5 at delta 1e-05 (round 2)"))
        << text;
  }
  // And per round in FormatRound.
  EXPECT_TRUE(absl::StrContains(FormatRound(run, run.rounds(1)),
                                "privacy spent (epsilon): hospital-a 10.72"));
  // Runs without differential privacy say nothing of it.
  EXPECT_EQ(FormatPrivacy(MakeRun()), "");
  EXPECT_FALSE(absl::StrContains(FormatLiveStatus(MakeRun(), kNow), "privacy"));
}

// An external validation site that evaluated round 2 and is live: what the
// coordinator's status says of it in `phase` at `round`, as sent.
RunStatus WithValidationSite(RunStatus::State phase, int round,
                             const std::string& activity) {
  RunStatus run = MakeRun();
  run.set_state(phase);
  run.set_round(round);
  SiteStatus* site =
      AddSite(run, "hospital-x", true, true, activity, absl::Seconds(4));
  site->set_role(Plan::EXTERNAL_VALIDATION);
  site->set_device("cpu");
  SiteEvaluation* evaluation = run.mutable_rounds(2)->add_evaluations();
  evaluation->set_site("hospital-x");
  EvalAggregate* aggregate = evaluation->mutable_aggregate();
  aggregate->set_split(EXTERNAL_VALIDATION);
  aggregate->set_class_count(2);
  aggregate->set_num_images(10);
  aggregate->set_num_patients(10);
  for (int count : {4, 1, 1, 4}) aggregate->add_confusion(count);
  return run;
}

// Both tables, `echofed status` and `echofed run status`: the line of
// hospital-x.
std::vector<std::string> ValidationLines(const RunStatus& run) {
  return {LineOf(FormatLiveStatus(run, kNow), "hospital-x"),
          LineOf(FormatSites(run), "hospital-x")};
}

// A validation site never trains: no epoch, batch or loss, but whether it
// waits, evaluates or has evaluated, read off the run and its round
// records rather than the site's last activity word.
TEST(StatusViewTest, ValidationSitesShowWhatTheyDoNotTrainingFields) {
  // Round 3 trains elsewhere; the site's word is still round 2's.
  for (const std::string& line : ValidationLines(
           WithValidationSite(RunStatus::TRAINING, 3, "evaluated"))) {
    EXPECT_TRUE(absl::StrContains(
        line, "waiting (round 3 training; evaluated round 2)"))
        << line;
    for (const char* training : {"epoch", "batch", "loss"}) {
      EXPECT_FALSE(absl::StrContains(line, training)) << line;
    }
  }
  // `echofed run status` still says when it was seen and on what.
  const std::string line = LineOf(
      FormatSites(WithValidationSite(RunStatus::TRAINING, 3, "evaluated")),
      "hospital-x");
  EXPECT_TRUE(absl::StrContains(line, "  seen ")) << line;
  EXPECT_TRUE(absl::EndsWith(line, "  cpu")) << line;

  // Round 3 evaluates: before the site fetched its task, while it
  // evaluates, and once its report is in.
  for (const std::string& line : ValidationLines(
           WithValidationSite(RunStatus::EVALUATING, 3, "evaluated"))) {
    EXPECT_TRUE(absl::StrContains(line, "waiting to evaluate round 3")) << line;
  }
  for (const std::string& line : ValidationLines(
           WithValidationSite(RunStatus::EVALUATING, 3, "evaluating"))) {
    EXPECT_TRUE(absl::StrContains(line, "evaluating round 3")) << line;
    EXPECT_FALSE(absl::StrContains(line, "epoch")) << line;
  }
  RunStatus reported =
      WithValidationSite(RunStatus::EVALUATING, 2, "evaluated");
  for (const std::string& line : ValidationLines(reported)) {
    EXPECT_TRUE(absl::StrContains(line, "evaluated round 2")) << line;
  }
  reported.set_state(RunStatus::DONE);
  for (const std::string& line : ValidationLines(reported)) {
    EXPECT_TRUE(absl::StrContains(line, "evaluated round 2")) << line;
  }

  // Still "not joined" and "MISSING" like any site.
  RunStatus silent = WithValidationSite(RunStatus::TRAINING, 3, "evaluated");
  silent.mutable_sites(6)->set_live(false);
  EXPECT_TRUE(absl::StrContains(
      LineOf(FormatLiveStatus(silent, kNow), "hospital-x"), "MISSING since"));
  RunStatus absent = WithValidationSite(RunStatus::TRAINING, 3, "never seen");
  absent.mutable_sites(6)->set_joined(false);
  absent.mutable_sites(6)->clear_last_seen_unix_ms();
  EXPECT_TRUE(absl::StrContains(
      LineOf(FormatLiveStatus(absent, kNow), "hospital-x"), "not joined"));

  // Training sites keep their progress.
  EXPECT_TRUE(absl::StrContains(LineOf(FormatSites(reported), "hospital-a"),
                                "epoch 2 batch 14 loss"));
}

// `echofed run status`: epoch, batch and loss only for a site that is
// training; an uploaded or evaluated training site shows its activity alone.
TEST(StatusViewTest, RunStatusShowsTrainingProgressOnlyWhileTraining) {
  const std::string lines = FormatSites(MakeRun());
  EXPECT_TRUE(absl::StrContains(LineOf(lines, "hospital-a"),
                                "training     epoch 2 batch 14 loss 0.4123"))
      << lines;
  for (const char* idle : {"hospital-b", "hospital-c"}) {
    const std::string line = LineOf(lines, idle);
    EXPECT_FALSE(absl::StrContains(line, "epoch")) << line;
    EXPECT_FALSE(absl::StrContains(line, "loss")) << line;
  }
  EXPECT_TRUE(absl::StrContains(LineOf(lines, "hospital-b"), "uploaded"));
}

// `echofed run status` prints each committed round's audit log head in
// full: what `echofed audit verify --expect-records --expect-head` takes.
TEST(StatusViewTest, RoundsShowTheAuditLogHeadOfTheirCommit) {
  RunStatus run = MakeRun();
  const std::string hash(64, 'c');
  AuditLogHead* head = run.mutable_rounds(2)->mutable_audit_head();
  head->set_records(57);
  head->set_hash(hash);
  EXPECT_TRUE(absl::StrContains(
      FormatRound(run, run.rounds(2)),
      absl::StrCat("  audit log at commit: 57 records, head ", hash, "\n")))
      << FormatRound(run, run.rounds(2));
  EXPECT_TRUE(absl::StrContains(FormatLiveStatus(run, kNow),
                                "audit log at commit: 57 records"));
  // Rounds committed before coordinators kept the head say nothing of it.
  EXPECT_FALSE(absl::StrContains(FormatRound(run, run.rounds(1)), "audit"));
}

}  // namespace
}  // namespace echofed
