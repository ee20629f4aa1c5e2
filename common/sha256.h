#ifndef ECHOFED_COMMON_SHA256_H_
#define ECHOFED_COMMON_SHA256_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace echofed {

// Incremental SHA-256 (OpenSSL EVP). Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // The 32-byte digest; the object must not be updated afterwards.
  std::string Finish();

  static std::string Of(absl::string_view data);

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// Lower-case hex, for logs and file names.
std::string HexDigest(absl::string_view digest);

}  // namespace echofed

#endif  // ECHOFED_COMMON_SHA256_H_
