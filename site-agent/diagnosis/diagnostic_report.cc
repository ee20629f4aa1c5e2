#include "site-agent/diagnosis/diagnostic_report.h"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "common/html.h"
#include "common/json_writer.h"
#include "site-agent/data/clinical.h"

namespace echofed {
namespace {

// ---------------------------------------------------------------- JSON

void WriteBinaryHead(JsonWriter& json, const char* key, const char* field,
                     const BinaryHeadResult& head) {
  json.Key(key);
  json.BeginObject();
  json.Key("available");
  json.Bool(head.available);
  json.Key(field);
  if (head.available) {
    json.Number(head.probability);
  } else {
    json.Null();
    json.Key("note");
    json.String(kNotAvailableFromModel);
  }
}

std::string GroupWords(RiskGroup group) {
  return absl::StrReplaceAll(RiskGroupName(group), {{"_", " "}});
}

// ---------------------------------------------------------------- HTML

std::string Percent(double probability) {
  return absl::StrFormat("%.1f%%", 100.0 * probability);
}

// A horizontal bar for a probability.
std::string Bar(double probability, bool highlight) {
  return absl::StrFormat(
      "<span class=\"bar\"><span class=\"fill%s\" "
      "style=\"width:%.1f%%\"></span></span>",
      highlight ? " top" : "", 100.0 * std::clamp(probability, 0.0, 1.0));
}

absl::StatusOr<std::string> PngDataUri(const uint8_t* pixels, int width,
                                       int height, int channels) {
  absl::StatusOr<std::string> png = EncodePng(pixels, width, height, channels);
  if (!png.ok()) return png.status();
  return absl::StrCat("data:image/png;base64,", absl::Base64Escape(*png));
}

std::string BinaryHeadHtml(const char* title, const char* meaning,
                           const BinaryHeadResult& head,
                           const std::string& extra) {
  std::string html = absl::StrCat("<section><h2>", title, "</h2>");
  if (!head.available) {
    absl::StrAppend(&html, "<p class=\"na\">", HtmlEscape(title), ": ",
                    kNotAvailableFromModel, ".</p>");
  } else {
    absl::StrAppend(&html, "<table><tr><td>", meaning,
                    "</td><td class=\"num\">", Percent(head.probability),
                    "</td><td>", Bar(head.probability, false),
                    "</td></tr></table>");
  }
  absl::StrAppend(&html, extra, "</section>\n");
  return html;
}

// The estimated EFS curve as inline SVG (no scripts, prints well).
std::string SurvivalSvg(const std::vector<SurvivalPoint>& curve,
                        double max_months) {
  constexpr double kWidth = 520, kHeight = 240, kLeft = 48, kRight = 16,
                   kTop = 12, kBottom = 36;
  const double span = max_months > 0 ? max_months : 1;
  auto x = [&](double months) {
    return kLeft + (kWidth - kLeft - kRight) * months / span;
  };
  auto y = [&](double survival) {
    return kTop + (kHeight - kTop - kBottom) * (1 - survival);
  };
  std::string svg = absl::StrFormat(
      "<svg class=\"curve\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" "
      "height=\"%.0f\" role=\"img\" aria-label=\"estimated event-free "
      "survival\">",
      kWidth, kHeight, kWidth, kHeight);
  for (double s : {0.0, 0.25, 0.5, 0.75, 1.0}) {
    absl::StrAppendFormat(
        &svg,
        "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" "
        "class=\"grid\"/><text x=\"%.1f\" y=\"%.1f\" class=\"tick\" "
        "text-anchor=\"end\">%.0f%%</text>",
        x(0), y(s), x(span), y(s), x(0) - 6, y(s) + 4, 100 * s);
  }
  double step = span <= 24 ? 6 : span <= 72 ? 12 : span <= 180 ? 24 : 60;
  for (double t = 0; t <= span + 1e-9; t += step) {
    absl::StrAppendFormat(&svg,
                          "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" "
                          "text-anchor=\"middle\">%.0f</text>",
                          x(t), y(0) + 16, t);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" "
                        "text-anchor=\"middle\">months from diagnosis</text>",
                        x(span / 2), kHeight - 4);
  std::string points;
  double previous = 1;
  for (const SurvivalPoint& point : curve) {
    absl::StrAppendFormat(&points, "%.1f,%.1f %.1f,%.1f ", x(point.months),
                          y(previous), x(point.months), y(point.survival));
    previous = point.survival;
  }
  absl::StrAppendFormat(&svg, "<polyline points=\"%s\" class=\"line\"/></svg>",
                        points);
  return svg;
}

constexpr char kCss[] = R"css(
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;color:#1b1b1b;
 max-width:980px;margin:24px auto;padding:0 16px;line-height:1.4;font-size:14px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:0 0 8px;border-bottom:1px solid #ccd;padding-bottom:3px}
section{margin:14px 0 18px}
.statement{border:2px solid #b3261e;background:#fdecea;padding:10px 12px;
 font-weight:bold;border-radius:4px}
.warning{border:1px solid #c98a00;background:#fff6dc;padding:6px 10px;margin:6px 0;
 border-radius:4px}
.meta{color:#555}
table{border-collapse:collapse}
td,th{padding:3px 10px 3px 0;text-align:left;vertical-align:top}
th{font-weight:600;color:#333}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{display:inline-block;width:220px;height:12px;background:#e8e8ee;
 border-radius:2px;vertical-align:middle}
.fill{display:block;height:12px;background:#6b7fa8;border-radius:2px}
.fill.top{background:#1f4e99}
.predicted{font-size:18px;font-weight:bold}
.na{color:#666;font-style:italic}
.pair{display:flex;gap:18px;align-items:flex-start;margin-bottom:12px}
figure{margin:0}
figure img{width:256px;height:auto;border:1px solid #999;display:block}
figcaption{font-size:12px;color:#444;max-width:520px}
.legend{display:inline-block;width:160px;height:10px;vertical-align:middle;
 background:linear-gradient(90deg,#00007f,#0000ff,#00ffff,#ffff00,#ff0000,#7f0000)}
svg .grid{stroke:#dde;stroke-width:1}
svg .tick{font-size:11px;fill:#444}
svg .line{fill:none;stroke:#1f4e99;stroke-width:2}
.small{font-size:12px;color:#444}
@media print{body{margin:0}}
)css";

constexpr double kCurveMonths[] = {12, 36, 60};

}  // namespace

// ---------------------------------------------------------------- images

absl::StatusOr<std::string> EncodePng(const uint8_t* pixels, int width,
                                      int height, int channels) {
  if (width <= 0 || height <= 0 || (channels != 1 && channels != 3)) {
    return absl::InvalidArgumentError("EncodePng: bad image shape");
  }
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, pixels, 0,
                                 nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    return absl::InternalError(absl::StrCat("PNG encoder: ", message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, pixels, 0,
                                 nullptr)) {
    std::string message = image.message;
    png_image_free(&image);
    return absl::InternalError(absl::StrCat("PNG encoder: ", message));
  }
  out.resize(size);
  return out;
}

std::vector<uint8_t> SaliencyOverlay(const GrayImage& image,
                                     const SaliencyMap& map) {
  const size_t n = static_cast<size_t>(image.width) * image.height;
  std::vector<uint8_t> rgb(3 * n);
  const bool fits = map.width == image.width && map.height == image.height &&
                    map.values.size() == n;
  for (size_t i = 0; i < n; ++i) {
    const double gray = image.pixels[i];
    const double v = fits ? std::clamp<double>(map.values[i], 0, 1) : 0;
    // Jet: blue through cyan and yellow to red.
    const double colour[3] = {std::clamp(1.5 - std::abs(4 * v - 3), 0.0, 1.0),
                              std::clamp(1.5 - std::abs(4 * v - 2), 0.0, 1.0),
                              std::clamp(1.5 - std::abs(4 * v - 1), 0.0, 1.0)};
    // Cold regions keep the image: a uniform blue wash would hide anatomy.
    const double alpha = 0.6 * v;
    for (int c = 0; c < 3; ++c) {
      rgb[3 * i + c] = static_cast<uint8_t>(std::lround(std::clamp(
          (1 - alpha) * gray + alpha * 255.0 * colour[c], 0.0, 255.0)));
    }
  }
  return rgb;
}

// ---------------------------------------------------------------- text

std::string DescribeInrg(const InrgClassification& inrg) {
  if (inrg.classifiable) {
    return absl::StrCat(GroupWords(inrg.group), " (cell ",
                        std::string(1, inrg.cell_letter), ")");
  }
  if (!inrg.missing_inputs.empty()) {
    return absl::StrCat("not classifiable: missing ",
                        absl::StrJoin(inrg.missing_inputs, ", "));
  }
  return absl::StrCat("not classifiable: ", inrg.rule);
}

std::string DiagnosticReportJson(const DiagnosticReport& report) {
  // Numbers as %.6g, as this report has always written them.
  JsonWriter json(JsonWriter::NumberFormat::kSixSignificantDigits);
  json.BeginObject();
  json.Key("report");
  json.String("echofed diagnostic decision support");
  json.Key("statement");
  json.String(kDecisionSupportStatement);
  json.Key("patient_id");
  json.String(report.patient_id);
  json.Key("warnings");
  json.BeginArray();
  for (const std::string& warning : report.warnings) json.String(warning);
  json.EndArray();

  json.Key("subtype");
  json.BeginObject();
  json.Key("predicted");
  json.String(report.predicted_class >= 0 &&
                      report.predicted_class <
                          static_cast<int>(report.class_names.size())
                  ? report.class_names[report.predicted_class]
                  : "");
  json.Key("probabilities");
  json.BeginObject();
  for (size_t c = 0; c < report.class_names.size(); ++c) {
    json.Key(report.class_names[c]);
    json.Number(c < report.subtype_probabilities.size()
                    ? report.subtype_probabilities[c]
                    : NAN);
  }
  json.EndObject();
  json.Key("aggregation");
  json.String("mean over the patient's images");
  json.EndObject();

  WriteBinaryHead(json, "high_risk", "probability", report.high_risk);
  json.Key("inrg_rule");
  json.BeginObject();
  json.Key("classifiable");
  json.Bool(report.inrg.classifiable);
  json.Key("group");
  if (report.inrg.classifiable) {
    json.String(RiskGroupName(report.inrg.group));
  } else {
    json.Null();
  }
  json.Key("cell");
  if (report.inrg.classifiable) {
    json.String(std::string(1, report.inrg.cell_letter));
  } else {
    json.Null();
  }
  json.Key("missing_inputs");
  json.BeginArray();
  for (const std::string& input : report.inrg.missing_inputs) {
    json.String(input);
  }
  json.EndArray();
  json.Key("summary");
  json.String(DescribeInrg(report.inrg));
  json.Key("rule");
  json.String(report.inrg.rule);
  json.Key("reference");
  json.String("Cohn SL et al., J Clin Oncol 2009;27(2):289-297, Table 3");
  json.EndObject();
  json.EndObject();  // high_risk

  WriteBinaryHead(json, "bone_marrow_metastasis", "probability",
                  report.bone_marrow);
  json.EndObject();
  WriteBinaryHead(json, "treatment_response", "good_response_probability",
                  report.good_response);
  if (report.good_response.available) {
    json.Key("good_response_means");
    json.String("complete or partial response (INRC 2017)");
  }
  json.EndObject();

  json.Key("prognosis");
  json.BeginObject();
  json.Key("available");
  json.Bool(report.prognosis.available);
  json.Key("risk_score");
  if (report.prognosis.available) {
    json.Number(report.prognosis.risk_score);
  } else {
    json.Null();
    json.Key("note");
    json.String(kNotAvailableFromModel);
  }
  if (report.prognosis.available) {
    json.Key("risk_score_means");
    json.String(
        "Cox log-risk for event-free survival; higher means earlier events");
    json.Key("efs_curve");
    if (report.prognosis.baseline) {
      const BaselineHazard& baseline = *report.prognosis.baseline;
      json.BeginObject();
      json.Key("baseline_source");
      json.String(baseline.source);
      json.Key("baseline_patients");
      json.Int(baseline.patients);
      json.Key("baseline_events");
      json.Int(baseline.events);
      json.Key("max_follow_up_months");
      json.Number(baseline.max_follow_up_months);
      json.Key("at");
      json.BeginObject();
      for (double months : kCurveMonths) {
        json.Key(absl::StrFormat("%.0f_months", months));
        std::optional<double> s =
            SurvivalAt(baseline, report.prognosis.risk_score, months);
        if (s) {
          json.Number(*s);
        } else {
          json.Null();
        }
      }
      json.EndObject();
      json.Key("points");
      json.BeginArray();
      for (const SurvivalPoint& point : report.prognosis.curve) {
        json.BeginArray();
        json.Number(point.months);
        json.Number(point.survival);
        json.EndArray();
      }
      json.EndArray();
      json.EndObject();
    } else {
      json.Null();
      json.Key("efs_curve_note");
      json.String(report.prognosis.curve_note);
    }
  }
  json.EndObject();

  json.Key("clinical_record");
  json.Bool(report.has_clinical_record);
  json.Key("clinical_inputs");
  json.BeginArray();
  for (const ClinicalInput& input : report.clinical_inputs) {
    json.BeginObject();
    json.Key("column");
    json.String(input.column);
    json.Key("value");
    json.String(input.value);
    json.Key("used_by");
    json.String(input.used_by);
    json.EndObject();
  }
  json.EndArray();

  json.Key("images");
  json.BeginArray();
  for (const ImageResult& image : report.images) {
    json.BeginObject();
    json.Key("file");
    json.String(image.file_name);
    json.Key("width");
    json.Int(image.image.width);
    json.Key("height");
    json.Int(image.image.height);
    json.Key("subtype_probabilities");
    json.BeginObject();
    for (size_t c = 0; c < report.class_names.size() &&
                       c < image.subtype_probabilities.size();
         ++c) {
      json.Key(report.class_names[c]);
      json.Number(image.subtype_probabilities[c]);
    }
    json.EndObject();
    json.Key("gradcam");
    if (image.saliency) {
      json.BeginObject();
      json.Key("target");
      json.String(report.predicted_class >= 0
                      ? report.class_names[report.predicted_class]
                      : "");
      json.Key("width");
      json.Int(image.saliency->width);
      json.Key("height");
      json.Int(image.saliency->height);
      json.Key("all_zero");
      json.Bool(image.saliency->all_zero);
      json.EndObject();
    } else {
      json.Null();
    }
    json.EndObject();
  }
  json.EndArray();
  if (!report.saliency_note.empty()) {
    json.Key("gradcam_note");
    json.String(report.saliency_note);
  }

  const Provenance& p = report.provenance;
  json.Key("provenance");
  json.BeginObject();
  json.Key("model_name");
  json.String(p.model_name);
  json.Key("model_digest_sha256");
  json.String(p.model_digest_hex);
  json.Key("model_file");
  json.String(p.model_file);
  json.Key("plan_name");
  json.String(p.plan_name);
  json.Key("global_round");
  if (p.global_round) {
    json.Int(*p.global_round);
  } else {
    json.Null();
  }
  json.Key("generated_at");
  json.String(p.generated_at);
  json.Key("software");
  json.String(absl::StrCat("echofed ", p.software_version));
  json.EndObject();
  json.EndObject();
  return json.Take();
}

absl::StatusOr<std::string> DiagnosticReportHtml(
    const DiagnosticReport& report) {
  const Provenance& p = report.provenance;
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<title>Decision-support report, patient ",
      HtmlEscape(report.patient_id), "</title><style>", kCss,
      "</style></head><body>\n<h1>Ultrasound decision-support report</h1>"
      "<div class=\"meta\">Patient <b>",
      HtmlEscape(report.patient_id), "</b> &middot; ", report.images.size(),
      report.images.size() == 1 ? " image" : " images", " &middot; generated ",
      HtmlEscape(p.generated_at), "</div>\n<p class=\"statement\">",
      HtmlEscape(kDecisionSupportStatement), "</p>\n");
  for (const std::string& warning : report.warnings) {
    absl::StrAppend(&html, "<div class=\"warning\">", HtmlEscape(warning),
                    "</div>\n");
  }

  // Subtype.
  absl::StrAppend(&html, "<section><h2>Pathological subtype (model)</h2>");
  if (report.predicted_class >= 0) {
    absl::StrAppend(
        &html, "<p>Most probable: <span class=\"predicted\">",
        HtmlEscape(report.class_names[report.predicted_class]), "</span> (",
        Percent(report.subtype_probabilities[report.predicted_class]), ")</p>");
  }
  absl::StrAppend(&html, "<table>");
  for (size_t c = 0; c < report.class_names.size(); ++c) {
    const bool top = static_cast<int>(c) == report.predicted_class;
    absl::StrAppend(&html, "<tr><td>", HtmlEscape(report.class_names[c]),
                    "</td><td class=\"num\">",
                    Percent(report.subtype_probabilities[c]), "</td><td>",
                    Bar(report.subtype_probabilities[c], top), "</td></tr>");
  }
  absl::StrAppend(&html,
                  "</table><p class=\"small\">NB neuroblastoma, GNB "
                  "ganglioneuroblastoma, GN ganglioneuroma. Probabilities are "
                  "the mean over the patient's images; histopathology remains "
                  "the reference.</p></section>\n");

  // Risk.
  std::string inrg = absl::StrCat(
      "<table><tr><td>INRG pretreatment risk group (rule, from the clinical "
      "record)</td><td><b>",
      HtmlEscape(DescribeInrg(report.inrg)), "</b></td></tr>");
  if (!report.inrg.rule.empty()) {
    absl::StrAppend(&inrg,
                    "<tr><td class=\"small\">rule path</td><td "
                    "class=\"small\">",
                    HtmlEscape(report.inrg.rule), "</td></tr>");
  }
  absl::StrAppend(&inrg,
                  "</table><p class=\"small\">Rule: Cohn SL et al., J Clin "
                  "Oncol 2009;27(2):289-297, Table 3. The model's "
                  "probability and the rule are independent; a "
                  "disagreement deserves a second look.</p>");
  html += BinaryHeadHtml("Risk stratification", "High-risk probability (model)",
                         report.high_risk, inrg);
  html += BinaryHeadHtml("Bone-marrow metastasis",
                         "Probability of bone-marrow metastasis (model)",
                         report.bone_marrow, "");
  html += BinaryHeadHtml(
      "Expected treatment response",
      "Probability of a good response, complete or partial (model)",
      report.good_response, "");

  // Prognosis.
  absl::StrAppend(&html, "<section><h2>Prognosis: event-free survival</h2>");
  if (!report.prognosis.available) {
    absl::StrAppend(
        &html, "<p class=\"na\">Prognosis: ", kNotAvailableFromModel, ".</p>");
  } else {
    absl::StrAppendFormat(
        &html,
        "<table><tr><td>Risk score (Cox log-risk; higher means earlier "
        "events)</td><td class=\"num\"><b>%.3f</b></td></tr></table>",
        report.prognosis.risk_score);
    if (report.prognosis.baseline) {
      const BaselineHazard& baseline = *report.prognosis.baseline;
      absl::StrAppend(&html, "<table>");
      for (double months : kCurveMonths) {
        std::optional<double> s =
            SurvivalAt(baseline, report.prognosis.risk_score, months);
        absl::StrAppendFormat(
            &html,
            "<tr><td>Estimated EFS at %.0f months</td><td "
            "class=\"num\">%s</td></tr>",
            months, s ? Percent(*s) : "beyond the follow-up of the baseline");
      }
      absl::StrAppend(
          &html, "</table>",
          SurvivalSvg(report.prognosis.curve, baseline.max_follow_up_months),
          "<p class=\"small\">Baseline hazard: ", HtmlEscape(baseline.source),
          " (", baseline.patients, " patients, ", baseline.events,
          " events). Not extrapolated past the longest "
          "follow-up.</p>");
    } else {
      absl::StrAppend(&html,
                      "<p class=\"na\">Estimated event-free survival curve: "
                      "not available. ",
                      HtmlEscape(report.prognosis.curve_note), "</p>");
    }
  }
  absl::StrAppend(&html, "</section>\n");

  // Saliency.
  absl::StrAppend(&html,
                  "<section><h2>What drove the subtype prediction "
                  "(Grad-CAM)</h2>");
  if (!report.saliency_note.empty()) {
    absl::StrAppend(&html, "<p class=\"na\">", HtmlEscape(report.saliency_note),
                    "</p>");
  }
  for (const ImageResult& image : report.images) {
    absl::StatusOr<std::string> original = PngDataUri(
        image.image.pixels.data(), image.image.width, image.image.height, 1);
    if (!original.ok()) return original.status();
    // One row per image: the image, its heat map, and what this image alone
    // says (images of one patient may disagree).
    absl::StrAppend(&html,
                    "<div class=\"pair\"><figure><img alt=\"ultrasound "
                    "image\" src=\"",
                    *original, "\"><figcaption>", HtmlEscape(image.file_name),
                    "</figcaption></figure>");
    if (image.saliency) {
      std::vector<uint8_t> overlay =
          SaliencyOverlay(image.image, *image.saliency);
      absl::StatusOr<std::string> heat =
          PngDataUri(overlay.data(), image.image.width, image.image.height, 3);
      if (!heat.ok()) return heat.status();
      absl::StrAppend(
          &html, "<figure><img alt=\"Grad-CAM heat map\" src=\"", *heat,
          "\"><figcaption>Grad-CAM for ",
          HtmlEscape(report.class_names[report.predicted_class]),
          image.saliency->all_zero
              ? ": no region raised this class's score (map is zero)"
              : "",
          "</figcaption></figure>");
    }
    absl::StrAppend(&html, "<div class=\"small\">This image alone:<br>");
    for (size_t c = 0; c < report.class_names.size() &&
                       c < image.subtype_probabilities.size();
         ++c) {
      absl::StrAppend(&html, HtmlEscape(report.class_names[c]), " ",
                      Percent(image.subtype_probabilities[c]), "<br>");
    }
    absl::StrAppend(&html, "</div></div>\n");
  }
  absl::StrAppend(
      &html,
      "<p class=\"small\">low <span class=\"legend\"></span> high "
      "contribution to the predicted subtype. Grad-CAM shows where the "
      "network's last feature map supported its answer, at coarse "
      "resolution; it is not a lesion segmentation.</p></section>\n");

  // Clinical inputs.
  absl::StrAppend(&html, "<section><h2>Clinical inputs</h2>");
  if (!report.has_clinical_record) {
    absl::StrAppend(&html, "<p class=\"na\">No clinical record was given.</p>");
  } else {
    absl::StrAppend(&html,
                    "<table><tr><th>field</th><th>value</th><th>used "
                    "by</th></tr>");
    for (const ClinicalInput& input : report.clinical_inputs) {
      absl::StrAppend(&html, "<tr><td>", HtmlEscape(input.column), "</td><td>",
                      HtmlEscape(input.value), "</td><td class=\"small\">",
                      HtmlEscape(input.used_by), "</td></tr>");
    }
    absl::StrAppend(&html, "</table>");
  }
  absl::StrAppend(&html, "</section>\n");

  // Provenance.
  absl::StrAppend(
      &html, "<section><h2>Provenance</h2><table>", "<tr><td>model</td><td>",
      HtmlEscape(p.model_name), " (", HtmlEscape(p.model_file), ")</td></tr>",
      "<tr><td>model digest (SHA-256)</td><td><code>",
      HtmlEscape(p.model_digest_hex), "</code></td></tr>",
      "<tr><td>plan</td><td>", HtmlEscape(p.plan_name), "</td></tr>",
      "<tr><td>global round</td><td>",
      p.global_round ? absl::StrCat(*p.global_round)
                     : "not recorded in the model file",
      "</td></tr><tr><td>generated</td><td>", HtmlEscape(p.generated_at),
      "</td></tr><tr><td>software</td><td>echofed ",
      HtmlEscape(p.software_version),
      "</td></tr></table></section>\n<p class=\"statement\">",
      HtmlEscape(kDecisionSupportStatement), "</p>\n</body></html>\n");
  return html;
}

absl::StatusOr<DiagnosticReportFiles> WriteDiagnosticReport(
    const DiagnosticReport& report, const std::string& out_dir) {
  if (absl::Status status = MakeDirectories(out_dir); !status.ok()) {
    return status;
  }
  std::string stem = report.patient_id;
  for (char& c : stem) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') c = '_';
  }
  if (stem.empty() || stem[0] == '.') stem = "patient" + stem;
  DiagnosticReportFiles files;
  files.json = absl::StrCat(out_dir, "/", stem, "-diagnose.json");
  files.html = absl::StrCat(out_dir, "/", stem, "-diagnose.html");
  absl::StatusOr<std::string> html = DiagnosticReportHtml(report);
  if (!html.ok()) return html.status();
  for (size_t i = 0; i < report.images.size(); ++i) {
    const ImageResult& image = report.images[i];
    if (!image.saliency) continue;
    std::vector<uint8_t> overlay =
        SaliencyOverlay(image.image, *image.saliency);
    absl::StatusOr<std::string> png =
        EncodePng(overlay.data(), image.image.width, image.image.height, 3);
    if (!png.ok()) return png.status();
    std::string path =
        absl::StrCat(out_dir, "/", stem, "-image", i + 1, "-gradcam.png");
    if (absl::Status status = WriteFileAtomically(path, *png, 0600);
        !status.ok()) {
      return status;
    }
    files.saliency_pngs.push_back(path);
  }
  if (absl::Status status =
          WriteFileAtomically(files.json, DiagnosticReportJson(report), 0600);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = WriteFileAtomically(files.html, *html, 0600);
      !status.ok()) {
    return status;
  }
  return files;
}

}  // namespace echofed
