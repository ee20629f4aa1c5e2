#ifndef ECHOFED_COORDINATOR_CLI_REPORT_TRIPOD_H_
#define ECHOFED_COORDINATOR_CLI_REPORT_TRIPOD_H_

// The TRIPOD+AI checklist as the report answers it, in the JSON's
// "tripod_ai" and the HTML's checklist section alike.

#include <vector>

namespace echofed {
namespace report_internal {

struct TripodItem {
  const char* item;
  const char* topic;
  // in_report, partly, site_local, not_available, not_applicable, authors
  const char* status;
  const char* where;  // a section anchor of the HTML report, or words
};

// TRIPOD+AI (Collins et al., BMJ 2024;385:e078378): the items a report of a
// model's validation states, and which of them the federation can answer.
// Items of the manuscript's framing (title, discussion...) are the authors'.
const std::vector<TripodItem>& TripodItems();

}  // namespace report_internal
}  // namespace echofed

#endif  // ECHOFED_COORDINATOR_CLI_REPORT_TRIPOD_H_
