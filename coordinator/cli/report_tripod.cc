// The TRIPOD+AI items as text, kept in one place so that the JSON and the
// HTML list the same items with the same answers.

#include "coordinator/cli/report_tripod.h"

#include <vector>

namespace echofed {
namespace report_internal {

const std::vector<TripodItem>& TripodItems() {
  static const auto* items = new std::vector<TripodItem>{
      {"1-3", "Title, abstract, background, intended use", "authors",
       "the manuscript"},
      {"4", "Objectives: development and/or evaluation", "partly",
       "#run: the plan's site roles (training with internal validation, "
       "external validation)"},
      {"5a", "Sources of data per centre", "partly",
       "#run: the centres and their roles; whether data are retrospective or "
       "prospective and the scanners used are not available from the "
       "federation"},
      {"5b", "Dates of data collection and follow-up per centre",
       "not_available",
       "not available from the federation (no dates leave a site)"},
      {"6a", "Setting: number and location of centres", "partly",
       "#run: number of centres and roles; locations are not available from "
       "the federation"},
      {"6b", "Eligibility criteria", "site_local",
       "the protocol's cohort rules, applied identically at every site "
       "(site-agent/data/CLINICAL_SCHEMA.md); their outcome per site is site-local"},
      {"6c", "Treatments received", "not_available",
       "not available from the federation"},
      {"7", "Data preparation and quality checks", "partly",
       "#run: image size, normalisation and ROI margin of the plan; per-image "
       "quality checks are site-local (echofed-agent check-data)"},
      {"8a", "Outcome definition", "partly",
       "#run: the classes (histological subtype) and heads; how and when the "
       "reference standard was assessed is the authors'"},
      {"8b-c", "Outcome assessors and blinding", "authors", "the manuscript"},
      {"9a-c", "Predictors: choice, definition, assessors", "partly",
       "#run: the model's inputs (ultrasound image; clinical inputs for "
       "fusion models)"},
      {"10", "Sample size", "partly",
       "#flow: patients and images per centre and set; the justification is "
       "the authors'"},
      {"11", "Handling of missing data", "site_local",
       "fusion models use missingness indicators at each site; counts of "
       "missing values are not available from the federation"},
      {"12a", "How data were used: partitioning", "in_report",
       "#run: patient-level split fraction and seed; external sites validate "
       "on all their patients"},
      {"12b-c", "Predictor handling, model type, training", "in_report",
       "#run: model, strategy, rounds, local epochs, optimiser, loss"},
      {"12d", "Heterogeneity across centres", "in_report",
       "#heterogeneity: DerSimonian-Laird random effects with tau² and I²"},
      {"12e", "Performance measures and their rationale", "in_report",
       "#methods; #performance: subtype metrics per image and, where the "
       "sites sent them, per patient (mean probability over a patient's "
       "images), each labelled with its unit of analysis"},
      {"12f", "Model updating / recalibration", "in_report",
       "#calibration: intercept and slope are reported; no recalibration is "
       "applied by the federation"},
      {"12g", "How predictions were calculated", "in_report",
       "#run: the committed model (digest), downloadable with echofed model "
       "download"},
      {"13", "Class imbalance", "in_report", "#run: the plan's loss"},
      {"14", "Fairness", "not_available",
       "not available from the federation (no sociodemographic subgroups "
       "leave a site)"},
      {"15", "Model output and thresholds", "in_report",
       "#methods: class probabilities; the predicted class is the most "
       "probable"},
      {"16", "Differences between development and evaluation data", "partly",
       "#flow: case mix per centre and set; other differences are the "
       "authors'"},
      {"17-19", "Ethics, open science, patient and public involvement",
       "authors", "the manuscript"},
      {"20a", "Participant flow", "in_report",
       "#flow: each site's CONSORT-style flow (screened, excluded by reason, "
       "included, split, analysed), counts under the minimum cell count "
       "suppressed; the counts each site declared at join"},
      {"20b", "Participant characteristics by centre", "partly",
       "#flow: class distribution per centre; clinical characteristics are not "
       "available from the federation"},
      {"20c", "Predictor distributions, development vs evaluation",
       "not_available", "not available from the federation"},
      {"21", "Participants and outcome events in each analysis", "in_report",
       "#performance and the CSV's n column"},
      {"22", "Full model specification", "in_report",
       "#run: model name and committed model digest"},
      {"23a", "Performance with confidence intervals, by centre", "in_report",
       "#performance, #roc, #confusion, #calibration; subgroups are not "
       "available from the federation"},
      {"23b", "Heterogeneity of performance across centres", "in_report",
       "#heterogeneity"},
      {"24", "Model updating results", "not_applicable",
       "the federation does not update models after evaluation"},
      {"25-27", "Interpretation, limitations, implementation", "authors",
       "the manuscript"},
  };
  return *items;
}

}  // namespace report_internal
}  // namespace echofed
