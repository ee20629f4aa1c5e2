// The diagnosis as a Comprehensive SR document (DCMTK's dcmsr). The layout
// and the codes are described in report_dicom.h.

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/diagnosis/report_dicom.h"
#include "site-agent/diagnosis/report_dicom_internal.h"

namespace echofed {

namespace {

constexpr char kDcm[] = "DCM";
constexpr char kUcum[] = "UCUM";
constexpr char kSct[] = "SCT";

// Code values are SH (16 characters at most): the class name, upper case,
// reduced to letters, digits and '-'.
std::string CodeSuffix(const std::string& class_name, size_t room) {
  std::string suffix;
  for (char c : class_name) {
    if (suffix.size() == room) break;
    suffix += absl::ascii_isalnum(c) ? absl::ascii_toupper(c) : '-';
  }
  return suffix.empty() ? "X" : suffix;
}

}  // namespace

SrCode SrCodeOf(SrConcept concept_name) {
  const std::string own = kEchofedCodingScheme;
  switch (concept_name) {
    case SrConcept::kTitle:
      return {"REPORT", own, "Neuroblastic tumour decision support report"};
    case SrConcept::kObserverType:
      return {"121005", kDcm, "Observer Type"};
    case SrConcept::kDevice:
      return {"121007", kDcm, "Device"};
    case SrConcept::kDeviceObserverUid:
      return {"121012", kDcm, "Device Observer UID"};
    case SrConcept::kDeviceObserverName:
      return {"121013", kDcm, "Device Observer Name"};
    case SrConcept::kDeviceObserverManufacturer:
      return {"121014", kDcm, "Device Observer Manufacturer"};
    case SrConcept::kDeviceObserverModelName:
      return {"121015", kDcm, "Device Observer Model Name"};
    case SrConcept::kStatement:
      return {"STATEMENT", own, "Decision support statement"};
    case SrConcept::kWarning:
      return {"WARNING", own, "Limitation of this report"};
    case SrConcept::kSubtypeSection:
      return {"SUBTYPE", own, "Neuroblastic tumour subtype (model)"};
    case SrConcept::kFinding:
      return {"121071", kDcm, "Finding"};
    case SrConcept::kRiskSection:
      return {"RISK", own, "Risk estimates (model and INRG rule)"};
    case SrConcept::kHighRiskProbability:
      return {"P-HIGH-RISK", own, "Probability of high-risk disease"};
    case SrConcept::kBoneMarrowProbability:
      return {"P-BM-METASTASIS", own, "Probability of bone marrow metastasis"};
    case SrConcept::kGoodResponseProbability:
      return {"P-GOOD-RESPONSE", own,
              "Probability of good response to treatment"};
    case SrConcept::kCoxLogRisk:
      return {"COX-LOG-RISK", own, "Prognosis Cox log-risk score"};
    case SrConcept::kInrgGroup:
      return {"INRG-GROUP", own, "INRG pretreatment risk group (rule)"};
    case SrConcept::kAlgorithmSection:
      return {"ALGORITHM", own, "Model provenance"};
    case SrConcept::kAlgorithmName:
      return {"111001", kDcm, "Algorithm Name"};
    case SrConcept::kAlgorithmVersion:
      return {"111003", kDcm, "Algorithm Version"};
    case SrConcept::kModelDigest:
      return {"MODEL-SHA256", own, "Model file SHA-256 digest"};
    case SrConcept::kPlanName:
      return {"PLAN", own, "Federated study plan"};
    case SrConcept::kGlobalRound:
      return {"GLOBAL-ROUND", own, "Federated global round of the model"};
    case SrConcept::kGeneratedAt:
      return {"GENERATED-AT", own, "Report generated at (UTC)"};
    case SrConcept::kImagesSection:
      return {"IMAGES", own, "Images"};
    case SrConcept::kSourceImage:
      return {"121324", kDcm, "Source Image"};
    case SrConcept::kGradCamOverlay:
      return {"GRADCAM", own, "Grad-CAM overlay"};
    case SrConcept::kUnitPercent:
      return {"%", kUcum, "percent"};
    case SrConcept::kUnitNoUnits:
      return {"1", kUcum, "no units"};
    case SrConcept::kUnitRound:
      return {"{round}", kUcum, "round"};
  }
  return {"UNKNOWN", own, "unknown"};
}

SrCode SubtypeCode(const std::string& class_name) {
  // SNOMED CT 432328008 |Neuroblastoma (disorder)|, cross-checked in NCBI
  // MedGen (C0027819), the Monarch disease ontology's SNOMED mapping and
  // BioPortal. Ganglioneuroblastoma and ganglioneuroma could not be
  // verified with the same certainty (disorder vs morphology concept), so
  // they, and any other class a plan names, use the project's scheme.
  if (class_name == "NB") return {"432328008", kSct, "Neuroblastoma"};
  if (class_name == "GNB") {
    return {"CLS-GNB", kEchofedCodingScheme, "Ganglioneuroblastoma"};
  }
  if (class_name == "GN") {
    return {"CLS-GN", kEchofedCodingScheme, "Ganglioneuroma"};
  }
  return {absl::StrCat("CLS-", CodeSuffix(class_name, 12)),
          kEchofedCodingScheme, absl::StrCat("Subtype ", class_name)};
}

SrCode SubtypeProbabilityCode(const std::string& class_name) {
  return {absl::StrCat("P-", CodeSuffix(class_name, 14)), kEchofedCodingScheme,
          absl::StrCat("Probability of subtype ", class_name)};
}

namespace {

using report_dicom_internal::kManufacturer;
using report_dicom_internal::kSrSeriesDescription;

DSRCodedEntryValue Coded(const SrCode& code) {
  // Not checked: the meanings of the project's codes may exceed what the
  // check allows for some VRs, and every code here is a constant.
  return DSRCodedEntryValue(code.value.c_str(), code.scheme.c_str(),
                            code.meaning.c_str(), DSRTypes::CVT_auto, OFFalse);
}

// Adds content items below the cursor's node. The tree's cursor stays on
// the current parent between calls; Open/Close descend into and leave a
// CONTAINER.
class TreeBuilder {
 public:
  // `ascii_only`: the document's character set (the source's) cannot hold
  // our UTF-8 text, so its other bytes become '?'.
  TreeBuilder(DSRDocumentTree& tree, bool ascii_only)
      : tree_(tree), ascii_only_(ascii_only) {}

  absl::Status Open(DSRTypes::E_RelationshipType relation,
                    const SrCode& concept_name) {
    return Add(relation, DSRTypes::VT_Container, concept_name);
  }
  void Close() { tree_.goUp(); }

  absl::Status Text(DSRTypes::E_RelationshipType relation,
                    const SrCode& concept_name, const std::string& value) {
    if (absl::Status s = Add(relation, DSRTypes::VT_Text, concept_name);
        !s.ok()) {
      return s;
    }
    std::string text = value;
    if (ascii_only_) {
      for (char& c : text) {
        if (static_cast<unsigned char>(c) >= 0x80) c = '?';
      }
    }
    return Done(
        tree_.getCurrentContentItem().setStringValue(text.c_str(), OFFalse),
        concept_name);
  }

  absl::Status Uid(DSRTypes::E_RelationshipType relation,
                   const SrCode& concept_name, const std::string& value) {
    if (absl::Status s = Add(relation, DSRTypes::VT_UIDRef, concept_name);
        !s.ok()) {
      return s;
    }
    return Done(tree_.getCurrentContentItem().setStringValue(value.c_str()),
                concept_name);
  }

  absl::Status Code(DSRTypes::E_RelationshipType relation,
                    const SrCode& concept_name, const SrCode& value) {
    if (absl::Status s = Add(relation, DSRTypes::VT_Code, concept_name);
        !s.ok()) {
      return s;
    }
    return Done(
        tree_.getCurrentContentItem().setCodeValue(Coded(value), OFFalse),
        concept_name);
  }

  absl::Status Num(const SrCode& concept_name, const std::string& value,
                   const SrCode& unit) {
    if (absl::Status s =
            Add(DSRTypes::RT_contains, DSRTypes::VT_Num, concept_name);
        !s.ok()) {
      return s;
    }
    return Done(tree_.getCurrentContentItem().setNumericValue(
                    DSRNumericMeasurementValue(value.c_str(), Coded(unit))),
                concept_name);
  }

  absl::Status Image(const SrCode& concept_name,
                     const DicomInstanceRef& image) {
    if (absl::Status s =
            Add(DSRTypes::RT_contains, DSRTypes::VT_Image, concept_name);
        !s.ok()) {
      return s;
    }
    DSRImageReferenceValue reference(image.sop_class_uid.c_str(),
                                     image.sop_instance_uid.c_str());
    if (image.referenced_frame > 0) {
      reference.getFrameList().addItem(
          static_cast<Sint32>(image.referenced_frame));
    }
    return Done(tree_.getCurrentContentItem().setImageReference(reference),
                concept_name);
  }

 private:
  // Leaves the cursor on the new item (a CONTAINER's children go below it).
  absl::Status Add(DSRTypes::E_RelationshipType relation,
                   DSRTypes::E_ValueType type, const SrCode& concept_name) {
    const DSRTypes::E_AddMode mode = relation == DSRTypes::RT_isRoot
                                         ? DSRTypes::AM_afterCurrent
                                         : DSRTypes::AM_belowCurrent;
    if (tree_.addContentItem(relation, type, mode) == 0) {
      return absl::InternalError(absl::StrCat(
          "diagnosis SR: DCMTK refused the item '", concept_name.meaning, "' (",
          DSRTypes::valueTypeToDefinedTerm(type), ", ",
          DSRTypes::relationshipTypeToDefinedTerm(relation), ")"));
    }
    if (tree_.getCurrentContentItem()
            .setConceptName(Coded(concept_name), OFFalse)
            .bad()) {
      return absl::InternalError(absl::StrCat(
          "diagnosis SR: concept name '", concept_name.meaning, "' refused"));
    }
    return absl::OkStatus();
  }

  // Sets the value's outcome, then returns the cursor to the parent.
  absl::Status Done(const OFCondition& set, const SrCode& concept_name) {
    tree_.goUp();
    if (set.bad()) {
      return absl::InternalError(absl::StrCat("diagnosis SR: value of '",
                                              concept_name.meaning,
                                              "' refused (", set.text(), ")"));
    }
    return absl::OkStatus();
  }

  DSRDocumentTree& tree_;
  const bool ascii_only_;
};

std::string Percent(double probability) {
  return absl::StrFormat("%.2f", 100 * probability);
}

// A head's probability, or the words that say the model has no such head.
absl::Status AddHead(TreeBuilder& tree, SrConcept concept_name,
                     const BinaryHeadResult& head) {
  if (!head.available) {
    return tree.Text(DSRTypes::RT_contains, SrCodeOf(concept_name),
                     kNotAvailableFromModel);
  }
  return tree.Num(SrCodeOf(concept_name), Percent(head.probability),
                  SrCodeOf(SrConcept::kUnitPercent));
}

absl::Status AddContent(TreeBuilder& tree, const DiagnosticReport& report,
                        const DicomStudyContext& context,
                        const SrOptions& options) {
  constexpr auto kContains = DSRTypes::RT_contains;
  constexpr auto kObservation = DSRTypes::RT_hasObsContext;
  const Provenance& provenance = report.provenance;
  std::vector<absl::Status> results;
  auto add = [&results](absl::Status status) {
    results.push_back(std::move(status));
  };
  add(tree.Open(DSRTypes::RT_isRoot, SrCodeOf(SrConcept::kTitle)));
  // The model is the observer (TID 1004's device items): nobody has read
  // this document yet.
  add(tree.Code(kObservation, SrCodeOf(SrConcept::kObserverType),
                SrCodeOf(SrConcept::kDevice)));
  add(tree.Uid(kObservation, SrCodeOf(SrConcept::kDeviceObserverUid),
               DeterministicDicomUid(absl::StrCat(
                   "echofed model ", provenance.model_digest_hex))));
  add(tree.Text(kObservation, SrCodeOf(SrConcept::kDeviceObserverName),
                "echofed"));
  add(tree.Text(kObservation, SrCodeOf(SrConcept::kDeviceObserverManufacturer),
                kManufacturer));
  add(tree.Text(kObservation, SrCodeOf(SrConcept::kDeviceObserverModelName),
                provenance.model_name));

  add(tree.Text(kContains, SrCodeOf(SrConcept::kStatement),
                kDecisionSupportStatement));
  for (const std::string& warning : report.warnings) {
    add(tree.Text(kContains, SrCodeOf(SrConcept::kWarning), warning));
  }

  add(tree.Open(kContains, SrCodeOf(SrConcept::kSubtypeSection)));
  add(tree.Code(kContains, SrCodeOf(SrConcept::kFinding),
                SubtypeCode(report.class_names[report.predicted_class])));
  for (size_t i = 0; i < report.class_names.size(); ++i) {
    add(tree.Num(SubtypeProbabilityCode(report.class_names[i]),
                 Percent(report.subtype_probabilities[i]),
                 SrCodeOf(SrConcept::kUnitPercent)));
  }
  tree.Close();

  add(tree.Open(kContains, SrCodeOf(SrConcept::kRiskSection)));
  add(AddHead(tree, SrConcept::kHighRiskProbability, report.high_risk));
  add(AddHead(tree, SrConcept::kBoneMarrowProbability, report.bone_marrow));
  add(AddHead(tree, SrConcept::kGoodResponseProbability, report.good_response));
  if (report.prognosis.available) {
    add(tree.Num(SrCodeOf(SrConcept::kCoxLogRisk),
                 absl::StrFormat("%.6g", report.prognosis.risk_score),
                 SrCodeOf(SrConcept::kUnitNoUnits)));
  } else {
    add(tree.Text(kContains, SrCodeOf(SrConcept::kCoxLogRisk),
                  kNotAvailableFromModel));
  }
  add(tree.Text(kContains, SrCodeOf(SrConcept::kInrgGroup),
                DescribeInrg(report.inrg)));
  tree.Close();

  add(tree.Open(kContains, SrCodeOf(SrConcept::kAlgorithmSection)));
  add(tree.Text(kContains, SrCodeOf(SrConcept::kAlgorithmName),
                provenance.model_name));
  add(tree.Text(kContains, SrCodeOf(SrConcept::kAlgorithmVersion),
                absl::StrCat("echofed ", provenance.software_version)));
  add(tree.Text(kContains, SrCodeOf(SrConcept::kModelDigest),
                provenance.model_digest_hex));
  if (!provenance.plan_name.empty()) {
    add(tree.Text(kContains, SrCodeOf(SrConcept::kPlanName),
                  provenance.plan_name));
  }
  if (provenance.global_round) {
    add(tree.Num(SrCodeOf(SrConcept::kGlobalRound),
                 absl::StrCat(*provenance.global_round),
                 SrCodeOf(SrConcept::kUnitRound)));
  } else {
    add(tree.Text(kContains, SrCodeOf(SrConcept::kGlobalRound),
                  "not recorded"));
  }
  add(tree.Text(kContains, SrCodeOf(SrConcept::kGeneratedAt),
                provenance.generated_at));
  tree.Close();

  bool has_images = !options.gradcam_instances.empty();
  for (const DicomInstanceRef& image : context.images) {
    has_images |= !image.sop_instance_uid.empty();
  }
  if (has_images) {
    add(tree.Open(kContains, SrCodeOf(SrConcept::kImagesSection)));
    for (const DicomInstanceRef& image : context.images) {
      if (image.sop_class_uid.empty() || image.sop_instance_uid.empty()) {
        continue;
      }
      add(tree.Image(SrCodeOf(SrConcept::kSourceImage), image));
    }
    for (const DicomInstanceRef& image : options.gradcam_instances) {
      add(tree.Image(SrCodeOf(SrConcept::kGradCamOverlay), image));
    }
    tree.Close();
  }
  tree.Close();
  for (const absl::Status& status : results) {
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

bool HasNonAscii(const DiagnosticReport& report) {
  std::vector<std::string> texts = report.warnings;
  texts.push_back(DescribeInrg(report.inrg));
  texts.push_back(report.provenance.model_name);
  texts.push_back(report.provenance.plan_name);
  texts.push_back(report.provenance.software_version);
  for (const std::string& name : report.class_names) texts.push_back(name);
  for (const std::string& text : texts) {
    for (char c : text) {
      if (static_cast<unsigned char>(c) >= 0x80) return true;
    }
  }
  return false;
}

absl::Status DeclareCodingSchemes(DSRDocument& document) {
  DSRCodingSchemeIdentificationList& schemes =
      document.getCodingSchemeIdentification();
  struct Scheme {
    const char* designator;
    const char* uid;
    const char* name;
    const char* organization;
  };
  const Scheme list[] = {
      {kDcm, "1.2.840.10008.2.16.4", "DICOM Controlled Terminology", "DICOM"},
      {kSct, "2.16.840.1.113883.6.96", "SNOMED CT", "SNOMED International"},
      {kUcum, "2.16.840.1.113883.6.8", "Unified Code for Units of Measure",
       "Regenstrief Institute"},
      // Private: no UID is registered for it. The name tells a reader of
      // the PACS where the codes are defined.
      {kEchofedCodingScheme, "",
       "echofed decision-support concepts (site-agent/diagnosis/"
       "report_dicom.h)",
       "echofed project"},
  };
  for (const Scheme& scheme : list) {
    if (schemes
            .addItem(scheme.designator, scheme.uid, scheme.name,
                     scheme.organization)
            .bad()) {
      return absl::InternalError(absl::StrCat("diagnosis SR: coding scheme ",
                                              scheme.designator, " refused"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> BuildDiagnosisSr(const DiagnosticReport& report,
                                             const DicomStudyContext& context,
                                             const SrOptions& options) {
  report_dicom_internal::QuietDcmtk();
  if (absl::Status status = report_dicom_internal::CheckReportAgainstContext(
          report, context, options.require_matching_patient_id);
      !status.ok()) {
    return status;
  }
  DSRDocument document(DSRTypes::DT_ComprehensiveSR);
  if (!context.specific_character_set.empty()) {
    document.setSpecificCharacterSet(context.specific_character_set.c_str(),
                                     OFFalse);
  } else if (HasNonAscii(report)) {
    // No character set in the source means ASCII there, which UTF-8 keeps.
    document.setSpecificCharacterSet("ISO_IR 192");
  }
  if (document
          .createNewSeriesInStudy(context.study_instance_uid.c_str(), OFFalse)
          .bad()) {
    return absl::InternalError("diagnosis SR: the study's UID was refused");
  }
  // Patient and study exactly as the source holds them (not re-checked: the
  // PACS accepted them once and must match them again).
  document.setPatientID(context.patient_id.c_str(), OFFalse);
  document.setPatientName(context.patient_name.c_str(), OFFalse);
  document.setPatientBirthDate(context.patient_birth_date.c_str(), OFFalse);
  document.setPatientSex(context.patient_sex.c_str(), OFFalse);
  document.setIssuerOfPatientID(context.issuer_of_patient_id.c_str(), OFFalse);
  document.setStudyID(context.study_id.c_str(), OFFalse);
  document.setStudyDate(context.study_date.c_str(), OFFalse);
  document.setStudyTime(context.study_time.c_str(), OFFalse);
  document.setAccessionNumber(context.accession_number.c_str(), OFFalse);
  document.setReferringPhysicianName(context.referring_physician_name.c_str(),
                                     OFFalse);
  document.setStudyDescription(context.study_description.c_str(), OFFalse);
  document.setSeriesDescription(kSrSeriesDescription);
  document.setSeriesNumber(absl::StrCat(options.series_number).c_str());
  document.setInstanceNumber(absl::StrCat(options.instance_number).c_str());
  document.setManufacturer(kManufacturer);
  document.setManufacturerModelName(report.provenance.model_name.c_str(),
                                    OFFalse);
  document.setSoftwareVersions(report.provenance.software_version.c_str(),
                               OFFalse);
  std::string content_date, content_time;
  report_dicom_internal::ContentDateTime(report.provenance.generated_at,
                                         &content_date, &content_time);
  document.setContentDate(content_date.c_str());
  document.setContentTime(content_time.c_str());

  // The source's character set is kept, so that the patient's name reads
  // as it does in the images; our own text is UTF-8 (ASCII in practice).
  const std::string& charset = context.specific_character_set;
  TreeBuilder tree(document.getTree(),
                   !charset.empty() && charset != "ISO_IR 192");
  if (absl::Status status = AddContent(tree, report, context, options);
      !status.ok()) {
    return status;
  }
  if (absl::Status status = DeclareCodingSchemes(document); !status.ok()) {
    return status;
  }
  // Evidence: every instance the content references must be listed, the
  // images the diagnosis read as this procedure's evidence, the overlays
  // we made as other evidence.
  for (const DicomInstanceRef& image : context.images) {
    if (image.sop_instance_uid.empty() || image.series_instance_uid.empty()) {
      continue;
    }
    document.getCurrentRequestedProcedureEvidence().addItem(
        image.study_instance_uid.c_str(), image.series_instance_uid.c_str(),
        image.sop_class_uid.c_str(), image.sop_instance_uid.c_str(), OFFalse);
  }
  for (const DicomInstanceRef& image : options.gradcam_instances) {
    document.getPertinentOtherEvidence().addItem(
        image.study_instance_uid.c_str(), image.series_instance_uid.c_str(),
        image.sop_class_uid.c_str(), image.sop_instance_uid.c_str(), OFFalse);
  }
  // COMPLETE: the document holds every output the model gives; a limit the
  // report names (a warning) makes it PARTIAL, with the reason. Verification
  // stays UNVERIFIED, DCMTK's default: this is decision support that no
  // clinician has attested, and a VERIFIED flag would present the model's
  // output as a signed report. No Preliminary Flag: the model's output will
  // not be amended (a review makes a new document), and FINAL would read as
  // a final clinical report.
  if (report.warnings.empty()) {
    document.completeDocument("all outputs of the model are reported");
  } else {
    document.setCompletionFlagDescription("limited: see the report's warnings");
  }

  DcmFileFormat file;
  DcmDataset* dataset = file.getDataset();
  if (OFCondition status = document.write(*dataset); status.bad()) {
    return absl::InternalError(
        absl::StrCat("diagnosis SR: DCMTK could not write the document (",
                     status.text(), ")"));
  }
  // DCMTK made the series and instance UIDs under its own root; ours (the
  // site's root, or given ones) replace them before the file exists.
  const std::string series_uid = options.series_instance_uid.empty()
                                     ? NewDicomUid(options.uid_root)
                                     : options.series_instance_uid;
  const std::string sop_uid = options.sop_instance_uid.empty()
                                  ? NewDicomUid(options.uid_root)
                                  : options.sop_instance_uid;
  if (dataset->putAndInsertString(DCM_SeriesInstanceUID, series_uid.c_str())
          .bad() ||
      dataset->putAndInsertString(DCM_SOPInstanceUID, sop_uid.c_str()).bad()) {
    return absl::InternalError("diagnosis SR: UIDs not written");
  }
  return report_dicom_internal::SerialiseExplicitLittle(file, "diagnosis SR");
}

}  // namespace echofed
