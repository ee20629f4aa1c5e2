// The status page and the Prometheus metrics rendered from a hand-made
// snapshot: what they show, that the page is self-contained and escapes
// what sites send, and that the metrics parse as text format 0.0.4.

#include "coordinator/status_page.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/clock.h"
#include "common/dp_accountant.h"
#include "common/files.h"
#include "gtest/gtest.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

EvalAggregate Evaluated(EvalSplit split, int correct, int wrong) {
  EvalAggregate aggregate;
  aggregate.set_split(split);
  aggregate.set_class_count(2);
  aggregate.set_num_patients(correct + wrong);
  aggregate.set_num_images(correct + wrong);
  for (int64_t count : {correct, wrong, 0, 0}) aggregate.add_confusion(count);
  return aggregate;
}

StatusSnapshot MakeSnapshot(Telemetry& telemetry) {
  StatusSnapshot snapshot;
  snapshot.now = kNow;
  RunStatus run;
  run.set_run_id("run-\"7\"");  // a quote, to exercise label escaping
  run.mutable_plan()->set_name("nb-subtype");
  run.mutable_plan()->set_rounds(3);
  run.mutable_plan()->set_local_epochs(4);
  run.set_state(RunStatus::TRAINING);
  run.set_round(2);
  run.set_phase_deadline_unix_ms(absl::ToUnixMillis(kNow + absl::Minutes(5)));
  const int64_t now_ms = absl::ToUnixMillis(kNow);

  SiteStatus* training = run.add_sites();
  training->set_site("hospital-a");
  training->set_role(Plan::TRAIN);
  training->set_joined(true);
  training->set_live(true);
  training->set_activity("training");
  training->set_epoch(3);
  training->set_batch(17);
  training->set_loss(0.4321);
  training->set_last_seen_unix_ms(now_ms - 2000);
  SiteStatus* uploaded = run.add_sites();
  uploaded->set_site("hospital-b");
  uploaded->set_role(Plan::TRAIN);
  uploaded->set_joined(true);
  uploaded->set_live(true);
  // Free text from the agent: must come out escaped.
  uploaded->set_activity("<script>alert(1)</script>");
  uploaded->set_last_seen_unix_ms(now_ms - 5000);
  SiteStatus* missing = run.add_sites();
  missing->set_site("hospital-c");
  missing->set_role(Plan::TRAIN);
  missing->set_joined(true);
  missing->set_live(false);
  missing->set_activity("training");
  missing->set_last_seen_unix_ms(now_ms - 600'000);
  SiteStatus* absent = run.add_sites();
  absent->set_site("hospital-d");
  absent->set_role(Plan::EXTERNAL_VALIDATION);
  absent->set_activity("never seen");

  run.add_rounds()->set_round(0);
  RoundRecord* first = run.add_rounds();
  first->set_round(1);
  first->add_contributors("hospital-a");
  first->add_contributors("hospital-b");
  first->set_mean_train_loss(0.75);
  first->set_closed_unix_ms(now_ms - 60'000);
  SiteEvaluation* evaluation = first->add_evaluations();
  evaluation->set_site("hospital-a");
  *evaluation->mutable_aggregate() = Evaluated(INTERNAL_VALIDATION, 30, 10);
  // The same set as 16 patients, 14 of them right.
  *evaluation->mutable_patient_aggregate() =
      Evaluated(INTERNAL_VALIDATION, 14, 2);
  snapshot.latest = run;

  RunStatus older;
  older.set_run_id("run-6");
  older.mutable_plan()->set_name("earlier");
  older.set_state(RunStatus::DONE);
  snapshot.runs = {older, run};
  snapshot.sites = {3, 2};

  telemetry.AddBytesReceived(1000);
  telemetry.AddBytesReceived(234);
  telemetry.AddBytesSent(5678);
  telemetry.CountUploadRefusal(absl::StatusCode::kInvalidArgument);
  telemetry.CountUploadRefusal(absl::StatusCode::kInvalidArgument);
  telemetry.CountConnectionRefusal("grpc", kRefusedNotEnrolled);
  telemetry.CountConnectionRefusal("status", kRefusedRole);
  telemetry.ObserveRoundCommitted(absl::Seconds(45));
  telemetry.ObserveRoundCommitted(absl::Minutes(50));
  snapshot.telemetry = telemetry.Take();
  return snapshot;
}

// --- A strict reader of the text exposition format 0.0.4 --------------------

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> type
  std::vector<Sample> samples;
  std::string error;  // empty when it parsed

  // The value of the one sample with this name and these labels; NaN when
  // there is none.
  double Value(const std::string& name,
               const std::map<std::string, std::string>& labels = {}) const {
    for (const Sample& sample : samples) {
      if (sample.name == name && sample.labels == labels) return sample.value;
    }
    return NAN;
  }
};

bool IsMetricName(absl::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              c == ':' || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool ParseValue(absl::string_view text, double* value) {
  if (text == "+Inf") {
    *value = INFINITY;
  } else if (text == "-Inf") {
    *value = -INFINITY;
  } else if (text == "NaN") {
    *value = NAN;
  } else {
    return absl::SimpleAtod(text, value) && !absl::StrContains(text, "inf") &&
           !absl::StrContains(text, "nan");
  }
  return true;
}

// The family a sample belongs to: its own name, or for a histogram the
// name without _bucket, _sum or _count.
std::string FamilyOf(const Exposition& exposition, const std::string& name) {
  if (exposition.types.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      std::string base = name.substr(0, name.size() - strlen(suffix));
      auto it = exposition.types.find(base);
      if (it != exposition.types.end() &&
          (it->second == "histogram" || it->second == "summary")) {
        return base;
      }
    }
  }
  return "";
}

Exposition Parse(const std::string& text) {
  Exposition out;
  if (text.empty() || text.back() != '\n') {
    out.error = "the text must end with a line feed";
    return out;
  }
  std::set<std::string> families_with_samples;
  std::set<std::string> seen_samples;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::vector<std::string> parts =
          absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() >= 3 && parts[1] == "TYPE") {
        static const std::set<std::string> kTypes = {
            "counter", "gauge", "histogram", "summary", "untyped"};
        if (parts.size() != 4 || !IsMetricName(parts[2]) ||
            !kTypes.count(parts[3])) {
          out.error = absl::StrCat("bad TYPE line: ", line);
          return out;
        }
        if (out.types.count(parts[2]) ||
            families_with_samples.count(parts[2])) {
          out.error = absl::StrCat("TYPE repeated or after samples: ", line);
          return out;
        }
        out.types[parts[2]] = parts[3];
      } else if (parts.size() >= 3 && parts[1] == "HELP") {
        if (!IsMetricName(parts[2])) {
          out.error = absl::StrCat("bad HELP line: ", line);
          return out;
        }
      }
      continue;
    }
    Sample sample;
    size_t pos = 0;
    while (pos < line.size() && line[pos] != '{' && line[pos] != ' ') ++pos;
    sample.name = std::string(line.substr(0, pos));
    if (!IsMetricName(sample.name)) {
      out.error = absl::StrCat("bad metric name: ", line);
      return out;
    }
    if (pos < line.size() && line[pos] == '{') {
      ++pos;
      while (pos < line.size() && line[pos] != '}') {
        size_t eq = line.find('=', pos);
        if (eq == absl::string_view::npos || eq + 1 >= line.size() ||
            line[eq + 1] != '"') {
          out.error = absl::StrCat("bad label: ", line);
          return out;
        }
        std::string label(line.substr(pos, eq - pos));
        if (!IsMetricName(label) || absl::StrContains(label, ":")) {
          out.error = absl::StrCat("bad label name: ", line);
          return out;
        }
        std::string value;
        size_t i = eq + 2;
        for (; i < line.size() && line[i] != '"'; ++i) {
          if (line[i] == '\\') {
            if (i + 1 >= line.size()) break;
            char escaped = line[++i];
            if (escaped == 'n') {
              value += '\n';
            } else if (escaped == '\\' || escaped == '"') {
              value += escaped;
            } else {
              out.error = absl::StrCat("bad escape: ", line);
              return out;
            }
          } else {
            value += line[i];
          }
        }
        if (i >= line.size()) {
          out.error = absl::StrCat("unterminated label value: ", line);
          return out;
        }
        if (!sample.labels.emplace(label, value).second) {
          out.error = absl::StrCat("label repeated: ", line);
          return out;
        }
        pos = i + 1;
        if (pos < line.size() && line[pos] == ',') ++pos;
      }
      if (pos >= line.size()) {
        out.error = absl::StrCat("unterminated labels: ", line);
        return out;
      }
      ++pos;  // '}'
    }
    if (pos >= line.size() || line[pos] != ' ') {
      out.error = absl::StrCat("no value: ", line);
      return out;
    }
    std::vector<std::string> rest = absl::StrSplit(line.substr(pos + 1), ' ');
    if (rest.empty() || rest.size() > 2 ||
        !ParseValue(rest[0], &sample.value)) {
      out.error = absl::StrCat("bad value: ", line);
      return out;
    }
    std::string family = FamilyOf(out, sample.name);
    if (family.empty()) {
      out.error = absl::StrCat("sample before its TYPE: ", line);
      return out;
    }
    families_with_samples.insert(family);
    std::string key(line.substr(0, pos));
    if (!seen_samples.insert(key).second) {
      out.error = absl::StrCat("sample repeated: ", line);
      return out;
    }
    out.samples.push_back(std::move(sample));
  }
  return out;
}

TEST(PrometheusReaderTest, RefusesBrokenText) {
  // The reader must be able to fail, or the tests below prove nothing.
  EXPECT_FALSE(Parse("# TYPE a counter\na 1").error.empty());
  EXPECT_FALSE(Parse("a 1\n").error.empty());
  EXPECT_FALSE(Parse("# TYPE a counter\na{x=\"1} 1\n").error.empty());
  EXPECT_FALSE(Parse("# TYPE a counter\na{x=\"\\t\"} 1\n").error.empty());
  EXPECT_FALSE(Parse("# TYPE a counter\na one\n").error.empty());
  EXPECT_FALSE(Parse("# TYPE 1a gauge\n").error.empty());
  EXPECT_FALSE(Parse("# TYPE a gauge\na 1\na 2\n").error.empty());
  EXPECT_TRUE(Parse("# TYPE a gauge\na{x=\"q\\\"\"} 1\n").error.empty());
}

// --- Metrics ----------------------------------------------------------------

TEST(StatusMetricsTest, ParsesAsTextFormatWithTheCoordinatorsNumbers) {
  Telemetry telemetry(kNow - absl::Hours(2));
  StatusSnapshot snapshot = MakeSnapshot(telemetry);
  const std::string text = RenderPrometheusMetrics(snapshot);
  Exposition parsed = Parse(text);
  ASSERT_EQ(parsed.error, "") << text;

  EXPECT_EQ(parsed.types["echofed_rounds_committed_total"], "counter");
  EXPECT_EQ(parsed.types["echofed_round_duration_seconds"], "histogram");
  EXPECT_EQ(parsed.types["echofed_run_phase"], "gauge");
  EXPECT_EQ(parsed.Value("echofed_coordinator_uptime_seconds"), 7200);
  EXPECT_EQ(parsed.Value("echofed_received_bytes_total"), 1234);
  EXPECT_EQ(parsed.Value("echofed_sent_bytes_total"), 5678);
  EXPECT_EQ(parsed.Value("echofed_sites_joined"), 3);
  EXPECT_EQ(parsed.Value("echofed_sites_live"), 2);
  EXPECT_EQ(parsed.Value("echofed_rounds_committed_total"), 2);
  EXPECT_EQ(parsed.Value("echofed_upload_refusals_total",
                         {{"reason", "INVALID_ARGUMENT"}}),
            2);
  EXPECT_EQ(parsed.Value("echofed_connection_refusals_total",
                         {{"listener", "grpc"}, {"reason", "not_enrolled"}}),
            1);
  EXPECT_EQ(
      parsed.Value("echofed_connection_refusals_total",
                   {{"listener", "status"}, {"reason", "role_not_allowed"}}),
      1);

  // The run id with its quote survives the label escaping.
  const std::string run = "run-\"7\"";
  EXPECT_EQ(parsed.Value("echofed_run_round", {{"run", run}}), 2);
  EXPECT_EQ(parsed.Value("echofed_run_rounds_planned", {{"run", run}}), 3);
  EXPECT_EQ(parsed.Value("echofed_run_rounds_committed", {{"run", run}}), 1);
  EXPECT_EQ(parsed.Value("echofed_run_phase_deadline_seconds", {{"run", run}}),
            300);
  int phases = 0;
  for (const Sample& sample : parsed.samples) {
    if (sample.name != "echofed_run_phase") continue;
    ++phases;
    EXPECT_EQ(sample.value, sample.labels.at("phase") == "training" ? 1 : 0)
        << sample.labels.at("phase");
  }
  EXPECT_EQ(phases, 7);
  EXPECT_EQ(parsed.Value("echofed_runs", {{"state", "done"}}), 1);
  EXPECT_EQ(parsed.Value("echofed_runs", {{"state", "training"}}), 1);
  EXPECT_EQ(parsed.Value("echofed_site_live", {{"site", "hospital-c"}}), 0);
  EXPECT_EQ(parsed.Value("echofed_site_live", {{"site", "hospital-a"}}), 1);
  EXPECT_EQ(parsed.Value("echofed_site_last_seen_timestamp_seconds",
                         {{"site", "hospital-c"}}),
            absl::ToUnixSeconds(kNow) - 600);
}

TEST(StatusMetricsTest, RoundDurationsFormACumulativeHistogram) {
  Telemetry telemetry(kNow);
  StatusSnapshot snapshot = MakeSnapshot(telemetry);  // 45 s and 50 min
  Exposition parsed = Parse(RenderPrometheusMetrics(snapshot));
  ASSERT_EQ(parsed.error, "");
  std::vector<std::pair<double, double>> buckets;
  for (const Sample& sample : parsed.samples) {
    if (sample.name != "echofed_round_duration_seconds_bucket") continue;
    double bound = 0;
    ASSERT_TRUE(ParseValue(sample.labels.at("le"), &bound));
    buckets.emplace_back(bound, sample.value);
  }
  ASSERT_EQ(buckets.size(), Telemetry::RoundDurationBuckets().size() + 1);
  for (size_t i = 1; i < buckets.size(); ++i) {
    EXPECT_LT(buckets[i - 1].first, buckets[i].first);
    EXPECT_LE(buckets[i - 1].second, buckets[i].second);
  }
  EXPECT_TRUE(std::isinf(buckets.back().first));
  EXPECT_EQ(buckets.back().second,
            parsed.Value("echofed_round_duration_seconds_count"));
  EXPECT_EQ(parsed.Value("echofed_round_duration_seconds_count"), 2);
  EXPECT_EQ(parsed.Value("echofed_round_duration_seconds_sum"), 45 + 3000);
  for (const auto& [bound, count] : buckets) {
    EXPECT_EQ(count, bound < 45 ? 0 : bound < 3000 ? 1 : 2) << "le " << bound;
  }
}

TEST(StatusMetricsTest, WithoutAnyRunStillParses) {
  Telemetry telemetry(kNow);
  StatusSnapshot snapshot;
  snapshot.now = kNow + absl::Seconds(5);
  snapshot.telemetry = telemetry.Take();
  Exposition parsed = Parse(RenderPrometheusMetrics(snapshot));
  ASSERT_EQ(parsed.error, "");
  EXPECT_EQ(parsed.Value("echofed_coordinator_uptime_seconds"), 5);
  EXPECT_EQ(parsed.Value("echofed_rounds_committed_total"), 0);
  EXPECT_TRUE(std::isnan(parsed.Value("echofed_run_round", {{"run", ""}})));
}

// Python's prometheus_client (Debian python3-prometheus-client), the parser
// of the reference implementation's client library, reads the same text.
TEST(StatusMetricsTest, PrometheusClientParsesIt) {
  if (std::system("/usr/bin/python3 -c 'import prometheus_client' "
                  ">/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3-prometheus-client is not installed "
                    "(deploy/install-deps.sh installs it)";
  }
  Telemetry telemetry(kNow - absl::Hours(1));
  StatusSnapshot snapshot = MakeSnapshot(telemetry);
  testing::TempDir dir;
  ASSERT_TRUE(WriteFileAtomically(dir.Join("metrics.txt"),
                                  RenderPrometheusMetrics(snapshot))
                  .ok());
  const std::string script = dir.Join("check.py");
  ASSERT_TRUE(WriteFileAtomically(script, R"py(
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    families[family.name] = family
hist = families["echofed_round_duration_seconds"]
assert hist.type == "histogram", hist.type
count = [s.value for s in hist.samples if s.name.endswith("_count")]
assert count == [2.0], count
phase = families["echofed_run_phase"]
current = [s.labels["phase"] for s in phase.samples if s.value == 1]
assert current == ["training"], current
assert phase.samples[0].labels["run"] == 'run-"7"', phase.samples[0].labels
refusals = families["echofed_connection_refusals"]
assert refusals.type == "counter", refusals.type
print(len(families), "families")
)py")
                  .ok());
  const std::string command =
      absl::StrCat("/usr/bin/python3 ", script, " ", dir.Join("metrics.txt"));
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
}

// --- Page -------------------------------------------------------------------

TEST(StatusPageTest, ShowsRunRoundAndSiteStates) {
  Telemetry telemetry(kNow - absl::Hours(3));
  StatusSnapshot snapshot = MakeSnapshot(telemetry);
  const std::string page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StartsWith(page, "<!DOCTYPE html>"));
  EXPECT_TRUE(absl::StrContains(page, "run-&quot;7&quot;")) << page;
  EXPECT_TRUE(absl::StrContains(page, "nb-subtype"));
  EXPECT_TRUE(absl::StrContains(page, "id=\"phase\">training<"));
  EXPECT_TRUE(absl::StrContains(page, "id=\"round\">2 of 3<"));
  EXPECT_TRUE(absl::StrContains(page, "(5m 00s left)"));
  EXPECT_TRUE(absl::StrContains(page, "up 3h 00m"));
  for (const char* site :
       {"hospital-a", "hospital-b", "hospital-c", "hospital-d"}) {
    EXPECT_TRUE(absl::StrContains(page, site)) << site;
  }
  EXPECT_TRUE(
      absl::StrContains(page, "training (epoch 3, batch 17, loss 0.4321)"));
  EXPECT_TRUE(absl::StrContains(page, "missing since 2027-01-15 07:50:00 UTC"))
      << page;
  EXPECT_TRUE(absl::StrContains(page, "not joined"));
  // Round 1: hospital-a's internal validation, 30 of 40 right.
  EXPECT_TRUE(absl::StrContains(page, "75.0% (40 images); patients 87.5% (16)"))
      << page;
  EXPECT_TRUE(absl::StrContains(page, "hospital-a, hospital-b"));
  EXPECT_TRUE(absl::StrContains(page, "updates refused: invalid_argument"));
  EXPECT_TRUE(absl::StrContains(
      page, "connections refused (status): role_not_allowed"));
  EXPECT_TRUE(absl::StrContains(page, ">1234<"));
}

TEST(StatusPageTest, EscapesWhatSitesSendAndLoadsNothing) {
  Telemetry telemetry(kNow);
  const std::string page = RenderStatusPage(MakeSnapshot(telemetry));
  EXPECT_FALSE(absl::StrContains(page, "<script"));
  EXPECT_TRUE(absl::StrContains(page, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  // Self-contained: works from a file, offline, under a CSP that forbids
  // everything but inline style.
  for (const char* reference :
       {"src=", "href=", "url(", "@import", "http:", "https:", "<link"}) {
    EXPECT_FALSE(absl::StrContains(page, reference)) << reference;
  }
}

TEST(StatusPageTest, DifferentialPrivacyShowsEpsilonPerSite) {
  Telemetry telemetry(kNow);
  StatusSnapshot snapshot = MakeSnapshot(telemetry);
  EXPECT_FALSE(absl::StrContains(RenderStatusPage(snapshot), "id=\"privacy\""));
  RunStatus& run = *snapshot.latest;
  DifferentialPrivacy* dp = run.mutable_plan()->mutable_differential_privacy();
  dp->set_clip_norm(2);
  dp->set_noise_multiplier(4);
  dp->set_delta(1e-6);
  RoundRecord* round = run.add_rounds();
  round->set_round(1);
  SitePrivacy* privacy = round->add_privacy();
  privacy->set_site("hospital-<b>");
  privacy->set_epsilon(3.25);
  privacy->set_delta(1e-6);
  const std::string page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StrContains(
      page, absl::StrCat(
                "clip norm 2, noise multiplier 4; each training "
                "site's epsilon over the run's 3 rounds: ",
                absl::StrFormat("%.3g", SiteLevelEpsilon(4, 3, 1e-6)->epsilon),
                " at delta 1e-06")))
      << page;
  EXPECT_TRUE(absl::StrContains(
      page,
      "<tr class=\"privacy\"><td>hospital-&lt;b&gt;</td><td "
      "class=\"num\">3.25</td><td class=\"num\">1e-06</td><td "
      "class=\"num\">1</td></tr>"))
      << page;
}

// An external validation site shows what it does in the run's phase, not
// the activity word it last had nor training fields.
TEST(StatusPageTest, ValidationSiteWaitsEvaluatesOrHasEvaluated) {
  Telemetry telemetry(kNow);
  StatusSnapshot snapshot = MakeSnapshot(telemetry);
  RunStatus& run = *snapshot.latest;
  SiteStatus* site = run.add_sites();
  site->set_site("hospital-x");
  site->set_role(Plan::EXTERNAL_VALIDATION);
  site->set_joined(true);
  site->set_live(true);
  site->set_activity("evaluated");  // round 1's
  site->set_last_seen_unix_ms(absl::ToUnixMillis(kNow) - 3000);
  SiteEvaluation* evaluation = run.mutable_rounds(1)->add_evaluations();
  evaluation->set_site("hospital-x");
  *evaluation->mutable_aggregate() = Evaluated(EXTERNAL_VALIDATION, 8, 2);
  // Round 2 trains.
  std::string page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StrContains(
      page,
      "<td>hospital-x</td><td>external_validation</td><td>waiting (round 2 "
      "training; evaluated round 1)</td>"))
      << page;
  // Round 2 evaluates; then the site's report arrives.
  run.set_state(RunStatus::EVALUATING);
  site->set_activity("evaluating");
  page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StrContains(page, "<td>evaluating round 2</td>")) << page;
  RoundRecord* second = run.add_rounds();
  second->set_round(2);
  *second->add_evaluations() = *evaluation;
  site->set_activity("evaluated");
  page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StrContains(page, "<td>evaluated round 2</td>")) << page;
}

TEST(StatusPageTest, WithoutAnyRun) {
  Telemetry telemetry(kNow);
  StatusSnapshot snapshot;
  snapshot.now = kNow;
  snapshot.telemetry = telemetry.Take();
  const std::string page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StrContains(page, "No run yet."));
  EXPECT_FALSE(absl::StrContains(page, "id=\"sites\""));
}

// The snapshot as the real Coordinator gives it: a site that falls silent
// past the liveness window is counted joined but not live, and shown
// missing.
TEST(StatusSnapshotTest, SilentSiteIsJoinedButNotLive) {
  testing::TempDir dir;
  FakeClock clock;
  CoordinatorOptions options;
  options.state_dir = dir.Join("state");
  options.clock = &clock;
  options.site_liveness = absl::Seconds(90);
  absl::StatusOr<std::unique_ptr<Coordinator>> coordinator =
      Coordinator::Create(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  ASSERT_TRUE((*coordinator)->StartRun(testing::MakePlan({"a", "b"})).ok());
  JoinRequest join;
  join.mutable_data()->set_images(10);
  ASSERT_TRUE((*coordinator)->Join("a", join).ok());
  ASSERT_TRUE((*coordinator)->Join("b", join).ok());

  clock.Advance(absl::Seconds(60));
  ASSERT_TRUE((*coordinator)->Heartbeat("a", HeartbeatRequest()).ok());
  clock.Advance(absl::Seconds(60));  // b silent for 120 s, a for 60 s
  StatusSnapshot snapshot = TakeStatusSnapshot(**coordinator);
  EXPECT_EQ(snapshot.sites.joined, 2);
  EXPECT_EQ(snapshot.sites.live, 1);
  ASSERT_TRUE(snapshot.latest.has_value());
  ASSERT_EQ(snapshot.latest->sites_size(), 2);
  EXPECT_TRUE(snapshot.latest->sites(0).live());
  EXPECT_FALSE(snapshot.latest->sites(1).live());
  EXPECT_EQ(snapshot.runs.size(), 1u);
  EXPECT_EQ(snapshot.now - snapshot.telemetry.started, absl::Seconds(120));
  const std::string page = RenderStatusPage(snapshot);
  EXPECT_TRUE(absl::StrContains(page, "missing since 2027-01-15 08:00:00 UTC"))
      << page;
  Exposition parsed = Parse(RenderPrometheusMetrics(snapshot));
  ASSERT_EQ(parsed.error, "");
  EXPECT_EQ(parsed.Value("echofed_sites_live"), 1);
  EXPECT_EQ(parsed.Value("echofed_site_live", {{"site", "b"}}), 0);
  EXPECT_EQ(parsed.Value("echofed_coordinator_uptime_seconds"), 120);
}

}  // namespace
}  // namespace echofed
