#include "coordinator/status_page.h"

#include <cmath>
#include <initializer_list>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/dp_accountant.h"
#include "common/html.h"
#include "common/metrics.h"
#include "common/run_status.h"

namespace echofed {
namespace {

bool IsTerminal(RunStatus::State state) {
  return state == RunStatus::DONE || state == RunStatus::STOPPED ||
         state == RunStatus::FAILED;
}

std::string StateWord(RunStatus::State state) {
  return absl::AsciiStrToLower(RunStatus::State_Name(state));
}

// "3h 04m", "12m 05s", "42s": how long ago, or how long left.
std::string HumanDuration(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) duration = absl::ZeroDuration();
  int64_t seconds = absl::ToInt64Seconds(duration);
  if (seconds >= 86400) {
    return absl::StrFormat("%dd %02dh", seconds / 86400,
                           (seconds % 86400) / 3600);
  }
  if (seconds >= 3600) {
    return absl::StrFormat("%dh %02dm", seconds / 3600, (seconds % 3600) / 60);
  }
  if (seconds >= 60) {
    return absl::StrFormat("%dm %02ds", seconds / 60, seconds % 60);
  }
  return absl::StrFormat("%ds", seconds);
}

std::string UtcTime(absl::Time time) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", time, absl::UTCTimeZone());
}

std::string Percent(double value) {
  return std::isnan(value) ? "n/a" : absl::StrFormat("%.1f%%", 100 * value);
}

// Pooled accuracy of a round's evaluations over one validation set, image-
// or patient-level (the sites' patient aggregates: one case per patient);
// NaN when no site reported (or all suppressed) for it. `cases`: images or
// patients pooled.
double PooledAccuracy(const RoundRecord& round, EvalSplit split,
                      bool patient_level, int64_t* cases) {
  EvalAggregate pooled;
  for (const SiteEvaluation& evaluation : round.evaluations()) {
    if (patient_level && !evaluation.has_patient_aggregate()) continue;
    const EvalAggregate& aggregate =
        patient_level ? evaluation.patient_aggregate() : evaluation.aggregate();
    if (evaluation.aggregate().split() != split || aggregate.suppressed()) {
      continue;
    }
    AddAggregate(aggregate, &pooled).IgnoreError();  // checked on arrival
  }
  *cases = pooled.num_images();
  return pooled.num_images() == 0 ? NAN : Accuracy(pooled);
}

// "87.5% (32 images); patients 88.9% (27)", or "not evaluated".
std::string AccuracyCell(const RoundRecord& round, EvalSplit split) {
  int64_t images = 0, patients = 0;
  const double by_image = PooledAccuracy(round, split, false, &images);
  const double by_patient = PooledAccuracy(round, split, true, &patients);
  if (images == 0) return "not evaluated";
  std::string cell = absl::StrCat(Percent(by_image), " (", images, " images)");
  if (patients > 0) {
    absl::StrAppend(&cell, "; patients ", Percent(by_patient), " (", patients,
                    ")");
  }
  return cell;
}

const char kStyle[] = R"css(
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .2em}
h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse}
th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#666}
.state{font-weight:600}
.missing{color:#b00020}
.live{color:#1b7f3b}
)css";

// Which column a site is in: what the coordinator last saw it do, and
// whether it fell silent. An external validation site never trains: what
// it does is read off the run (waiting, evaluating, evaluated).
std::string SiteStateCell(const RunStatus& run, const SiteStatus& site) {
  if (!site.joined()) {
    return site.last_seen_unix_ms() == 0 ? "not joined"
                                         : "not joined since restart";
  }
  const bool validation = site.role() == Plan::EXTERNAL_VALIDATION;
  std::string state =
      HtmlEscape(validation ? ValidationSiteState(run, site) : site.activity());
  if (!validation && site.activity() == "training") {
    absl::StrAppend(&state,
                    absl::StrFormat(" (epoch %d, batch %d, loss %.4f)",
                                    site.epoch(), site.batch(), site.loss()));
  }
  if (!site.live()) {
    absl::StrAppend(
        &state, " <span class=\"missing\">missing since ",
        HtmlEscape(UtcTime(absl::FromUnixMillis(site.last_seen_unix_ms()))),
        "</span>");
  }
  return state;
}

// Differential privacy runs: the plan's settings, what a training site
// spends over the whole run, and what each has spent so far (as it
// reported it with its latest committed update).
void AppendPrivacy(const RunStatus& run, std::string* out) {
  const Plan& plan = run.plan();
  if (!plan.has_differential_privacy()) return;
  const DifferentialPrivacy& dp = plan.differential_privacy();
  absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
  absl::StrAppend(
      out, "<h2>Differential privacy</h2>\n<p id=\"privacy-plan\">clip norm ",
      absl::StrFormat("%g", dp.clip_norm()), ", noise multiplier ",
      absl::StrFormat("%g", dp.noise_multiplier()), "; each training site's ",
      "epsilon over the run's ", plan.rounds(), " rounds: ",
      projected.ok() ? absl::StrFormat("%.3g at delta %g", projected->epsilon,
                                       projected->delta)
                     : HtmlEscape(projected.status().message()),
      "</p>\n<table id=\"privacy\">\n<tr><th>site</th><th>epsilon spent</th>"
      "<th>delta</th><th>as of round</th></tr>\n");
  for (const SitePrivacySpent& site : LatestSitePrivacy(run)) {
    absl::StrAppend(
        out, "<tr class=\"privacy\"><td>", HtmlEscape(site.site),
        "</td><td class=\"num\">", absl::StrFormat("%.4g", site.epsilon),
        "</td><td class=\"num\">", absl::StrFormat("%g", site.delta),
        "</td><td class=\"num\">", site.round, "</td></tr>\n");
  }
  absl::StrAppend(out, "</table>\n");
}

void AppendLatestRun(const RunStatus& run, absl::Time now, std::string* out) {
  const Plan& plan = run.plan();
  absl::StrAppend(
      out, "<h2>Run <span id=\"run-id\">", HtmlEscape(run.run_id()),
      "</span></h2>\n<table id=\"run\">\n<tr><th>plan</th><td>",
      HtmlEscape(plan.name()),
      "</td></tr>\n<tr><th>phase</th><td class=\"state\" id=\"phase\">",
      StateWord(run.state()), "</td></tr>\n<tr><th>round</th><td id=\"round\">",
      run.round(), " of ", plan.rounds(), "</td></tr>\n");
  if (!IsTerminal(run.state()) && run.phase_deadline_unix_ms() > 0) {
    absl::Time deadline = absl::FromUnixMillis(run.phase_deadline_unix_ms());
    absl::StrAppend(out, "<tr><th>deadline</th><td>",
                    HtmlEscape(UtcTime(deadline)), " (",
                    HumanDuration(deadline - now), " left)</td></tr>\n");
  }
  if (!run.message().empty()) {
    absl::StrAppend(out, "<tr><th>message</th><td>", HtmlEscape(run.message()),
                    "</td></tr>\n");
  }
  absl::StrAppend(out, "</table>\n");

  absl::StrAppend(out,
                  "<h2>Sites</h2>\n<table id=\"sites\">\n<tr><th>site</th>"
                  "<th>role</th><th>state</th><th>last seen</th>"
                  "<th>device</th></tr>\n");
  for (const SiteStatus& site : run.sites()) {
    const std::string seen =
        site.last_seen_unix_ms() == 0
            ? "never"
            : absl::StrCat(HumanDuration(now - absl::FromUnixMillis(
                                                   site.last_seen_unix_ms())),
                           " ago");
    absl::StrAppend(out, "<tr class=\"site\" data-live=\"",
                    site.live() ? "1" : "0", "\"><td>", HtmlEscape(site.site()),
                    "</td><td>",
                    absl::AsciiStrToLower(Plan::Role_Name(site.role())),
                    "</td><td>", SiteStateCell(run, site), "</td><td>", seen,
                    "</td><td>", HtmlEscape(site.device()), "</td></tr>\n");
  }
  absl::StrAppend(out, "</table>\n");
  AppendPrivacy(run, out);

  absl::StrAppend(
      out,
      "<h2>Committed rounds</h2>\n<table id=\"rounds\">\n<tr><th>round</th>"
      "<th>committed</th><th>contributors</th><th>mean train loss</th>"
      "<th>internal accuracy</th><th>external accuracy</th></tr>\n");
  for (const RoundRecord& round : run.rounds()) {
    if (round.round() == 0) continue;  // the initial weights, not trained
    absl::StrAppend(
        out, "<tr class=\"round\"><td class=\"num\">", round.round(),
        "</td><td>",
        HtmlEscape(UtcTime(absl::FromUnixMillis(round.closed_unix_ms()))),
        "</td><td>", HtmlEscape(absl::StrJoin(round.contributors(), ", ")),
        "</td><td class=\"num\">",
        absl::StrFormat("%.4f", round.mean_train_loss()),
        "</td><td class=\"num\">", AccuracyCell(round, INTERNAL_VALIDATION),
        "</td><td class=\"num\">", AccuracyCell(round, EXTERNAL_VALIDATION),
        "</td></tr>\n");
  }
  absl::StrAppend(out, "</table>\n");
}

// --- Prometheus text format -------------------------------------------------

// Label values escape backslash, double quote and line feed (format 0.0.4).
std::string LabelValue(absl::string_view value) {
  return absl::StrReplaceAll(value,
                             {{"\\", "\\\\"}, {"\"", "\\\""}, {"\n", "\\n"}});
}

std::string Labels(
    std::initializer_list<std::pair<absl::string_view, std::string>> labels) {
  if (labels.size() == 0) return "";
  std::vector<std::string> parts;
  for (const auto& [name, value] : labels) {
    parts.push_back(absl::StrCat(name, "=\"", LabelValue(value), "\""));
  }
  return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
}

std::string Number(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.15g", value);
}

class Exposition {
 public:
  void Family(absl::string_view name, absl::string_view type,
              absl::string_view help) {
    absl::StrAppend(&text_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                    type, "\n");
  }
  void Sample(absl::string_view name, const std::string& labels, double value) {
    absl::StrAppend(&text_, name, labels, " ", Number(value), "\n");
  }
  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
};

}  // namespace

StatusSnapshot TakeStatusSnapshot(Coordinator& coordinator) {
  StatusSnapshot snapshot;
  snapshot.now = coordinator.Now();
  if (absl::StatusOr<RunStatus> latest = coordinator.GetRunStatus("");
      latest.ok()) {
    snapshot.latest = std::move(*latest);
  }
  ListRunsResponse runs = coordinator.ListRuns();
  snapshot.runs.assign(runs.runs().begin(), runs.runs().end());
  snapshot.sites = coordinator.CountSites();
  snapshot.telemetry = coordinator.telemetry().Take();
  return snapshot;
}

std::string RenderStatusPage(const StatusSnapshot& snapshot) {
  const Telemetry::Snapshot& telemetry = snapshot.telemetry;
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      // Refreshes itself; needs no script for it.
      "<meta http-equiv=\"refresh\" content=\"15\">\n"
      "<title>echofed coordinator status</title>\n<style>",
      kStyle, "</style>\n</head>\n<body>\n<h1>echofed coordinator</h1>\n",
      "<p class=\"meta\">as of ", HtmlEscape(UtcTime(snapshot.now)),
      " &middot; up ", HumanDuration(snapshot.now - telemetry.started),
      " &middot; sites joined <span id=\"sites-joined\">",
      snapshot.sites.joined, "</span>, live <span id=\"sites-live\">",
      snapshot.sites.live, "</span></p>\n");
  if (snapshot.latest.has_value()) {
    AppendLatestRun(*snapshot.latest, snapshot.now, &out);
  } else {
    absl::StrAppend(&out, "<p id=\"no-run\">No run yet.</p>\n");
  }

  absl::StrAppend(&out,
                  "<h2>Runs</h2>\n<table id=\"runs\">\n<tr><th>run</th>"
                  "<th>plan</th><th>state</th><th>round</th></tr>\n");
  for (const RunStatus& run : snapshot.runs) {
    absl::StrAppend(&out, "<tr><td>", HtmlEscape(run.run_id()), "</td><td>",
                    HtmlEscape(run.plan().name()), "</td><td>",
                    StateWord(run.state()), "</td><td class=\"num\">",
                    run.round(), " of ", run.plan().rounds(), "</td></tr>\n");
  }
  absl::StrAppend(&out, "</table>\n");

  absl::StrAppend(&out,
                  "<h2>Traffic and refusals</h2>\n<table id=\"counters\">\n"
                  "<tr><th>model bytes received</th><td class=\"num\">",
                  telemetry.bytes_received,
                  "</td></tr>\n<tr><th>model bytes sent</th><td class=\"num\">",
                  telemetry.bytes_sent,
                  "</td></tr>\n<tr><th>rounds committed (since start)</th>"
                  "<td class=\"num\">",
                  telemetry.rounds_committed, "</td></tr>\n");
  for (const auto& [reason, count] : telemetry.upload_refusals) {
    absl::StrAppend(&out, "<tr><th>updates refused: ",
                    HtmlEscape(absl::AsciiStrToLower(reason)),
                    "</th><td class=\"num\">", count, "</td></tr>\n");
  }
  for (const auto& [key, count] : telemetry.connection_refusals) {
    absl::StrAppend(&out, "<tr><th>connections refused (",
                    HtmlEscape(key.first), "): ", HtmlEscape(key.second),
                    "</th><td class=\"num\">", count, "</td></tr>\n");
  }
  absl::StrAppend(&out,
                  "</table>\n<p class=\"meta\">Aggregate state only; "
                  "Prometheus metrics at <code>/metrics</code>.</p>\n"
                  "</body>\n</html>\n");
  return out;
}

std::string RenderPrometheusMetrics(const StatusSnapshot& snapshot) {
  const Telemetry::Snapshot& telemetry = snapshot.telemetry;
  Exposition out;
  out.Family("echofed_coordinator_start_time_seconds", "gauge",
             "Start of the coordinator process, Unix time.");
  out.Sample("echofed_coordinator_start_time_seconds", "",
             absl::ToDoubleSeconds(telemetry.started - absl::UnixEpoch()));
  out.Family("echofed_coordinator_uptime_seconds", "gauge",
             "Seconds since the coordinator process started.");
  out.Sample("echofed_coordinator_uptime_seconds", "",
             absl::ToDoubleSeconds(snapshot.now - telemetry.started));

  out.Family("echofed_sites_joined", "gauge",
             "Sites that joined since the coordinator started.");
  out.Sample("echofed_sites_joined", "", snapshot.sites.joined);
  out.Family("echofed_sites_live", "gauge",
             "Joined sites heard from within the liveness window.");
  out.Sample("echofed_sites_live", "", snapshot.sites.live);

  out.Family("echofed_rounds_committed_total", "counter",
             "Training rounds committed since the coordinator started.");
  out.Sample("echofed_rounds_committed_total", "", telemetry.rounds_committed);
  out.Family("echofed_round_duration_seconds", "histogram",
             "Time from the opening of a training round to its commit.");
  const std::vector<double>& bounds = Telemetry::RoundDurationBuckets();
  for (size_t i = 0; i < telemetry.round_duration_cumulative.size(); ++i) {
    out.Sample("echofed_round_duration_seconds_bucket",
               Labels({{"le", i < bounds.size() ? Number(bounds[i]) : "+Inf"}}),
               telemetry.round_duration_cumulative[i]);
  }
  out.Sample("echofed_round_duration_seconds_sum", "",
             telemetry.round_duration_sum_seconds);
  out.Sample("echofed_round_duration_seconds_count", "",
             telemetry.rounds_committed);

  out.Family("echofed_received_bytes_total", "counter",
             "Model update bytes received from sites.");
  out.Sample("echofed_received_bytes_total", "", telemetry.bytes_received);
  out.Family("echofed_sent_bytes_total", "counter",
             "Model bytes sent to sites and operators.");
  out.Sample("echofed_sent_bytes_total", "", telemetry.bytes_sent);

  out.Family("echofed_upload_refusals_total", "counter",
             "Model updates refused, by status code.");
  for (const auto& [reason, count] : telemetry.upload_refusals) {
    out.Sample("echofed_upload_refusals_total", Labels({{"reason", reason}}),
               count);
  }
  out.Family("echofed_connection_refusals_total", "counter",
             "Callers refused at authentication, by listener and reason.");
  for (const auto& [key, count] : telemetry.connection_refusals) {
    out.Sample("echofed_connection_refusals_total",
               Labels({{"listener", key.first}, {"reason", key.second}}),
               count);
  }

  out.Family("echofed_runs", "gauge",
             "Runs known to the coordinator, by state.");
  std::map<std::string, int> by_state;
  for (int state = RunStatus::WAITING_FOR_SITES; state <= RunStatus::FAILED;
       ++state) {
    by_state[StateWord(static_cast<RunStatus::State>(state))] = 0;
  }
  for (const RunStatus& run : snapshot.runs) ++by_state[StateWord(run.state())];
  for (const auto& [state, count] : by_state) {
    out.Sample("echofed_runs", Labels({{"state", state}}), count);
  }

  if (snapshot.latest.has_value()) {
    const RunStatus& run = *snapshot.latest;
    out.Family("echofed_run_round", "gauge",
               "Round the latest run is training or evaluating.");
    out.Sample("echofed_run_round", Labels({{"run", run.run_id()}}),
               run.round());
    out.Family("echofed_run_rounds_planned", "gauge",
               "Rounds in the latest run's plan.");
    out.Sample("echofed_run_rounds_planned", Labels({{"run", run.run_id()}}),
               run.plan().rounds());
    int committed = 0;
    for (const RoundRecord& round : run.rounds()) {
      if (round.round() > 0) ++committed;
    }
    out.Family("echofed_run_rounds_committed", "gauge",
               "Training rounds the latest run has committed.");
    out.Sample("echofed_run_rounds_committed", Labels({{"run", run.run_id()}}),
               committed);
    // A state set: one series per phase, 1 for the current one, so that
    // dashboards can graph phases over time.
    out.Family("echofed_run_phase", "gauge",
               "Phase of the latest run (1 for the current phase).");
    for (int state = RunStatus::WAITING_FOR_SITES; state <= RunStatus::FAILED;
         ++state) {
      out.Sample(
          "echofed_run_phase",
          Labels({{"run", run.run_id()},
                  {"phase", StateWord(static_cast<RunStatus::State>(state))}}),
          run.state() == state ? 1 : 0);
    }
    if (!IsTerminal(run.state()) && run.phase_deadline_unix_ms() > 0) {
      out.Family("echofed_run_phase_deadline_seconds", "gauge",
                 "Seconds until the current phase's deadline.");
      out.Sample("echofed_run_phase_deadline_seconds",
                 Labels({{"run", run.run_id()}}),
                 absl::ToDoubleSeconds(
                     absl::FromUnixMillis(run.phase_deadline_unix_ms()) -
                     snapshot.now));
    }
    out.Family("echofed_site_live", "gauge",
               "1 when a site of the latest run is joined and heard from "
               "within the liveness window.");
    for (const SiteStatus& site : run.sites()) {
      out.Sample("echofed_site_live", Labels({{"site", site.site()}}),
                 site.live() ? 1 : 0);
    }
    out.Family("echofed_site_last_seen_timestamp_seconds", "gauge",
               "When the coordinator last heard from a site, Unix time.");
    for (const SiteStatus& site : run.sites()) {
      if (site.last_seen_unix_ms() == 0) continue;
      out.Sample("echofed_site_last_seen_timestamp_seconds",
                 Labels({{"site", site.site()}}),
                 site.last_seen_unix_ms() / 1000.0);
    }
  }
  return out.Take();
}

}  // namespace echofed
