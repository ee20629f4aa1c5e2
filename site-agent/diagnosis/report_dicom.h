#ifndef ECHOFED_SITE_AGENT_DIAGNOSIS_REPORT_DICOM_H_
#define ECHOFED_SITE_AGENT_DIAGNOSIS_REPORT_DICOM_H_

// The diagnosis as DICOM objects for the patient's study in the PACS
// (`echofed-agent diagnose --to-pacs`): a Comprehensive SR document with the
// model's outputs, and one Secondary Capture image per Grad-CAM overlay.
// Both carry the patient and study of the source images, with new series and
// instances, so that a viewer shows them under the study they came from.
// Sending them is the PACS client's job (site-agent/pacs/pacs_client.h,
// Store takes the paths WriteDiagnosisDicom returns).
//
// The SR document (one root CONTAINER, content in this order):
//   observation context: the device observer (the model);
//   the decision-support statement (TEXT), first so that no reader misses it;
//   the warnings (TEXT, one each);
//   "Neuroblastic tumour subtype": the most likely subtype as "Finding"
//     (DCM 121071), coded in SNOMED CT where a code was verified, and one NUM
//     per class, the probability in percent (UCUM "%");
//   "Risk estimates": high risk, bone marrow metastasis and good response
//     probabilities (NUM, %), the Cox log-risk score (NUM, UCUM "1"), each a
//     TEXT "not available from this model" when the model has no such head,
//     never a number; the INRG rule's group (TEXT, DescribeInrg);
//   "Model provenance": Algorithm Name (DCM 111001), Algorithm Version
//     (DCM 111003), the model's SHA-256, its plan, the global round
//     (NUM, UCUM "{round}") and the report's creation time;
//   "Images": the source images (IMAGE, DCM 121324 "Source Image") and the
//     Grad-CAM overlays, when their UIDs are known.
// Concepts without a standard code use the private coding scheme
// kEchofedCodingScheme ("99ECHOFED"), declared in the Coding Scheme
// Identification Sequence; SrCodeOf below gives every code used.
//
// Everything here identifies the patient and stays at the site until the
// PACS client stores it; files are written with mode 0600. Errors:
//   FAILED_PRECONDITION  a source that is not a DICOM image of a study
//                        (JPEG, PNG, no Study Instance UID), images of
//                        different patients, a report whose patient is not
//                        the images' patient;
//   INVALID_ARGUMENT     an inconsistent report (sizes that do not match);
//   NOT_FOUND            a missing source file;
//   INTERNAL             DCMTK refused to build or write an object.
// Error messages name files, never patient identifiers.
//
// Pure functions; thread-safe (each call owns its DCMTK objects).

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "site-agent/diagnosis/diagnostic_report.h"

namespace echofed {

// The project's private coding scheme designator. DICOM reserves
// designators that begin with "99" for private schemes (PS3.16 Section 8).
inline constexpr char kEchofedCodingScheme[] = "99ECHOFED";

// A coded concept: code value, coding scheme designator, code meaning.
struct SrCode {
  std::string value;
  std::string scheme;
  std::string meaning;
};

// The concepts of the SR document (see the layout above).
enum class SrConcept {
  kTitle,                       // root CONTAINER
  kObserverType,                // DCM 121005
  kDevice,                      // DCM 121007, the observer type's value
  kDeviceObserverUid,           // DCM 121012
  kDeviceObserverName,          // DCM 121013
  kDeviceObserverManufacturer,  // DCM 121014
  kDeviceObserverModelName,     // DCM 121015
  kStatement,                   // the decision-support statement
  kWarning,
  kSubtypeSection,
  kFinding,  // DCM 121071
  kRiskSection,
  kHighRiskProbability,
  kBoneMarrowProbability,
  kGoodResponseProbability,
  kCoxLogRisk,
  kInrgGroup,
  kAlgorithmSection,
  kAlgorithmName,     // DCM 111001
  kAlgorithmVersion,  // DCM 111003
  kModelDigest,
  kPlanName,
  kGlobalRound,
  kGeneratedAt,
  kImagesSection,
  kSourceImage,  // DCM 121324
  kGradCamOverlay,
  kUnitPercent,  // UCUM "%"
  kUnitNoUnits,  // UCUM "1"
  kUnitRound,    // UCUM "{round}"
};
SrCode SrCodeOf(SrConcept concept_name);

// A subtype as the value of "Finding": SNOMED CT where the code was
// verified (NB: 432328008 "Neuroblastoma"), else 99ECHOFED "CLS-<name>".
SrCode SubtypeCode(const std::string& class_name);
// The NUM concept of a subtype's probability: 99ECHOFED "P-<name>".
SrCode SubtypeProbabilityCode(const std::string& class_name);

// One composite instance (an image the diagnosis read, or an object we
// made), as the SR references it.
struct DicomInstanceRef {
  std::string file_name;  // base name; matches ImageResult::file_name
  std::string study_instance_uid;
  std::string series_instance_uid;
  std::string sop_class_uid;
  std::string sop_instance_uid;
  // Frames of the object (1 for a single-frame image).
  int number_of_frames = 1;
  // The frame the diagnosis read, counted from 1, for a multi-frame
  // object; 0 references the object as a whole. ReadStudyContext leaves it
  // 0 (the frame selection is the plan's): the caller sets it when it
  // knows, and the SR and the overlay then reference that frame.
  int referenced_frame = 0;
};

// The patient and study the results belong to, copied from the source
// images, plus the images themselves so the results can reference them.
struct DicomStudyContext {
  // Patient module; values exactly as the source holds them.
  std::string patient_id;
  std::string patient_name;
  std::string patient_birth_date;
  std::string patient_sex;
  std::string issuer_of_patient_id;
  // General Study module.
  std::string study_instance_uid;
  std::string study_id;
  std::string study_date;
  std::string study_time;
  std::string accession_number;
  std::string referring_physician_name;
  std::string study_description;
  // (0008,0005) of the source, so that names keep their encoding; empty
  // means the default repertoire (ASCII).
  std::string specific_character_set;
  // The source images, in the order given; the first is in this study,
  // others may be in other studies of the same patient.
  std::vector<DicomInstanceRef> images;
};

// The study context of one DICOM image of the patient. FAILED_PRECONDITION
// "results can go to the PACS only for DICOM images of the study: <file> is
// a JPEG" (a PNG, not a DICOM file, has no Study Instance UID, ...);
// NOT_FOUND for a missing file.
absl::StatusOr<DicomStudyContext> ReadStudyContext(
    const std::string& dicom_path);

// The context of several images of one patient: the study of the first;
// every image is read and listed in `images`. FAILED_PRECONDITION as above
// for any non-DICOM image, and when an image's Patient ID differs from the
// first image's (the message names both files, not the IDs).
absl::StatusOr<DicomStudyContext> ReadStudyContextForImages(
    const std::vector<std::string>& dicom_paths);

// Checks that the images share the first image's Patient ID (and, for
// patients with an Issuer of Patient ID, its issuer): FAILED_PRECONDITION
// naming the first file that differs.
absl::Status CheckSamePatient(const std::vector<DicomStudyContext>& contexts);

// A new UID under `root` (DCMTK's generator: root, host, process and time
// parts), or, for an empty root, "2.25." and a random UUID as ITU-T X.667
// allows without a registered root.
std::string NewDicomUid(const std::string& root = "");

struct SrOptions {
  // Root for the new UIDs that are not given below (see NewDicomUid).
  std::string uid_root;
  // Empty: fresh UIDs.
  std::string series_instance_uid;
  std::string sop_instance_uid;
  int series_number = 9001;
  int instance_number = 1;
  // Refuse (FAILED_PRECONDITION) when the report's patient id is not the
  // images' Patient ID: the clinical record was looked up by the report's
  // id, and a mismatch may mean another patient's record was fused with
  // these images. Turn off only where the agent's ids are known to be
  // pseudonyms of the PACS ids.
  bool require_matching_patient_id = true;
  // The Grad-CAM overlays made for this report, referenced from the SR.
  std::vector<DicomInstanceRef> gradcam_instances;
};

// The SR document as a DICOM Part 10 file in memory (explicit VR little
// endian).
absl::StatusOr<std::string> BuildDiagnosisSr(const DiagnosticReport& report,
                                             const DicomStudyContext& context,
                                             const SrOptions& options = {});

struct SecondaryCaptureOptions {
  std::string uid_root;
  std::string series_instance_uid;  // empty: fresh
  std::string sop_instance_uid;     // empty: fresh
  int series_number = 9002;
  int instance_number = 1;
};

// The Grad-CAM overlay of report.images[image_index] (SaliencyOverlay's
// RGB pixels, nothing drawn on them) as a Secondary Capture Image Storage
// object, Part 10 in memory, explicit VR little endian, uncompressed.
// INVALID_ARGUMENT when that image has no saliency map.
absl::StatusOr<std::string> BuildGradCamSecondaryCapture(
    const DiagnosticReport& report, int image_index,
    const DicomStudyContext& context,
    const SecondaryCaptureOptions& options = {});

// Paths of what WriteDiagnosisDicom wrote.
struct DiagnosisDicomFiles {
  std::string sr;
  std::vector<std::string> gradcam;  // one per image with a saliency map
  // Every file, SR last (what PacsClient::Store takes): a viewer that
  // resolves the SR's references finds the overlays already stored.
  std::vector<std::string> All() const;
};

struct DiagnosisDicomOptions {
  std::string uid_root;
  bool require_matching_patient_id = true;
};

// Writes <out_dir>/<patient>-diagnose-sr.dcm and one
// <patient>-gradcam-<n>.dcm per image with a saliency map (n counts the
// report's images from 1), mode 0600, each atomically. The SC images share
// one new series ("echofed Grad-CAM"), the SR has its own ("echofed
// decision support") and references them.
absl::StatusOr<DiagnosisDicomFiles> WriteDiagnosisDicom(
    const DiagnosticReport& report, const DicomStudyContext& context,
    const std::string& out_dir, const DiagnosisDicomOptions& options = {});

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_DIAGNOSIS_REPORT_DICOM_H_
