#include "site-agent/data/clinical.h"

#include "absl/strings/str_join.h"
#include "gtest/gtest.h"

namespace echofed {
namespace {

TEST(ClinicalTest, ParsesTypedValuesAndExplicitMissing) {
  absl::StatusOr<ClinicalTable> table = ParseClinicalCsv(
      "patient_id,age_months,sex,histology,inrg_stage,mycn,ldh,efs_months,"
      "efs_event,prior_resection_elsewhere\n"
      "P1,14,F,NB,M,amplified,812.5,20.5,1,no\n"
      "P2,NA,M,GNB-nodular,L1,,,,,\n"
      "P3,60,M,GNB-intermixed,L2,not_amplified,250,40,0,yes\n",
      "clinical.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_TRUE(table->errors.empty());
  ASSERT_EQ(table->records.size(), 3u);
  const ClinicalRecord& p1 = table->records.at("P1");
  EXPECT_EQ(*p1.age_months, 14);
  EXPECT_EQ(*p1.histology, Histology::kNB);
  EXPECT_EQ(*p1.inrg_stage, InrgStage::kM);
  EXPECT_TRUE(*p1.mycn_amplified);
  EXPECT_DOUBLE_EQ(*p1.ldh, 812.5);
  EXPECT_TRUE(*p1.efs_event);
  const ClinicalRecord& p2 = table->records.at("P2");
  EXPECT_FALSE(p2.age_months.has_value());
  EXPECT_EQ(*p2.histology, Histology::kGNB);  // nodular maps to GNB
  EXPECT_FALSE(p2.mycn_amplified.has_value());
  EXPECT_EQ(*table->records.at("P3").histology, Histology::kGNB);
  // The INRG category keeps what the three-class label loses.
  EXPECT_EQ(p1.inrg_histology, InrgHistology::kNeuroblastoma);
  EXPECT_EQ(p2.inrg_histology, InrgHistology::kGnbNodular);
  EXPECT_EQ(table->records.at("P3").inrg_histology,
            InrgHistology::kGnMaturingOrGnbIntermixed);
}

TEST(ClinicalTest, HistologyCodesSetTheInrgCategory) {
  absl::StatusOr<ClinicalTable> table = ParseClinicalCsv(
      "patient_id,histology\n"
      "gn,gn\n"  // codes are case-insensitive
      "gnb,GNB\n"
      "int,GNB-intermixed\n"
      "nod,GNB-Nodular\n"
      "nb,NB\n"
      "none,NA\n",
      "clinical.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_TRUE(table->errors.empty());
  const auto& r = table->records;
  EXPECT_EQ(r.at("gn").histology, Histology::kGN);
  EXPECT_EQ(r.at("gn").inrg_histology,
            InrgHistology::kGnMaturingOrGnbIntermixed);
  EXPECT_EQ(r.at("gnb").histology, Histology::kGNB);
  EXPECT_FALSE(r.at("gnb").inrg_histology.has_value());  // unknown for INRG
  EXPECT_EQ(r.at("int").inrg_histology,
            InrgHistology::kGnMaturingOrGnbIntermixed);
  EXPECT_EQ(r.at("nod").inrg_histology, InrgHistology::kGnbNodular);
  EXPECT_EQ(r.at("nb").inrg_histology, InrgHistology::kNeuroblastoma);
  EXPECT_FALSE(r.at("none").histology.has_value());
  EXPECT_FALSE(r.at("none").inrg_histology.has_value());
}

TEST(ClinicalTest, BadRowsAreReportedAndLeftOut) {
  absl::StatusOr<ClinicalTable> table = ParseClinicalCsv(
      "patient_id,age_months,histology,inrg_stage,efs_event\n"
      "P1,fourteen,NB,M,0\n"  // bad type
      "P2,-3,NB,M,0\n"        // out of range
      "P3,10,lymphoma,M,0\n"  // unknown code
      "P4,10,NB,M5,0\n"       // unknown stage
      "P5,10,NB\n"            // too few fields
      "P6,10,NB,L1,0\n"
      "P6,11,NB,L1,0\n"  // duplicate id: both out
      ",10,NB,L1,0\n"    // no id
      "P7,10,GN,L1,1\n"  // event without time
      "P8,10,GN,L1,0\n",
      "clinical.csv");
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->records.size(), 1u);
  EXPECT_TRUE(table->records.count("P8"));
  EXPECT_EQ(table->errors.size(), 8u);
  bool named = false;
  for (const ClinicalRowError& error : table->errors) {
    if (error.patient_id == "P1") {
      named = error.message.find("age_months") != std::string::npos &&
              error.line == 2;
    }
  }
  EXPECT_TRUE(named);
}

TEST(ClinicalTest, UnknownOrMissingColumnsAreFileErrors) {
  EXPECT_EQ(
      ParseClinicalCsv("patient_id,age_monts\nP1,3\n", "c.csv").status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseClinicalCsv("age_months\n3\n", "c.csv").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseClinicalCsv("", "c.csv").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ClinicalTest, WrittenLinesParseBack) {
  ClinicalRecord record;
  record.patient_id = "P,1";  // needs quoting
  record.age_months = 30;
  record.histology = Histology::kGN;
  record.response = Response::kPD;
  record.bone_marrow_metastasis = false;
  ClinicalRecord nodular;
  nodular.patient_id = "P2";
  nodular.histology = Histology::kGNB;
  nodular.inrg_histology = InrgHistology::kGnbNodular;
  ClinicalRecord plain_gnb;
  plain_gnb.patient_id = "P3";
  plain_gnb.histology = Histology::kGNB;
  std::string text = absl::StrJoin(ClinicalColumns(), ",") + "\n" +
                     ClinicalCsvLine(record) + "\n" + ClinicalCsvLine(nodular) +
                     "\n" + ClinicalCsvLine(plain_gnb) + "\n";
  absl::StatusOr<ClinicalTable> table = ParseClinicalCsv(text, "c.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->records.size(), 3u);
  const ClinicalRecord& read = table->records.at("P,1");
  EXPECT_EQ(*read.histology, Histology::kGN);
  EXPECT_EQ(*read.response, Response::kPD);
  EXPECT_FALSE(*read.bone_marrow_metastasis);
  EXPECT_FALSE(read.ldh.has_value());
  EXPECT_EQ(table->records.at("P2").histology, Histology::kGNB);
  EXPECT_EQ(table->records.at("P2").inrg_histology, InrgHistology::kGnbNodular);
  EXPECT_FALSE(table->records.at("P3").inrg_histology.has_value());
}

}  // namespace
}  // namespace echofed
