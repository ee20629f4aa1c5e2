#ifndef ECHOFED_COMMON_FILES_H_
#define ECHOFED_COMMON_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace echofed {

absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Writes to a temporary file beside `path`, fsyncs it, renames it over
// `path` and fsyncs the folder: readers see the old content or the new,
// never a torn file. `mode` applies to the new file (0600 for keys).
absl::Status WriteFileAtomically(const std::string& path,
                                 absl::string_view content, int mode = 0644);

// Flushes a file that was written with plain streams to stable storage, then
// renames it into place (same guarantee as WriteFileAtomically).
absl::Status SyncAndRename(const std::string& from, const std::string& to);

absl::Status MakeDirectories(const std::string& path);

// Parses a textproto file; errors name the file, line and column.
absl::Status LoadTextProto(const std::string& path,
                           google::protobuf::Message* message);
absl::Status ParseTextProto(absl::string_view text, absl::string_view origin,
                            google::protobuf::Message* message);
std::string ToTextProto(const google::protobuf::Message& message);

// Resolves `path` against the folder of `base_file` unless it is absolute.
std::string ResolveRelativeTo(const std::string& base_file,
                              const std::string& path);

}  // namespace echofed

#endif  // ECHOFED_COMMON_FILES_H_
