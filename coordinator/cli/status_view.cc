#include "coordinator/cli/status_view.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/run_status.h"
#include "coordinator/cli/admin_client.h"

namespace echofed {
namespace {

bool IsTerminal(RunStatus::State state) {
  return state == RunStatus::DONE || state == RunStatus::STOPPED ||
         state == RunStatus::FAILED;
}

// "1h 02m", "4m 05s", "12s".
std::string Span(absl::Duration duration) {
  if (duration < absl::ZeroDuration()) duration = absl::ZeroDuration();
  int64_t seconds = absl::ToInt64Seconds(duration);
  if (seconds >= 3600) {
    return absl::StrFormat("%dh %02dm", seconds / 3600, (seconds % 3600) / 60);
  }
  if (seconds >= 60) {
    return absl::StrFormat("%dm %02ds", seconds / 60, seconds % 60);
  }
  return absl::StrFormat("%ds", seconds);
}

// Printable ASCII only: the activity word comes from the site.
std::string Printable(const std::string& text) { return PrintableText(text); }

std::string SiteState(const RunStatus& run, const SiteStatus& site,
                      absl::Time now) {
  if (!site.joined()) {
    return site.last_seen_unix_ms() == 0 ? "not joined"
                                         : "not joined (since restart)";
  }
  if (!site.live()) {
    absl::Time seen = absl::FromUnixMillis(site.last_seen_unix_ms());
    return absl::StrCat(
        "MISSING since ",
        absl::FormatTime("%H:%M:%S UTC", seen, absl::UTCTimeZone()), " (",
        Span(now - seen), ")");
  }
  // Validation sites never train: what they do is read off the run.
  if (site.role() == Plan::EXTERNAL_VALIDATION) {
    return Printable(ValidationSiteState(run, site));
  }
  std::string activity = Printable(site.activity());
  if (site.activity() == "training" && (site.epoch() > 0 || site.batch() > 0)) {
    return absl::StrFormat("training epoch %d/%d batch %d loss %.4f",
                           site.epoch(), run.plan().local_epochs(),
                           site.batch(), site.loss());
  }
  return activity.empty() ? "joined" : activity;
}

}  // namespace

std::string FormatLiveStatus(const RunStatus& status, absl::Time now) {
  const Plan& plan = status.plan();
  std::string out = absl::StrFormat(
      "run %s  '%s'  %s  round %d/%d", status.run_id(), plan.name(),
      RunStatus::State_Name(status.state()), status.round(), plan.rounds());
  if (!IsTerminal(status.state()) && status.phase_deadline_unix_ms() > 0) {
    absl::StrAppend(
        &out, "  deadline in ",
        Span(absl::FromUnixMillis(status.phase_deadline_unix_ms()) - now));
  }
  absl::StrAppend(&out, "\n");
  if (!status.message().empty()) {
    absl::StrAppend(&out, "  ", Printable(status.message()), "\n");
  }
  absl::StrAppend(&out, absl::StrFormat("\n  %-18s %-20s %-46s %s\n", "SITE",
                                        "ROLE", "STATE", "LAST SEEN"));
  for (const SiteStatus& site : status.sites()) {
    std::string seen =
        site.last_seen_unix_ms() == 0
            ? "never"
            : absl::StrCat(
                  Span(now - absl::FromUnixMillis(site.last_seen_unix_ms())),
                  " ago");
    absl::StrAppend(&out,
                    absl::StrFormat("  %-18s %-20s %-46s %s\n", site.site(),
                                    Plan::Role_Name(site.role()),
                                    SiteState(status, site, now), seen));
  }
  const std::string privacy = FormatPrivacy(status);
  if (!privacy.empty()) absl::StrAppend(&out, "\n", privacy);
  // The newest trained round (round 0 holds the initial weights only).
  const RoundRecord* last = nullptr;
  for (const RoundRecord& round : status.rounds()) {
    if (round.round() > 0) last = &round;
  }
  if (last == nullptr) {
    absl::StrAppend(&out, "\nno round committed yet\n");
  } else {
    absl::StrAppend(&out, "\nlast committed ", FormatRound(status, *last));
  }
  return out;
}

}  // namespace echofed
