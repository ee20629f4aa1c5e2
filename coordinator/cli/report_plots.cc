// The report's SVG plots: ROC curves, reliability diagrams and forest plots.
// Drawn here rather than by a plotting library so that the page has no
// script, no external asset and no runtime dependency: it opens offline,
// inside a hospital network, and archives as one file.

#include "coordinator/cli/report_plots.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/html.h"
#include "common/metrics.h"
#include "coordinator/cli/report_format.h"
#include "coordinator/cli/report_model.h"

namespace echofed {
namespace report_internal {
namespace {

// Okabe & Ito's palette: distinguishable with the common colour-vision
// deficiencies.
const char* Colour(int index) {
  static const char* kColours[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                   "#E69F00", "#56B4E9", "#000000", "#F0E442"};
  return kColours[index % 8];
}

// A rectangle of the page that maps data coordinates to SVG pixels.
struct Frame {
  double width = 0, height = 0;
  double left = 0, right = 0, top = 0, bottom = 0;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  double X(double v) const {
    return left + (v - x_min) / (x_max - x_min) * (width - left - right);
  }
  double Y(double v) const {
    return height - bottom -
           (v - y_min) / (y_max - y_min) * (height - top - bottom);
  }
};

std::string SvgOpen(double width, double height, absl::string_view label) {
  return absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
      "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" role=\"img\" "
      "aria-label=\"%s\" font-family=\"sans-serif\" font-size=\"11\">"
      "<title>%s</title><rect width=\"100%%\" height=\"100%%\" "
      "fill=\"#fff\"/>",
      width, height, width, height, HtmlEscape(label), HtmlEscape(label));
}

std::string SvgText(double x, double y, absl::string_view text,
                    absl::string_view anchor = "start",
                    absl::string_view extra = "") {
  return absl::StrFormat(
      "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\"%s>%s</text>", x, y,
      anchor, extra, HtmlEscape(text));
}

std::string SvgLine(double x1, double y1, double x2, double y2,
                    absl::string_view colour, double width = 1,
                    absl::string_view dash = "") {
  return absl::StrFormat(
      "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
      "stroke-width=\"%.1f\"%s/>",
      x1, y1, x2, y2, colour, width,
      dash.empty() ? "" : absl::StrCat(" stroke-dasharray=\"", dash, "\""));
}

// Frame, grid, ticks at `ticks` on both axes, axis titles.
std::string SvgAxes(const Frame& f, const std::vector<double>& x_ticks,
                    const std::vector<double>& y_ticks,
                    absl::string_view x_title, absl::string_view y_title) {
  std::string out;
  for (double t : x_ticks) {
    absl::StrAppend(
        &out, SvgLine(f.X(t), f.Y(f.y_min), f.X(t), f.Y(f.y_max), "#e5e5e5"),
        SvgText(f.X(t), f.Y(f.y_min) + 13, Fixed(t, 1), "middle"));
  }
  for (double t : y_ticks) {
    absl::StrAppend(
        &out, SvgLine(f.X(f.x_min), f.Y(t), f.X(f.x_max), f.Y(t), "#e5e5e5"),
        SvgText(f.X(f.x_min) - 4, f.Y(t) + 4, Fixed(t, 1), "end"));
  }
  absl::StrAppend(
      &out,
      absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                      "height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>",
                      f.X(f.x_min), f.Y(f.y_max), f.X(f.x_max) - f.X(f.x_min),
                      f.Y(f.y_min) - f.Y(f.y_max)),
      SvgText((f.X(f.x_min) + f.X(f.x_max)) / 2, f.Y(f.y_min) + 26, x_title,
              "middle"),
      absl::StrFormat("<text transform=\"translate(12 %.1f) rotate(-90)\" "
                      "text-anchor=\"middle\">%s</text>",
                      (f.Y(f.y_min) + f.Y(f.y_max)) / 2, HtmlEscape(y_title)));
  return out;
}

std::string SvgPolyline(const Frame& f,
                        const std::vector<std::pair<double, double>>& points,
                        absl::string_view colour, double width = 1.8) {
  std::string coordinates;
  for (const auto& [x, y] : points) {
    absl::StrAppend(&coordinates,
                    absl::StrFormat("%.1f,%.1f ", f.X(x), f.Y(y)));
  }
  return absl::StrFormat(
      "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" "
      "stroke-width=\"%.1f\" stroke-linejoin=\"round\"/>",
      coordinates, colour, width);
}

const std::vector<double>& UnitTicks() {
  static const auto* ticks =
      new std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0};
  return *ticks;
}

// The AUC (with DeLong interval) of class `class_index` of the subtype
// (head < 0) or of a binary head's positive class, in one set.
struct AucOf {
  bool available = false;  // reported and not suppressed
  double auc = kNaN;
  Interval ci;
};

AucOf SetAuc(const SetResult& set, int head, int class_index) {
  AucOf result;
  const MetricsSummary* summary = nullptr;
  if (head < 0) {
    if (set.suppressed) return result;
    summary = &set.summary;
  } else {
    const HeadResult& h = set.heads[head];
    if (!h.reported || h.suppressed) return result;
    summary = &h.summary;
  }
  result.available = true;
  if (class_index < static_cast<int>(summary->classes.size())) {
    result.auc = summary->classes[class_index].auc;
    result.ci = summary->classes[class_index].auc_ci;
  }
  return result;
}

}  // namespace

std::string RocSvg(const Report& report, const SetResult& set, double size) {
  Frame f;
  f.width = size;
  f.height = size;
  f.left = 38;
  f.right = 8;
  f.top = 22;
  f.bottom = 32;
  std::string out =
      SvgOpen(size, size, absl::StrCat("ROC curves, ", set.title));
  absl::StrAppend(&out, SvgText(size / 2, 14, set.title, "middle",
                                " font-weight=\"bold\""));
  absl::StrAppend(&out, SvgAxes(f, UnitTicks(), UnitTicks(), "1 − specificity",
                                "sensitivity"));
  absl::StrAppend(&out,
                  SvgLine(f.X(0), f.Y(0), f.X(1), f.Y(1), "#999", 1, "4 3"));
  const std::vector<ClassMetrics>& classes = set.summary.classes;
  int legend_row = 0;
  for (size_t c = 0; c < classes.size(); ++c) {
    const ClassMetrics& m = classes[c];
    std::string legend =
        absl::StrCat(report.class_names[c], " ", WithInterval(m.auc, m.auc_ci));
    if (!m.roc.empty()) {
      std::vector<std::pair<double, double>> points;
      for (const RocPoint& point : m.roc) {
        points.emplace_back(point.false_positive_rate,
                            point.true_positive_rate);
      }
      absl::StrAppend(&out, SvgPolyline(f, points, Colour(c)));
    }
    const double y =
        f.Y(0) - 8 -
        14 * (static_cast<double>(classes.size()) - 1 - legend_row);
    absl::StrAppend(
        &out, SvgLine(f.X(0.36), y - 4, f.X(0.36) + 14, y - 4, Colour(c), 2.5),
        SvgText(f.X(0.36) + 18, y, legend));
    ++legend_row;
  }
  out += "</svg>";
  return out;
}

std::string CalibrationSvg(const Report& report, const SetResult& set) {
  const double size = 380;
  const std::vector<ClassMetrics>& classes = set.summary.classes;
  // The legend goes under the plot: inside, it would hide bins.
  const double legend = 8 + 14 * static_cast<double>(classes.size());
  Frame f;
  f.width = size;
  f.height = size + legend;
  f.left = 38;
  f.right = 8;
  f.top = 22;
  f.bottom = 32 + legend;
  std::string out =
      SvgOpen(f.width, f.height, absl::StrCat("Calibration, ", set.title));
  absl::StrAppend(&out, SvgText(size / 2, 14, set.title, "middle",
                                " font-weight=\"bold\""));
  absl::StrAppend(
      &out, SvgAxes(f, UnitTicks(), UnitTicks(), "mean predicted probability",
                    "observed fraction"));
  absl::StrAppend(&out,
                  SvgLine(f.X(0), f.Y(0), f.X(1), f.Y(1), "#999", 1, "4 3"));
  int64_t largest = 1;
  for (const ClassMetrics& m : classes) {
    for (const ReliabilityBin& bin : m.reliability) {
      largest = std::max(largest, bin.count);
    }
  }
  for (size_t c = 0; c < classes.size(); ++c) {
    const ClassMetrics& m = classes[c];
    std::vector<std::pair<double, double>> points;
    for (const ReliabilityBin& bin : m.reliability) {
      if (bin.count == 0) continue;
      points.emplace_back(bin.mean_predicted, bin.observed_fraction);
      absl::StrAppend(
          &out,
          absl::StrFormat(
              "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" "
              "fill-opacity=\"0.6\"><title>%s: %d images, predicted %.3f, "
              "observed %.3f</title></circle>",
              f.X(bin.mean_predicted), f.Y(bin.observed_fraction),
              2 + 5 * std::sqrt(static_cast<double>(bin.count) / largest),
              Colour(c), HtmlEscape(report.class_names[c]), bin.count,
              bin.mean_predicted, bin.observed_fraction));
    }
    if (points.size() > 1) {
      absl::StrAppend(&out, SvgPolyline(f, points, Colour(c), 1.2));
    }
    const double y = size + 8 + 14 * static_cast<double>(c);
    absl::StrAppend(
        &out, SvgLine(f.X(0.03), y - 4, f.X(0.03) + 14, y - 4, Colour(c), 2.5),
        SvgText(f.X(0.03) + 18, y,
                absl::StrCat(report.class_names[c], ": intercept ",
                             Fixed(m.calibration_intercept, 2), ", slope ",
                             Fixed(m.calibration_slope, 2))));
  }
  out += "</svg>";
  return out;
}

std::string ForestSvg(const Report& report, int head, int class_index,
                      absl::string_view title) {
  struct Line {
    std::string label;
    std::string kind;  // site, pooled, meta, note
    double estimate = kNaN;
    Interval ci;
    double weight = kNaN;  // percent, sites only
    std::string text;
  };
  std::vector<Line> lines;
  const MetaGroup* weight_group = nullptr;
  int weight_group_index = -1;
  for (size_t g = 0; g < report.groups.size(); ++g) {
    // The widest group gives the sites' weights.
    if (weight_group == nullptr ||
        report.groups[g].sets.size() > weight_group->sets.size()) {
      weight_group = &report.groups[g];
      weight_group_index = static_cast<int>(g);
    }
  }
  const MetaResult* weight_meta =
      weight_group_index < 0
          ? nullptr
          : FindMeta(report, weight_group_index, head, class_index, "auc");
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kSite) continue;
    Line line;
    line.label = absl::StrCat(set.key, " (", SplitName(set.split), ")");
    AucOf auc = SetAuc(set, head, class_index);
    if (head >= 0 && !set.heads[head].reported) continue;
    if (!auc.available) {
      line.kind = "note";
      line.text = SuppressedText(report.min_cell_count);
    } else if (!std::isfinite(auc.auc)) {
      line.kind = "note";
      line.text = "n/a (needs cases in and outside the class)";
    } else {
      line.kind = "site";
      line.estimate = auc.auc;
      line.ci = auc.ci;
      if (weight_meta != nullptr && weight_meta->pooled.ok()) {
        for (const StudyWeight& w : weight_meta->pooled->analysis.weights) {
          if (w.label == set.key) line.weight = w.percent;
        }
      }
      line.text = WithInterval(auc.auc, auc.ci);
      absl::StrAppend(&line.text, std::isfinite(line.weight)
                                      ? absl::StrFormat("  %.0f%%", line.weight)
                                      : "  excluded");
    }
    lines.push_back(line);
  }
  for (const SetResult& set : report.sets) {
    if (set.type != SetType::kPooled) continue;
    AucOf auc = SetAuc(set, head, class_index);
    if (!auc.available || !std::isfinite(auc.auc)) continue;
    Line line;
    line.kind = "pooled";
    line.label = absl::StrCat("pooled cases, ", SplitName(set.split));
    line.estimate = auc.auc;
    line.ci = auc.ci;
    line.text = WithInterval(auc.auc, auc.ci);
    lines.push_back(line);
  }
  for (size_t g = 0; g < report.groups.size(); ++g) {
    const MetaResult* meta =
        FindMeta(report, static_cast<int>(g), head, class_index, "auc");
    if (meta == nullptr) continue;
    Line line;
    line.label = absl::StrCat("DL, ", report.groups[g].title);
    if (!meta->pooled.ok()) {
      line.kind = "note";
      line.text = "not estimable (no site with a variance)";
    } else {
      const PooledSiteMetric& p = *meta->pooled;
      line.kind = "meta";
      line.estimate = p.estimate;
      line.ci = p.ci;
      line.text = absl::StrCat(WithInterval(p.estimate, p.ci), "  I² ",
                               std::isfinite(p.analysis.i2)
                                   ? absl::StrFormat("%.0f%%", p.analysis.i2)
                                   : std::string("n/a"),
                               "  τ² ", Fixed(p.analysis.tau2, 4));
    }
    lines.push_back(line);
  }

  double x_min = 0.5;
  for (const Line& line : lines) {
    if (std::isfinite(line.ci.lower)) x_min = std::min(x_min, line.ci.lower);
    if (std::isfinite(line.estimate)) x_min = std::min(x_min, line.estimate);
  }
  x_min = std::floor(x_min * 10) / 10;
  const double row = 20, width = 820;
  Frame f;
  f.width = width;
  f.left = 230;
  f.right = 290;
  f.top = 30;
  f.bottom = 34;
  f.height = f.top + f.bottom + row * std::max<size_t>(lines.size(), 1);
  f.x_min = x_min;
  f.x_max = 1;
  f.y_min = 0;
  f.y_max = static_cast<double>(std::max<size_t>(lines.size(), 1));
  std::string out =
      SvgOpen(f.width, f.height, absl::StrCat("Forest plot of AUC, ", title));
  absl::StrAppend(&out, SvgText(8, 16, title, "start", " font-weight=\"bold\""),
                  SvgText(f.width - f.right + 8, 16, "AUC (95% CI)  weight",
                          "start", " font-weight=\"bold\""));
  const double plot_top = f.top, plot_bottom = f.height - f.bottom;
  for (double t = x_min; t <= 1.0 + 1e-9; t += 0.1) {
    absl::StrAppend(&out,
                    SvgLine(f.X(t), plot_top, f.X(t), plot_bottom, "#eee"),
                    SvgText(f.X(t), plot_bottom + 13, Fixed(t, 1), "middle"));
  }
  if (x_min < 0.5) {
    absl::StrAppend(&out, SvgLine(f.X(0.5), plot_top, f.X(0.5), plot_bottom,
                                  "#999", 1, "4 3"));
  }
  absl::StrAppend(&out,
                  SvgLine(f.X(x_min), plot_bottom, f.X(1), plot_bottom, "#444"),
                  SvgText((f.X(x_min) + f.X(1)) / 2, f.height - 6,
                          "area under the ROC curve", "middle"));
  for (size_t i = 0; i < lines.size(); ++i) {
    const Line& line = lines[i];
    const double y = plot_top + row * (static_cast<double>(i) + 0.5);
    const bool summary_row = line.kind == "meta" || line.kind == "pooled";
    absl::StrAppend(&out, SvgText(8, y + 4, line.label, "start",
                                  summary_row ? " font-weight=\"bold\"" : ""));
    if (line.kind == "note") {
      absl::StrAppend(&out, SvgText(f.X(x_min) + 4, y + 4, line.text, "start",
                                    " fill=\"#a00\" font-style=\"italic\""));
      continue;
    }
    const double lower =
        std::isfinite(line.ci.lower) ? line.ci.lower : line.estimate;
    const double upper =
        std::isfinite(line.ci.upper) ? line.ci.upper : line.estimate;
    if (line.kind == "site") {
      const double half = std::isfinite(line.weight)
                              ? 2.5 + 4.5 * std::sqrt(line.weight / 100)
                              : 2.5;
      absl::StrAppend(
          &out, SvgLine(f.X(lower), y, f.X(upper), y, "#333", 1.2),
          absl::StrFormat("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                          "height=\"%.1f\" fill=\"%s\"/>",
                          f.X(line.estimate) - half, y - half, 2 * half,
                          2 * half,
                          std::isfinite(line.weight) ? "#0072B2" : "#999"));
    } else {
      // Pooled cases: an open diamond; DL: a filled one spanning the CI.
      const bool filled = line.kind == "meta";
      absl::StrAppend(
          &out,
          absl::StrFormat(
              "<polygon points=\"%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f\" "
              "fill=\"%s\" stroke=\"%s\" stroke-width=\"1.2\"/>",
              f.X(lower), y, f.X(line.estimate), y - 6, f.X(upper), y,
              f.X(line.estimate), y + 6, filled ? "#D55E00" : "#fff",
              filled ? "#D55E00" : "#333"));
    }
    absl::StrAppend(&out, SvgText(f.width - f.right + 8, y + 4, line.text));
  }
  out += "</svg>";
  return out;
}

}  // namespace report_internal
}  // namespace echofed
