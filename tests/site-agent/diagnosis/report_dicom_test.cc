#include "site-agent/diagnosis/report_dicom.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/files.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "gtest/gtest.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/data/image_io.h"
#include "tests/testing/fixtures.h"

namespace echofed {
namespace {

using ::echofed::testing::TempDir;

constexpr char kPatientId[] = "P0001";
constexpr char kDigest[] =
    "3f2a9c0d1e4b5a6978685746352413021f0e1d2c3b4a59687766554433221100";

GrayImage Gradient(int width, int height) {
  GrayImage image;
  image.width = width;
  image.height = height;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.pixels.push_back(static_cast<uint8_t>((x * 7 + y * 3) % 256));
    }
  }
  return image;
}

// A report as Diagnose would give it, by hand: no model needed.
DiagnosticReport MakeReport(bool with_heads) {
  DiagnosticReport report;
  report.patient_id = kPatientId;
  report.class_names = {"NB", "GNB", "GN"};
  report.subtype_probabilities = {0.6237, 0.2841, 0.0922};
  report.predicted_class = 0;
  ImageResult image;
  image.file_name = "us-1.dcm";
  image.image = Gradient(40, 30);
  image.subtype_probabilities = report.subtype_probabilities;
  SaliencyMap map;
  map.width = 40;
  map.height = 30;
  for (int i = 0; i < 40 * 30; ++i) map.values.push_back((i % 40) / 39.0f);
  image.saliency = map;
  report.images.push_back(image);
  if (with_heads) {
    report.high_risk = {true, 0.7345};
    report.bone_marrow = {true, 0.2151};
    report.good_response = {true, 0.5809};
    report.prognosis.available = true;
    report.prognosis.risk_score = 0.8123;
  } else {
    report.warnings.push_back(
        "image-only model: risk, metastasis, response and prognosis are not "
        "available");
  }
  report.inrg.classifiable = true;
  report.inrg.group = RiskGroup::kHigh;
  report.inrg.cell_letter = 'P';
  report.provenance.model_name = "resnet18_fusion";
  report.provenance.model_digest_hex = kDigest;
  report.provenance.model_file = "global.efm";
  report.provenance.plan_name = "nbt-subtype";
  report.provenance.global_round = 7;
  report.provenance.generated_at = "2025-03-04T05:06:07Z";
  report.provenance.software_version = "0.9.0";
  return report;
}

struct Source {
  std::string path;
  DicomWriteOptions options;
};

Source WriteSource(const TempDir& dir, const std::string& name,
                   const std::string& patient_id = kPatientId) {
  Source source;
  source.path = dir.Join(name);
  source.options.patient_id = patient_id;
  source.options.patient_name = "DOE^JANE";
  source.options.patient_birth_date = "20210315";
  source.options.patient_sex = "F";
  source.options.study_date = "20250303";
  source.options.study_time = "101500";
  source.options.accession_number = "ACC42";
  source.options.study_instance_uid = DeterministicDicomUid("study 1");
  source.options.series_instance_uid = DeterministicDicomUid("series 1");
  source.options.sop_instance_uid = DeterministicDicomUid(name);
  EXPECT_TRUE(
      WriteDicomUltrasound(source.path, Gradient(40, 30), source.options).ok());
  return source;
}

// dsrdump's text of the document, for failure messages and to check that
// the reference tool reads it without complaint; empty when the tool is
// not installed.
struct Dump {
  bool ran = false;
  int exit_code = 0;
  std::string text;
};

Dump DsrDump(const std::string& path) {
  Dump dump;
  if (access("/usr/bin/dsrdump", X_OK) != 0) return dump;
  FILE* pipe = popen(
      absl::StrCat("/usr/bin/dsrdump +Pl +Pu '", path, "' 2>&1").c_str(), "r");
  if (pipe == nullptr) return dump;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    dump.text.append(buffer, n);
  }
  const int status = pclose(pipe);
  dump.ran = true;
  dump.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return dump;
}

DSRCodedEntryValue Coded(const SrCode& code) {
  return DSRCodedEntryValue(code.value.c_str(), code.scheme.c_str(),
                            code.meaning.c_str());
}

std::string Str(DcmItem* item, const DcmTagKey& key) {
  OFString value;
  item->findAndGetOFStringArray(key, value);
  return value.c_str();
}

class ReportDicomTest : public ::testing::Test {
 protected:
  // Reads the SR at `path` into document_; the dump goes into every failure.
  void ReadSr(const std::string& path) {
    file_ = std::make_unique<DcmFileFormat>();
    ASSERT_TRUE(file_->loadFile(path.c_str()).good());
    ASSERT_EQ(document_.read(*file_->getDataset()), EC_Normal);
  }

  // The item with this concept (first one, deep search from the root).
  const DSRContentItem* Find(const SrCode& code) {
    if (document_.getTree().gotoNamedNode(Coded(code)) == 0) return nullptr;
    return &document_.getTree().getCurrentContentItem();
  }

  void ExpectPercent(const SrCode& code, double probability) {
    SCOPED_TRACE(code.meaning);
    const DSRContentItem* item = Find(code);
    ASSERT_NE(item, nullptr);
    ASSERT_EQ(item->getValueType(), DSRTypes::VT_Num);
    double value = 0;
    ASSERT_TRUE(absl::SimpleAtod(
        item->getNumericValue().getNumericValue().c_str(), &value));
    EXPECT_NEAR(value, 100 * probability, 0.005);
    EXPECT_EQ(item->getNumericValue().getMeasurementUnit().getCodeValue(), "%");
    EXPECT_EQ(item->getNumericValue()
                  .getMeasurementUnit()
                  .getCodingSchemeDesignator(),
              "UCUM");
  }

  // What the file's header holds (DSRDocument read the same dataset).
  std::string Header(const DcmTagKey& key) {
    return Str(file_->getDataset(), key);
  }

  std::string TextOf(const SrCode& code) {
    const DSRContentItem* item = Find(code);
    if (item == nullptr) return "<absent>";
    if (item->getValueType() != DSRTypes::VT_Text) return "<not TEXT>";
    return item->getStringValue().c_str();
  }

  TempDir dir_;
  std::unique_ptr<DcmFileFormat> file_;
  DSRDocument document_;
};

TEST_F(ReportDicomTest, ReadsTheStudyContextOfADicomImage) {
  Source source = WriteSource(dir_, "us-1.dcm");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  EXPECT_EQ(context->patient_id, kPatientId);
  EXPECT_EQ(context->patient_name, "DOE^JANE");
  EXPECT_EQ(context->patient_birth_date, "20210315");
  EXPECT_EQ(context->patient_sex, "F");
  EXPECT_EQ(context->study_instance_uid, source.options.study_instance_uid);
  EXPECT_EQ(context->study_date, "20250303");
  EXPECT_EQ(context->study_time, "101500");
  EXPECT_EQ(context->accession_number, "ACC42");
  ASSERT_EQ(context->images.size(), 1u);
  EXPECT_EQ(context->images[0].file_name, "us-1.dcm");
  EXPECT_EQ(context->images[0].sop_class_uid, UID_UltrasoundImageStorage);
  EXPECT_EQ(context->images[0].sop_instance_uid,
            source.options.sop_instance_uid);
  EXPECT_EQ(context->images[0].series_instance_uid,
            source.options.series_instance_uid);
}

TEST_F(ReportDicomTest, WritesAnSrThatCarriesEveryOutput) {
  Source source = WriteSource(dir_, "us-1.dcm");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  const DiagnosticReport report = MakeReport(/*with_heads=*/true);
  absl::StatusOr<DiagnosisDicomFiles> files =
      WriteDiagnosisDicom(report, *context, dir_.Join("out"));
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(absl::EndsWith(files->sr, "/P0001-diagnose-sr.dcm"));
  ASSERT_EQ(files->gradcam.size(), 1u);
  EXPECT_EQ(files->All().back(), files->sr);
  for (const std::string& path : files->All()) {
    struct stat info;
    ASSERT_EQ(stat(path.c_str(), &info), 0) << path;
    EXPECT_EQ(info.st_mode & 0777, 0600) << path;
  }

  const Dump dump = DsrDump(files->sr);
  SCOPED_TRACE(absl::StrCat("dsrdump of the SR:\n", dump.text));
  // For a reviewer who wants to read the document without a failure.
  if (std::getenv("ECHOFED_PRINT_SR") != nullptr) std::cout << dump.text;
  if (dump.ran) {
    EXPECT_EQ(dump.exit_code, 0);
    // dsrdump reports problems as "W: " and "E: " lines.
    EXPECT_FALSE(absl::StrContains(dump.text, "E: "));
    EXPECT_FALSE(absl::StrContains(dump.text, "W: "));
    EXPECT_TRUE(absl::StrContains(dump.text, "Comprehensive SR"));
  }
  ReadSr(files->sr);
  EXPECT_EQ(document_.getDocumentType(), DSRTypes::DT_ComprehensiveSR);
  EXPECT_TRUE(document_.isValid());

  // Patient and study are the source's; series and instance are new.
  EXPECT_EQ(Header(DCM_PatientID), kPatientId);
  EXPECT_EQ(Header(DCM_PatientName), "DOE^JANE");
  EXPECT_EQ(Header(DCM_PatientBirthDate), "20210315");
  EXPECT_EQ(Header(DCM_PatientSex), "F");
  EXPECT_EQ(Header(DCM_AccessionNumber), "ACC42");
  EXPECT_EQ(Header(DCM_StudyInstanceUID),
            source.options.study_instance_uid.c_str());
  EXPECT_EQ(Header(DCM_StudyDate), "20250303");
  const std::string series = Header(DCM_SeriesInstanceUID);
  const std::string instance = Header(DCM_SOPInstanceUID);
  EXPECT_NE(series, source.options.series_instance_uid);
  EXPECT_NE(instance, source.options.sop_instance_uid);
  EXPECT_TRUE(absl::StartsWith(instance, "2.25.")) << instance;
  EXPECT_EQ(Header(DCM_Modality), "SR");
  EXPECT_EQ(Header(DCM_SeriesDescription), "echofed decision support");
  EXPECT_EQ(Header(DCM_Manufacturer), "echofed");
  EXPECT_EQ(Header(DCM_SoftwareVersions), "0.9.0");
  EXPECT_FALSE(Header(DCM_ContentDate).empty());
  EXPECT_EQ(document_.getCompletionFlag(), DSRTypes::CF_Complete);
  EXPECT_EQ(document_.getVerificationFlag(), DSRTypes::VF_Unverified);

  // The root and the statement.
  document_.getTree().gotoRoot();
  EXPECT_EQ(document_.getTree().getCurrentContentItem().getConceptName(),
            Coded(SrCodeOf(SrConcept::kTitle)));
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kStatement)), kDecisionSupportStatement);

  // Subtype: the finding and one probability per class.
  const DSRContentItem* finding = Find(SrCodeOf(SrConcept::kFinding));
  ASSERT_NE(finding, nullptr);
  EXPECT_EQ(finding->getCodeValue().getCodeValue(), "432328008");
  EXPECT_EQ(finding->getCodeValue().getCodingSchemeDesignator(), "SCT");
  for (size_t i = 0; i < report.class_names.size(); ++i) {
    ExpectPercent(SubtypeProbabilityCode(report.class_names[i]),
                  report.subtype_probabilities[i]);
  }
  // Heads, prognosis, INRG.
  ExpectPercent(SrCodeOf(SrConcept::kHighRiskProbability), 0.7345);
  ExpectPercent(SrCodeOf(SrConcept::kBoneMarrowProbability), 0.2151);
  ExpectPercent(SrCodeOf(SrConcept::kGoodResponseProbability), 0.5809);
  const DSRContentItem* cox = Find(SrCodeOf(SrConcept::kCoxLogRisk));
  ASSERT_NE(cox, nullptr);
  ASSERT_EQ(cox->getValueType(), DSRTypes::VT_Num);
  EXPECT_EQ(cox->getNumericValue().getNumericValue(), "0.8123");
  EXPECT_EQ(cox->getNumericValue().getMeasurementUnit().getCodeValue(), "1");
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kInrgGroup)), DescribeInrg(report.inrg));
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kInrgGroup)), "high (cell P)");

  // Provenance.
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kAlgorithmName)), "resnet18_fusion");
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kAlgorithmVersion)), "echofed 0.9.0");
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kModelDigest)), kDigest);
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kPlanName)), "nbt-subtype");
  const DSRContentItem* round = Find(SrCodeOf(SrConcept::kGlobalRound));
  ASSERT_NE(round, nullptr);
  ASSERT_EQ(round->getValueType(), DSRTypes::VT_Num);
  EXPECT_EQ(round->getNumericValue().getNumericValue(), "7");
  EXPECT_EQ(round->getNumericValue().getMeasurementUnit().getCodeValue(),
            "{round}");
  const DSRContentItem* observer =
      Find(SrCodeOf(SrConcept::kDeviceObserverModelName));
  ASSERT_NE(observer, nullptr);
  EXPECT_EQ(observer->getRelationshipType(), DSRTypes::RT_hasObsContext);

  // References: the source image and the overlay, in the content and in the
  // evidence sequences.
  const DSRContentItem* source_item = Find(SrCodeOf(SrConcept::kSourceImage));
  ASSERT_NE(source_item, nullptr);
  EXPECT_EQ(source_item->getImageReference().getSOPInstanceUID(),
            source.options.sop_instance_uid.c_str());
  EXPECT_TRUE(document_.getCurrentRequestedProcedureEvidence()
                  .gotoItem(UID_UltrasoundImageStorage,
                            source.options.sop_instance_uid.c_str())
                  .good());
  const DSRContentItem* overlay_item =
      Find(SrCodeOf(SrConcept::kGradCamOverlay));
  ASSERT_NE(overlay_item, nullptr);
  EXPECT_EQ(overlay_item->getImageReference().getSOPClassUID(),
            UID_SecondaryCaptureImageStorage);

  // The private scheme is declared.
  DSRCodingSchemeIdentificationList& schemes =
      document_.getCodingSchemeIdentification();
  ASSERT_TRUE(schemes.gotoItem(kEchofedCodingScheme).good());
  OFString name;
  EXPECT_TRUE(
      absl::StrContains(schemes.getCodingSchemeName(name).c_str(), "echofed"));
  EXPECT_TRUE(schemes.gotoItem("SCT").good());

  // Explicit VR little endian.
  EXPECT_EQ(Str(file_->getMetaInfo(), DCM_TransferSyntaxUID),
            UID_LittleEndianExplicitTransferSyntax);
}

TEST_F(ReportDicomTest, GradCamSecondaryCaptureHoldsTheOverlay) {
  Source source = WriteSource(dir_, "us-1.dcm");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  const DiagnosticReport report = MakeReport(/*with_heads=*/true);
  absl::StatusOr<DiagnosisDicomFiles> files =
      WriteDiagnosisDicom(report, *context, dir_.Join("out"));
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->gradcam.size(), 1u);
  EXPECT_TRUE(absl::EndsWith(files->gradcam[0], "/P0001-gradcam-1.dcm"));

  DcmFileFormat sc;
  ASSERT_TRUE(sc.loadFile(files->gradcam[0].c_str()).good());
  DcmDataset* data = sc.getDataset();
  EXPECT_EQ(Str(sc.getMetaInfo(), DCM_TransferSyntaxUID),
            UID_LittleEndianExplicitTransferSyntax);
  EXPECT_EQ(Str(data, DCM_SOPClassUID), UID_SecondaryCaptureImageStorage);
  EXPECT_EQ(Str(data, DCM_PatientID), kPatientId);
  EXPECT_EQ(Str(data, DCM_PatientName), "DOE^JANE");
  EXPECT_EQ(Str(data, DCM_StudyInstanceUID), source.options.study_instance_uid);
  EXPECT_NE(Str(data, DCM_SeriesInstanceUID),
            source.options.series_instance_uid);
  EXPECT_NE(Str(data, DCM_SOPInstanceUID), source.options.sop_instance_uid);
  EXPECT_EQ(Str(data, DCM_SeriesDescription), "echofed Grad-CAM");
  EXPECT_EQ(Str(data, DCM_ConversionType), "WSD");
  EXPECT_EQ(Str(data, DCM_BurnedInAnnotation), "NO");
  EXPECT_EQ(Str(data, DCM_PhotometricInterpretation), "RGB");
  EXPECT_TRUE(
      absl::StrContains(Str(data, DCM_DerivationDescription), "Grad-CAM"));
  DcmItem* reference = nullptr;
  ASSERT_TRUE(
      data->findAndGetSequenceItem(DCM_SourceImageSequence, reference, 0)
          .good());
  EXPECT_EQ(Str(reference, DCM_ReferencedSOPInstanceUID),
            source.options.sop_instance_uid);

  // The SR's overlay reference is this instance; the two series differ.
  ReadSr(files->sr);
  const DSRContentItem* overlay = Find(SrCodeOf(SrConcept::kGradCamOverlay));
  ASSERT_NE(overlay, nullptr);
  EXPECT_EQ(overlay->getImageReference().getSOPInstanceUID(),
            Str(data, DCM_SOPInstanceUID).c_str());
  EXPECT_NE(Header(DCM_SeriesInstanceUID),
            Str(data, DCM_SeriesInstanceUID).c_str());

  // Pixels: SaliencyOverlay's RGB, byte for byte.
  Uint16 rows = 0, columns = 0, samples = 0;
  data->findAndGetUint16(DCM_Rows, rows);
  data->findAndGetUint16(DCM_Columns, columns);
  data->findAndGetUint16(DCM_SamplesPerPixel, samples);
  EXPECT_EQ(rows, 30);
  EXPECT_EQ(columns, 40);
  EXPECT_EQ(samples, 3);
  const Uint8* pixels = nullptr;
  unsigned long count = 0;
  ASSERT_TRUE(data->findAndGetUint8Array(DCM_PixelData, pixels, &count).good());
  const std::vector<uint8_t> expected =
      SaliencyOverlay(report.images[0].image, *report.images[0].saliency);
  ASSERT_GE(count, expected.size());
  EXPECT_EQ(std::vector<uint8_t>(pixels, pixels + expected.size()), expected);
}

TEST_F(ReportDicomTest, HeadsTheModelLacksSayNotAvailable) {
  Source source = WriteSource(dir_, "us-1.dcm");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  DiagnosticReport report = MakeReport(/*with_heads=*/false);
  report.provenance.global_round.reset();
  absl::StatusOr<std::string> sr = BuildDiagnosisSr(report, *context);
  ASSERT_TRUE(sr.ok()) << sr.status();
  const std::string path = dir_.Join("no-heads.dcm");
  {
    FILE* out = fopen(path.c_str(), "wb");
    ASSERT_NE(out, nullptr);
    fwrite(sr->data(), 1, sr->size(), out);
    fclose(out);
  }
  const Dump dump = DsrDump(path);
  SCOPED_TRACE(absl::StrCat("dsrdump of the SR:\n", dump.text));
  if (dump.ran) EXPECT_EQ(dump.exit_code, 0);
  ReadSr(path);
  for (SrConcept head :
       {SrConcept::kHighRiskProbability, SrConcept::kBoneMarrowProbability,
        SrConcept::kGoodResponseProbability, SrConcept::kCoxLogRisk}) {
    EXPECT_EQ(TextOf(SrCodeOf(head)), kNotAvailableFromModel)
        << SrCodeOf(head).meaning;
  }
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kGlobalRound)), "not recorded");
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kWarning)), report.warnings[0]);
  // A warning limits the report: PARTIAL, and says why.
  EXPECT_EQ(document_.getCompletionFlag(), DSRTypes::CF_Partial);
  EXPECT_FALSE(Header(DCM_CompletionFlagDescription).empty());
  EXPECT_EQ(document_.getVerificationFlag(), DSRTypes::VF_Unverified);
}

TEST_F(ReportDicomTest, RefusesImagesThatAreNotDicom) {
  const std::string jpeg = dir_.Join("us-1.jpg");
  ASSERT_TRUE(WriteJpeg(jpeg, Gradient(16, 16), 90).ok());
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(jpeg);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(context.status().message(),
            "results can go to the PACS only for DICOM images of the study: "
            "us-1.jpg is a JPEG");

  const std::string png = dir_.Join("us-2.png");
  ASSERT_TRUE(WritePng(png, Gradient(16, 16)).ok());
  context = ReadStudyContext(png);
  ASSERT_FALSE(context.ok());
  EXPECT_TRUE(absl::StrContains(context.status().message(), "is a PNG"));

  const std::string text = dir_.Join("notes.txt");
  FILE* out = fopen(text.c_str(), "wb");
  ASSERT_NE(out, nullptr);
  fputs("not an image at all", out);
  fclose(out);
  context = ReadStudyContext(text);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), absl::StatusCode::kFailedPrecondition);

  context = ReadStudyContext(dir_.Join("missing.dcm"));
  EXPECT_EQ(context.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ReportDicomTest, RefusesADicomImageWithoutStudyInstanceUid) {
  Source source = WriteSource(dir_, "us-1.dcm");
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile(source.path.c_str()).good());
  delete file.getDataset()->remove(DCM_StudyInstanceUID);
  ASSERT_TRUE(
      file.saveFile(source.path.c_str(), EXS_LittleEndianExplicit).good());
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(context.status().message(),
                                "us-1.dcm has no Study Instance UID"));
}

TEST_F(ReportDicomTest, ImagesOfAnotherPatientAreNamed) {
  const Source first = WriteSource(dir_, "us-1.dcm");
  const Source second = WriteSource(dir_, "us-2.dcm");
  const Source other = WriteSource(dir_, "us-3.dcm", "P0002");
  absl::StatusOr<DicomStudyContext> context =
      ReadStudyContextForImages({first.path, second.path});
  ASSERT_TRUE(context.ok()) << context.status();
  EXPECT_EQ(context->images.size(), 2u);

  context = ReadStudyContextForImages({first.path, second.path, other.path});
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(context.status().message(), "us-3.dcm"));
  EXPECT_TRUE(absl::StrContains(context.status().message(), "us-1.dcm"));
  // Identifiers stay out of messages.
  EXPECT_FALSE(absl::StrContains(context.status().message(), "P0002"));
}

TEST_F(ReportDicomTest, RefusesAReportForAnotherPatient) {
  Source source = WriteSource(dir_, "us-1.dcm", "P0002");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  const DiagnosticReport report = MakeReport(/*with_heads=*/true);
  absl::StatusOr<DiagnosisDicomFiles> files =
      WriteDiagnosisDicom(report, *context, dir_.Join("out"));
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kFailedPrecondition);
  // Nothing was written for the PACS client to send.
  struct stat info;
  EXPECT_NE(stat(dir_.Join("out/P0001-diagnose-sr.dcm").c_str(), &info), 0);

  DiagnosisDicomOptions options;
  options.require_matching_patient_id = false;
  files = WriteDiagnosisDicom(report, *context, dir_.Join("out"), options);
  EXPECT_TRUE(files.ok()) << files.status();
}

TEST_F(ReportDicomTest, ReferencesTheFrameOfACineLoopWhenKnown) {
  Source source = WriteSource(dir_, "us-1.dcm");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  EXPECT_EQ(context->images[0].number_of_frames, 1);
  context->images[0].referenced_frame = 3;
  const DiagnosticReport report = MakeReport(/*with_heads=*/true);
  absl::StatusOr<DiagnosisDicomFiles> files =
      WriteDiagnosisDicom(report, *context, dir_.Join("out"));
  ASSERT_TRUE(files.ok()) << files.status();
  DcmFileFormat sc;
  ASSERT_TRUE(sc.loadFile(files->gradcam[0].c_str()).good());
  DcmItem* reference = nullptr;
  ASSERT_TRUE(
      sc.getDataset()
          ->findAndGetSequenceItem(DCM_SourceImageSequence, reference, 0)
          .good());
  EXPECT_EQ(Str(reference, DCM_ReferencedFrameNumber), "3");
  ReadSr(files->sr);
  const DSRContentItem* item = Find(SrCodeOf(SrConcept::kSourceImage));
  ASSERT_NE(item, nullptr);
  const DSRImageFrameList& frames = item->getImageReference().getFrameList();
  ASSERT_EQ(frames.getNumberOfItems(), 1u);
  EXPECT_EQ(frames.getItem(1), 3);
}

TEST_F(ReportDicomTest, OwnTextFollowsTheSourceCharacterSet) {
  Source source = WriteSource(dir_, "us-1.dcm");
  absl::StatusOr<DicomStudyContext> context = ReadStudyContext(source.path);
  ASSERT_TRUE(context.ok()) << context.status();
  ASSERT_EQ(context->specific_character_set, "ISO_IR 100");
  DiagnosticReport report = MakeReport(/*with_heads=*/true);
  report.warnings = {"age \xE2\x89\xA5 18 months"};  // UTF-8 "greater or equal"

  // Latin-1 cannot hold the UTF-8 sign: it becomes '?' rather than mojibake.
  absl::StatusOr<std::string> sr = BuildDiagnosisSr(report, *context);
  ASSERT_TRUE(sr.ok()) << sr.status();
  std::string path = dir_.Join("latin1.dcm");
  ASSERT_TRUE(WriteFileAtomically(path, *sr, 0600).ok());
  ReadSr(path);
  EXPECT_EQ(Header(DCM_SpecificCharacterSet), "ISO_IR 100");
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kWarning)), "age ??? 18 months");

  // A source without a character set is ASCII: UTF-8 keeps it and the sign.
  context->specific_character_set.clear();
  sr = BuildDiagnosisSr(report, *context);
  ASSERT_TRUE(sr.ok()) << sr.status();
  path = dir_.Join("utf8.dcm");
  ASSERT_TRUE(WriteFileAtomically(path, *sr, 0600).ok());
  ReadSr(path);
  EXPECT_EQ(Header(DCM_SpecificCharacterSet), "ISO_IR 192");
  EXPECT_EQ(TextOf(SrCodeOf(SrConcept::kWarning)), report.warnings[0]);
}

TEST(ReportDicomUidTest, FreshUidsAreValidAndDistinct) {
  const std::string a = NewDicomUid();
  const std::string b = NewDicomUid();
  EXPECT_NE(a, b);
  EXPECT_TRUE(absl::StartsWith(a, "2.25."));
  EXPECT_LE(a.size(), 64u);
  const std::string rooted = NewDicomUid("1.2.826.0.1.3680043.10.999");
  EXPECT_TRUE(absl::StartsWith(rooted, "1.2.826.0.1.3680043.10.999."));
  EXPECT_LE(rooted.size(), 64u);
}

}  // namespace
}  // namespace echofed
