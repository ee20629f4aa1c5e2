#ifndef ECHOFED_SITE_AGENT_DIAGNOSIS_INRG_RISK_H_
#define ECHOFED_SITE_AGENT_DIAGNOSIS_INRG_RISK_H_

// The INRG pretreatment risk classification (Cohn SL et al., J Clin Oncol
// 2009;27(2):289-297, Table 3) over the clinical schema: sixteen cells
// lettered A..R (L and M unused), each with its risk group. The table is
// written out in site-agent/data/CLINICAL_SCHEMA.md and, cell by cell with its
// sources, in tests/site-agent/diagnosis/inrg_risk_test.cc.
//
// Pure functions, no state: safe from any thread.

#include <optional>
#include <string>
#include <vector>

#include "site-agent/data/clinical.h"

namespace echofed {

struct InrgClassification {
  // False when the known inputs leave more than one cell possible, or when
  // they contradict the staging (stage MS at 18 months or older).
  bool classifiable = false;
  // Meaningful only when classifiable.
  RiskGroup group = RiskGroup::kHigh;
  char cell_letter = '\0';  // 'A'..'R'; '\0' when not classifiable
  // CSV column names of the missing inputs that decide between the possible
  // cells, in schema order. Empty when classifiable: a missing input that
  // cannot change the cell (histology for stage M, say) is not listed.
  std::vector<std::string> missing_inputs;
  // How the table was walked, e.g. "L2, age >= 18 months, NB, poorly
  // differentiated or undifferentiated, MYCN not amplified -> H
  // intermediate", or why no cell could be chosen.
  std::string rule;
};

InrgClassification ClassifyInrgRisk(const ClinicalRecord& record);

// The record's INRG histologic category: `inrg_histology` when set, else
// derived from `histology` (NB and GN; a plain GNB stays unknown).
std::optional<InrgHistology> InrgHistologyOf(const ClinicalRecord& record);

// The risk group of a cell letter of the table; nullopt for a letter that
// is not a cell.
std::optional<RiskGroup> InrgCellRiskGroup(char cell_letter);

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DIAGNOSIS_INRG_RISK_H_
