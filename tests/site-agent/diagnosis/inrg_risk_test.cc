#include "site-agent/diagnosis/inrg_risk.h"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

// Where the table comes from.
//
// [PDQ-T4] NCI PDQ "Neuroblastoma Treatment (Health Professional Version)",
//   Table 4, "International Neuroblastoma Risk Group (INRG) Pretreatment
//   Classification Schema", reprinted from Pinto N et al., J Clin Oncol
//   2015;33(27):3008-3017, which reproduces Cohn SL et al., J Clin Oncol
//   2009;27(2):289-297, Table 3. Read in the stored copy of the PDQ page in
//   github.com/gautamgauri/suchi-cancer-bot,
//   suchi_phase1_pack/kb/en/02_nci_core/pdq/
//   types-neuroblastoma-hp-neuroblastoma-treatment-pdq.md (reviewed
//   2025-12-30). Every cell below is a row of this table.
// [PDQ-text] The paragraphs around that table: "assigns ... to one of 16
//   pretreatment risk groups based on INRG stage, age, histological
//   category, grade of tumor differentiation, MYCN amplification, 11q
//   aberration ..., and ploidy"; "histological category is an important
//   risk determinant for all stage L1 and L2 tumors, and grade of
//   differentiation is prognostic in neuroblastomas and nodular
//   ganglioneuroblastomas in patients older than 18 months".
// [Cohn-abstract] Abstract of Cohn 2009 (PMC2650388; copies at
//   scienceopen.com and ichgcp.net): the same seven factors, "18 months was
//   selected" as the age cutoff, sixteen pretreatment groups. The table
//   below has exactly sixteen letters (A-K, N-R).
// [INRGSS] Monclair T et al., J Clin Oncol 2009;27(2):298-303 (PMC2650389),
//   as quoted by the PDQ staging table and the HL7 mCODE INRGSS value set:
//   stage MS is "metastatic disease in children younger than 18 months".
// [COG-2021] PDQ Table 3 (COG risk groups, Irwin 2021): another system,
//   used only to corroborate the span of cell N: "Stage MS or L2 with
//   MYCN-amplified disease" is high risk with no age condition.
//
// Reading of merged cells. PDQ-T4 prints the L2 "Amplified -> N (high)"
// row after the >= 18 months rows. N is read as covering every L2 tumour
// other than GN maturing / GNB intermixed, at any age and grade: the
// < 18 months rows (D, G) and the >= 18 months rows (E, H) all require
// MYCN not amplified, so otherwise an amplified L2 tumour would fall in no
// cell, whereas the sixteen groups classify every patient [Cohn-abstract];
// [COG-2021] agrees. Likewise the blank histology of the M and MS rows
// means any histology, and a blank age for L1 any age.

namespace echofed {
namespace {

constexpr InrgHistology kGnMat = InrgHistology::kGnMaturingOrGnbIntermixed;
constexpr InrgHistology kGnbN = InrgHistology::kGnbNodular;
constexpr InrgHistology kNB = InrgHistology::kNeuroblastoma;
constexpr Differentiation kDiff = Differentiation::kDifferentiating;
constexpr Differentiation kPoor = Differentiation::kPoorlyDifferentiated;
constexpr Differentiation kUndiff = Differentiation::kUndifferentiated;

struct Inputs {
  std::optional<InrgStage> stage;
  std::optional<double> age_months;
  std::optional<InrgHistology> histology;
  std::optional<Differentiation> differentiation;
  std::optional<bool> mycn_amplified;
  std::optional<bool> chr11q_aberration;
  std::optional<Ploidy> ploidy;
};

ClinicalRecord Record(const Inputs& in) {
  ClinicalRecord r;
  r.patient_id = "P";
  r.inrg_stage = in.stage;
  r.age_months = in.age_months;
  r.inrg_histology = in.histology;
  r.differentiation = in.differentiation;
  r.mycn_amplified = in.mycn_amplified;
  r.chr11q_aberration = in.chr11q_aberration;
  r.ploidy = in.ploidy;
  return r;
}

// One row of the published table, with only the inputs the row names; the
// classifier must need nothing else.
struct CellCase {
  char cell;
  RiskGroup group;
  Inputs inputs;
  const char* source;
};

const std::vector<CellCase>& PublishedCells() {
  using S = InrgStage;
  using R = RiskGroup;
  static const auto* cases = new std::vector<CellCase>{
      // L1/L2, GN maturing or GNB intermixed: very low. [PDQ-T4] row 1;
      // [PDQ-text] histology decides for all L1/L2.
      {'A', R::kVeryLow, {S::kL1, {}, kGnMat}, "PDQ-T4 L1/L2 GN maturing"},
      {'A', R::kVeryLow, {S::kL2, {}, kGnMat}, "PDQ-T4 L1/L2 GNB intermixed"},
      // L1, any other histology, MYCN NA: very low; amplified: high.
      // [PDQ-T4] rows 2-3 (no age, grade, 11q or ploidy column filled).
      {'B', R::kVeryLow, {S::kL1, {}, kNB, {}, false}, "PDQ-T4 L1 NA"},
      {'K', R::kHigh, {S::kL1, {}, kGnbN, {}, true}, "PDQ-T4 L1 amplified"},
      // L2 < 18 months, any other histology, MYCN NA: 11q normal low,
      // aberrant intermediate. [PDQ-T4] rows 4-5; 18-month cut
      // [Cohn-abstract].
      {'D', R::kLow, {S::kL2, 10, kNB, {}, false, false}, "PDQ-T4 L2 <18 no"},
      {'G',
       R::kIntermediate,
       {S::kL2, 10, kGnbN, {}, false, true},
       "PDQ-T4 L2 <18 11q"},
      // L2 >= 18 months, GNB nodular or NB: differentiating and MYCN NA
      // splits on 11q (E low, H intermediate); poorly differentiated or
      // undifferentiated and NA is H. [PDQ-T4] rows 6-8; [PDQ-text] grade
      // matters for NB and nodular GNB older than 18 months.
      {'E',
       R::kLow,
       {S::kL2, 30, kNB, kDiff, false, false},
       "PDQ-T4 L2 >=18 differentiating no 11q"},
      {'H',
       R::kIntermediate,
       {S::kL2, 30, kGnbN, kDiff, false, true},
       "PDQ-T4 L2 >=18 differentiating 11q"},
      {'H',
       R::kIntermediate,
       {S::kL2, 30, kNB, kPoor, false},
       "PDQ-T4 L2 >=18 poorly differentiated"},
      {'H',
       R::kIntermediate,
       {S::kL2, 30, kNB, kUndiff, false},
       "PDQ-T4 L2 >=18 undifferentiated"},
      // L2, MYCN amplified: high, at any age (see "merged cells" above).
      // [PDQ-T4] row 9; [COG-2021].
      {'N', R::kHigh, {S::kL2, 30, kNB, kPoor, true}, "PDQ-T4 L2 amplified"},
      {'N', R::kHigh, {S::kL2, 10, kNB, {}, true}, "PDQ-T4 L2 amp, <18"},
      // M < 18 months, MYCN NA, hyperdiploid: low. [PDQ-T4] row 10.
      {'F',
       R::kLow,
       {S::kM, 15, {}, {}, false, {}, Ploidy::kHyperdiploid},
       "PDQ-T4 M <18 hyperdiploid"},
      // M, MYCN NA, diploid: < 12 months I, 12 to < 18 months J, both
      // intermediate. [PDQ-T4] rows 11-12.
      {'I',
       R::kIntermediate,
       {S::kM, 6, {}, {}, false, {}, Ploidy::kDiploid},
       "PDQ-T4 M <12 diploid"},
      {'J',
       R::kIntermediate,
       {S::kM, 15, {}, {}, false, {}, Ploidy::kDiploid},
       "PDQ-T4 M 12-<18 diploid"},
      // M < 18 months, MYCN amplified: high. [PDQ-T4] row 13.
      {'O', R::kHigh, {S::kM, 15, {}, {}, true}, "PDQ-T4 M <18 amplified"},
      // M >= 18 months: high whatever else. [PDQ-T4] row 14.
      {'P', R::kHigh, {S::kM, 30}, "PDQ-T4 M >=18"},
      // MS (< 18 months by definition [INRGSS]), MYCN NA: 11q normal very
      // low, aberrant high; amplified: high. [PDQ-T4] rows 15-17.
      {'C', R::kVeryLow, {S::kMS, 10, {}, {}, false, false}, "PDQ-T4 MS no"},
      {'Q', R::kHigh, {S::kMS, 10, {}, {}, false, true}, "PDQ-T4 MS 11q"},
      {'R', R::kHigh, {S::kMS, 10, {}, {}, true}, "PDQ-T4 MS amplified"},
  };
  return *cases;
}

TEST(InrgRiskTest, EveryPublishedCellWithOnlyTheInputsItsRowNames) {
  std::set<char> letters;
  for (const CellCase& c : PublishedCells()) {
    SCOPED_TRACE(c.source);
    InrgClassification got = ClassifyInrgRisk(Record(c.inputs));
    EXPECT_TRUE(got.classifiable) << got.rule;
    EXPECT_EQ(got.cell_letter, c.cell) << got.rule;
    EXPECT_EQ(got.group, c.group);
    EXPECT_TRUE(got.missing_inputs.empty());
    EXPECT_EQ(InrgCellRiskGroup(c.cell), c.group);
    letters.insert(c.cell);
  }
  // Sixteen groups, L and M unused [Cohn-abstract], [PDQ-T4].
  EXPECT_EQ(letters.size(), 16u);
  EXPECT_EQ(letters.count('L') + letters.count('M'), 0u);
  EXPECT_FALSE(InrgCellRiskGroup('L').has_value());
  EXPECT_FALSE(InrgCellRiskGroup('M').has_value());
}

TEST(InrgRiskTest, RuleNamesThePath) {
  EXPECT_EQ(
      ClassifyInrgRisk(Record({InrgStage::kL2, 24, kNB, kPoor, false})).rule,
      "L2, age >= 18 months, NB, poorly differentiated, MYCN not "
      "amplified -> H intermediate");
  EXPECT_EQ(ClassifyInrgRisk(Record({InrgStage::kL1, {}, kGnMat})).rule,
            "L1, GN maturing or GNB intermixed -> A very low");
  EXPECT_EQ(
      ClassifyInrgRisk(
          Record({InrgStage::kM, 6, {}, {}, false, {}, Ploidy::kDiploid}))
          .rule,
      "M, age < 12 months, MYCN not amplified, diploid -> I intermediate");
}

struct AgeCase {
  Inputs inputs;
  char cell;  // '\0': not classifiable
};

TEST(InrgRiskTest, AgeBoundaries) {
  const std::vector<AgeCase> cases = {
      // 18 months: L2 differentiating, NA, 11q normal moves from D to E.
      {{InrgStage::kL2, 17.9, kNB, kDiff, false, false}, 'D'},
      {{InrgStage::kL2, 18, kNB, kDiff, false, false}, 'E'},
      // 12 and 18 months: M, NA, diploid goes I, J, then P.
      {{InrgStage::kM, 11.9, {}, {}, false, {}, Ploidy::kDiploid}, 'I'},
      {{InrgStage::kM, 12, {}, {}, false, {}, Ploidy::kDiploid}, 'J'},
      {{InrgStage::kM, 17.9, {}, {}, false, {}, Ploidy::kDiploid}, 'J'},
      {{InrgStage::kM, 18, {}, {}, false, {}, Ploidy::kDiploid}, 'P'},
      {{InrgStage::kM, 17.9, {}, {}, false, {}, Ploidy::kHyperdiploid}, 'F'},
      {{InrgStage::kM, 18, {}, {}, false, {}, Ploidy::kHyperdiploid}, 'P'},
      {{InrgStage::kM, 17.9, {}, {}, true}, 'O'},
      {{InrgStage::kM, 18, {}, {}, true}, 'P'},
      // MS exists only below 18 months [INRGSS].
      {{InrgStage::kMS, 17.9, {}, {}, false, false}, 'C'},
      {{InrgStage::kMS, 18, {}, {}, false, false}, '\0'},
  };
  for (const AgeCase& c : cases) {
    InrgClassification got = ClassifyInrgRisk(Record(c.inputs));
    SCOPED_TRACE(absl::StrCat("age ", *c.inputs.age_months, ": ", got.rule));
    EXPECT_EQ(got.classifiable, c.cell != '\0');
    EXPECT_EQ(got.cell_letter, c.cell);
  }
  InrgClassification ms =
      ClassifyInrgRisk(Record({InrgStage::kMS, 18, {}, {}, false, false}));
  EXPECT_TRUE(ms.missing_inputs.empty());  // nothing missing: contradictory
  EXPECT_NE(ms.rule.find("stage MS"), std::string::npos) << ms.rule;
}

struct MissingCase {
  const char* name;
  Inputs inputs;
  std::vector<std::string> missing;  // empty: classifiable as `cell`
  char cell;
};

TEST(InrgRiskTest, MissingInputsAreOnlyThoseThatDecide) {
  const std::vector<MissingCase> cases = {
      {"L1 NB without MYCN", {InrgStage::kL1, 40, kNB}, {"mycn"}, '\0'},
      // At 40 months: stage, histology, MYCN (L1, L2), grade and 11q (L2:
      // E or H); not ploidy, which only splits M under 18 months.
      {"nothing but age",
       {{}, 40},
       {"histology", "differentiation", "inrg_stage", "mycn", "chr11q"},
       '\0'},
      {"M without age",
       {InrgStage::kM, {}, {}, {}, false, {}, Ploidy::kHyperdiploid},
       {"age_months"},
       '\0'},
      {"M at 30 months needs nothing else", {InrgStage::kM, 30}, {}, 'P'},
      {"L2 plain GNB (intermixed or nodular?)",
       {InrgStage::kL2, 10, {}, {}, false, false},
       {"histology"},
       '\0'},
      {"MS without age: the stage implies < 18 months",
       {InrgStage::kMS, {}, {}, {}, false, false},
       {},
       'C'},
      {"L2 amplified without age",
       {InrgStage::kL2, {}, kNB, {}, true},
       {},
       'N'},
      {"L2 >= 18 with 11q aberration: grade cannot change H",
       {InrgStage::kL2, 30, kNB, {}, false, true},
       {},
       'H'},
      {"L2 >= 18, 11q aberration, no MYCN: only MYCN decides (N or H)",
       {InrgStage::kL2, 30, kNB, {}, {}, true},
       {"mycn"},
       '\0'},
      {"L2 >= 18, NA: grade and 11q both decide (E or H)",
       {InrgStage::kL2, 30, kGnbN, {}, false},
       {"differentiation", "chr11q"},
       '\0'},
      {"L2 differentiating, NA, 11q normal, no age (D or E)",
       {InrgStage::kL2, {}, kNB, kDiff, false, false},
       {"age_months"},
       '\0'},
      {"M < 18, NA, no ploidy (F or I)",
       {InrgStage::kM, 6, {}, {}, false},
       {"ploidy"},
       '\0'},
  };
  for (const MissingCase& c : cases) {
    InrgClassification got = ClassifyInrgRisk(Record(c.inputs));
    SCOPED_TRACE(absl::StrCat(c.name, ": ", got.rule));
    EXPECT_EQ(got.missing_inputs, c.missing);
    EXPECT_EQ(got.classifiable, c.missing.empty());
    EXPECT_EQ(got.cell_letter, c.cell);
  }
  InrgClassification h =
      ClassifyInrgRisk(Record({InrgStage::kL2, 30, kNB, {}, false, true}));
  EXPECT_NE(h.rule.find("differentiation missing"), std::string::npos)
      << h.rule;
  InrgClassification b_or_k =
      ClassifyInrgRisk(Record({InrgStage::kL1, 40, kNB}));
  EXPECT_NE(b_or_k.rule.find("B very low, K high"), std::string::npos)
      << b_or_k.rule;
}

TEST(InrgRiskTest, HistologyFromTheThreeClassLabel) {
  ClinicalRecord r;
  r.histology = Histology::kNB;
  EXPECT_EQ(InrgHistologyOf(r), kNB);
  r.histology = Histology::kGN;
  EXPECT_EQ(InrgHistologyOf(r), kGnMat);
  r.histology = Histology::kGNB;
  EXPECT_FALSE(InrgHistologyOf(r).has_value());
  r.inrg_histology = kGnbN;  // the finer field wins
  EXPECT_EQ(InrgHistologyOf(r), kGnbN);
}

TEST(InrgRiskTest, ClassifiesParsedCsvRows) {
  absl::StatusOr<ClinicalTable> table = ParseClinicalCsv(
      "patient_id,age_months,histology,differentiation,inrg_stage,mycn,"
      "chr11q,ploidy\n"
      "gn,60,GN,,L2,,,\n"
      "int,60,GNB-intermixed,,L1,,,\n"
      "nod,30,GNB-nodular,differentiating,L2,not_amplified,normal,\n"
      "gnb,30,GNB,differentiating,L2,not_amplified,normal,\n"
      "nb,8,NB,,M,not_amplified,,diploid\n",
      "clinical.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_TRUE(table->errors.empty());
  auto cell = [&](const std::string& id) {
    return ClassifyInrgRisk(table->records.at(id)).cell_letter;
  };
  EXPECT_EQ(cell("gn"), 'A');
  EXPECT_EQ(cell("int"), 'A');
  EXPECT_EQ(cell("nod"), 'E');
  EXPECT_EQ(cell("nb"), 'I');
  InrgClassification gnb = ClassifyInrgRisk(table->records.at("gnb"));
  EXPECT_FALSE(gnb.classifiable);  // A (intermixed) or E (nodular)
  EXPECT_EQ(gnb.missing_inputs, std::vector<std::string>{"histology"});
}

// The published table once more, as independent data: a row matches when
// every condition it states holds (an empty set means any value).
struct PublishedRow {
  char cell;
  std::set<InrgStage> stages;
  double min_age;  // months, inclusive
  double max_age;  // months, exclusive
  std::set<InrgHistology> histologies;
  std::set<Differentiation> grades;
  std::optional<bool> mycn_amplified;
  std::optional<bool> chr11q_aberration;
  std::optional<Ploidy> ploidy;
};

const std::vector<PublishedRow>& PublishedRows() {
  using S = InrgStage;
  constexpr double kAny = 1e9;
  const std::set<InrgHistology> other = {kGnbN, kNB};  // "any, except GN..."
  const std::set<Differentiation> poor = {kPoor, kUndiff};
  static const auto* rows = new std::vector<PublishedRow>{
      {'A', {S::kL1, S::kL2}, 0, kAny, {kGnMat}, {}, {}, {}, {}},
      {'B', {S::kL1}, 0, kAny, other, {}, false, {}, {}},
      {'K', {S::kL1}, 0, kAny, other, {}, true, {}, {}},
      {'D', {S::kL2}, 0, 18, other, {}, false, false, {}},
      {'G', {S::kL2}, 0, 18, other, {}, false, true, {}},
      {'E', {S::kL2}, 18, kAny, other, {kDiff}, false, false, {}},
      {'H', {S::kL2}, 18, kAny, other, {kDiff}, false, true, {}},
      {'H', {S::kL2}, 18, kAny, other, poor, false, {}, {}},
      {'N', {S::kL2}, 0, kAny, other, {}, true, {}, {}},
      {'F', {S::kM}, 0, 18, {}, {}, false, {}, Ploidy::kHyperdiploid},
      {'I', {S::kM}, 0, 12, {}, {}, false, {}, Ploidy::kDiploid},
      {'J', {S::kM}, 12, 18, {}, {}, false, {}, Ploidy::kDiploid},
      {'O', {S::kM}, 0, 18, {}, {}, true, {}, {}},
      {'P', {S::kM}, 18, kAny, {}, {}, {}, {}, {}},
      {'C', {S::kMS}, 0, 18, {}, {}, false, false, {}},
      {'Q', {S::kMS}, 0, 18, {}, {}, false, true, {}},
      {'R', {S::kMS}, 0, 18, {}, {}, true, {}, {}},
  };
  return *rows;
}

bool Matches(const PublishedRow& row, const Inputs& in) {
  return row.stages.count(*in.stage) && *in.age_months >= row.min_age &&
         *in.age_months < row.max_age &&
         (row.histologies.empty() || row.histologies.count(*in.histology)) &&
         (row.grades.empty() || row.grades.count(*in.differentiation)) &&
         (!row.mycn_amplified || *row.mycn_amplified == *in.mycn_amplified) &&
         (!row.chr11q_aberration ||
          *row.chr11q_aberration == *in.chr11q_aberration) &&
         (!row.ploidy || *row.ploidy == *in.ploidy);
}

// Every combination of the discrete inputs (ages on both sides of each cut
// point) falls in exactly one published row, and the classifier agrees;
// the only exception is stage MS at 18 months or more, which is no stage.
TEST(InrgRiskTest, EveryCombinationGivesExactlyOneCell) {
  const std::vector<InrgStage> stages = {InrgStage::kL1, InrgStage::kL2,
                                         InrgStage::kM, InrgStage::kMS};
  const std::vector<double> ages = {0, 11.9, 12, 17.9, 18, 216};
  const std::vector<InrgHistology> histologies = {kGnMat, kGnbN, kNB};
  const std::vector<Differentiation> grades = {kUndiff, kPoor, kDiff};
  const std::vector<Ploidy> ploidies = {Ploidy::kHyperdiploid,
                                        Ploidy::kDiploid};
  std::map<char, int> hits;
  int combinations = 0;
  for (InrgStage stage : stages) {
    for (double age : ages) {
      for (InrgHistology histology : histologies) {
        for (Differentiation grade : grades) {
          for (bool mycn : {false, true}) {
            for (bool chr11q : {false, true}) {
              for (Ploidy ploidy : ploidies) {
                ++combinations;
                Inputs in{stage, age, histology, grade, mycn, chr11q, ploidy};
                std::vector<char> matched;
                for (const PublishedRow& row : PublishedRows()) {
                  if (Matches(row, in)) matched.push_back(row.cell);
                }
                InrgClassification got = ClassifyInrgRisk(Record(in));
                SCOPED_TRACE(got.rule);
                EXPECT_TRUE(got.missing_inputs.empty());
                if (stage == InrgStage::kMS && age >= 18) {
                  EXPECT_TRUE(matched.empty());
                  EXPECT_FALSE(got.classifiable);
                  continue;
                }
                ASSERT_EQ(matched.size(), 1u);
                EXPECT_TRUE(got.classifiable);
                EXPECT_EQ(got.cell_letter, matched[0]);
                EXPECT_EQ(got.group, InrgCellRiskGroup(matched[0]));
                ++hits[matched[0]];
              }
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(combinations, 4 * 6 * 3 * 3 * 2 * 2 * 2);
  EXPECT_EQ(hits.size(), 16u);  // every cell is reachable
}

}  // namespace
}  // namespace echofed
