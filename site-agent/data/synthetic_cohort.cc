#include "site-agent/data/synthetic_cohort.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "common/files.h"
#include "site-agent/data/clinical.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/data/image_io.h"

namespace echofed {
namespace {

constexpr double kPi = 3.14159265358979323846;

enum Subtype { kNB = 0, kGNB = 1, kGN = 2 };
const char* const kSubtypeNames[] = {"NB", "GNB", "GN"};

struct Appearance {
  double echo;           // lesion mean echogenicity (0..1)
  double heterogeneity;  // internal texture amplitude
  double irregularity;   // margin lobulation
  int min_calc, max_calc;
  double capsule;  // bright rim strength
};

Appearance AppearanceOf(Subtype subtype) {
  switch (subtype) {
    case kNB:
      return {0.26, 0.55, 0.22, 2, 7, 0.0};
    case kGNB:
      return {0.36, 0.35, 0.12, 0, 3, 0.15};
    case kGN:
      return {0.46, 0.12, 0.03, 0, 1, 0.35};
  }
  return {};
}

struct Scanner {
  double gain;
  double speckle;  // Rayleigh scale of multiplicative speckle
  int blur;        // box-blur radius: lower resolution
};

// How a hospital's archive hands its images over. Each virtual hospital
// exports differently, as real ones do (PACS exports, scanner USB exports,
// screenshots), so that every reader path is used by the demo and tests.
enum class FileKind { kDicom, kJpeg, kPng };

struct Archive {
  FileKind kind;
  DicomEncoding encoding;
  DicomPhotometric photometric;
  int jpeg_quality;
  // PACS exports often name files without an extension (IM00001); the
  // reader goes by content, and one site checks that it does.
  const char* extension;
};

// site-1, site-2, ... take these in turn.
constexpr Archive kArchives[] = {
    {FileKind::kDicom, DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome2, 0, ".dcm"},
    {FileKind::kJpeg, DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome2, 92, ".jpg"},
    {FileKind::kDicom, DicomEncoding::kJpegBaseline,
     DicomPhotometric::kYbrFull422, 90, ".dcm"},
    {FileKind::kPng, DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome2, 0, ".png"},
    {FileKind::kDicom, DicomEncoding::kRleLossless,
     DicomPhotometric::kMonochrome1, 0, ".dcm"},
    {FileKind::kDicom, DicomEncoding::kJpegLsLossless,
     DicomPhotometric::kMonochrome2, 0, ""},
    {FileKind::kDicom, DicomEncoding::kJpegBaseline,
     DicomPhotometric::kMonochrome2, 85, ".dcm"},
};
constexpr int kArchiveCount = sizeof(kArchives) / sizeof(kArchives[0]);

// The synthetic patient's DICOM header. The identifiers are recognisable
// on purpose ("SYNTHETIC^S1P0001"): privacy tests look for them in
// everything that leaves a site.
struct DicomPatient {
  std::string study_date;
  std::string study_time;
  std::string birth_date;
  std::string sex;
};

DicomPatient SynthesizeDicomPatient(const ClinicalRecord& clinical,
                                    std::mt19937_64& rng) {
  std::uniform_int_distribution<int> day(0, 5 * 365);
  std::uniform_int_distribution<int> second(8 * 3600, 18 * 3600);
  DicomPatient patient;
  const absl::CivilDay study = absl::CivilDay(2019, 1, 1) + day(rng);
  patient.study_date =
      absl::StrFormat("%04d%02d%02d", study.year(), study.month(), study.day());
  const int time = second(rng);
  patient.study_time =
      absl::StrFormat("%02d%02d%02d", time / 3600, time / 60 % 60, time % 60);
  // Missing from the clinical table means missing from the header too.
  if (clinical.age_months) {
    const absl::CivilDay birth =
        study - static_cast<int>(std::lround(*clinical.age_months * 30.4375));
    patient.birth_date = absl::StrFormat("%04d%02d%02d", birth.year(),
                                         birth.month(), birth.day());
  }
  if (clinical.sex) patient.sex = *clinical.sex == Sex::kMale ? "M" : "F";
  return patient;
}

// Smooth random field: sum of a few random cosines.
struct Field {
  std::vector<std::array<double, 4>> waves;  // kx, ky, phase, amplitude
  double At(double x, double y) const {
    double v = 0;
    for (const auto& w : waves)
      v += w[3] * std::cos(w[0] * x + w[1] * y + w[2]);
    return v;
  }
};

Field RandomField(std::mt19937_64& rng, int waves, double max_frequency) {
  std::uniform_real_distribution<double> unit(0, 1);
  Field field;
  for (int i = 0; i < waves; ++i) {
    field.waves.push_back({(unit(rng) - 0.5) * 2 * max_frequency,
                           (unit(rng) - 0.5) * 2 * max_frequency,
                           unit(rng) * 2 * kPi, unit(rng) / waves});
  }
  return field;
}

GrayImage Render(Subtype subtype, const Scanner& scanner, int size,
                 std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::normal_distribution<double> normal(0, 1);
  const Appearance look = AppearanceOf(subtype);
  const double cx = size * (0.5 + 0.15 * (unit(rng) - 0.5));
  const double cy = size * (0.52 + 0.15 * (unit(rng) - 0.5));
  const double rx = size * (0.18 + 0.1 * unit(rng));
  const double ry = size * (0.15 + 0.1 * unit(rng));
  const double angle = unit(rng) * kPi;
  std::vector<double> lobes(5);
  for (double& lobe : lobes) lobe = normal(rng) * look.irregularity;
  std::vector<double> lobe_phase(5);
  for (double& phase : lobe_phase) phase = unit(rng) * 2 * kPi;
  Field tissue = RandomField(rng, 6, 0.15);
  Field inside = RandomField(rng, 8, 0.5);
  struct Spot {
    double x, y, r;
  };
  std::vector<Spot> calcifications;
  int count = look.min_calc +
              static_cast<int>(unit(rng) * (look.max_calc - look.min_calc + 1));
  for (int i = 0; i < count; ++i) {
    double a = unit(rng) * 2 * kPi;
    double d = std::sqrt(unit(rng)) * 0.7;
    calcifications.push_back({cx + d * rx * std::cos(a),
                              cy + d * ry * std::sin(a),
                              0.8 + 1.2 * unit(rng)});
  }

  std::vector<double> value(static_cast<size_t>(size) * size);
  std::exponential_distribution<double> exponential(1.0);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      // Depth attenuation, as in B-mode.
      double background = 0.42 + 0.12 * tissue.At(x, y) - 0.15 * y / size;
      double dx = x - cx, dy = y - cy;
      double u = (dx * std::cos(angle) + dy * std::sin(angle)) / rx;
      double v = (-dx * std::sin(angle) + dy * std::cos(angle)) / ry;
      double theta = std::atan2(v, u);
      double radius = 1.0;
      for (int k = 0; k < 5; ++k) {
        radius +=
            lobes[k] * std::cos((k + 2) * theta + lobe_phase[k]) / (k + 1);
      }
      double r = std::sqrt(u * u + v * v) / std::max(0.4, radius);
      double pixel = background;
      if (r < 1.0) {
        pixel = look.echo + look.heterogeneity * 0.5 * inside.At(x, y) * 2;
      }
      if (look.capsule > 0 && std::abs(r - 1.0) < 0.06) pixel += look.capsule;
      for (const Spot& spot : calcifications) {
        double d2 = (x - spot.x) * (x - spot.x) + (y - spot.y) * (y - spot.y);
        if (d2 < spot.r * spot.r) pixel = 0.95;
        // Acoustic shadow below a calcification.
        if (y > spot.y && std::abs(x - spot.x) < spot.r) pixel *= 0.75;
      }
      // Multiplicative speckle (Rayleigh amplitude).
      double speckle = std::sqrt(2 * exponential(rng)) * scanner.speckle +
                       (1 - scanner.speckle * 1.2533);
      value[static_cast<size_t>(y) * size + x] =
          std::max(0.0, pixel * speckle * scanner.gain);
    }
  }
  GrayImage image;
  image.width = size;
  image.height = size;
  image.pixels.resize(value.size());
  int b = scanner.blur;
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      double sum = 0;
      int n = 0;
      for (int yy = std::max(0, y - b); yy <= std::min(size - 1, y + b); ++yy) {
        for (int xx = std::max(0, x - b); xx <= std::min(size - 1, x + b);
             ++xx) {
          sum += value[static_cast<size_t>(yy) * size + xx];
          ++n;
        }
      }
      image.pixels[static_cast<size_t>(y) * size + x] =
          static_cast<uint8_t>(std::clamp(sum / n * 255.0, 0.0, 255.0));
    }
  }
  return image;
}

// Clinical variables with the dependencies the literature describes: NB in
// younger children and GN in older ones; MYCN amplification in about a
// fifth of NB; stage M mostly NB; marrow metastasis tied to stage M; NSE,
// LDH and ferritin raised with NB and metastatic disease; response and
// event-free survival worse with higher risk. The risk group here is a
// simplified INRG-like rule, good enough for phantom data only.
ClinicalRecord SynthesizeClinical(const std::string& patient, Subtype subtype,
                                  std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::normal_distribution<double> normal(0, 1);
  ClinicalRecord r;
  r.patient_id = patient;
  const double median_age[] = {18, 42, 84};  // months
  r.age_months =
      std::round(
          10 *
          std::min(215.0, std::max(0.5, median_age[subtype] *
                                            std::exp(0.6 * normal(rng))))) /
      10;
  r.sex = unit(rng) < 0.55 ? Sex::kMale : Sex::kFemale;
  r.histology = subtype == kNB    ? Histology::kNB
                : subtype == kGNB ? Histology::kGNB
                                  : Histology::kGN;
  if (subtype == kNB) {
    double d = unit(rng);
    r.differentiation = d < 0.2   ? Differentiation::kUndifferentiated
                        : d < 0.8 ? Differentiation::kPoorlyDifferentiated
                                  : Differentiation::kDifferentiating;
    double m = unit(rng);
    r.mki = m < 0.5 ? Mki::kLow : m < 0.8 ? Mki::kIntermediate : Mki::kHigh;
  }
  const double stage_m[] = {0.40, 0.15, 0.0};
  const double stage_l1[] = {0.2, 0.45, 0.6};
  double s = unit(rng);
  if (subtype == kNB && *r.age_months < 18 && s < 0.1) {
    r.inrg_stage = InrgStage::kMS;
  } else if (s < stage_m[subtype]) {
    r.inrg_stage = InrgStage::kM;
  } else {
    r.inrg_stage =
        unit(rng) < stage_l1[subtype] ? InrgStage::kL1 : InrgStage::kL2;
  }
  bool metastatic =
      r.inrg_stage == InrgStage::kM || r.inrg_stage == InrgStage::kMS;
  r.mycn_amplified = subtype == kNB    ? unit(rng) < (metastatic ? 0.3 : 0.12)
                     : subtype == kGNB ? unit(rng) < 0.02
                                       : false;
  r.chr11q_aberration = subtype == kNB && unit(rng) < 0.25;
  r.ploidy = unit(rng) < (subtype == kNB ? 0.55 : 0.7) ? Ploidy::kHyperdiploid
                                                       : Ploidy::kDiploid;
  r.bone_marrow_metastasis = r.inrg_stage == InrgStage::kM    ? unit(rng) < 0.7
                             : r.inrg_stage == InrgStage::kMS ? unit(rng) < 0.3
                                                              : false;
  double burden = (subtype == kNB ? 1.0 : 0.0) + (metastatic ? 1.0 : 0.0);
  r.ldh = std::round(250 * std::exp(0.35 * burden + 0.3 * normal(rng)));
  r.nse =
      std::round(10 * (15 * std::exp(0.5 * burden + 0.4 * normal(rng)))) / 10;
  r.ferritin = std::round(60 * std::exp(0.4 * burden + 0.5 * normal(rng)));
  r.vma =
      std::round(10 * (8 * std::exp(0.6 * burden + 0.5 * normal(rng)))) / 10;
  r.hva =
      std::round(10 * (10 * std::exp(0.5 * burden + 0.5 * normal(rng)))) / 10;
  RiskGroup risk;
  if (*r.mycn_amplified && r.inrg_stage != InrgStage::kL1) {
    risk = RiskGroup::kHigh;
  } else if (r.inrg_stage == InrgStage::kM && *r.age_months >= 18) {
    risk = RiskGroup::kHigh;
  } else if (r.inrg_stage == InrgStage::kL1 || subtype == kGN) {
    risk = RiskGroup::kVeryLow;
  } else if (r.inrg_stage == InrgStage::kMS || subtype == kGNB) {
    risk = RiskGroup::kLow;
  } else {
    risk = RiskGroup::kIntermediate;
  }
  r.inrg_risk = risk;
  const double good_response[] = {0.95, 0.9, 0.75, 0.5};
  const Response good[] = {Response::kCR, Response::kPR};
  const Response poor[] = {Response::kMR, Response::kSD, Response::kPD};
  r.response = unit(rng) < good_response[static_cast<int>(risk)]
                   ? good[unit(rng) < 0.5 ? 0 : 1]
                   : poor[static_cast<int>(unit(rng) * 3) % 3];
  const double hazard_per_month[] = {0.002, 0.004, 0.01, 0.04};
  double event_time = std::exponential_distribution<double>(
      hazard_per_month[static_cast<int>(risk)])(rng);
  double follow_up = 6 + 90 * unit(rng);
  r.efs_event = event_time < follow_up;
  r.efs_months = std::round(10 * std::min(event_time, follow_up)) / 10;
  r.prior_resection_elsewhere = unit(rng) < 0.03;
  r.image_quality =
      unit(rng) < 0.03 ? ImageQuality::kPoor : ImageQuality::kGood;
  // Real tables have gaps: some labs missing, now and then a key field.
  if (unit(rng) < 0.08) r.ferritin.reset();
  if (unit(rng) < 0.05) r.vma.reset(), r.hva.reset();
  if (unit(rng) < 0.02) r.histology.reset();
  if (unit(rng) < 0.02) r.age_months.reset();
  return r;
}

}  // namespace

std::vector<std::string> SyntheticSiteNames(int sites) {
  std::vector<std::string> names;
  for (int i = 1; i <= sites; ++i) names.push_back(absl::StrCat("site-", i));
  return names;
}

absl::Status WriteSyntheticCohort(const SyntheticCohortOptions& options) {
  if (options.sites < 1 || options.patients_per_site < 3 ||
      options.image_size < 32) {
    return absl::InvalidArgumentError(
        "synthetic cohort needs >= 1 site, >= 3 patients, images >= 32 px");
  }
  std::vector<std::string> names = SyntheticSiteNames(options.sites);
  for (int s = 0; s < options.sites; ++s) {
    std::mt19937_64 rng(options.seed * 7919 + static_cast<uint64_t>(s));
    std::uniform_real_distribution<double> unit(0, 1);
    Scanner scanner{0.85 + 0.3 * unit(rng), 0.25 + 0.2 * unit(rng),
                    s % 3 == 2 ? 1 : 0};
    const Archive& archive = kArchives[s % kArchiveCount];
    // Headers come from a stream of their own, so the pixels stay those of
    // the seed whatever the archive writes around them.
    std::mt19937_64 header_rng(options.seed * 104729 +
                               static_cast<uint64_t>(s));
    // Field of view 40 to 64 mm deep across the image: scanners and probes
    // differ in resolution, and the DICOM sites say so in their headers.
    const double spacing_mm = (40.0 + 8.0 * (s % 4)) / options.image_size;
    // Case mix: NB most common, GN rarest, shifted per hospital.
    double nb = 0.5 + 0.15 * (unit(rng) - 0.5);
    double gnb = 0.28 + 0.1 * (unit(rng) - 0.5);
    std::string dir = absl::StrCat(options.out_dir, "/", names[s]);
    if (absl::Status status = MakeDirectories(dir + "/images"); !status.ok()) {
      return status;
    }
    std::string manifest = "patient_id,image,label\n";
    std::string clinical =
        absl::StrCat(absl::StrJoin(ClinicalColumns(), ","), "\n");
    for (int p = 0; p < options.patients_per_site; ++p) {
      // The first three patients cover every subtype, so no site lacks one.
      double draw = unit(rng);
      Subtype subtype = p < 3             ? static_cast<Subtype>(p)
                        : draw < nb       ? kNB
                        : draw < nb + gnb ? kGNB
                                          : kGN;
      std::string patient = absl::StrFormat("S%dP%04d", s + 1, p + 1);
      const ClinicalRecord record = SynthesizeClinical(patient, subtype, rng);
      absl::StrAppend(&clinical, ClinicalCsvLine(record), "\n");
      const DicomPatient header = SynthesizeDicomPatient(record, header_rng);
      const std::string uid_key = absl::StrCat(
          "echofed-synthetic/", options.seed, "/", names[s], "/", patient);
      int images = 1 + (unit(rng) < 0.35 ? 1 : 0);
      for (int k = 0; k < images; ++k) {
        GrayImage image = Render(subtype, scanner, options.image_size, rng);
        std::string file =
            absl::StrCat("images/", patient, "_", k, archive.extension);
        std::string path = absl::StrCat(dir, "/", file);
        absl::Status status;
        switch (archive.kind) {
          case FileKind::kJpeg:
            status = WriteJpeg(path, image, archive.jpeg_quality);
            break;
          case FileKind::kPng:
            status = WritePng(path, image);
            break;
          case FileKind::kDicom: {
            DicomWriteOptions dicom;
            dicom.encoding = archive.encoding;
            dicom.photometric = archive.photometric;
            dicom.jpeg_quality = archive.jpeg_quality;
            dicom.spacing_x_mm = spacing_mm;
            dicom.spacing_y_mm = spacing_mm;
            dicom.patient_id = patient;
            dicom.patient_name = absl::StrCat("SYNTHETIC^", patient);
            dicom.patient_birth_date = header.birth_date;
            dicom.patient_sex = header.sex;
            dicom.study_date = header.study_date;
            dicom.study_time = header.study_time;
            dicom.accession_number = absl::StrFormat("SYN%d%05d", s + 1, p + 1);
            dicom.institution_name =
                absl::StrCat("SYNTHETIC HOSPITAL ", names[s]);
            dicom.manufacturer = "echofed phantom";
            dicom.manufacturer_model_name = absl::StrCat("phantom-", s + 1);
            dicom.instance_number = k + 1;
            dicom.study_instance_uid =
                DeterministicDicomUid(absl::StrCat(uid_key, "/study"));
            dicom.series_instance_uid =
                DeterministicDicomUid(absl::StrCat(uid_key, "/series"));
            dicom.sop_instance_uid =
                DeterministicDicomUid(absl::StrCat(uid_key, "/image/", k));
            status = WriteDicomUltrasound(path, image, dicom);
            if (absl::IsFailedPrecondition(status) &&
                dicom.encoding == DicomEncoding::kJpegLsLossless) {
              // Too noisy for DCMTK's JPEG-LS encoder (dicom_writer.cc):
              // this image goes uncompressed.
              dicom.encoding = DicomEncoding::kExplicitLittleEndian;
              status = WriteDicomUltrasound(path, image, dicom);
            }
            break;
          }
        }
        if (!status.ok()) return status;
        absl::StrAppend(&manifest, patient, ",", file, ",",
                        kSubtypeNames[subtype], "\n");
      }
    }
    if (absl::Status status =
            WriteFileAtomically(dir + "/manifest.csv", manifest);
        !status.ok()) {
      return status;
    }
    if (absl::Status status =
            WriteFileAtomically(dir + "/clinical.csv", clinical);
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace echofed
