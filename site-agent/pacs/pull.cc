#include "site-agent/pacs/pull.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/sha256.h"
#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcfilefo.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/csv.h"
#include "site-agent/data/dicom_reader.h"

namespace echofed {
namespace {

namespace fs = std::filesystem;

// Where the pull records the digests of the tables it wrote, so that a
// later pull can tell its own manifest from a hand-made or edited one.
constexpr char kWrittenTablesFile[] = "pacs/written-tables.txt";
constexpr char kManifestFile[] = "manifest.csv";
constexpr char kClinicalFile[] = "clinical.csv";

std::string FileDigestHex(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFileToString(path);
  if (!content.ok()) return "";
  return HexDigest(Sha256::Of(*content));
}

std::map<std::string, std::string> ReadWrittenTables(
    const std::string& data_dir) {
  std::map<std::string, std::string> digests;
  absl::StatusOr<std::string> text =
      ReadFileToString(data_dir + "/" + kWrittenTablesFile);
  if (!text.ok()) return digests;
  for (const std::string& line : CsvLines(*text)) {
    size_t space = line.find(' ');
    if (space != std::string::npos) {
      digests[line.substr(0, space)] = line.substr(space + 1);
    }
  }
  return digests;
}

absl::Status CheckTablesAreOurs(const std::string& data_dir, bool replace) {
  if (replace) return absl::OkStatus();
  std::map<std::string, std::string> written = ReadWrittenTables(data_dir);
  for (const char* name : {kManifestFile, kClinicalFile}) {
    std::string path = data_dir + "/" + name;
    if (!fs::exists(path)) continue;
    auto it = written.find(name);
    if (it == written.end() || it->second != FileDigestHex(path)) {
      return absl::FailedPreconditionError(absl::StrCat(
          path,
          " was not written by the last `pacs pull` (a hand-made table, or "
          "one edited since); the pull writes this file itself. Move it "
          "away, or pass --replace-tables to overwrite it"));
    }
  }
  return absl::OkStatus();
}

// Leftovers of WriteFileAtomically in a pull that was killed: never a
// complete instance, so they go.
void RemoveTemporaryFiles(const std::string& pacs_dir) {
  std::error_code error;
  for (fs::recursive_directory_iterator it(pacs_dir, error), end;
       !error && it != end; it.increment(error)) {
    if (it->is_regular_file() &&
        absl::StrContains(it->path().filename().string(), ".tmp.")) {
      fs::remove(it->path(), error);
    }
  }
}

// A UID as a file name: a PACS that sends anything but digits and dots
// must not choose where the file goes.
bool IsSafeUid(const std::string& uid) {
  return !uid.empty() && uid.size() <= 64 &&
         uid.find_first_not_of("0123456789.") == std::string::npos &&
         uid.front() != '.';
}

// The agent's own results in the study (`diagnose --to-pacs`: the SR and
// the Grad-CAM Secondary Captures, Manufacturer "echofed"): never training
// data, whatever modality filter the site set. Only the header is read.
bool IsEchofedResultObject(const std::string& path) {
  DcmFileFormat file;
  if (file.loadFileUntilTag(path.c_str(), EXS_Unknown, EGL_noChange,
                            DCM_MaxReadLength, ERM_autoDetect, DCM_PixelData)
          .bad()) {
    return false;
  }
  OFString manufacturer, series;
  file.getDataset()->findAndGetOFString(DCM_Manufacturer, manufacturer);
  file.getDataset()->findAndGetOFString(DCM_SeriesDescription, series);
  return manufacturer == "echofed" &&
         absl::StartsWith(series.c_str(), "echofed ");
}

// Problems that concern the PACS as a whole, not this patient.
bool IsConnectionProblem(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

std::string RowName(const WorklistEntry& entry) {
  return absl::StrCat(
      "worklist line ", entry.line, " (",
      entry.patient_id.empty() ? "by accession_number" : "by patient_id", ")");
}

struct PatientOutcome {
  const WorklistEntry* entry = nullptr;
  std::string id;
  std::vector<std::string> images;  // relative to the data folder
  bool left_out = false;
  // The pull stopped inside this patient: not in this run's list, and the
  // rows of the last manifest stand for it (as for a patient not reached).
  bool interrupted = false;
};

class Pull {
 public:
  Pull(PacsClient& client, const Worklist& worklist, const PullOptions& options)
      : client_(client), worklist_(worklist), options_(options) {}

  absl::StatusOr<PullResult> Run();

 private:
  void Progress(const std::string& line) {
    if (options_.progress) options_.progress(line);
  }
  void Problem(const WorklistEntry& entry, const std::string& patient,
               const std::string& message, bool left_out) {
    result_.problems.push_back({entry.line, patient, message, left_out});
    Progress(absl::StrCat(RowName(entry),
                          patient.empty() ? "" : " patient " + patient, ": ",
                          message));
  }
  bool StopRequested() {
    return options_.stop_requested && options_.stop_requested();
  }
  // After a connection problem with one patient: whether the PACS still
  // answers at all. If not, the pull stops rather than wait out the timeout
  // once per remaining patient.
  bool PacsStillAnswers(const WorklistEntry& entry,
                        const absl::Status& status) {
    absl::Status echo = client_.Echo();
    if (echo.ok()) return true;
    Stop(entry.line, absl::StrCat(client_.Describe(),
                                  " stopped answering: ", status.message()));
    return false;
  }
  void Stop(int line, const std::string& reason) {
    result_.stopped_early = true;
    result_.resume_line = line;
    result_.stop_reason = reason;
  }
  // One worklist row; false when the whole pull must stop.
  bool PullPatient(const WorklistEntry& entry);
  absl::Status WriteTables();

  PacsClient& client_;
  const Worklist& worklist_;
  const PullOptions& options_;
  PullResult result_;
  std::vector<PatientOutcome> outcomes_;
  std::map<std::string, size_t> outcome_of_id_;
};

bool Pull::PullPatient(const WorklistEntry& entry) {
  PacsPatientQuery query;
  query.patient_id = entry.patient_id;
  query.accession_number = entry.accession_number;
  query.modality = options_.modality;
  query.study_date_from = options_.study_date_from;
  query.study_date_to = options_.study_date_to;
  absl::StatusOr<std::vector<PacsInstance>> found =
      client_.FindInstances(query);
  if (absl::IsPermissionDenied(found.status())) {
    Stop(entry.line, std::string(found.status().message()));
    return false;
  }
  if (!found.ok()) {
    Problem(entry, "",
            absl::StrCat("search failed: ", found.status().message()), true);
    return !IsConnectionProblem(found.status()) ||
           PacsStillAnswers(entry, found.status());
  }
  if (found->empty()) {
    Problem(
        entry, "",
        absl::StrCat(
            "no ", options_.modality.empty() ? "" : options_.modality + " ",
            "instances in the PACS for this row",
            options_.study_date_from.empty() && options_.study_date_to.empty()
                ? ""
                : " in the study date range"),
        true);
    return true;
  }
  std::set<std::string> pacs_patients;
  for (const PacsInstance& instance : *found) {
    pacs_patients.insert(instance.patient_id);
  }
  if (pacs_patients.size() != 1 || pacs_patients.begin()->empty()) {
    Problem(entry, "",
            pacs_patients.size() != 1
                ? absl::StrCat("the search returned instances of ",
                               pacs_patients.size(),
                               " different patients; not mixing them")
                : "the PACS gave no PatientID for this row's instances",
            true);
    return true;
  }
  const std::string id =
      ManifestPatientId(options_.pseudonym_key, *pacs_patients.begin());
  if (auto it = outcome_of_id_.find(id); it != outcome_of_id_.end()) {
    PatientOutcome& earlier = outcomes_[it->second];
    Problem(entry, id,
            absl::StrCat("the same patient as worklist line ",
                         earlier.entry->line, "; one row per patient"),
            true);
    if (!earlier.left_out) {
      earlier.left_out = true;
      Problem(*earlier.entry, id,
              absl::StrCat("the same patient as worklist line ", entry.line,
                           "; one row per patient"),
              true);
    }
    return true;
  }
  outcome_of_id_[id] = outcomes_.size();
  outcomes_.push_back({&entry, id, {}, false});
  result_.instances_found += static_cast<int>(found->size());

  const std::string relative_dir = "pacs/" + id;
  const std::string folder = options_.data_dir + "/" + relative_dir;
  if (absl::Status made = MakeDirectories(folder); !made.ok()) {
    Stop(entry.line, std::string(made.message()));
    return false;
  }
  bool retrieve_failed = false;
  int fetched = 0, present = 0;
  for (const PacsInstance& instance : *found) {
    if (StopRequested()) {
      Stop(entry.line, "stopped on request");
      outcomes_.back().interrupted = true;
      return false;
    }
    std::string what =
        absl::StrCat("instance ", instance.instance_number, " of series ",
                     instance.series_instance_uid);
    if (!instance.sop_class_uid.empty() &&
        !IsImageStorageClass(instance.sop_class_uid)) {
      ++result_.instances_not_images;
      Problem(entry, id,
              absl::StrCat(what, " is not an image (SOP class ",
                           instance.sop_class_uid, "); skipped"),
              false);
      continue;
    }
    if (!IsSafeUid(instance.sop_instance_uid)) {
      retrieve_failed = true;
      Problem(entry, id,
              absl::StrCat(what, ": the PACS gave an invalid SOP Instance UID"),
              false);
      continue;
    }
    const std::string relative =
        relative_dir + "/" + instance.sop_instance_uid + ".dcm";
    const std::string path = options_.data_dir + "/" + relative;
    if (fs::exists(path)) {
      ++present;
      ++result_.instances_already_present;
    } else {
      absl::StatusOr<std::string> bytes = client_.RetrieveInstance(instance);
      if (absl::IsPermissionDenied(bytes.status())) {
        Stop(entry.line, std::string(bytes.status().message()));
        outcomes_.back().interrupted = true;
        return false;
      }
      if (!bytes.ok()) {
        retrieve_failed = true;
        Problem(
            entry, id,
            absl::StrCat(what, ": retrieve failed: ", bytes.status().message()),
            false);
        if (IsConnectionProblem(bytes.status()) &&
            !PacsStillAnswers(entry, bytes.status())) {
          outcomes_.back().interrupted = true;
          return false;
        }
        continue;
      }
      // Durable under its final name only when complete: a later pull
      // trusts any file it finds there.
      if (absl::Status written = WriteFileAtomically(path, *bytes, 0600);
          !written.ok()) {
        Stop(entry.line, std::string(written.message()));
        outcomes_.back().interrupted = true;
        return false;
      }
      ++fetched;
      ++result_.instances_fetched;
    }
    if (IsEchofedResultObject(path)) {
      ++result_.instances_not_images;
      Problem(entry, id,
              absl::StrCat(what,
                           " is an echofed result (structured report or "
                           "Grad-CAM overlay), not an acquisition; skipped"),
              false);
      continue;
    }
    DicomImageInfo info;
    absl::StatusOr<GrayImage> image = ReadDicomGray(path, &info);
    if (!image.ok()) {
      ++result_.instances_undecodable;
      Problem(entry, id,
              absl::StrCat(what, " (", relative,
                           ") cannot be used: ", image.status().message()),
              false);
      continue;
    }
    outcomes_.back().images.push_back(relative);
  }
  PatientOutcome& outcome = outcomes_.back();
  if (retrieve_failed) {
    outcome.left_out = true;
    Problem(entry, id,
            "left out of the manifest until every instance is retrieved; run "
            "the pull again to fetch the rest",
            true);
  } else if (outcome.images.empty()) {
    outcome.left_out = true;
    Problem(entry, id, "no usable image", true);
  } else {
    Progress(absl::StrCat(RowName(entry), " patient ", id, ": ",
                          outcome.images.size(), " image(s), ", fetched,
                          " fetched, ", present, " already here"));
  }
  return true;
}

absl::Status Pull::WriteTables() {
  // A pull that stopped early keeps the rows of patients it did not reach
  // from the manifest it wrote last time (CheckTablesAreOurs vouched for
  // it): an interruption must not drop patients that were complete.
  std::set<std::string> reached;
  for (const PatientOutcome& outcome : outcomes_) {
    if (!outcome.interrupted) reached.insert(outcome.id);
  }
  std::string manifest = "patient_id,image,label\n";
  const std::string manifest_path = options_.data_dir + "/" + kManifestFile;
  for (const PatientOutcome& outcome : outcomes_) {
    if (outcome.left_out || outcome.interrupted) continue;
    ++result_.patients_complete;
    for (const std::string& image : outcome.images) {
      absl::StrAppend(&manifest, CsvField(outcome.id), ",", CsvField(image),
                      ",", CsvField(outcome.entry->label), "\n");
    }
  }
  std::set<std::string> carried;
  if (result_.stopped_early) {
    absl::StatusOr<std::string> previous = ReadFileToString(manifest_path);
    if (previous.ok()) {
      // Whole patients only, and only while all their files are still
      // there.
      std::map<std::string, std::vector<std::string>> rows_of;
      std::set<std::string> incomplete;
      std::vector<std::string> lines = CsvLines(*previous);
      for (size_t i = 1; i < lines.size(); ++i) {
        std::vector<std::string> fields = SplitCsvLine(lines[i]);
        if (fields.size() != 3 || reached.count(fields[0]) > 0) continue;
        rows_of[fields[0]].push_back(lines[i]);
        if (!fs::exists(options_.data_dir + "/" + fields[1])) {
          incomplete.insert(fields[0]);
        }
      }
      for (const auto& [id, rows] : rows_of) {
        if (incomplete.count(id) > 0) continue;
        carried.insert(id);
        for (const std::string& row : rows) {
          absl::StrAppend(&manifest, row, "\n");
        }
      }
    }
  }
  result_.patients_complete += static_cast<int>(carried.size());
  // Rows, not outcomes: a row the PACS could not resolve has no outcome.
  std::set<int> lines_left_out;
  for (const PullProblem& problem : result_.problems) {
    if (problem.patient_left_out) lines_left_out.insert(problem.line);
  }
  result_.patients_left_out = static_cast<int>(lines_left_out.size());
  if (absl::Status written = WriteFileAtomically(manifest_path, manifest, 0600);
      !written.ok()) {
    return written;
  }
  result_.manifest_path = manifest_path;
  std::string written_tables =
      absl::StrCat(kManifestFile, " ", FileDigestHex(manifest_path), "\n");

  if (!worklist_.clinical_columns.empty()) {
    std::string clinical = "patient_id";
    for (const std::string& column : worklist_.clinical_columns) {
      absl::StrAppend(&clinical, ",", column);
    }
    clinical += "\n";
    std::map<std::string, int> line_of_id;
    for (const PatientOutcome& outcome : outcomes_) {
      if (outcome.left_out || outcome.interrupted) continue;
      line_of_id[outcome.id] = outcome.entry->line;
      absl::StrAppend(&clinical, CsvField(outcome.id));
      for (const std::string& column : worklist_.clinical_columns) {
        auto value = outcome.entry->clinical.find(column);
        absl::StrAppend(
            &clinical, ",",
            CsvField(value == outcome.entry->clinical.end() ? ""
                                                            : value->second));
      }
      clinical += "\n";
    }
    const std::string clinical_path = options_.data_dir + "/" + kClinicalFile;
    if (result_.stopped_early && !carried.empty()) {
      // Carried as written last time, when the columns are the same.
      absl::StatusOr<std::string> previous = ReadFileToString(clinical_path);
      std::vector<std::string> lines =
          previous.ok() ? CsvLines(*previous) : std::vector<std::string>{};
      if (!lines.empty() &&
          lines[0] + "\n" == clinical.substr(0, clinical.find('\n') + 1)) {
        for (size_t i = 1; i < lines.size(); ++i) {
          std::vector<std::string> fields = SplitCsvLine(lines[i]);
          if (!fields.empty() && carried.count(fields[0]) > 0) {
            absl::StrAppend(&clinical, lines[i], "\n");
          }
        }
      }
    }
    // The clinical parser is the judge of values: what it would refuse at
    // training time is reported now, against the worklist line.
    absl::StatusOr<ClinicalTable> parsed =
        ParseClinicalCsv(clinical, clinical_path);
    if (!parsed.ok()) return parsed.status();
    for (const ClinicalRowError& error : parsed->errors) {
      auto line = line_of_id.find(error.patient_id);
      result_.problems.push_back(
          {line == line_of_id.end() ? 0 : line->second, error.patient_id,
           absl::StrCat("clinical values: ", error.message), false});
    }
    if (absl::Status written =
            WriteFileAtomically(clinical_path, clinical, 0600);
        !written.ok()) {
      return written;
    }
    result_.clinical_path = clinical_path;
    absl::StrAppend(&written_tables, kClinicalFile, " ",
                    FileDigestHex(clinical_path), "\n");
  }
  return WriteFileAtomically(options_.data_dir + "/" + kWrittenTablesFile,
                             written_tables, 0600);
}

absl::StatusOr<PullResult> Pull::Run() {
  if (absl::Status owned = CheckTablesAreOurs(options_.data_dir,
                                              options_.replace_existing_tables);
      !owned.ok()) {
    return owned;
  }
  const std::string pacs_dir = options_.data_dir + "/pacs";
  if (absl::Status made = MakeDirectories(pacs_dir); !made.ok()) return made;
  RemoveTemporaryFiles(pacs_dir);
  result_.worklist_rows =
      static_cast<int>(worklist_.entries.size() + worklist_.errors.size());
  for (const WorklistRowError& error : worklist_.errors) {
    result_.problems.push_back({error.line, "", error.message, true});
  }
  for (const WorklistEntry& entry : worklist_.entries) {
    if (StopRequested()) {
      Stop(entry.line, "stopped on request");
      break;
    }
    if (!PullPatient(entry)) break;
  }
  if (absl::Status written = WriteTables(); !written.ok()) return written;
  std::stable_sort(result_.problems.begin(), result_.problems.end(),
                   [](const PullProblem& a, const PullProblem& b) {
                     return a.line < b.line;
                   });
  return result_;
}

}  // namespace

std::string ManifestPatientId(const PseudonymKey* key,
                              const std::string& pacs_patient_id) {
  if (key != nullptr) return key->Pseudonym(pacs_patient_id);
  // Without pseudonyms the id is also a folder name: anything outside a
  // safe set is replaced, and a digest suffix keeps distinct ids distinct.
  std::string safe = pacs_patient_id;
  bool changed = false;
  for (char& c : safe) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' &&
        c != '.') {
      c = '_';
      changed = true;
    }
  }
  if (safe.empty() || safe[0] == '.') changed = true;
  if (!changed) return safe;
  return absl::StrCat(safe, "-",
                      HexDigest(Sha256::Of(pacs_patient_id)).substr(0, 8));
}

bool IsImageStorageClass(const std::string& sop_class_uid) {
  static const std::set<std::string>* const kImageClasses =
      new std::set<std::string>{
          "1.2.840.10008.5.1.4.1.1.6.1",  // Ultrasound Image
          "1.2.840.10008.5.1.4.1.1.6",    // Ultrasound Image (retired)
          "1.2.840.10008.5.1.4.1.1.3.1",  // Ultrasound Multi-frame Image
          "1.2.840.10008.5.1.4.1.1.3",    // the same, retired
          "1.2.840.10008.5.1.4.1.1.6.2",  // Enhanced US Volume
          "1.2.840.10008.5.1.4.1.1.7",    // Secondary Capture Image
          "1.2.840.10008.5.1.4.1.1.7.1",  // Multi-frame Single Bit SC
          "1.2.840.10008.5.1.4.1.1.7.2",  // Multi-frame Grayscale Byte SC
          "1.2.840.10008.5.1.4.1.1.7.3",  // Multi-frame Grayscale Word SC
          "1.2.840.10008.5.1.4.1.1.7.4",  // Multi-frame True Color SC
      };
  return kImageClasses->count(sop_class_uid) > 0;
}

absl::StatusOr<PullResult> PullCohort(PacsClient& client,
                                      const Worklist& worklist,
                                      const PullOptions& options) {
  Pull pull(client, worklist, options);
  return pull.Run();
}

}  // namespace echofed
