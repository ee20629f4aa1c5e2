#ifndef ECHOFED_SITE_AGENT_PACS_PSEUDONYM_H_
#define ECHOFED_SITE_AGENT_PACS_PSEUDONYM_H_

// Keyed pseudonyms for patient ids pulled from a PACS: HMAC-SHA256 of the
// PACS PatientID under a secret that never leaves the site. The same
// PatientID always gives the same pseudonym at that site (so a re-pull and
// a later `diagnose` agree), nobody without the key can recompute it from
// a PatientID (a plain hash of a hospital number could be brute-forced),
// and the site can still go back from a pseudonym to its patient by
// recomputing the pseudonyms of its own worklist.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace echofed {

// Bytes of a pseudonym secret.
inline constexpr int kPseudonymKeyBytes = 32;

class PseudonymKey {
 public:
  // Reads the secret at `path`, or creates it (32 bytes from OpenSSL's
  // CSPRNG, mode 0600, parent folders created) when there is no file. A
  // file readable by group or others, or of the wrong size, is refused
  // (FAILED_PRECONDITION) rather than used: a leaked key undoes the
  // pseudonyms.
  static absl::StatusOr<PseudonymKey> LoadOrCreate(const std::string& path);

  // A key from its bytes (tests).
  static absl::StatusOr<PseudonymKey> FromBytes(absl::string_view bytes);

  // "P" and the first 20 hex digits (80 bits) of HMAC-SHA256(key,
  // patient_id): short enough for a file name and a table, and without a
  // collision in any cohort a hospital has (a birthday bound of about 2^40
  // patients).
  std::string Pseudonym(absl::string_view patient_id) const;

  // Whether the key file was created by LoadOrCreate (for telling site IT to
  // back it up).
  bool created() const { return created_; }

 private:
  std::string key_;
  bool created_ = false;
};

}  // namespace echofed

#endif  // ECHOFED_SITE_AGENT_PACS_PSEUDONYM_H_
