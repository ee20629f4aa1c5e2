#include "models/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "caffe2/serialize/inline_container.h"
#include "caffe2/serialize/read_adapter_interface.h"
#include "common/files.h"
#include "models/state_exchange.h"
#include "torch/csrc/jit/serialization/pickle.h"
#include "torch/torch.h"

namespace echofed {
namespace {

// The archive record holding the serialized ModelManifest (names, dtypes,
// shapes, buffer flags, digests, model name). torch.load reads only
// data.pkl and the tensor records it names, so Python never sees it.
constexpr char kManifestRecord[] = "echofed_manifest.pb";

// An in-memory archive for PyTorchStreamReader; the bytes must outlive it.
class MemoryReadAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  MemoryReadAdapter(const char* data, size_t size) : data_(data), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n,
              const char* /*what*/) const override {
    if (pos >= size_) return 0;
    n = std::min<size_t>(n, size_ - pos);
    std::memcpy(buf, data_ + pos, n);
    return n;
  }

 private:
  const char* data_;
  size_t size_;
};

// Re-writes the archive that torch::pickle_save produced, record by record,
// with the manifest record added.
std::string AddManifestRecord(const std::vector<char>& archive,
                              const ModelManifest& manifest) {
  caffe2::serialize::PyTorchStreamReader reader(
      std::make_shared<MemoryReadAdapter>(archive.data(), archive.size()));
  std::string out;
  out.reserve(archive.size() + 4096);
  caffe2::serialize::PyTorchStreamWriter writer(
      [&out](const void* data, size_t size) {
        out.append(static_cast<const char*>(data), size);
        return size;
      });
  writer.setMinVersion(reader.version());
  for (const std::string& name : reader.getAllRecords()) {
    // The writer adds its own version record at the end.
    if (name == "version" || name == ".data/version") continue;
    auto [data, size] = reader.getRecord(name);
    writer.writeRecord(name, data.get(), size);
  }
  const std::string serialized = manifest.SerializeAsString();
  writer.writeRecord(kManifestRecord, serialized.data(), serialized.size());
  writer.writeEndOfFile();
  return out;
}

absl::StatusOr<TensorBundle> BundleFromDict(const c10::IValue& value,
                                            const std::string& path) {
  if (!value.isGenericDict()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " holds a ", value.tagKind(),
                     ", not a state dict {name: tensor}"));
  }
  TensorBundle bundle;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString() || !entry.value().isTensor()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " holds a dict entry that is not str -> tensor (",
          entry.key().tagKind(), " -> ", entry.value().tagKind(), ")"));
    }
    const std::string name = entry.key().toStringRef();
    torch::Tensor tensor =
        entry.value().toTensor().detach().to(torch::kCPU).contiguous();
    absl::StatusOr<DType> dtype = ToWireDType(tensor.scalar_type());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", name, "': ", dtype.status().message()));
    }
    TensorSpec* spec = bundle.manifest.add_tensors();
    spec->set_name(name);
    spec->set_dtype(*dtype);
    for (int64_t dim : tensor.sizes()) spec->add_shape(dim);
    bundle.data.emplace_back(static_cast<const char*>(tensor.data_ptr()),
                             tensor.nbytes());
  }
  return bundle;
}

// The manifest record of an archive written by SaveTorchStateDict; nullopt
// for a file from Python.
absl::StatusOr<std::optional<ModelManifest>> ReadManifestRecord(
    const std::vector<char>& archive, const std::string& path) {
  caffe2::serialize::PyTorchStreamReader reader(
      std::make_shared<MemoryReadAdapter>(archive.data(), archive.size()));
  if (!reader.hasRecord(kManifestRecord)) return std::nullopt;
  auto [data, size] = reader.getRecord(kManifestRecord);
  ModelManifest recorded;
  if (!recorded.ParseFromArray(data.get(), static_cast<int>(size))) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": the echofed manifest record is corrupt"));
  }
  return recorded;
}

// Restores what a dict cannot carry (model name, buffer flags): the
// recorded manifest replaces the one rebuilt from the dict, once it is
// known to describe these very tensors, down to their digests.
absl::Status ApplyManifest(const ModelManifest& recorded,
                           const std::string& path, TensorBundle* bundle) {
  ModelManifest& manifest = bundle->manifest;
  absl::Status same = CheckSameLayout(recorded, manifest);
  for (int i = 0; same.ok() && i < manifest.tensors_size(); ++i) {
    if (recorded.tensors(i).sha256() != manifest.tensors(i).sha256()) {
      same = absl::DataLossError(absl::StrCat(
          "tensor '", manifest.tensors(i).name(), "' has another digest"));
    }
  }
  if (!same.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": the state dict does not match its echofed manifest "
                     "(edited outside echofed?): ",
                     same.message()));
  }
  manifest = recorded;
  return absl::OkStatus();
}

// c10::Error messages carry a C++ backtrace after the first line.
std::string FirstLine(const char* message) {
  std::string text(message);
  return text.substr(0, text.find('\n'));
}

}  // namespace

absl::Status SaveTorchStateDict(const TensorBundle& model,
                                const std::string& path) {
  const ModelManifest& manifest = model.manifest;
  if (static_cast<int>(model.data.size()) != manifest.tensors_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("bundle has ", model.data.size(), " tensors' bytes for ",
                     manifest.tensors_size(), " tensors"));
  }
  std::string archive;
  try {
    c10::Dict<std::string, at::Tensor> state;
    for (int i = 0; i < manifest.tensors_size(); ++i) {
      const TensorSpec& spec = manifest.tensors(i);
      absl::StatusOr<torch::ScalarType> type = ToTorchDType(spec.dtype());
      if (!type.ok()) return type.status();
      absl::StatusOr<uint64_t> bytes = TensorByteSize(spec);
      if (!bytes.ok()) return bytes.status();
      if (*bytes != model.data[i].size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor ", DescribeSpec(spec), " has ",
                         model.data[i].size(), " bytes, expected ", *bytes));
      }
      if (state.contains(spec.name())) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor name '", spec.name(), "' appears twice"));
      }
      std::vector<int64_t> shape(spec.shape().begin(), spec.shape().end());
      // No copy: the pickler reads the bytes before this function returns.
      state.insert(
          spec.name(),
          torch::from_blob(const_cast<char*>(model.data[i].data()), shape,
                           torch::TensorOptions().dtype(*type)));
    }
    const std::vector<char> pickled = torch::jit::pickle_save(state);
    archive = AddManifestRecord(pickled, manifest);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("cannot serialize the state dict: ", e.what()));
  }
  return WriteFileAtomically(path, archive);
}

absl::StatusOr<TensorBundle> LoadTorchStateDict(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFileToString(path);
  if (!content.ok()) return content.status();
  const std::vector<char> archive(content->begin(), content->end());
  content->clear();
  content->shrink_to_fit();
  absl::StatusOr<TensorBundle> bundle;
  absl::StatusOr<std::optional<ModelManifest>> recorded;
  try {
    bundle = BundleFromDict(torch::jit::pickle_load(archive), path);
    recorded = ReadManifestRecord(archive, path);
  } catch (const std::exception& e) {
    std::string hint;
    if (absl::StrContains(e.what(), "GenericDict")) {
      hint = " (a Python OrderedDict? save dict(model.state_dict()) instead)";
    } else if (absl::StrContains(e.what(), "opcode for unpickling at 0x73")) {
      hint = " (a dict of exactly one tensor: LibTorch cannot read it)";
    }
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a readable PyTorch state dict", hint, ": ",
                     FirstLine(e.what())));
  }
  if (!bundle.ok()) return bundle.status();
  if (!recorded.ok()) return recorded.status();
  if (absl::Status status = SealBundle(&*bundle); !status.ok()) return status;
  if (recorded->has_value()) {
    if (absl::Status status = ApplyManifest(**recorded, path, &*bundle);
        !status.ok()) {
      return status;
    }
  }
  return bundle;
}

absl::StatusOr<TensorBundle> LoadTorchStateDict(const std::string& path,
                                                const ModelManifest& layout) {
  absl::StatusOr<TensorBundle> loaded = LoadTorchStateDict(path);
  if (!loaded.ok()) return loaded.status();
  std::map<std::string, int> index;
  for (int i = 0; i < loaded->manifest.tensors_size(); ++i) {
    index[loaded->manifest.tensors(i).name()] = i;
  }
  TensorBundle ordered;
  ordered.manifest = layout;
  for (TensorSpec& spec : *ordered.manifest.mutable_tensors()) {
    auto found = index.find(spec.name());
    if (found == index.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, " has no tensor '", spec.name(), "' that the model needs"));
    }
    const TensorSpec& have = loaded->manifest.tensors(found->second);
    if (have.dtype() != spec.dtype() ||
        !std::equal(have.shape().begin(), have.shape().end(),
                    spec.shape().begin(), spec.shape().end())) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, " has ", DescribeSpec(have), ", the model ",
                       DescribeSpec(spec)));
    }
    spec.set_sha256(have.sha256());
    ordered.data.push_back(std::move(loaded->data[found->second]));
    index.erase(found);
  }
  if (!index.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " has tensor '", index.begin()->first,
                     "' that the model does not"));
  }
  return ordered;
}

}  // namespace echofed
