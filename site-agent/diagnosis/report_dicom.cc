// The study context from a source image, the Grad-CAM Secondary Capture,
// UIDs and files. The SR document itself is built in report_dicom_sr.cc.

#include "site-agent/diagnosis/report_dicom.h"

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/numeric/int128.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcostrmb.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcwcache.h"
#include "dcmtk/oflog/oflog.h"
#include "site-agent/diagnosis/report_dicom_internal.h"

namespace echofed {
namespace report_dicom_internal {

void QuietDcmtk() {
  static std::once_flag once;
  std::call_once(once, [] { OFLog::configure(OFLogger::OFF_LOG_LEVEL); });
}

absl::StatusOr<std::string> SerialiseExplicitLittle(DcmFileFormat& file,
                                                    const std::string& what) {
  std::string out;
  std::vector<char> buffer(64 * 1024);
  DcmOutputBufferStream stream(buffer.data(),
                               static_cast<offile_off_t>(buffer.size()));
  DcmWriteCache cache;
  file.transferInit();
  OFCondition status;
  // DCMTK writes until the buffer is full and asks to be emptied
  // (EC_StreamNotifyClient), then continues where it stopped.
  do {
    status =
        file.write(stream, EXS_LittleEndianExplicit, EET_ExplicitLength, &cache,
                   EGL_recalcGL, EPD_noChange, 0, 0, 0, EWM_fileformat);
    void* data = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(data, length);
    out.append(static_cast<const char*>(data), static_cast<size_t>(length));
  } while (status == EC_StreamNotifyClient);
  file.transferEnd();
  if (status.bad()) {
    return absl::InternalError(absl::StrCat(
        what, ": DICOM serialisation failed (", status.text(), ")"));
  }
  return out;
}

void ContentDateTime(const std::string& generated_at_utc, std::string* date,
                     std::string* time) {
  std::tm utc{};
  std::time_t when = 0;
  // "2025-01-31T12:34:56Z" (fractions of a second, if any, are dropped).
  if (strptime(generated_at_utc.c_str(), "%Y-%m-%dT%H:%M:%S", &utc) !=
      nullptr) {
    when = timegm(&utc);
  } else {
    when = std::time(nullptr);
  }
  std::tm local{};
  localtime_r(&when, &local);
  char buffer[16];
  std::strftime(buffer, sizeof(buffer), "%Y%m%d", &local);
  *date = buffer;
  std::strftime(buffer, sizeof(buffer), "%H%M%S", &local);
  *time = buffer;
}

absl::Status CheckReportAgainstContext(const DiagnosticReport& report,
                                       const DicomStudyContext& context,
                                       bool options_require) {
  if (report.class_names.size() != report.subtype_probabilities.size() ||
      report.predicted_class < 0 ||
      report.predicted_class >= static_cast<int>(report.class_names.size())) {
    return absl::InvalidArgumentError(
        "DICOM results: the report's classes, probabilities and predicted "
        "class do not match");
  }
  if (context.study_instance_uid.empty()) {
    return absl::FailedPreconditionError(
        "DICOM results: no study to file the results under (empty Study "
        "Instance UID)");
  }
  if (options_require && report.patient_id != context.patient_id) {
    return absl::FailedPreconditionError(
        "results can go to the PACS only under the patient they are for: the "
        "patient named for the diagnosis is not the Patient ID of its DICOM "
        "images (another patient's clinical record may have been used); "
        "check --patient against the images");
  }
  return absl::OkStatus();
}

}  // namespace report_dicom_internal

namespace {

using report_dicom_internal::QuietDcmtk;

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// What a non-DICOM file is, by its first bytes, for the refusal message;
// empty when it may be DICOM.
std::string NonDicomKind(const std::string& head) {
  auto starts = [&head](const char* magic, size_t length) {
    return head.size() >= length &&
           std::memcmp(head.data(), magic, length) == 0;
  };
  if (starts("\xFF\xD8\xFF", 3)) return "a JPEG";
  if (starts("\x89PNG\r\n\x1A\n", 8)) return "a PNG";
  if (starts("BM", 2)) return "a BMP";
  if (starts("GIF8", 4)) return "a GIF";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "a TIFF";
  return "";
}

absl::Status Refuse(const std::string& path, const std::string& why) {
  return absl::FailedPreconditionError(absl::StrCat(
      "results can go to the PACS only for DICOM images of the study: ",
      BaseName(path), " ", why));
}

std::string Get(DcmDataset* dataset, const DcmTagKey& key) {
  OFString value;
  // The whole value, backslashes included: a multi-valued Specific
  // Character Set must be copied as it is.
  if (dataset->findAndGetOFStringArray(key, value).bad()) return "";
  return std::string(value.c_str(), value.length());
}

absl::Status Put(DcmItem* item, const DcmTagKey& key, const std::string& value,
                 const std::string& what) {
  // Values are copied from the source as they are (a PACS accepted them);
  // DCMTK's VR check would refuse some that sites really have.
  if (item->putAndInsertString(key, value.c_str(), OFFalse).bad()) {
    return absl::InternalError(absl::StrCat(
        what, ": element ", DcmTag(key).getTagName(), " not written"));
  }
  return absl::OkStatus();
}

// The index of the context image that report.images[index] was read from:
// the same position when the lists line up (the caller passed the same
// paths), else the only image of that name; -1 when unknown.
int SourceImageIndex(const DiagnosticReport& report, int index,
                     const DicomStudyContext& context) {
  const std::string& name = report.images[index].file_name;
  if (report.images.size() == context.images.size() &&
      context.images[index].file_name == name) {
    return index;
  }
  int found = -1;
  for (size_t i = 0; i < context.images.size(); ++i) {
    if (context.images[i].file_name != name) continue;
    if (found >= 0) return -1;  // two files of that name: ambiguous
    found = static_cast<int>(i);
  }
  return found;
}

}  // namespace

absl::StatusOr<DicomStudyContext> ReadStudyContext(
    const std::string& dicom_path) {
  QuietDcmtk();
  std::ifstream in(dicom_path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", dicom_path, ": ", std::strerror(errno)));
  }
  std::string head(132, '\0');
  in.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(in.gcount()));
  in.close();
  if (std::string kind = NonDicomKind(head); !kind.empty()) {
    return Refuse(dicom_path, absl::StrCat("is ", kind));
  }
  DcmFileFormat file;
  // Values longer than 4 KiB (the pixel data) stay on disk: only the header
  // is needed here.
  if (file.loadFile(dicom_path.c_str(), EXS_Unknown, EGL_noChange, 4096,
                    ERM_autoDetect)
          .bad()) {
    return Refuse(dicom_path, "is not a DICOM file");
  }
  DcmDataset* dataset = file.getDataset();
  DicomStudyContext context;
  context.patient_id = Get(dataset, DCM_PatientID);
  context.patient_name = Get(dataset, DCM_PatientName);
  context.patient_birth_date = Get(dataset, DCM_PatientBirthDate);
  context.patient_sex = Get(dataset, DCM_PatientSex);
  context.issuer_of_patient_id = Get(dataset, DCM_IssuerOfPatientID);
  context.study_instance_uid = Get(dataset, DCM_StudyInstanceUID);
  context.study_id = Get(dataset, DCM_StudyID);
  context.study_date = Get(dataset, DCM_StudyDate);
  context.study_time = Get(dataset, DCM_StudyTime);
  context.accession_number = Get(dataset, DCM_AccessionNumber);
  context.referring_physician_name = Get(dataset, DCM_ReferringPhysicianName);
  context.study_description = Get(dataset, DCM_StudyDescription);
  context.specific_character_set = Get(dataset, DCM_SpecificCharacterSet);
  DicomInstanceRef image;
  image.file_name = BaseName(dicom_path);
  image.study_instance_uid = context.study_instance_uid;
  image.series_instance_uid = Get(dataset, DCM_SeriesInstanceUID);
  image.sop_class_uid = Get(dataset, DCM_SOPClassUID);
  image.sop_instance_uid = Get(dataset, DCM_SOPInstanceUID);
  Sint32 frames = 1;
  if (dataset->findAndGetSint32(DCM_NumberOfFrames, frames).good() &&
      frames > 1) {
    image.number_of_frames = frames;
  }
  if (context.study_instance_uid.empty()) {
    return Refuse(dicom_path, "has no Study Instance UID");
  }
  if (context.patient_id.empty()) {
    // The PACS would file the results under no patient at all.
    return Refuse(dicom_path, "has no Patient ID");
  }
  if (image.sop_class_uid.empty() || image.sop_instance_uid.empty() ||
      dataset->tagExists(DCM_PixelData) == OFFalse) {
    return Refuse(dicom_path, "is not a DICOM image object");
  }
  context.images.push_back(std::move(image));
  return context;
}

absl::Status CheckSamePatient(const std::vector<DicomStudyContext>& contexts) {
  if (contexts.empty()) return absl::OkStatus();
  const DicomStudyContext& first = contexts.front();
  auto name = [](const DicomStudyContext& context) {
    return context.images.empty() ? std::string("an image")
                                  : context.images.front().file_name;
  };
  for (size_t i = 1; i < contexts.size(); ++i) {
    const DicomStudyContext& other = contexts[i];
    const bool issuers_differ =
        !first.issuer_of_patient_id.empty() &&
        !other.issuer_of_patient_id.empty() &&
        first.issuer_of_patient_id != other.issuer_of_patient_id;
    if (other.patient_id != first.patient_id || issuers_differ) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the images are not all of one patient: ", name(other), " has ",
          issuers_differ ? "an Issuer of Patient ID" : "a Patient ID",
          " other than ", name(first), "'s; diagnose one patient at a time"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<DicomStudyContext> ReadStudyContextForImages(
    const std::vector<std::string>& dicom_paths) {
  if (dicom_paths.empty()) {
    return absl::InvalidArgumentError("DICOM results: no source images");
  }
  std::vector<DicomStudyContext> contexts;
  for (const std::string& path : dicom_paths) {
    absl::StatusOr<DicomStudyContext> context = ReadStudyContext(path);
    if (!context.ok()) return context.status();
    contexts.push_back(std::move(*context));
  }
  if (absl::Status status = CheckSamePatient(contexts); !status.ok()) {
    return status;
  }
  DicomStudyContext result = contexts.front();
  for (size_t i = 1; i < contexts.size(); ++i) {
    result.images.push_back(contexts[i].images.front());
  }
  return result;
}

std::string NewDicomUid(const std::string& root) {
  if (!root.empty()) {
    char uid[100];
    return dcmGenerateUniqueIdentifier(uid, root.c_str());
  }
  // A version 4 (random) UUID as one decimal integer under 2.25.
  std::random_device device;
  auto word = [&device] {
    return (static_cast<uint64_t>(device()) << 32) | device();
  };
  uint64_t high = word();
  uint64_t low = word();
  high = (high & ~uint64_t{0xF000}) | uint64_t{0x4000};
  low = (low & ~(uint64_t{3} << 62)) | (uint64_t{2} << 62);
  std::ostringstream decimal;
  decimal << absl::MakeUint128(high, low);
  return absl::StrCat("2.25.", decimal.str());
}

absl::StatusOr<std::string> BuildGradCamSecondaryCapture(
    const DiagnosticReport& report, int image_index,
    const DicomStudyContext& context, const SecondaryCaptureOptions& options) {
  using report_dicom_internal::kGradCamSeriesDescription;
  using report_dicom_internal::kManufacturer;
  QuietDcmtk();
  const std::string what = "Grad-CAM secondary capture";
  if (absl::Status status = report_dicom_internal::CheckReportAgainstContext(
          report, context, /*options_require=*/false);
      !status.ok()) {
    return status;
  }
  if (image_index < 0 ||
      image_index >= static_cast<int>(report.images.size()) ||
      !report.images[image_index].saliency) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": image ", image_index + 1,
                     " of the report has no saliency map"));
  }
  const ImageResult& image = report.images[image_index];
  const SaliencyMap& map = *image.saliency;
  if (map.width != image.image.width || map.height != image.image.height ||
      image.image.width <= 0 || image.image.height <= 0 ||
      image.image.width > 65535 || image.image.height > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": the saliency map of image ", image_index + 1,
                     " does not match its image or is not a DICOM image size"));
  }
  const std::vector<uint8_t> rgb = SaliencyOverlay(image.image, map);

  std::string content_date, content_time;
  report_dicom_internal::ContentDateTime(report.provenance.generated_at,
                                         &content_date, &content_time);
  const std::string series_uid = options.series_instance_uid.empty()
                                     ? NewDicomUid(options.uid_root)
                                     : options.series_instance_uid;
  const std::string sop_uid = options.sop_instance_uid.empty()
                                  ? NewDicomUid(options.uid_root)
                                  : options.sop_instance_uid;
  const std::string& predicted = report.class_names[report.predicted_class];
  const std::string derivation = absl::StrCat(
      "Grad-CAM saliency of the echofed model ", report.provenance.model_name,
      " for its most likely subtype (", predicted,
      "), blended over the image region the model saw (cropped to the "
      "region of interest, if any); blue to red is low to high. Decision "
      "support, not a diagnosis.");

  DcmFileFormat file;
  DcmDataset* dataset = file.getDataset();
  const std::pair<DcmTagKey, std::string> strings[] = {
      {DCM_SpecificCharacterSet, context.specific_character_set},
      {DCM_ImageType, "DERIVED\\SECONDARY"},
      {DCM_SOPClassUID, UID_SecondaryCaptureImageStorage},
      {DCM_SOPInstanceUID, sop_uid},
      {DCM_StudyDate, context.study_date},
      {DCM_StudyTime, context.study_time},
      {DCM_ContentDate, content_date},
      {DCM_ContentTime, content_time},
      {DCM_AccessionNumber, context.accession_number},
      {DCM_Modality, "OT"},
      // Made by software at a workstation from images already in the study.
      {DCM_ConversionType, "WSD"},
      {DCM_Manufacturer, kManufacturer},
      {DCM_ReferringPhysicianName, context.referring_physician_name},
      {DCM_StudyDescription, context.study_description},
      {DCM_SeriesDescription, kGradCamSeriesDescription},
      {DCM_DerivationDescription, derivation},
      {DCM_PatientName, context.patient_name},
      {DCM_PatientID, context.patient_id},
      {DCM_IssuerOfPatientID, context.issuer_of_patient_id},
      {DCM_PatientBirthDate, context.patient_birth_date},
      {DCM_PatientSex, context.patient_sex},
      {DCM_SecondaryCaptureDeviceManufacturer, kManufacturer},
      {DCM_SecondaryCaptureDeviceManufacturerModelName,
       report.provenance.model_name},
      {DCM_SecondaryCaptureDeviceSoftwareVersions,
       report.provenance.software_version},
      {DCM_StudyInstanceUID, context.study_instance_uid},
      {DCM_SeriesInstanceUID, series_uid},
      {DCM_StudyID, context.study_id},
      {DCM_SeriesNumber, absl::StrCat(options.series_number)},
      {DCM_InstanceNumber, absl::StrCat(options.instance_number)},
      {DCM_PatientOrientation, ""},
      // Type 2C; a validator cannot tell whether the body part is paired.
      {DCM_Laterality, ""},
      // Nothing is drawn on the pixels: no text, no identifiers.
      {DCM_BurnedInAnnotation, "NO"},
      {DCM_LossyImageCompression, "00"},
      {DCM_ImageComments, absl::StrCat("echofed Grad-CAM (", predicted,
                                       "); decision support, not a diagnosis")},
      {DCM_PhotometricInterpretation, "RGB"},
  };
  for (const auto& [key, value] : strings) {
    if (key == DCM_SpecificCharacterSet && value.empty()) continue;
    if (key == DCM_IssuerOfPatientID && value.empty()) continue;
    if (key == DCM_StudyDescription && value.empty()) continue;
    if (absl::Status status = Put(dataset, key, value, what); !status.ok()) {
      return status;
    }
  }
  if (const int source = SourceImageIndex(report, image_index, context);
      source >= 0) {
    const DicomInstanceRef& ref = context.images[source];
    DcmItem* item = nullptr;
    if (dataset->findOrCreateSequenceItem(DCM_SourceImageSequence, item, -2)
            .bad()) {
      return absl::InternalError(
          absl::StrCat(what, ": Source Image Sequence not written"));
    }
    DcmItem* purpose = nullptr;
    if (item->findOrCreateSequenceItem(DCM_PurposeOfReferenceCodeSequence,
                                       purpose, -2)
            .bad()) {
      return absl::InternalError(
          absl::StrCat(what, ": Purpose of Reference not written"));
    }
    for (const auto& [item_of, key, value] :
         {std::make_tuple(item, DCM_ReferencedSOPClassUID, ref.sop_class_uid),
          std::make_tuple(item, DCM_ReferencedSOPInstanceUID,
                          ref.sop_instance_uid),
          // CID 7202: the overlay is an image processing result of it.
          std::make_tuple(purpose, DCM_CodeValue, std::string("121322")),
          std::make_tuple(purpose, DCM_CodingSchemeDesignator,
                          std::string("DCM")),
          std::make_tuple(
              purpose, DCM_CodeMeaning,
              std::string("Source image for image processing operation"))}) {
      if (absl::Status status = Put(item_of, key, value, what); !status.ok()) {
        return status;
      }
    }
    if (ref.referenced_frame > 0) {
      if (absl::Status status = Put(item, DCM_ReferencedFrameNumber,
                                    absl::StrCat(ref.referenced_frame), what);
          !status.ok()) {
        return status;
      }
    }
  }
  const std::pair<DcmTagKey, Uint16> numbers[] = {
      {DCM_SamplesPerPixel, 3},
      {DCM_PlanarConfiguration, 0},  // R G B interleaved per pixel
      {DCM_Rows, static_cast<Uint16>(image.image.height)},
      {DCM_Columns, static_cast<Uint16>(image.image.width)},
      {DCM_BitsAllocated, 8},
      {DCM_BitsStored, 8},
      {DCM_HighBit, 7},
      {DCM_PixelRepresentation, 0},
  };
  for (const auto& [key, value] : numbers) {
    if (dataset->putAndInsertUint16(key, value).bad()) {
      return absl::InternalError(absl::StrCat(
          what, ": element ", DcmTag(key).getTagName(), " not written"));
    }
  }
  if (dataset
          ->putAndInsertUint8Array(DCM_PixelData, rgb.data(),
                                   static_cast<unsigned long>(rgb.size()))
          .bad()) {
    return absl::InternalError(absl::StrCat(what, ": pixel data not written"));
  }
  return report_dicom_internal::SerialiseExplicitLittle(file, what);
}

std::vector<std::string> DiagnosisDicomFiles::All() const {
  std::vector<std::string> all = gradcam;
  all.push_back(sr);
  return all;
}

absl::StatusOr<DiagnosisDicomFiles> WriteDiagnosisDicom(
    const DiagnosticReport& report, const DicomStudyContext& context,
    const std::string& out_dir, const DiagnosisDicomOptions& options) {
  if (absl::Status status = report_dicom_internal::CheckReportAgainstContext(
          report, context, options.require_matching_patient_id);
      !status.ok()) {
    return status;
  }
  std::string stem = report.patient_id;
  for (char& c : stem) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '_' && c != '.') c = '_';
  }
  if (stem.empty() || stem[0] == '.') stem = "patient" + stem;

  // Everything is built before anything is written, so that a failure
  // leaves no partial set for the PACS client to send.
  SecondaryCaptureOptions sc_options;
  sc_options.uid_root = options.uid_root;
  sc_options.series_instance_uid = NewDicomUid(options.uid_root);
  SrOptions sr_options;
  sr_options.uid_root = options.uid_root;
  sr_options.require_matching_patient_id = options.require_matching_patient_id;
  std::vector<std::pair<std::string, std::string>> outputs;  // path, bytes
  for (size_t i = 0; i < report.images.size(); ++i) {
    if (!report.images[i].saliency) continue;
    sc_options.sop_instance_uid = NewDicomUid(options.uid_root);
    sc_options.instance_number = static_cast<int>(outputs.size()) + 1;
    absl::StatusOr<std::string> sc = BuildGradCamSecondaryCapture(
        report, static_cast<int>(i), context, sc_options);
    if (!sc.ok()) return sc.status();
    const std::string path =
        absl::StrCat(out_dir, "/", stem, "-gradcam-", i + 1, ".dcm");
    DicomInstanceRef ref;
    ref.file_name = BaseName(path);
    ref.study_instance_uid = context.study_instance_uid;
    ref.series_instance_uid = sc_options.series_instance_uid;
    ref.sop_class_uid = UID_SecondaryCaptureImageStorage;
    ref.sop_instance_uid = sc_options.sop_instance_uid;
    sr_options.gradcam_instances.push_back(std::move(ref));
    outputs.emplace_back(path, std::move(*sc));
  }
  absl::StatusOr<std::string> sr =
      BuildDiagnosisSr(report, context, sr_options);
  if (!sr.ok()) return sr.status();

  if (absl::Status status = MakeDirectories(out_dir); !status.ok()) {
    return status;
  }
  DiagnosisDicomFiles files;
  for (const auto& [path, bytes] : outputs) {
    if (absl::Status status = WriteFileAtomically(path, bytes, 0600);
        !status.ok()) {
      return status;
    }
    files.gradcam.push_back(path);
  }
  files.sr = absl::StrCat(out_dir, "/", stem, "-diagnose-sr.dcm");
  if (absl::Status status = WriteFileAtomically(files.sr, *sr, 0600);
      !status.ok()) {
    return status;
  }
  return files;
}

}  // namespace echofed
