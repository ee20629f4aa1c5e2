// The HTML page of `echofed report` (coordinator/cli/report_html.h): self
// contained, with its plots, suppressed sites and declared counts.

#include "coordinator/cli/report_html.h"

#include <string>

#include "coordinator/cli/report.h"
#include "gtest/gtest.h"
#include "tests/coordinator/cli/report_test_fixture.h"

namespace echofed {
namespace {

using ::echofed::testing::ReportTest;

TEST_F(ReportTest, HtmlIsSelfContainedWithPlotsAndSuppressedSites) {
  absl::StatusOr<ReportDocuments> report =
      RenderReport(status_, ReportOptions());
  ASSERT_TRUE(report.ok()) << report.status();
  const std::string& html = report->html;
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  auto count = [&](const std::string& needle) {
    int n = 0;
    for (size_t at = html.find(needle); at != std::string::npos;
         at = html.find(needle, at + 1)) {
      ++n;
    }
    return n;
  };
  // ROC: 2 pools + 4 sites; calibration: 2 pools; forest: 3 classes + the
  // binary head.
  EXPECT_EQ(count("<svg "), 12);
  EXPECT_EQ(count("<svg "), count("</svg>"));
  EXPECT_EQ(count("aria-label=\"ROC curves, "), 6);
  EXPECT_EQ(count("aria-label=\"Calibration, "), 2);
  EXPECT_EQ(count("aria-label=\"Forest plot of AUC, "), 4);
  EXPECT_GE(count("suppressed (&lt; min cell count 5)"), 3);
  EXPECT_NE(html.find("<table class=\"confusion\">"), std::string::npos);
  EXPECT_NE(html.find("id=\"tripod\""), std::string::npos);
  EXPECT_NE(html.find("not available from the federation"), std::string::npos);
  EXPECT_NE(html.find("site-local"), std::string::npos);
  // The counts the sites declared at join, labelled as such; the missing
  // ones said plainly.
  EXPECT_NE(html.find("Declared by each site at join"), std::string::npos);
  EXPECT_NE(html.find("<tr><td>site-1</td><td>training</td><td>131</td>"
                      "<td>307</td><td>GN: 97, NB: 210</td></tr>"),
            std::string::npos);
  EXPECT_NE(html.find("<tr><td>site-4</td><td>external validation</td>"
                      "<td>203</td><td>496</td><td>GN: 152, NB: 344</td></tr>"),
            std::string::npos);
  EXPECT_NE(html.find("the site declared no counts when it joined"),
            std::string::npos);
  EXPECT_NE(html.find("the site has not joined since the coordinator started"),
            std::string::npos);
  EXPECT_NE(html.find("I²"), std::string::npos);
  // Self-contained: no script, no fetched asset; the only URL is the SVG
  // namespace.
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(count("http"), count("http://www.w3.org/2000/svg"));
}

}  // namespace
}  // namespace echofed
