#include "common/run_status.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace echofed {
namespace {

bool Evaluated(const RoundRecord& record, const std::string& site) {
  for (const SiteEvaluation& evaluation : record.evaluations()) {
    if (evaluation.site() == site) return true;
  }
  return false;
}

// Whether the site's report for `round` arrived.
bool EvaluatedRound(const RunStatus& run, int round, const std::string& site) {
  for (const RoundRecord& record : run.rounds()) {
    if (record.round() == round) return Evaluated(record, site);
  }
  return false;
}

// The latest round the site reported on; -1 when none.
int LastEvaluatedRound(const RunStatus& run, const std::string& site) {
  int last = -1;
  for (const RoundRecord& record : run.rounds()) {
    if (record.round() > last && Evaluated(record, site)) last = record.round();
  }
  return last;
}

// "waiting (for what; evaluated round K)".
std::string Waiting(absl::string_view what, int last_evaluated) {
  return absl::StrCat("waiting (", what,
                      last_evaluated >= 0
                          ? absl::StrCat("; evaluated round ", last_evaluated)
                          : "",
                      ")");
}

}  // namespace

std::string ValidationSiteState(const RunStatus& run, const SiteStatus& site) {
  // The agent's own reason for sitting the run out outlasts any phase.
  if (absl::StartsWith(site.activity(), "declined")) return site.activity();
  const int round = run.round();
  const int last = LastEvaluatedRound(run, site.site());
  switch (run.state()) {
    case RunStatus::EVALUATING:
      if (EvaluatedRound(run, round, site.site())) {
        return absl::StrCat("evaluated round ", round);
      }
      // The coordinator sets "evaluating" when it hands out the task; until
      // the site polls, the word is still the last round's.
      if (site.activity() == "evaluating") {
        return absl::StrCat("evaluating round ", round);
      }
      return absl::StrCat("waiting to evaluate round ", round);
    case RunStatus::TRAINING:
      return Waiting(absl::StrCat("round ", round, " training"), last);
    case RunStatus::INITIALIZING:
      return Waiting("initial model", last);
    case RunStatus::WAITING_FOR_SITES:
      return Waiting("for training sites", last);
    default:  // the run is over
      return last >= 0 ? absl::StrCat("evaluated round ", last)
                       : "reported no evaluation";
  }
}

}  // namespace echofed
