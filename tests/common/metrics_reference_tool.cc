// Reads per-case predictions from a CSV file (header `truth,p0,p1,...`, then
// one line per case: the true class index and the predicted probability of
// every class), builds the additive aggregate with AddCase as a site does,
// and prints every metric of Summarize as JSON on stdout.
// metrics_reference_test.py compares the output with scikit-learn.
//
// Usage: metrics_reference_tool CASES.csv

#include <cmath>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/metrics.h"

namespace echofed {
namespace {

// JSON has no NaN or infinity: undefined values print as null.
std::string Number(double value) {
  if (!std::isfinite(value)) return "null";
  std::ostringstream out;
  out << std::setprecision(17) << value;
  return out.str();
}

std::string Pair(const Interval& interval) {
  return "[" + Number(interval.lower) + ", " + Number(interval.upper) + "]";
}

std::string Averages(const AveragedMetrics& m) {
  return "{\"precision\": " + Number(m.precision) +
         ", \"sensitivity\": " + Number(m.sensitivity) +
         ", \"specificity\": " + Number(m.specificity) +
         ", \"f1\": " + Number(m.f1) + ", \"npv\": " + Number(m.npv) + "}";
}

void PrintClass(const ClassMetrics& m, std::ostream& out) {
  out << "    {\"support\": " << m.support
      << ", \"true_positives\": " << m.true_positives
      << ", \"false_positives\": " << m.false_positives
      << ", \"false_negatives\": " << m.false_negatives
      << ", \"true_negatives\": " << m.true_negatives
      << ",\n     \"precision\": " << Number(m.precision)
      << ", \"sensitivity\": " << Number(m.sensitivity)
      << ", \"specificity\": " << Number(m.specificity)
      << ", \"f1\": " << Number(m.f1) << ", \"npv\": " << Number(m.npv)
      << ",\n     \"precision_ci\": " << Pair(m.precision_ci)
      << ", \"sensitivity_ci\": " << Pair(m.sensitivity_ci)
      << ", \"specificity_ci\": " << Pair(m.specificity_ci)
      << ", \"npv_ci\": " << Pair(m.npv_ci)
      << ",\n     \"auc\": " << Number(m.auc)
      << ", \"auc_variance\": " << Number(m.auc_variance)
      << ", \"auc_ci\": " << Pair(m.auc_ci)
      << ", \"brier\": " << Number(m.brier)
      << ", \"expected_calibration_error\": "
      << Number(m.expected_calibration_error)
      << ", \"calibration_intercept\": " << Number(m.calibration_intercept)
      << ", \"calibration_slope\": " << Number(m.calibration_slope)
      << ",\n     \"roc\": [";
  for (size_t i = 0; i < m.roc.size(); ++i) {
    out << (i ? ", " : "") << "[" << Number(m.roc[i].threshold) << ", "
        << Number(m.roc[i].false_positive_rate) << ", "
        << Number(m.roc[i].true_positive_rate) << "]";
  }
  out << "],\n     \"reliability\": [";
  for (size_t i = 0; i < m.reliability.size(); ++i) {
    const ReliabilityBin& bin = m.reliability[i];
    out << (i ? ", " : "") << "{\"lower\": " << Number(bin.lower)
        << ", \"upper\": " << Number(bin.upper) << ", \"count\": " << bin.count
        << ", \"mean_predicted\": " << Number(bin.mean_predicted)
        << ", \"observed_fraction\": " << Number(bin.observed_fraction) << "}";
  }
  out << "],\n     \"decision_curve\": [";
  for (size_t i = 0; i < m.decision_curve.size(); ++i) {
    const DecisionPoint& point = m.decision_curve[i];
    out << (i ? ", " : "") << "[" << Number(point.threshold) << ", "
        << Number(point.net_benefit) << ", " << Number(point.treat_all) << "]";
  }
  out << "]}";
}

int Run(const char* path) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    return 1;
  }
  std::string line;
  std::getline(in, line);  // header
  EvalAggregate aggregate;
  int line_number = 1;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.empty()) continue;
    std::vector<std::string> fields = absl::StrSplit(line, ',');
    int truth;
    std::vector<double> probabilities(fields.size() - 1);
    bool parsed = fields.size() >= 2 && absl::SimpleAtoi(fields[0], &truth);
    for (size_t i = 1; parsed && i < fields.size(); ++i) {
      parsed = absl::SimpleAtod(fields[i], &probabilities[i - 1]);
    }
    if (!parsed) {
      std::cerr << path << ":" << line_number << ": not a case\n";
      return 1;
    }
    if (absl::Status status = AddCase(&aggregate, truth, probabilities);
        !status.ok()) {
      std::cerr << path << ":" << line_number << ": " << status << "\n";
      return 1;
    }
  }
  aggregate.set_num_patients(aggregate.num_images());
  if (absl::Status status =
          ValidateAggregate(aggregate, aggregate.class_count());
      !status.ok()) {
    std::cerr << "invalid aggregate: " << status << "\n";
    return 1;
  }

  MetricsSummary s = Summarize(aggregate);
  std::ostream& out = std::cout;
  out << "{\"class_count\": " << s.class_count
      << ",\n \"num_images\": " << s.num_images << ",\n \"confusion\": [";
  for (int i = 0; i < aggregate.confusion_size(); ++i) {
    out << (i ? ", " : "") << aggregate.confusion(i);
  }
  out << "],\n \"accuracy\": " << Number(s.accuracy)
      << ", \"accuracy_ci\": " << Pair(s.accuracy_ci)
      << ",\n \"balanced_accuracy\": " << Number(s.balanced_accuracy)
      << ", \"cohen_kappa\": " << Number(s.cohen_kappa)
      << ",\n \"macro\": " << Averages(s.macro)
      << ",\n \"micro\": " << Averages(s.micro)
      << ",\n \"weighted\": " << Averages(s.weighted)
      << ",\n \"has_scores\": " << (s.has_scores ? "true" : "false")
      << ", \"macro_auc\": " << Number(s.macro_auc)
      << ", \"macro_auc_ci\": " << Pair(s.macro_auc_ci)
      << ", \"micro_auc\": " << Number(s.micro_auc)
      << ", \"weighted_auc\": " << Number(s.weighted_auc)
      << ", \"hand_till_auc\": " << Number(s.hand_till_auc)
      << ", \"brier\": " << Number(s.brier) << ",\n \"classes\": [\n";
  for (size_t c = 0; c < s.classes.size(); ++c) {
    if (c) out << ",\n";
    PrintClass(s.classes[c], out);
  }
  out << "]}\n";
  return 0;
}

}  // namespace
}  // namespace echofed

int main(int argc, char** argv) {
  CLI::App app{
      "Prints every metric of Summarize, as JSON, for the cases in a CSV "
      "(header truth,p0,p1,...; one line per case). "
      "metrics_reference_test.py compares the output with scikit-learn."};
  std::string cases;
  app.add_option("cases", cases, "CASES.csv")->required();
  CLI11_PARSE(app, argc, argv);
  return echofed::Run(cases.c_str());
}
