// The HTML report's results tables; see report_html_results.h.

#include "coordinator/cli/report_html_results.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/html.h"
#include "common/metrics.h"
#include "coordinator/cli/report_format.h"
#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {
namespace {

// A pool's patient-level coverage when some of its released sites sent no
// patient-level aggregate; empty otherwise.
std::string PatientCoverageNote(const SetResult& set) {
  if (set.type != SetType::kPooled || set.patient_not_reported.empty() ||
      set.patient_contributors.empty()) {
    return "";
  }
  return absl::StrCat(
      "patient-level pool of sites: ",
      absl::StrJoin(set.patient_contributors, " "),
      "; not reported by: ", absl::StrJoin(set.patient_not_reported, " "));
}

// The patient-level counterpart of PerformanceTable: one case per patient,
// scored with the mean of the patient's image probabilities; sets without
// it say why ("not reported", suppressed).
std::string PatientPerformanceTable(const Report& report) {
  std::string out = absl::StrCat(
      "<table class=\"patient-level\"><caption>",
      HtmlEscape(absl::StrCat("Subtype, ", kPatientLevel)),
      "</caption><tr><th>set</th><th>split</th><th>patients</th>"
      "<th>accuracy (95% CI)</th><th>balanced accuracy</th><th>macro-F1</th>"
      "<th>Cohen's κ</th><th>macro AUC (95% CI)</th><th>Hand-Till AUC</th>"
      "<th>Brier</th></tr>");
  std::string footnotes;
  for (const SetResult& set : report.sets) {
    const bool pooled = set.type == SetType::kPooled;
    absl::StrAppend(&out, pooled ? "<tr class=\"pooled\">" : "<tr>", "<td>",
                    HtmlEscape(set.title), "</td><td>", SplitName(set.split),
                    "</td>");
    if (const std::string coverage = PatientCoverageNote(set);
        !coverage.empty()) {
      absl::StrAppend(&footnotes, "<p class=\"na\">", HtmlEscape(set.title),
                      ": ", HtmlEscape(coverage), ".</p>");
    }
    switch (PatientLevelOf(set)) {
      case PatientLevel::kSuppressed:
        absl::StrAppend(&out,
                        "<td colspan=\"8\" class=\"wrap\"><span "
                        "class=\"suppressed\">",
                        HtmlEscape(PatientLevelNote(report, set)),
                        "</span></td></tr>");
        continue;
      case PatientLevel::kNotReported:
        absl::StrAppend(&out,
                        "<td colspan=\"8\" class=\"wrap\"><span "
                        "class=\"na\">",
                        HtmlEscape(PatientNotReportedText(set)),
                        "</span></td></tr>");
        continue;
      case PatientLevel::kReported:
        break;
    }
    const MetricsSummary& s = set.patient_summary;
    absl::StrAppend(&out, "<td>", set.patient_aggregate.num_patients(),
                    "</td><td>", PercentWithInterval(s.accuracy, s.accuracy_ci),
                    "</td><td>", Percent(s.balanced_accuracy), "</td><td>",
                    Percent(s.macro.f1), "</td><td>", Fixed(s.cohen_kappa),
                    "</td><td>", WithInterval(s.macro_auc, s.macro_auc_ci),
                    "</td><td>", Fixed(s.hand_till_auc), "</td><td>",
                    Fixed(s.brier), "</td></tr>");
  }
  absl::StrAppend(&out, "</table>", footnotes);
  return out;
}

}  // namespace

std::string ConfusionTable(const Report& report, const SetResult& set) {
  const int k = set.aggregate.class_count();
  std::string out = absl::StrCat("<table class=\"confusion\"><caption>",
                                 HtmlEscape(set.title),
                                 "</caption><tr><th>true \\ predicted</th>");
  for (int p = 0; p < k; ++p) {
    absl::StrAppend(&out, "<th>", HtmlEscape(report.class_names[p]), "</th>");
  }
  absl::StrAppend(&out, "<th>total</th></tr>");
  for (int t = 0; t < k; ++t) {
    int64_t row_total = 0;
    for (int p = 0; p < k; ++p) row_total += set.aggregate.confusion(t * k + p);
    absl::StrAppend(&out, "<tr><th>", HtmlEscape(report.class_names[t]),
                    "</th>");
    for (int p = 0; p < k; ++p) {
      const int64_t count = set.aggregate.confusion(t * k + p);
      const double share =
          row_total > 0 ? static_cast<double>(count) / row_total : 0;
      absl::StrAppend(
          &out,
          absl::StrFormat(
              "<td style=\"background:rgba(%s,%.2f)%s\">%d<br><small>%s</small>"
              "</td>",
              t == p ? "0,158,115" : "213,94,0", 0.08 + 0.6 * share,
              share > 0.6 ? ";color:#fff" : "", count,
              row_total > 0 ? Percent(share) : "–"));
    }
    absl::StrAppend(&out, "<td>", row_total, "</td></tr>");
  }
  out += "</table>";
  return out;
}

std::string SuppressedCell(const Report& report) {
  return absl::StrCat("<span class=\"suppressed\">",
                      HtmlEscape(SuppressedText(report.min_cell_count)),
                      "</span>");
}

std::string PerformanceTable(const Report& report) {
  std::string out =
      "<table><tr><th>set</th><th>split</th><th>patients</th><th>images</th>"
      "<th>accuracy (95% CI)</th><th>balanced accuracy</th><th>macro-F1</th>"
      "<th>Cohen's κ</th><th>macro AUC (95% CI)</th><th>Hand-Till AUC</th>"
      "<th>Brier</th></tr>";
  for (const SetResult& set : report.sets) {
    const bool pooled = set.type == SetType::kPooled;
    absl::StrAppend(&out, pooled ? "<tr class=\"pooled\">" : "<tr>", "<td>",
                    HtmlEscape(set.title), "</td><td>", SplitName(set.split),
                    "</td>");
    if (set.suppressed) {
      absl::StrAppend(&out, "<td colspan=\"9\">",
                      pooled ? "<span class=\"suppressed\">every site of this "
                               "set suppressed its report</span>"
                             : SuppressedCell(report),
                      "</td></tr>");
      continue;
    }
    const MetricsSummary& s = set.summary;
    absl::StrAppend(
        &out, "<td>", set.aggregate.num_patients(), "</td><td>", s.num_images,
        "</td><td>", PercentWithInterval(s.accuracy, s.accuracy_ci),
        "</td><td>", Percent(s.balanced_accuracy), "</td><td>",
        Percent(s.macro.f1), "</td><td>", Fixed(s.cohen_kappa), "</td><td>",
        WithInterval(s.macro_auc, s.macro_auc_ci), "</td><td>",
        Fixed(s.hand_till_auc), "</td><td>", Fixed(s.brier), "</td></tr>");
  }
  out += "</table>";
  return out;
}

std::string ClassTable(const Report& report, const SetResult& set,
                       bool patient_level) {
  const MetricsSummary& summary =
      patient_level ? set.patient_summary : set.summary;
  std::string out = absl::StrCat(
      "<table><caption>", HtmlEscape(set.title),
      patient_level ? HtmlEscape(absl::StrCat(", ", kPatientLevel))
                    : std::string(),
      "</caption><tr><th>class</th><th>n</th><th>sensitivity</th>"
      "<th>specificity</th><th>precision (PPV)</th><th>NPV</th><th>F1</th>"
      "<th>AUC (DeLong 95% CI)</th><th>Brier</th></tr>");
  for (size_t c = 0; c < summary.classes.size(); ++c) {
    const ClassMetrics& m = summary.classes[c];
    if (std::find(set.withheld_classes.begin(), set.withheld_classes.end(),
                  static_cast<int>(c)) != set.withheld_classes.end()) {
      absl::StrAppend(
          &out, "<tr><td>", HtmlEscape(report.class_names[c]),
          "</td><td colspan=\"8\"><span class=\"suppressed\">",
          HtmlEscape(WithheldClassText(SiteMinCellCount(
              report.min_cell_count, set.has_flow ? &set.flow : nullptr))),
          "</span></td></tr>");
      continue;
    }
    absl::StrAppend(
        &out, "<tr><td>", HtmlEscape(report.class_names[c]), "</td><td>",
        m.support, "</td><td>",
        PercentWithInterval(m.sensitivity, m.sensitivity_ci), "</td><td>",
        PercentWithInterval(m.specificity, m.specificity_ci), "</td><td>",
        PercentWithInterval(m.precision, m.precision_ci), "</td><td>",
        PercentWithInterval(m.npv, m.npv_ci), "</td><td>", Percent(m.f1),
        "</td><td>", WithInterval(m.auc, m.auc_ci), "</td><td>", Fixed(m.brier),
        "</td></tr>");
  }
  out += "</table>";
  return out;
}

std::string PatientLevelPerformance(const Report& report) {
  std::string out = absl::StrCat("<h3 id=\"performance-patient\">",
                                 HtmlEscape(kPatientLevel), "</h3>");
  if (!report.any_patient_level) {
    absl::StrAppend(
        &out,
        "<p class=\"na\">Patient-level metrics: not reported. No site sent "
        "patient-level aggregates with this round's evaluation (agents "
        "before patient-level reporting do not); the metrics above are "
        "image-level.</p>");
    return out;
  }
  absl::StrAppend(
      &out,
      "<p>Unit of analysis: the patient. Each patient is one case, scored "
      "with the mean of the probabilities of the patient's images; n counts "
      "patients.</p>",
      PatientPerformanceTable(report));
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kPooled &&
        PatientLevelOf(set) == PatientLevel::kReported) {
      absl::StrAppend(&out, ClassTable(report, set, /*patient_level=*/true));
    }
  }
  absl::StrAppend(&out,
                  "<details><summary>Per-class patient-level metrics of each "
                  "site</summary>");
  for (const SetResult& set : report.sets) {
    if (set.type == SetType::kSite &&
        PatientLevelOf(set) == PatientLevel::kReported) {
      absl::StrAppend(&out, ClassTable(report, set, /*patient_level=*/true));
    }
  }
  absl::StrAppend(&out, "</details>");
  return out;
}

std::string HeadsSection(const Report& report) {
  if (report.heads.empty()) return "";
  std::string out =
      "<h2 id=\"heads\">Clinical heads</h2><p>Binary heads: AUC of the "
      "positive class (high risk, metastasis, good response) with DeLong's "
      "interval; prognosis: Harrell's C-index of event-free survival.</p>"
      "<table><tr><th>set</th><th>split</th>";
  for (int head : report.heads) {
    absl::StrAppend(&out, "<th>", HeadName(head), "</th>");
  }
  out += "</tr>";
  for (const SetResult& set : report.sets) {
    absl::StrAppend(
        &out, set.type == SetType::kPooled ? "<tr class=\"pooled\">" : "<tr>",
        "<td>", HtmlEscape(set.title), "</td><td>", SplitName(set.split),
        "</td>");
    for (size_t h = 0; h < report.heads.size(); ++h) {
      const HeadResult& head = set.heads[h];
      std::string cell;
      if (!head.reported) {
        cell = "–";
      } else if (head.suppressed) {
        cell = SuppressedCell(report);
      } else if (IsSurvivalHead(report.heads[h])) {
        cell = absl::StrCat(
            "C ", WithInterval(head.concordance.c_index, head.concordance.ci),
            "<br><small>", head.survival.num_patients(), " patients</small>");
      } else {
        const ClassMetrics m = head.summary.classes.size() == 2
                                   ? head.summary.classes[1]
                                   : ClassMetrics();
        cell =
            absl::StrCat("AUC ", WithInterval(m.auc, m.auc_ci), "<br><small>",
                         head.summary.num_images, " images</small>");
      }
      absl::StrAppend(&out, "<td>", cell, "</td>");
    }
    out += "</tr>";
  }
  out += "</table>";
  return out;
}

std::string MetaTable(const Report& report) {
  std::string out =
      "<table><caption>DerSimonian-Laird random-effects estimates (95% CI) "
      "of the sites' own AUCs, sensitivities and specificities; k: sites "
      "pooled</caption><tr><th>sites</th><th>head</th><th>class</th>"
      "<th>AUC</th><th>sensitivity</th><th>specificity</th>"
      "<th style=\"text-align:left\">left out</th></tr>";
  for (const MetaResult& row : report.meta) {
    if (row.metric != "auc") continue;
    absl::StrAppend(
        &out, "<tr><td>", HtmlEscape(report.groups[row.group].title),
        "</td><td>",
        row.head < 0 ? "SUBTYPE" : HeadName(report.heads[row.head]),
        "</td><td>",
        HtmlEscape(row.head < 0 ? report.class_names[row.class_index]
                                : std::string("positive")),
        "</td>");
    std::vector<std::string> excluded;
    for (const char* metric : {"auc", "sensitivity", "specificity"}) {
      const MetaResult* meta =
          FindMeta(report, row.group, row.head, row.class_index, metric);
      if (meta == nullptr || !meta->pooled.ok()) {
        absl::StrAppend(
            &out, "<td class=\"na\">",
            meta == nullptr ? "" : HtmlEscape(meta->pooled.status().message()),
            "</td>");
        continue;
      }
      const PooledSiteMetric& p = *meta->pooled;
      const MetaAnalysis& a = p.analysis;
      absl::StrAppend(
          &out, "<td>", WithInterval(p.estimate, p.ci), "<br><small>k ",
          a.study_count, ", I² ",
          std::isfinite(a.i2) ? absl::StrFormat("%.0f%%", a.i2) : "n/a",
          ", τ² ", Fixed(a.tau2, 4), ", ", HeterogeneityName(a.heterogeneity),
          "</small></td>");
      for (const std::string& reason : p.excluded) {
        if (std::find(excluded.begin(), excluded.end(), reason) ==
            excluded.end()) {
          excluded.push_back(reason);
        }
      }
    }
    absl::StrAppend(&out, "<td style=\"white-space:normal;text-align:left\">",
                    HtmlEscape(absl::StrJoin(excluded, "; ")), "</td></tr>");
  }
  out += "</table>";
  return out;
}

}  // namespace report_internal
}  // namespace echofed
