// Helper of checkpoint_reference_test.py: echofed's side of the
// checkpoint exchange with Python, with every expectation written as text
// (no .efm file involved).
//
//   checkpoint_reference_tool write DIR
//     A resnet_small with moved batch-norm statistics (seed 1) as
//     DIR/model.pt (SaveTorchStateDict) and DIR/model.torchscript.pt
//     (ExportTorchScript), and DIR/expected.txt:
//       tensor NAME DTYPE SHAPE SHA256 SUM   per tensor, in order
//       logit ROW COLUMN VALUE                eval-mode logits of Input()
//     Also a resnet_small_gated_fusion (heads SUBTYPE, HIGH_RISK,
//     PROGNOSIS; 14 clinical features with statistics) as
//     DIR/fusion.torchscript.pt, with its eval-mode outputs of Input() and
//     Clinical() in expected.txt:
//       fusion OUTPUT ROW COLUMN VALUE        COLUMN 0 for the [N] heads
//   checkpoint_reference_tool logits PATH
//     Loads a state dict that Python wrote (LoadTorchStateDict with the
//     model's layout, then ImportState) into resnet_small and prints its
//     eval-mode logits of Input() as "logit ROW COLUMN VALUE" lines.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/files.h"
#include "models/checkpoint.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "models/torchscript.h"
#include "proto/plan.pb.h"

namespace {

constexpr char kModel[] = "resnet_small";

// Exactly representable values, so that Python builds the same input:
// ((i * 7919) mod 256) / 128 - 1 for the i-th value of [3, 1, 64, 64].
torch::Tensor Input() {
  torch::Tensor index = torch::arange(3 * 64 * 64, torch::kInt64);
  return ((index * 7919).remainder(256).to(torch::kFloat32) / 128 - 1)
      .view({3, 1, 64, 64});
}

constexpr char kFusionModel[] = "resnet_small_gated_fusion";
constexpr int kClinicalFeatures = 14;

// Exactly representable too: ((i * 7919) mod 256) / 32 - 4 for the i-th
// value of [3, 14], NaN (missing) where i mod 5 == 0, and value 1 set to
// 1000 (clipped to 6 standard deviations).
torch::Tensor Clinical() {
  torch::Tensor index = torch::arange(3 * kClinicalFeatures, torch::kInt64);
  torch::Tensor values =
      (index * 7919).remainder(256).to(torch::kFloat32) / 32 - 4;
  values.masked_fill_(index.remainder(5) == 0, std::nanf(""));
  values[1] = 1000;
  return values.view({3, kClinicalFeatures});
}

std::string Logits(echofed::ImageClassifierImpl& model) {
  model.eval();
  torch::NoGradGuard no_grad;
  torch::Tensor logits = model.forward(Input()).contiguous();
  std::string out;
  for (int64_t row = 0; row < logits.size(0); ++row) {
    for (int64_t column = 0; column < logits.size(1); ++column) {
      absl::StrAppendFormat(&out, "logit %d %d %.9g\n", row, column,
                            logits[row][column].item<float>());
    }
  }
  return out;
}

double Sum(const echofed::TensorSpec& spec, const std::string& bytes) {
  double sum = 0;
  if (spec.dtype() == echofed::FLOAT32) {
    std::vector<float> values(bytes.size() / sizeof(float));
    std::memcpy(values.data(), bytes.data(), bytes.size());
    for (float value : values) sum += value;
  } else if (spec.dtype() == echofed::INT64) {
    std::vector<int64_t> values(bytes.size() / sizeof(int64_t));
    std::memcpy(values.data(), bytes.data(), bytes.size());
    for (int64_t value : values) sum += static_cast<double>(value);
  } else {
    return std::nan("");
  }
  return sum;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s\n", status.ToString().c_str());
  return 1;
}

std::shared_ptr<echofed::ImageClassifierImpl> NewModel() {
  torch::manual_seed(1);
  return *echofed::CreateClassifier({kModel, 3});
}

// The fusion model's export and its "fusion ..." lines.
absl::StatusOr<std::string> WriteFusion(const std::string& dir) {
  torch::manual_seed(1);
  echofed::ModelOptions options{kFusionModel, 3};
  options.heads = {echofed::Plan::SUBTYPE, echofed::Plan::HIGH_RISK,
                   echofed::Plan::PROGNOSIS};
  options.clinical_features = kClinicalFeatures;
  absl::StatusOr<std::shared_ptr<echofed::ImageClassifierImpl>> model =
      echofed::CreateClassifier(options);
  if (!model.ok()) return model.status();
  auto& fusion = dynamic_cast<echofed::FusionModelImpl&>(**model);
  fusion.clinical_encoder()->SetLocalStatistics(
      torch::randn({50, kClinicalFeatures}) * 2 + 1, 50);
  (*model)->train();
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) {
    (*model)->Predict(torch::randn({4, 1, 64, 64}),
                      torch::randn({4, kClinicalFeatures}));
  }
  (*model)->eval();
  if (absl::Status status =
          echofed::ExportTorchScript(**model, dir + "/fusion.torchscript.pt");
      !status.ok()) {
    return status;
  }
  echofed::ModelOutputs outputs = (*model)->Predict(Input(), Clinical());
  std::string out;
  auto append = [&out](const std::string& name, torch::Tensor values) {
    values = values.reshape({values.size(0), -1}).contiguous();
    for (int64_t row = 0; row < values.size(0); ++row) {
      for (int64_t column = 0; column < values.size(1); ++column) {
        absl::StrAppendFormat(&out, "fusion %s %d %d %.9g\n", name, row, column,
                              values[row][column].item<float>());
      }
    }
  };
  append("subtype", outputs.subtype);
  append("high_risk", outputs.heads.at(echofed::Plan::HIGH_RISK));
  append("prognosis", outputs.heads.at(echofed::Plan::PROGNOSIS));
  return out;
}

int Write(const std::string& dir) {
  auto model = NewModel();
  model->train();
  {
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model->forward(torch::randn({4, 1, 64, 64}));
  }
  absl::StatusOr<echofed::TensorBundle> state =
      echofed::ExportState(*model, kModel);
  if (!state.ok()) return Fail(state.status());
  if (absl::Status status =
          echofed::SaveTorchStateDict(*state, dir + "/model.pt");
      !status.ok()) {
    return Fail(status);
  }
  model->eval();
  if (absl::Status status =
          echofed::ExportTorchScript(*model, dir + "/model.torchscript.pt");
      !status.ok()) {
    return Fail(status);
  }
  std::string expected;
  for (int i = 0; i < state->manifest.tensors_size(); ++i) {
    const echofed::TensorSpec& spec = state->manifest.tensors(i);
    absl::StrAppendFormat(
        &expected, "tensor %s %s %s %s %.17g\n", spec.name(),
        echofed::DType_Name(spec.dtype()),
        spec.shape().empty() ? "scalar" : absl::StrJoin(spec.shape(), ","),
        absl::BytesToHexString(spec.sha256()), Sum(spec, state->data[i]));
  }
  expected += Logits(*model);
  absl::StatusOr<std::string> fusion = WriteFusion(dir);
  if (!fusion.ok()) return Fail(fusion.status());
  expected += *fusion;
  if (absl::Status status =
          echofed::WriteFileAtomically(dir + "/expected.txt", expected);
      !status.ok()) {
    return Fail(status);
  }
  return 0;
}

int PrintLogits(const std::string& path) {
  auto model = NewModel();
  absl::StatusOr<echofed::TensorBundle> layout =
      echofed::ExportState(*model, kModel);
  if (!layout.ok()) return Fail(layout.status());
  absl::StatusOr<echofed::TensorBundle> loaded =
      echofed::LoadTorchStateDict(path, layout->manifest);
  if (!loaded.ok()) return Fail(loaded.status());
  if (absl::Status status = echofed::ImportState(*loaded, *model);
      !status.ok()) {
    return Fail(status);
  }
  std::fputs(Logits(*model).c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "echofed's side of the checkpoint exchange with Python "
      "(checkpoint_reference_test.py)"};
  app.require_subcommand(1);
  std::string dir;
  CLI::App* write_command = app.add_subcommand(
      "write",
      "write resnet_small as DIR/model.pt and DIR/model.torchscript.pt, a "
      "fusion model as DIR/fusion.torchscript.pt, and DIR/expected.txt");
  write_command->add_option("dir", dir, "DIR")->required();
  std::string path;
  CLI::App* logits_command = app.add_subcommand(
      "logits",
      "load a state dict that Python wrote into resnet_small and print its "
      "eval-mode logits");
  logits_command->add_option("path", path, "PATH")->required();
  CLI11_PARSE(app, argc, argv);
  return write_command->parsed() ? Write(dir) : PrintLogits(path);
}
