#include "site-agent/pacs/pseudonym.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/sha256.h"

namespace echofed {
namespace {

absl::StatusOr<PseudonymKey> ReadExisting(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("pseudonym key ", path, ": ", std::strerror(errno)));
  }
  if ((info.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pseudonym key ", path, " is readable by group or others (mode ",
        absl::StrCat(absl::Hex(info.st_mode & 0777)),
        "); whoever reads it can undo the pseudonyms. Run: chmod 600 ", path));
  }
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  if (!bytes.ok()) return bytes.status();
  if (bytes->size() != kPseudonymKeyBytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "pseudonym key ", path, " has ", bytes->size(), " bytes, not ",
        kPseudonymKeyBytes,
        ": it is not a key echofed wrote. Restore it from the backup; a new "
        "key would give every patient a new pseudonym"));
  }
  return PseudonymKey::FromBytes(*bytes);
}

}  // namespace

absl::StatusOr<PseudonymKey> PseudonymKey::LoadOrCreate(
    const std::string& path) {
  if (std::filesystem::exists(path)) return ReadExisting(path);
  std::string parent = std::filesystem::path(path).parent_path().string();
  if (!parent.empty()) {
    if (absl::Status made = MakeDirectories(parent); !made.ok()) return made;
  }
  std::string bytes(kPseudonymKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()),
                 kPseudonymKeyBytes) != 1) {
    return absl::InternalError(
        "OpenSSL could not give random bytes for the "
        "pseudonym key");
  }
  // Two pulls starting at once must not each create a key: the file is
  // created exclusively, and the loser reads the winner's key.
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return ReadExisting(path);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot create pseudonym key ", path, ": ", std::strerror(errno)));
  }
  bool written = write(fd, bytes.data(), bytes.size()) ==
                 static_cast<ssize_t>(bytes.size());
  // The key must be durable before any pseudonym computed with it is
  // written anywhere: a key lost in a crash would orphan every pseudonym.
  bool synced = written && fsync(fd) == 0;
  close(fd);
  if (!synced) {
    std::filesystem::remove(path);
    return absl::InternalError(
        absl::StrCat("cannot write pseudonym key ", path));
  }
  absl::StatusOr<PseudonymKey> key = FromBytes(bytes);
  if (key.ok()) key->created_ = true;
  return key;
}

absl::StatusOr<PseudonymKey> PseudonymKey::FromBytes(absl::string_view bytes) {
  if (bytes.size() != kPseudonymKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a pseudonym key has ", kPseudonymKeyBytes, " bytes"));
  }
  PseudonymKey key;
  key.key_ = std::string(bytes);
  return key;
}

std::string PseudonymKey::Pseudonym(absl::string_view patient_id) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  HMAC(EVP_sha256(), key_.data(), static_cast<int>(key_.size()),
       reinterpret_cast<const unsigned char*>(patient_id.data()),
       patient_id.size(), mac, &mac_length);
  std::string hex = HexDigest(
      absl::string_view(reinterpret_cast<const char*>(mac), mac_length));
  return absl::StrCat("P", hex.substr(0, 20));
}

}  // namespace echofed
