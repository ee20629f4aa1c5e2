// libFuzzer target for a site's manifest.csv (LoadManifest,
// site-agent/data/manifest.h) and the cohort rules applied to it (SelectCohort,
// site-agent/data/cohort.h). LoadManifest reads a folder, so every input is
// written as manifest.csv into one scratch folder made at start-up, which
// also holds a small valid PNG for lines that name it.
//
// An input may carry a clinical table after a line "#clinical"; it is
// parsed with ParseClinicalCsv and handed to SelectCohort too, so that the
// rules that need clinical data run as well.
//
// Errors in the input are expected and come back as values. Bugs are
// crashes, sanitizer reports, and broken promises: a path outside the
// data folder (the privacy boundary) for an image or an ROI mask,
// duplicate images, a patient with two labels, an ROI whose arithmetic
// overflows downstream, or a CONSORT flow whose counts do not add up.

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/cohort.h"
#include "site-agent/data/image_io.h"
#include "site-agent/data/manifest.h"

namespace {

namespace fs = std::filesystem;

constexpr char kClinicalMarker[] = "\n#clinical\n";
constexpr int kMinImageSide = 64;

void Fail(const std::string& why) {
  std::fprintf(stderr, "manifest_fuzz: %s\n", why.c_str());
  std::abort();
}

// Where the scratch folder goes: $TMPDIR when set, else /dev/shm when the
// machine has it. Rewriting a truncated file on a disk file system (ext4
// flushes it on close) made the fuzzer seven times slower than on tmpfs.
fs::path ScratchParent() {
  if (std::getenv("TMPDIR") == nullptr && access("/dev/shm", W_OK) == 0) {
    return "/dev/shm";
  }
  return fs::temp_directory_path();
}

// The scratch folder, made once per process: one per process so that
// parallel fuzzer jobs do not overwrite each other's manifest.
class Scratch {
 public:
  Scratch() {
    std::string pattern =
        (ScratchParent() / "echofed-manifest-fuzz-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) Fail("mkdtemp failed");
    root_ = fs::canonical(pattern).string();
    fs::create_directories(root_ + "/images");
    echofed::GrayImage image;
    image.width = image.height = kMinImageSide;
    for (int i = 0; i < image.width * image.height; ++i) {
      image.pixels.push_back(static_cast<uint8_t>(i * 7));
    }
    if (!echofed::WritePng(root_ + "/images/seed.png", image).ok()) {
      Fail("cannot write the seed PNG");
    }
  }
  ~Scratch() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

const Scratch& TheScratch() {
  // Destroyed at exit, which removes the folder when the run ends normally.
  static const Scratch scratch;
  return scratch;
}

bool InsideRoot(const std::string& root, const std::string& path) {
  if (!absl::StartsWith(path, root + "/")) return false;
  for (const fs::path& part : fs::path(path)) {
    if (part == "..") return false;
  }
  // The scratch folder holds no links, so resolving must not move it out.
  // (A line naming the folder itself, such as ".", stays inside: it is
  // refused later as an unreadable image.)
  std::error_code error;
  const std::string real = fs::weakly_canonical(path, error).string();
  return !error && (real == root || absl::StartsWith(real, root + "/"));
}

void CheckManifest(const echofed::SiteManifest& manifest,
                   const std::string& root) {
  if (manifest.data_dir != root) Fail("data_dir is not the folder given");
  std::set<std::string> images;
  std::map<std::string, std::string> label_of;
  for (const echofed::ImageRecord& record : manifest.records) {
    if (record.patient_id.empty() || record.label.empty()) {
      Fail("record with an empty patient id or label");
    }
    if (!InsideRoot(root, record.image_path)) {
      Fail(absl::StrCat("image path '", record.image_path,
                        "' is outside the data folder"));
    }
    if (!images.insert(record.image_path).second) {
      Fail(absl::StrCat("image '", record.image_path, "' accepted twice"));
    }
    auto [it, inserted] = label_of.emplace(record.patient_id, record.label);
    if (!inserted && it->second != record.label) {
      Fail(absl::StrCat("patient '", record.patient_id, "' has two labels"));
    }
    if (!record.roi_mask_path.empty() &&
        !InsideRoot(root, record.roi_mask_path)) {
      Fail(absl::StrCat("ROI mask '", record.roi_mask_path,
                        "' is outside the data folder"));
    }
    if (record.roi) {
      const echofed::RegionOfInterest& roi = *record.roi;
      if (roi.x < 0 || roi.y < 0 || roi.width <= 0 || roi.height <= 0) {
        Fail("negative or empty ROI accepted");
      }
      // dataset.cc crops to x + w + margin (and y + h + margin) in int, with
      // a margin of up to the ROI's size (the plan's roi_margin is at most 1).
      if (int64_t{roi.x} + 2 * int64_t{roi.width} > INT_MAX ||
          int64_t{roi.y} + 2 * int64_t{roi.height} > INT_MAX) {
        Fail(absl::StrCat("ROI ", roi.x, ",", roi.y, ",", roi.width, ",",
                          roi.height, " overflows the crop arithmetic"));
      }
    }
  }
}

void CheckCohort(const echofed::Cohort& cohort,
                 const echofed::CohortOptions& options) {
  const echofed::CohortFlow& flow = cohort.flow;
  int excluded = 0;
  for (const auto& [reason, count] : flow.excluded) excluded += count;
  if (flow.screened != flow.included + excluded ||
      excluded != static_cast<int>(cohort.exclusions.size()) ||
      flow.included != static_cast<int>(cohort.included.size())) {
    Fail(absl::StrCat("flow does not add up: screened ", flow.screened,
                      ", included ", flow.included, ", excluded ", excluded,
                      " (", cohort.exclusions.size(), " listed)"));
  }
  int images = 0;
  std::map<std::string, int> per_class;
  for (const echofed::CohortPatient& patient : cohort.included) {
    if (patient.images.empty()) Fail("included patient without an image");
    if (std::find(options.class_names.begin(), options.class_names.end(),
                  patient.label) == options.class_names.end()) {
      Fail(absl::StrCat("included label '", patient.label, "' is not a class"));
    }
    for (const echofed::ImageRecord& image : patient.images) {
      if (image.patient_id != patient.patient_id) {
        Fail("an included image belongs to another patient");
      }
    }
    images += static_cast<int>(patient.images.size());
    ++per_class[patient.label];
  }
  if (images != flow.included_images || per_class != flow.included_per_class) {
    Fail("included image or class counts do not match the patients");
  }
  if (echofed::FormatFlow(flow).empty()) Fail("empty flow text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& root = TheScratch().root();
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string manifest_text = input;
  std::string clinical_text;
  bool has_clinical = false;
  if (size_t marker = input.find(kClinicalMarker);
      marker != std::string::npos) {
    manifest_text = input.substr(0, marker + 1);
    clinical_text = input.substr(marker + sizeof(kClinicalMarker) - 1);
    has_clinical = true;
  }
  {
    std::ofstream out(root + "/manifest.csv",
                      std::ios::binary | std::ios::trunc);
    out << manifest_text;
    if (!out) Fail("cannot write manifest.csv");
  }

  absl::StatusOr<echofed::SiteManifest> manifest = echofed::LoadManifest(root);
  if (!manifest.ok()) return 0;
  CheckManifest(*manifest, root);

  echofed::CohortOptions options;
  options.class_names = {"NB", "GNB", "GN"};
  options.min_image_side = kMinImageSide;
  options.required_fields = {"inrg_stage", "mycn", "ldh"};
  // The only image in the folder is the seed PNG, so decoding what exists
  // costs little; everything else is refused by a stat, as a missing file
  // is in the default check.
  options.check_image = [&root](const echofed::ImageRecord& record) {
    if (!InsideRoot(root, record.image_path)) {
      Fail(absl::StrCat("cohort checks '", record.image_path,
                        "' outside the data folder"));
    }
    std::error_code error;
    if (!fs::is_regular_file(record.image_path, error)) {
      return absl::NotFoundError(record.image_path + ": no such image");
    }
    absl::StatusOr<echofed::GrayImage> image =
        echofed::ReadGrayImage(record.image_path);
    if (!image.ok()) return image.status();
    if (image->width < kMinImageSide || image->height < kMinImageSide) {
      return absl::InvalidArgumentError("image too small");
    }
    return absl::OkStatus();
  };
  CheckCohort(echofed::SelectCohort(*manifest, nullptr, options), options);
  if (has_clinical) {
    absl::StatusOr<echofed::ClinicalTable> clinical =
        echofed::ParseClinicalCsv(clinical_text, "clinical.csv");
    if (clinical.ok()) {
      CheckCohort(echofed::SelectCohort(*manifest, &*clinical, options),
                  options);
    }
  }
  return 0;
}
