// Decode and preprocessing throughput per image format, on one core.
//
// Data loading must never starve training: the target is at least 300
// images/s per core for a 256x256 JPEG-compressed DICOM decoded and turned
// into the model's 224x224 float tensor. The benchmark writes N phantom
// B-mode images of 256x256 in every format the sites send (DICOM JPEG
// baseline as MONOCHROME2 and as YBR_FULL_422, uncompressed, RLE, JPEG-LS;
// JPEG and PNG files) into a temporary folder and times, single-threaded:
//   decode             ReadGrayImage (file read from the page cache + decode
//                      to 8-bit gray), as the loader calls it;
//   decode+preprocess  LoadImageSet itself on the N records: decode, resize
//                      to 224x224, standardise, stack [N,1,224,224].
// Each figure is the median of --passes timed passes after one warm-up pass,
// in images per CPU-second of the process (one thread: per core); the
// wall-clock rate of decode+preprocess is printed beside it.
//
//   ./build/bin/decode_bench [--images 200] [--passes 5] [--size 256]
//                            [--out-size 224] [--keep DIR] [--format STEM]
//
// Exit status: 0, or 1 when an image fails to decode or to load (and, with
// --enforce, when a target is missed).

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/files.h"
#include "site-agent/data/dicom_writer.h"
#include "site-agent/data/image_io.h"
#include "site-agent/training/dataset.h"
#include "torch/torch.h"

namespace {

using echofed::DicomEncoding;
using echofed::DicomPhotometric;
using echofed::GrayImage;

constexpr double kDicomJpegTarget = 300;  // images/s per core

// A phantom with what makes ultrasound hard to compress: multiplicative
// speckle over a depth-attenuated background, a lesion and a bright rim.
// Flat test patterns would flatter every codec.
GrayImage PhantomImage(int size, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::exponential_distribution<double> exponential(1.0);
  const double cx = size * (0.4 + 0.2 * unit(rng));
  const double cy = size * (0.45 + 0.2 * unit(rng));
  const double rx = size * (0.15 + 0.1 * unit(rng));
  const double ry = size * (0.12 + 0.1 * unit(rng));
  const double gain = 0.85 + 0.3 * unit(rng);
  std::vector<double> value(static_cast<size_t>(size) * size);
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      const double u = (x - cx) / rx, v = (y - cy) / ry;
      const double r = std::sqrt(u * u + v * v);
      double pixel =
          0.45 - 0.2 * y / size + 0.08 * std::cos(0.07 * x + 0.05 * y);
      if (r < 1) pixel = 0.3 + 0.1 * std::sin(0.4 * x) * std::cos(0.3 * y);
      if (std::abs(r - 1) < 0.05) pixel += 0.3;
      const double speckle = std::sqrt(2 * exponential(rng)) * 0.35 + 0.56;
      value[static_cast<size_t>(y) * size + x] = pixel * speckle * gain;
    }
  }
  GrayImage image;
  image.width = size;
  image.height = size;
  image.pixels.resize(value.size());
  // A 3x3 box blur: a scanner's point spread, which gives speckle grains.
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      double sum = 0;
      int n = 0;
      for (int yy = std::max(0, y - 1); yy <= std::min(size - 1, y + 1); ++yy) {
        for (int xx = std::max(0, x - 1); xx <= std::min(size - 1, x + 1);
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

enum class Kind { kDicom, kJpeg, kPng };

struct Format {
  const char* name;
  const char* stem;  // file names: <stem>_00000
  Kind kind;
  DicomEncoding encoding;
  DicomPhotometric photometric;
  bool has_target;  // the target applies to DICOM JPEG
};

const Format kFormats[] = {
    {"DICOM JPEG baseline", "dicom-jpeg", Kind::kDicom,
     DicomEncoding::kJpegBaseline, DicomPhotometric::kMonochrome2, true},
    // How many scanners export, and how busi-sites' site-a is stored.
    {"DICOM JPEG YBR 4:2:2", "dicom-jpeg-ybr", Kind::kDicom,
     DicomEncoding::kJpegBaseline, DicomPhotometric::kYbrFull422, true},
    {"DICOM uncompressed", "dicom-raw", Kind::kDicom,
     DicomEncoding::kExplicitLittleEndian, DicomPhotometric::kMonochrome2,
     false},
    {"DICOM RLE", "dicom-rle", Kind::kDicom, DicomEncoding::kRleLossless,
     DicomPhotometric::kMonochrome2, false},
    {"DICOM JPEG-LS", "dicom-jls", Kind::kDicom, DicomEncoding::kJpegLsLossless,
     DicomPhotometric::kMonochrome2, false},
    {"JPEG", "jpeg", Kind::kJpeg, DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome2, false},
    {"PNG", "png", Kind::kPng, DicomEncoding::kExplicitLittleEndian,
     DicomPhotometric::kMonochrome2, false},
};

absl::Status WriteImage(const Format& format, const std::string& path,
                        const GrayImage& image, int index) {
  switch (format.kind) {
    case Kind::kJpeg:
      return echofed::WriteJpeg(path, image, 90);
    case Kind::kPng:
      return echofed::WritePng(path, image);
    case Kind::kDicom: {
      echofed::DicomWriteOptions options;
      options.encoding = format.encoding;
      options.photometric = format.photometric;
      options.jpeg_quality = 90;
      options.spacing_x_mm = options.spacing_y_mm = 0.2;
      options.patient_id = absl::StrFormat("B%05d", index);
      options.patient_name = absl::StrCat("SYNTHETIC^", options.patient_id);
      options.study_date = "20240101";
      options.sop_instance_uid = echofed::DeterministicDicomUid(
          absl::StrCat("decode_bench/", format.name, "/", index));
      options.study_instance_uid = options.series_instance_uid =
          echofed::DeterministicDicomUid(absl::StrCat("decode_bench/", index));
      return echofed::WriteDicomUltrasound(path, image, options);
    }
  }
  return absl::InternalError("unknown format");
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

struct Seconds {
  double wall = 0;
  double cpu = 0;  // this process, user + system
};

double ProcessCpuSeconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + now.tv_nsec * 1e-9;
}

// Other processes (builds, CI jobs) may share the cores: wall-clock rates
// swing with their load, while CPU time is what one core spends on the
// work, which is what "per core" asks. Both are reported.
Seconds Time(const std::function<void()>& work) {
  const auto start = std::chrono::steady_clock::now();
  const double cpu_start = ProcessCpuSeconds();
  work();
  Seconds taken;
  taken.cpu = ProcessCpuSeconds() - cpu_start;
  taken.wall =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  return taken;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"decode + preprocess throughput per image format, one core"};
  // --help shows each default.
  app.option_defaults()->always_capture_default();
  int images = 200;
  int passes = 5;
  int size = 256;
  int out_size = 224;
  std::string keep;
  bool enforce = false;
  std::string only;
  app.add_option("--images", images, "images per format")
      ->check(CLI::Range(1, 100000));
  app.add_option("--passes", passes, "timed passes (median reported)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--size", size, "side of the written images")
      ->check(CLI::Range(32, 4096));
  app.add_option("--out-size", out_size, "side of the model's input")
      ->check(CLI::Range(8, 4096));
  app.add_option("--keep", keep,
                 "write the images here and keep them (default: a temporary "
                 "folder, removed)");
  app.add_flag("--enforce", enforce, "exit 1 when a target is missed");
  std::vector<std::string> stems;
  for (const Format& format : kFormats) stems.push_back(format.stem);
  app.add_option("--format", only, "only this format, e.g. under a profiler")
      ->check(CLI::IsMember(stems));
  CLI11_PARSE(app, argc, argv);

  // Per core: LibTorch's intra-op pool would otherwise spread the resize
  // over every core and hide what one loader thread can do.
  torch::set_num_threads(1);

  std::string dir = keep;
  if (!keep.empty()) {
    if (absl::Status status = echofed::MakeDirectories(keep); !status.ok()) {
      std::cerr << "decode_bench: " << status << "\n";
      return 1;
    }
  } else {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "decode_bench.XXXXXX")
            .string();
    if (mkdtemp(pattern.data()) == nullptr) {
      std::perror("decode_bench: mkdtemp");
      return 1;
    }
    dir = pattern;
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      if (!dir.empty()) {
        std::error_code ignored;
        std::filesystem::remove_all(dir, ignored);
      }
    }
  } cleanup{keep.empty() ? dir : ""};

  std::mt19937_64 rng(20261127);
  std::vector<GrayImage> phantoms;
  for (int i = 0; i < images; ++i) phantoms.push_back(PhantomImage(size, rng));

  std::cout << absl::StrFormat(
      "decode_bench: %d images of %dx%d per format -> [1,%d,%d] float, "
      "1 thread (torch %d), median of %d passes\n\n",
      images, size, size, out_size, out_size, torch::get_num_threads(), passes);
  std::cout << absl::StrFormat(
      "%-20s | %6s | %7s | %12s | %17s | %10s | %6s | %s\n", "format", "images",
      "avg KiB", "decode img/s", "decode+prep img/s", "(wall)", "target",
      "result");
  std::cout << std::string(104, '-') << "\n";

  bool failed = false, missed = false;
  for (const Format& format : kFormats) {
    if (!only.empty() && only != format.stem) continue;
    std::vector<echofed::ImageRecord> records;
    uint64_t bytes = 0;
    for (int i = 0; i < images; ++i) {
      const std::string path =
          absl::StrFormat("%s/%s_%05d", dir, format.stem, i);
      if (absl::Status status = WriteImage(format, path, phantoms[i], i);
          !status.ok()) {
        std::cerr << "decode_bench: " << status << "\n";
        return 1;
      }
      bytes += std::filesystem::file_size(path);
      records.push_back({absl::StrCat("B", i), path, "NB", std::nullopt});
    }

    bool decode_ok = true;
    auto decode_all = [&] {
      for (const echofed::ImageRecord& record : records) {
        absl::StatusOr<GrayImage> image =
            echofed::ReadGrayImage(record.image_path);
        if (!image.ok() || image->width != size) {
          if (decode_ok) {
            std::cerr << "decode_bench: " << image.status() << "\n";
          }
          decode_ok = false;
        }
      }
    };
    bool load_ok = true;
    auto load_all = [&] {
      echofed::ImageSet set = echofed::LoadImageSet(records, {"NB"}, out_size);
      if (set.size() != images || !set.errors.empty() ||
          set.images.sizes() !=
              torch::IntArrayRef({images, 1, out_size, out_size})) {
        if (load_ok) {
          std::cerr << "decode_bench: " << format.name << ": loaded "
                    << set.size() << " of " << images << " images"
                    << (set.errors.empty()
                            ? ""
                            : absl::StrCat(" (", set.errors[0].message, ")"))
                    << "\n";
        }
        load_ok = false;
      }
    };
    // Warm-up: page cache, codec registration, LibTorch's first-call costs.
    decode_all();
    load_all();
    std::vector<double> decode_rates, load_rates, load_wall_rates;
    for (int pass = 0; pass < passes; ++pass) {
      decode_rates.push_back(images / Time(decode_all).cpu);
      const Seconds load = Time(load_all);
      load_rates.push_back(images / load.cpu);
      load_wall_rates.push_back(images / load.wall);
    }
    const double decode_rate = Median(decode_rates);
    const double load_rate = Median(load_rates);
    const double load_wall_rate = Median(load_wall_rates);
    std::string target = "-", result = "-";
    if (format.has_target) {
      target = absl::StrFormat("%.0f", kDicomJpegTarget);
      const bool pass = load_rate >= kDicomJpegTarget;
      result = pass ? "pass" : "FAIL";
      missed = missed || !pass;
    }
    if (!decode_ok || !load_ok) {
      result = "ERROR";
      failed = true;
    }
    std::cout << absl::StrFormat(
        "%-20s | %6d | %7.1f | %12.0f | %17.0f | %10.0f | %6s | %s\n",
        format.name, images, bytes / 1024.0 / images, decode_rate, load_rate,
        load_wall_rate, target, result);
  }
  std::cout << "\nimg/s per CPU-second of this process (one thread, so per "
               "core); (wall): decode+prep per wall-clock second.\n"
               "target: decode+preprocess of 256x256 DICOM JPEG baseline to "
               "a 224x224 float tensor, per core\n";
  if (!keep.empty()) std::cout << "images kept in " << keep << "\n";
  if (failed) return 1;
  return enforce && missed ? 1 : 0;
}
