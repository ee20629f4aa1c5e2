#include "site-agent/data/image_io.h"

#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "site-agent/data/dicom_reader.h"

namespace echofed {
namespace {

bool StartsWith(const std::string& bytes, const char* magic, size_t size) {
  return bytes.size() >= size && std::memcmp(bytes.data(), magic, size) == 0;
}

}  // namespace

absl::Status CheckImageDimensions(int width, int height,
                                  const std::string& origin) {
  if (width <= 0 || height <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": image has no pixels (", width, "x", height, ")"));
  }
  if (width > kMaxImageSide || height > kMaxImageSide ||
      int64_t{width} * height > kMaxImagePixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        origin, ": image of ", width, "x", height, " exceeds the limit of ",
        kMaxImageSide, " pixels per side and ", kMaxImagePixels,
        " pixels in all"));
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<GrayImage> DecodePng(const std::string& bytes,
                                    const std::string& origin) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    std::string why = png.message;
    png_image_free(&png);
    return absl::InvalidArgumentError(absl::StrCat(origin, ": PNG: ", why));
  }
  if (absl::Status status = CheckImageDimensions(
          static_cast<int>(png.width), static_cast<int>(png.height), origin);
      !status.ok()) {
    png_image_free(&png);
    return status;
  }
  png.format = PNG_FORMAT_GRAY;
  GrayImage image;
  image.width = static_cast<int>(png.width);
  image.height = static_cast<int>(png.height);
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    std::string why = png.message;
    png_image_free(&png);
    return absl::InvalidArgumentError(absl::StrCat(origin, ": PNG: ", why));
  }
  return image;
}

absl::StatusOr<GrayImage> DecodeJpeg(const std::string& bytes,
                                     const std::string& origin) {
  tjhandle handle = tjInitDecompress();
  if (handle == nullptr) return absl::InternalError("tjInitDecompress failed");
  auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(handle, data, bytes.size(), &width, &height,
                          &subsampling, &colorspace) != 0) {
    std::string why = tjGetErrorStr2(handle);
    tjDestroy(handle);
    return absl::InvalidArgumentError(absl::StrCat(origin, ": JPEG: ", why));
  }
  if (absl::Status status = CheckImageDimensions(width, height, origin);
      !status.ok()) {
    tjDestroy(handle);
    return status;
  }
  GrayImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height);
  int rc = tjDecompress2(handle, data, bytes.size(), image.pixels.data(), width,
                         0, height, TJPF_GRAY, TJFLAG_ACCURATEDCT);
  // Warnings (e.g. extraneous bytes) still give a full image; truncation is
  // an error.
  if (rc != 0 && tjGetErrorCode(handle) == TJERR_FATAL) {
    std::string why = tjGetErrorStr2(handle);
    tjDestroy(handle);
    return absl::InvalidArgumentError(absl::StrCat(origin, ": JPEG: ", why));
  }
  if (rc != 0) {
    std::string why = tjGetErrorStr2(handle);
    if (why.find("Premature end") != std::string::npos) {
      tjDestroy(handle);
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ": JPEG is truncated: ", why));
    }
  }
  tjDestroy(handle);
  return image;
}

}  // namespace

absl::StatusOr<GrayImage> DecodeGrayImage(const std::string& bytes,
                                          const std::string& origin) {
  if (StartsWith(bytes, "\x89PNG\r\n\x1a\n", 8))
    return DecodePng(bytes, origin);
  if (StartsWith(bytes, "\xFF\xD8\xFF", 3)) return DecodeJpeg(bytes, origin);
  if (LooksLikeDicom(bytes)) return DecodeDicomGray(bytes, origin);
  return absl::InvalidArgumentError(
      absl::StrCat(origin, ": not a PNG, JPEG or DICOM image"));
}

absl::StatusOr<GrayImage> ReadGrayImage(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  return DecodeGrayImage(*bytes, path);
}

absl::Status ForEachGrayFrame(
    const std::string& path, const FrameChoice& choice,
    const std::function<absl::Status(int frame, GrayImage image)>& visit) {
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  const bool dicom = !StartsWith(*bytes, "\x89PNG\r\n\x1a\n", 8) &&
                     !StartsWith(*bytes, "\xFF\xD8\xFF", 3) &&
                     LooksLikeDicom(*bytes);
  if (!dicom || choice.kind == FrameChoice::kMiddle) {
    DicomImageInfo info;
    absl::StatusOr<GrayImage> image = dicom
                                          ? DecodeDicomGray(*bytes, path, &info)
                                          : DecodeGrayImage(*bytes, path);
    if (!image.ok()) return image.status();
    return visit(info.frame_used, *std::move(image));
  }
  const int step =
      choice.kind == FrameChoice::kAll ? 1 : std::max(1, choice.step);
  DicomImageInfo info;
  int frames = 1;
  for (int frame = 0; frame < frames; frame += step) {
    absl::StatusOr<GrayImage> image =
        DecodeDicomGray(*bytes, path, &info, DicomDecodePath::kAuto, frame);
    if (!image.ok()) return image.status();
    // Every decode reads the header again; the first tells the count.
    if (frame == 0) frames = info.frames;
    if (absl::Status status = visit(frame, *std::move(image)); !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

absl::Status WritePng(const std::string& path, const GrayImage& image) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(image.width);
  png.height = static_cast<png_uint_32>(image.height);
  png.format = PNG_FORMAT_GRAY;
  if (!png_image_write_to_file(&png, path.c_str(), 0, image.pixels.data(), 0,
                               nullptr)) {
    return absl::InternalError(absl::StrCat(path, ": PNG: ", png.message));
  }
  return absl::OkStatus();
}

absl::Status WriteJpeg(const std::string& path, const GrayImage& image,
                       int quality) {
  tjhandle handle = tjInitCompress();
  unsigned char* out = nullptr;
  unsigned long size = 0;
  int rc = tjCompress2(handle, image.pixels.data(), image.width, 0,
                       image.height, TJPF_GRAY, &out, &size, TJSAMP_GRAY,
                       quality, TJFLAG_ACCURATEDCT);
  absl::Status status;
  if (rc != 0) {
    status = absl::InternalError(
        absl::StrCat(path, ": JPEG: ", tjGetErrorStr2(handle)));
  } else {
    status = WriteFileAtomically(
        path, absl::string_view(reinterpret_cast<char*>(out), size));
  }
  tjFree(out);
  tjDestroy(handle);
  return status;
}

}  // namespace echofed
