#ifndef ECHOFED_COORDINATOR_CLI_REPORT_MODEL_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_MODEL_H_

// What the report is about, computed once from a round's aggregates and then
// written three ways (report_json.cc, report_csv.cc, report_html.cc): the
// sets (sites, then pools), their metrics, the meta-analyses, and the words
// for a value that is missing, so that the three documents say the same.
// Internal to echofed_cli; callers use report.h.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/metrics.h"
#include "coordinator/cli/report.h"
#include "proto/admin.pb.h"

namespace echofed {
namespace report_internal {

// The plan's default when it leaves min_cell_count at 0 (plan.proto).
inline constexpr int kDefaultMinCellCount = 5;

enum class SetType { kSite, kPooled };

// One extra head (Plan.Head other than SUBTYPE) of one set.
struct HeadResult {
  bool reported = false;  // the set holds a report of this head
  bool suppressed = false;
  EvalAggregate binary;
  MetricsSummary summary;  // binary heads
  SurvivalAggregate survival;
  ConcordanceIndex concordance;  // PROGNOSIS
};

// A site's own validation set, or a split's sets pooled.
struct SetResult {
  std::string key;    // the site's name, or pooled_internal / pooled_external
  std::string title;  // for people
  SetType type = SetType::kSite;
  EvalSplit split = EVAL_SPLIT_UNSPECIFIED;
  // Pooled sets: the sites added, and those that released nothing.
  std::vector<std::string> contributors;
  std::vector<std::string> suppressed_sites;
  // Sites: true classes the site withheld (disclosure control: a few
  // patients of the class). Pools: "site: class" for every class a
  // contributing site withheld, so left out of the pool.
  std::vector<int> withheld_classes;
  std::vector<std::string> left_out;
  // Sites: the patient flow the site reported with this evaluation.
  bool has_flow = false;
  PatientFlow flow;
  // A site's report was suppressed, or no site of a pool released data.
  bool suppressed = false;
  EvalAggregate aggregate;
  MetricsSummary summary;
  std::vector<HeadResult> heads;  // parallel to Report::heads
  // The same set at the patient level: one case per patient, scored with
  // the mean of the patient's image probabilities. Sites: whether the site
  // sent it (agents before patient-level reporting did not). Pools: whether
  // any released site of the split did; the pool adds those sites' patient
  // aggregates, and names the released sites that sent none.
  bool has_patient_level = false;
  EvalAggregate patient_aggregate;
  MetricsSummary patient_summary;
  std::vector<std::string> patient_contributors;
  std::vector<std::string> patient_not_reported;
};

// Sites whose own estimates are meta-analysed together.
struct MetaGroup {
  std::string key;    // meta_internal, meta_external, meta_all
  std::string split;  // internal, external, all
  std::string title;
  std::vector<int> sets;  // indices into Report::sets (sites only)
};

// One DerSimonian-Laird analysis: a group x head x class x metric.
struct MetaResult {
  int group = 0;        // index into Report::groups
  int head = -1;        // index into Report::heads; -1 the subtype
  int class_index = 0;  // of the subtype, or 1 (positive) of a binary head
  std::string metric;   // auc, sensitivity, specificity
  absl::StatusOr<PooledSiteMetric> pooled;
};

struct Report {
  const RunStatus* status = nullptr;
  const RoundRecord* round = nullptr;
  ReportOptions options;
  std::vector<std::string> class_names;
  std::vector<int> heads;  // Plan.Head values other than SUBTYPE
  int min_cell_count = kDefaultMinCellCount;
  std::vector<SetResult> sets;  // sites (internal, then external), pools
  std::vector<MetaGroup> groups;
  std::vector<MetaResult> meta;
  // Some site sent a patient-level aggregate with this round's evaluation.
  bool any_patient_level = false;
};

// The two units of analysis of the subtype metrics, as the report names
// them.
inline constexpr char kImageLevel[] = "image-level";
inline constexpr char kPatientLevel[] =
    "patient-level (mean probability over a patient's images)";
inline constexpr char kPatientScoring[] =
    "mean probability over a patient's images";

// Errors: NOT_FOUND when the run has no evaluated round (or not the one
// asked for); INVALID_ARGUMENT when a site's aggregate is malformed or its
// class count is not the plan's. The report points into `status`, which must
// outlive it.
absl::StatusOr<Report> BuildReport(const RunStatus& status,
                                   const ReportOptions& options);

// The meta-analysis of a group x head x class x metric, or null.
const MetaResult* FindMeta(const Report& report, int group, int head,
                           int class_index, absl::string_view metric);

// Names and words every document uses.

std::string SplitName(EvalSplit split);
std::string HeadName(int head);
bool IsSurvivalHead(int head);
std::string SuppressedText(int min_cell_count);

// A class a site withheld: it had some patients, fewer than the minimum.
std::string WithheldClassText(int min_cell_count);

// The minimum a site applied: its flow says (a site may ask for more than
// the plan), else the plan's.
int SiteMinCellCount(int plan_min_cell_count, const PatientFlow* flow);

// A plan site's entry in the run status, or null.
const SiteStatus* FindSiteStatus(const RunStatus& status,
                                 const std::string& site);

// Why the run status holds no counts declared by `site`; empty when it does.
std::string UndeclaredReason(const SiteStatus* site);

// Images per label as declared, sorted by label (protobuf maps are not).
std::map<std::string, int64_t> SortedLabels(const DataSummary& data);

// Whether a set's patient-level metrics can be shown, and if not why.
enum class PatientLevel { kReported, kSuppressed, kNotReported };

PatientLevel PatientLevelOf(const SetResult& set);

// Why a set has no patient-level metrics when none was sent
// (PatientLevel::kNotReported).
std::string PatientNotReportedText(const SetResult& set);

// Why a set has no patient-level metrics; empty when it has them.
std::string PatientLevelNote(const Report& report, const SetResult& set);

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_MODEL_H_
