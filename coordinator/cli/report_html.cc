// report.html: the page, its style and its sections on the run, the patient
// flow, suppressed cells and the TRIPOD+AI checklist. The results tables are
// report_html_results.cc's, the plots report_plots.cc's.

#include "coordinator/cli/report_html.h"

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/dp_accountant.h"
#include "common/html.h"
#include "common/metrics.h"
#include "common/plan_util.h"
#include "coordinator/cli/report_format.h"
#include "coordinator/cli/report_html_results.h"
#include "coordinator/cli/report_model.h"
#include "coordinator/cli/report_plots.h"
#include "coordinator/cli/report_tripod.h"

namespace echofed {
namespace report_internal {
namespace {

// Differential privacy runs: the settings, each site's epsilon as of the
// reported round and a training site's over the whole run.
std::string PrivacyRow(const Report& report) {
  const Plan& plan = report.status->plan();
  if (!plan.has_differential_privacy()) return "";
  const DifferentialPrivacy& dp = plan.differential_privacy();
  std::string value = absl::StrCat(
      "site-level (&epsilon;, &delta;) of released updates: clip norm ",
      Shortest(dp.clip_norm()), ", noise multiplier ",
      Shortest(dp.noise_multiplier()));
  absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
  if (projected.ok()) {
    absl::StrAppend(
        &value, "; whole run (", plan.rounds(),
        " rounds): &epsilon; = ", absl::StrFormat("%.3g", projected->epsilon),
        " at &delta; = ", Shortest(projected->delta));
  }
  std::vector<SitePrivacySpent> spent =
      LatestSitePrivacy(*report.status, report.round->round());
  if (!spent.empty()) {
    absl::StrAppend(&value, "<ul class=\"privacy\">");
    for (const SitePrivacySpent& site : spent) {
      absl::StrAppend(&value, "<li>", HtmlEscape(site.site),
                      ": &epsilon; = ", absl::StrFormat("%.4g", site.epsilon),
                      " at &delta; = ", Shortest(site.delta), " (as of round ",
                      site.round, ")</li>");
    }
    absl::StrAppend(&value, "</ul>");
  }
  return absl::StrCat("<tr><th>differential privacy</th><td>", value,
                      "</td></tr>");
}

// The audit log's head kept in the round record, with the command that
// checks a copy of the log against it (a log cut at the end verifies on
// its own).
std::string AuditHeadText(const RoundRecord& round) {
  if (!round.has_audit_head()) {
    return "not recorded (the coordinator kept no audit log head for this "
           "round)";
  }
  const std::string records = absl::StrCat(round.audit_head().records());
  const std::string hash = HtmlEscape(round.audit_head().hash());
  return absl::StrCat(records, " records, head <code>", hash,
                      "</code>; check a copy of the log with <code>echofed "
                      "audit verify audit.log --expect-records ",
                      records, " --expect-head ", hash, "</code>");
}

std::string RunSection(const Report& report) {
  const RunStatus& status = *report.status;
  const Plan& plan = status.plan();
  const RoundRecord& round = *report.round;
  std::string sites;
  for (const Plan::SiteRole& role : plan.sites()) {
    absl::StrAppend(&sites, "<tr><td>", HtmlEscape(role.site()), "</td><td>",
                    role.role() == Plan::EXTERNAL_VALIDATION
                        ? "external validation (all patients validate)"
                        : "training; internal validation on its held-out "
                          "patients",
                    "</td></tr>");
  }
  std::vector<std::string> heads = {"SUBTYPE"};
  for (int head : report.heads) heads.push_back(HeadName(head));
  auto row = [](absl::string_view key, absl::string_view value) {
    return absl::StrCat("<tr><th>", key, "</th><td>", value, "</td></tr>");
  };
  return absl::StrCat(
      "<h2 id=\"run\">Run and model</h2><table class=\"kv\">",
      row("run", HtmlEscape(status.run_id())),
      row("plan", HtmlEscape(plan.name())),
      row("state", RunStatus::State_Name(status.state())),
      row("round reported", absl::StrCat(round.round(), " of ", plan.rounds())),
      row("model",
          absl::StrCat(HtmlEscape(plan.model()), ", image ", plan.image_size(),
                       " px, ",
                       Plan::Normalization_Name(plan.normalization()))),
      row("committed model (SHA-256)",
          absl::StrCat("<code>", absl::BytesToHexString(round.model_digest()),
                       "</code>")),
      row("classes", HtmlEscape(absl::StrJoin(report.class_names, ", "))),
      row("heads", absl::StrJoin(heads, ", ")),
      row("training",
          absl::StrCat(Plan::Strategy_Name(plan.strategy()), ", ",
                       Plan::Trainer_Name(plan.trainer()), ", ",
                       Plan::Loss_Name(plan.loss()), ", ", plan.local_epochs(),
                       " local epochs, learning rate ",
                       Shortest(plan.learning_rate()))),
      row("split", absl::StrCat("patient level, training fraction ",
                                Shortest(plan.train_fraction()), ", seed ",
                                plan.split_seed())),
      row("disclosure control",
          absl::StrCat("sites release no set of fewer than ",
                       report.min_cell_count, " patients")),
      row("secure aggregation",
          plan.secure_aggregation()
              ? "on: the coordinator saw only the masked sum of each "
                "round's updates"
              : "off"),
      row("contributors to this round",
          HtmlEscape(absl::StrJoin(round.contributors(), ", "))),
      row("audit log at commit", AuditHeadText(round)), PrivacyRow(report),
      "</table><table class=\"text\"><tr><th>centre</th><th>role</th></tr>",
      sites, "</table>");
}

std::string FlowSection(const Report& report) {
  std::string out =
      "<h2 id=\"flow\">Patient flow per site</h2><p class=\"note\">The "
      "CONSORT-style flow is counted at each site (the excluded patients and "
      "their reasons stay site-local) and sent with its evaluation as counts "
      "only. A count with some patients but fewer than the site's minimum "
      "cell count is suppressed, and so is any count from which it could be "
      "recovered by subtraction. Patients, except for refused manifest "
      "lines (images).</p>";
  std::string flows;
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    absl::StrAppend(&flows, "<table class=\"flow\"><caption>",
                    HtmlEscape(set.key), " (", SplitName(set.split),
                    " validation)</caption>");
    if (!set.has_flow) {
      absl::StrAppend(&flows,
                      "<tr><td>not available: the site sent no flow"
                      "</td></tr></table>");
      continue;
    }
    auto row = [&](const FlowCount& step) {
      const bool indented = absl::StartsWith(step.step(), "excluded: ") ||
                            absl::StartsWith(step.step(), "withheld: ") ||
                            absl::StartsWith(step.step(), "evaluation set: ");
      absl::StrAppend(
          &flows, "<tr><td", indented ? " class=\"indent\"" : "", ">",
          HtmlEscape(step.step()), "</td><td>",
          step.suppressed()
              ? absl::StrCat("<span class=\"suppressed\">&lt; ",
                             set.flow.min_cell_count(), " or suppressed</span>")
              : absl::StrCat(step.patients()),
          "</td></tr>");
    };
    for (const FlowCount& step : set.flow.steps()) row(step);
    row(set.flow.refused_manifest_lines());
    for (const std::string& note : set.flow.notes()) {
      absl::StrAppend(&flows, "<tr><td colspan=\"2\" class=\"note\">note: ",
                      HtmlEscape(note), "</td></tr>");
    }
    flows += "</table>";
  }
  absl::StrAppend(&out, "<h3>Counted at each site</h3><div class=\"plots\">",
                  flows, "</div>");
  absl::StrAppend(
      &out,
      "<h3>Declared by each site at join</h3><p class=\"note\">Counts only, "
      "as each site's agent read its local data when it last joined the "
      "coordinator: before the patient-level split, and not verified by the "
      "coordinator.</p><table><tr><th>site</th><th>role</th><th>patients</th>"
      "<th>images</th><th>images per label</th></tr>");
  for (const Plan::SiteRole& role : report.status->plan().sites()) {
    const SiteStatus* site = FindSiteStatus(*report.status, role.site());
    const std::string reason = UndeclaredReason(site);
    absl::StrAppend(&out, "<tr><td>", HtmlEscape(role.site()), "</td><td>",
                    role.role() == Plan::EXTERNAL_VALIDATION
                        ? "external validation"
                        : "training",
                    "</td>");
    if (!reason.empty()) {
      absl::StrAppend(&out, "<td colspan=\"3\">", HtmlEscape(reason),
                      "</td></tr>");
      continue;
    }
    const DataSummary& data = site->declared_data();
    std::map<std::string, std::string> shown;
    for (const auto& [label, images] : SortedLabels(data)) {
      shown[label] = absl::StrCat(images);
    }
    for (const std::string& label : data.withheld_labels()) {
      shown[label] =
          absl::StrCat("<span class=\"suppressed\">&lt;", data.min_cell_count(),
                       " patients or suppressed</span>");
    }
    std::vector<std::string> labels;
    for (const auto& [label, text] : shown) {
      labels.push_back(absl::StrCat(HtmlEscape(label), ": ", text));
    }
    absl::StrAppend(&out, "<td>", data.patients(), "</td><td>", data.images(),
                    "</td><td>",
                    labels.empty() ? std::string("not declared")
                                   : absl::StrJoin(labels, ", "),
                    "</td></tr>");
  }
  absl::StrAppend(
      &out,
      "</table><h3>Evaluated sets</h3><table>"
      "<tr><th>site</th><th>split</th><th>patients</th><th>images</th>");
  for (const std::string& name : report.class_names) {
    absl::StrAppend(&out, "<th>", HtmlEscape(name), " images</th>");
  }
  out += "</tr>";
  for (const SetResult& set : report.sets) {
    absl::StrAppend(
        &out, set.type == SetType::kPooled ? "<tr class=\"pooled\">" : "<tr>",
        "<td>", HtmlEscape(set.title), "</td><td>", SplitName(set.split),
        "</td>");
    if (set.suppressed) {
      absl::StrAppend(&out, "<td colspan=\"", 2 + report.class_names.size(),
                      "\">",
                      set.type == SetType::kSite
                          ? SuppressedCell(report)
                          : "<span class=\"suppressed\">no site released "
                            "data</span>",
                      "</td></tr>");
      continue;
    }
    absl::StrAppend(&out, "<td>", set.aggregate.num_patients(), "</td><td>",
                    set.summary.num_images, "</td>");
    for (const ClassMetrics& m : set.summary.classes) {
      absl::StrAppend(&out, "<td>", m.support, "</td>");
    }
    out += "</tr>";
  }
  out += "</table>";
  return out;
}

std::string SuppressedSection(const Report& report) {
  std::string rows;
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    if (set.suppressed) {
      absl::StrAppend(&rows, "<tr><td>", HtmlEscape(set.key), "</td><td>",
                      SplitName(set.split), "</td><td>SUBTYPE</td><td>",
                      SuppressedCell(report), "</td></tr>");
    }
    for (size_t h = 0; h < report.heads.size(); ++h) {
      if (!set.heads[h].suppressed) continue;
      absl::StrAppend(&rows, "<tr><td>", HtmlEscape(set.key), "</td><td>",
                      SplitName(set.split), "</td><td>",
                      HeadName(report.heads[h]), "</td><td>",
                      SuppressedCell(report), "</td></tr>");
    }
    for (int c : set.withheld_classes) {
      absl::StrAppend(
          &rows, "<tr><td>", HtmlEscape(set.key), "</td><td>",
          SplitName(set.split), "</td><td>SUBTYPE class ",
          HtmlEscape(report.class_names[c]),
          "</td><td><span class=\"suppressed\">",
          HtmlEscape(WithheldClassText(SiteMinCellCount(
              report.min_cell_count, set.has_flow ? &set.flow : nullptr))),
          ", and from the pooled ", SplitName(set.split),
          " set</span></td></tr>");
    }
  }
  std::string out = absl::StrCat(
      "<h2 id=\"suppressed\">Suppressed cells</h2><p>A site releases no "
      "aggregate of a set with fewer than ",
      report.min_cell_count,
      " patients; such sets are left out of every pool and meta-analysis. "
      "Within a released set, a class with fewer patients (but some) is "
      "suppressed and its patients left out of the site's counts and the "
      "pools; a binary head with fewer positive or negative patients, or a "
      "survival head with fewer events or censored patients, is "
      "suppressed.</p>");
  if (rows.empty()) {
    absl::StrAppend(&out, "<p>No site suppressed a set in this round.</p>");
  } else {
    absl::StrAppend(&out,
                    "<table><tr><th>site</th><th>split</th><th>what</th>"
                    "<th>status</th></tr>",
                    rows, "</table>");
  }
  return out;
}

std::string TripodSection() {
  std::string out =
      "<h2 id=\"tripod\">TRIPOD+AI checklist</h2><p>The items TRIPOD+AI "
      "(Collins et al., BMJ 2024;385:e078378) asks of a report of a model's "
      "evaluation, and where each is answered. Links point into this "
      "report.</p><table class=\"text\"><tr><th>item</th><th>topic</th>"
      "<th>status</th>"
      "<th>where</th></tr>";
  for (const TripodItem& item : TripodItems()) {
    // "#section" in the text becomes a link to that section.
    std::string where_html;
    absl::string_view where = item.where;
    while (!where.empty()) {
      const size_t hash = where.find('#');
      if (hash == absl::string_view::npos) {
        where_html += HtmlEscape(where);
        break;
      }
      where_html += HtmlEscape(where.substr(0, hash));
      size_t end = hash + 1;
      while (end < where.size() && absl::ascii_islower(where[end])) ++end;
      const absl::string_view anchor = where.substr(hash + 1, end - hash - 1);
      absl::StrAppend(&where_html, "<a href=\"#", anchor, "\">§", anchor,
                      "</a>");
      where.remove_prefix(end);
    }
    const absl::string_view status = item.status;
    const char* label = status == "in_report"        ? "in this report"
                        : status == "partly"         ? "partly"
                        : status == "site_local"     ? "site-local"
                        : status == "not_available"  ? "not available from the "
                                                       "federation"
                        : status == "not_applicable" ? "not applicable"
                                                     : "authors (manuscript)";
    absl::StrAppend(&out, "<tr class=\"", status, "\"><td>", item.item,
                    "</td><td>", HtmlEscape(item.topic), "</td><td>", label,
                    "</td><td>", where_html, "</td></tr>");
  }
  out += "</table>";
  return out;
}

constexpr char kStyle[] = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;
max-width:1180px;margin:0 auto;padding:16px 24px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:2px solid #0072B2;
padding-bottom:2px;margin-top:2em}h3{margin-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;
vertical-align:top;white-space:nowrap}
th{white-space:normal}th:first-child,td:first-child{text-align:left}
table.text th,table.text td{text-align:left;white-space:normal}
caption{text-align:left;font-weight:bold;padding:4px 0}
tr.pooled td{font-weight:bold;background:#f4f8fb}
table.kv th{text-align:left;color:#555;font-weight:normal}
table.kv td{text-align:left;white-space:normal}
table.confusion td{text-align:center;min-width:56px}
.suppressed{color:#a00;font-style:italic}.na{color:#888}
td.wrap{white-space:normal;text-align:left}
table.flow td.indent{padding-left:24px}
.note{background:#fff8e5;border-left:4px solid #E69F00;padding:6px 10px}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
tr.not_available td:nth-child(3){color:#a00}
tr.in_report td:nth-child(3){color:#007a55}
nav a{margin-right:10px}code{font-size:12px}
.warning{font-weight:bold;color:#a00}
)";

}  // namespace

std::string RenderHtml(const Report& report) {
  const RunStatus& status = *report.status;
  std::string out = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width\">"
      "<title>echofed validation report: ",
      HtmlEscape(status.plan().name()), " (", HtmlEscape(status.run_id()),
      ")</title><style>", kStyle, "</style></head><body>");
  absl::StrAppend(
      &out, "<h1>Validation report: ", HtmlEscape(status.plan().name()),
      "</h1><p>", "run <code>", HtmlEscape(status.run_id()), "</code>, round ",
      report.round->round(), " of ", status.plan().rounds());
  if (report.options.generated_unix_ms != 0) {
    absl::StrAppend(
        &out, ", generated ",
        absl::FormatTime("%Y-%m-%d %H:%M UTC",
                         absl::FromUnixMillis(report.options.generated_unix_ms),
                         absl::UTCTimeZone()));
  }
  absl::StrAppend(
      &out,
      ".</p><nav><a href=\"#run\">run</a><a href=\"#methods\">methods</a>"
      "<a href=\"#performance\">performance</a>"
      "<a href=\"#performance-patient\">patient-level</a>"
      "<a href=\"#roc\">ROC</a>"
      "<a href=\"#confusion\">confusion</a><a href=\"#calibration\">"
      "calibration</a><a href=\"#heterogeneity\">heterogeneity</a>",
      report.heads.empty() ? "" : "<a href=\"#heads\">heads</a>",
      "<a href=\"#suppressed\">suppressed</a><a href=\"#flow\">patient flow"
      "</a><a href=\"#tripod\">TRIPOD+AI</a></nav>");

  absl::StrAppend(&out, RunSection(report));
  absl::StrAppend(
      &out,
      "<h2 id=\"methods\">Methods</h2><p>Each site evaluates the committed "
      "model on its own validation set and releases additive aggregates only: "
      "a confusion matrix, score histograms of 1,000 bins per class and exact "
      "Brier sums. A pooled set adds the aggregates of its sites, so its "
      "metrics are those of the pooled cases (counts exactly; score-based "
      "metrics to the 1/1000 binning), not an average of site metrics. The "
      "model outputs class probabilities; the predicted class is the most "
      "probable. ",
      UsesTestTimeFlip(report.status->plan())
          ? "Each image's probabilities are the mean of the model's "
            "probabilities for the image and for its mirror image (the "
            "plan's test-time flip). "
          : "",
      "Subtype metrics are given at two units of analysis: "
      "image-level, each image one case (patients are counted beside "
      "them), and, where the sites sent it, patient-level (mean probability "
      "over a patient's images), each patient one case scored with the mean "
      "of the class probabilities of the patient's images, pooled the same "
      "way. "
      "Intervals are 95%: Wilson's for proportions, DeLong's for one-vs-rest "
      "AUCs (on the binned scores); the macro AUC interval averages the "
      "classes' standard errors (conservative, as their covariances are not "
      "released). Hand-Till's multi-class AUC averages the pairwise AUCs. "
      "Calibration: multi-class Brier score, reliability per tenth of "
      "predicted probability, and the logistic recalibration intercept "
      "(slope fixed at 1) and slope of each class. Between-site heterogeneity: "
      "DerSimonian-Laird random-effects meta-analysis of the sites' own AUCs "
      "(AUC scale), sensitivities and specificities (logit scale), with tau² "
      "and I². Sites with fewer patients than the minimum cell count release "
      "nothing and are left out.</p>");

  absl::StrAppend(&out, "<h2 id=\"performance\">Performance</h2>",
                  "<h3 id=\"performance-image\">", kImageLevel,
                  "</h3><p>Unit of analysis: the image; n counts images. "
                  "The ROC curves, confusion matrices, calibration and "
                  "heterogeneity sections further down are image-level "
                  "too.</p>",
                  PerformanceTable(report));
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled && !set.suppressed) {
      absl::StrAppend(&out, ClassTable(report, set));
    }
  }
  absl::StrAppend(&out,
                  "<details><summary>Per-class metrics of each site"
                  "</summary>");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kSite && !set.suppressed) {
      absl::StrAppend(&out, ClassTable(report, set));
    }
  }
  absl::StrAppend(&out, "</details>");
  absl::StrAppend(&out, PatientLevelPerformance(report));

  absl::StrAppend(&out,
                  "<h2 id=\"roc\">ROC curves</h2><p>One-vs-rest, per class; "
                  "legend: AUC (DeLong 95% CI).</p><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled && !set.suppressed) {
      absl::StrAppend(&out, "<figure>", RocSvg(report, set, 400), "</figure>");
    }
  }
  absl::StrAppend(&out, "</div><h3>Per site</h3><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    if (set.suppressed) {
      absl::StrAppend(&out, "<p>", HtmlEscape(set.key), ": ",
                      SuppressedCell(report), "</p>");
    } else {
      absl::StrAppend(&out, "<figure>", RocSvg(report, set, 280), "</figure>");
    }
  }
  absl::StrAppend(&out, "</div>");

  absl::StrAppend(&out,
                  "<h2 id=\"confusion\">Confusion matrices</h2><p>Counts of "
                  "images and, below each, the share of its true-class row."
                  "</p><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.suppressed) continue;
    if (set.type == SetType::kPooled) {
      absl::StrAppend(&out, ConfusionTable(report, set));
    }
  }
  for (const SetResult& set : report.sets) {
    if (set.suppressed || set.type != SetType::kSite) continue;
    absl::StrAppend(&out, ConfusionTable(report, set));
  }
  absl::StrAppend(&out, "</div>");

  absl::StrAppend(&out,
                  "<h2 id=\"calibration\">Calibration</h2><p>Reliability "
                  "diagrams of the pooled sets: observed fraction of the class "
                  "against mean predicted probability per tenth, dot area by "
                  "images; the diagonal is perfect calibration. Intercept 0 "
                  "and slope 1 are ideal.</p><div class=\"plots\">");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled && !set.suppressed &&
        set.summary.has_scores) {
      absl::StrAppend(&out, "<figure>", CalibrationSvg(report, set),
                      "</figure>");
    }
  }
  absl::StrAppend(&out, "</div>");

  absl::StrAppend(
      &out,
      "<h2 id=\"heterogeneity\">Heterogeneity between sites</h2><p>Per-site "
      "AUC with DeLong's interval (squares sized by random-effects weight; "
      "grey: left out of the meta-analysis, e.g. an AUC of 1 has no variance "
      "to weigh), the AUC of the pooled cases (open diamonds) and the "
      "DerSimonian-Laird estimate (filled diamonds) with I² and τ².</p>");
  for (size_t c = 0; c < report.class_names.size(); ++c) {
    absl::StrAppend(&out, "<figure>",
                    ForestSvg(report, -1, static_cast<int>(c),
                              absl::StrCat(report.class_names[c], " vs rest")),
                    "</figure>");
  }
  for (size_t h = 0; h < report.heads.size(); ++h) {
    if (IsSurvivalHead(report.heads[h])) continue;
    absl::StrAppend(
        &out, "<figure>",
        ForestSvg(report, static_cast<int>(h), 1,
                  absl::StrCat(HeadName(report.heads[h]), " (binary head)")),
        "</figure>");
  }
  if (report.groups.empty()) {
    absl::StrAppend(&out,
                    "<p class=\"na\">No meta-analysis: fewer than two sites "
                    "in every split.</p>");
  } else {
    absl::StrAppend(&out, MetaTable(report));
  }

  absl::StrAppend(&out, HeadsSection(report));
  absl::StrAppend(&out, SuppressedSection(report));
  absl::StrAppend(&out, FlowSection(report));
  absl::StrAppend(&out, TripodSection());
  absl::StrAppend(&out,
                  "<p class=\"na\">Made by echofed report from the run's "
                  "aggregates; no per-case data was used or is shown.</p>"
                  "</body></html>\n");
  return out;
}

}  // namespace report_internal
}  // namespace echofed
