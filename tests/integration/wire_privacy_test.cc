// What leaves a hospital: a federation of three real agent processes trains
// and validates on a synthetic cohort whose DICOM headers and clinical table
// carry recognisable identifiers, while the coordinator records every
// message it receives from them (a gRPC interceptor, after TLS). No
// identifier, date of birth, clinical row, block of pixels or per-patient
// prediction may appear in any of those messages.

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <unordered_map>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "common/files.h"
#include "common/subprocess.h"
#include "common/tensor_bundle.h"
#include "coordinator/server.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "proto/admin.grpc.pb.h"
#include "proto/federation.grpc.pb.h"
#include "site-agent/data/csv.h"
#include "site-agent/data/image_io.h"
#include "tests/testing/fixtures.h"
#include "tests/testing/received_messages.h"

namespace echofed {
namespace {

using testing::BinaryPath;
using testing::MakeEnrolment;
using testing::TempDir;
using testing::TestPki;

// Every message the coordinator received, serialized again as bytes (the
// same bytes the agent put inside TLS), with the method it came to.
struct Recording {
  absl::Mutex mu;
  std::vector<std::pair<std::string, std::string>> messages ABSL_GUARDED_BY(mu);
};

// The received message as bytes again. The message type follows from the
// method; the interceptor sees a pointer to the parsed request.
std::string Serialize(const std::string& method, void* message) {
  const std::string name = method.substr(method.rfind('/') + 1);
  if (absl::StartsWith(method, "/echofed.Admin/")) return "";
  if (name == "Join") {
    return static_cast<JoinRequest*>(message)->SerializeAsString();
  }
  if (name == "NextTask") {
    return static_cast<NextTaskRequest*>(message)->SerializeAsString();
  }
  if (name == "DownloadModel") {
    // A raw method at the coordinator (zero-copy model chunks): its request
    // is the serialized DownloadRequest itself.
    std::vector<grpc::Slice> slices;
    if (!static_cast<grpc::ByteBuffer*>(message)->Dump(&slices).ok()) {
      ADD_FAILURE() << "cannot read a DownloadModel request";
    }
    std::string bytes;
    for (const grpc::Slice& slice : slices) {
      bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
    }
    DownloadRequest request;
    EXPECT_TRUE(request.ParseFromString(bytes));
    return bytes;
  }
  if (name == "UploadUpdate") {
    return static_cast<UploadChunk*>(message)->SerializeAsString();
  }
  if (name == "ReportEvaluation") {
    return static_cast<EvaluationReport*>(message)->SerializeAsString();
  }
  if (name == "Heartbeat") {
    return static_cast<HeartbeatRequest*>(message)->SerializeAsString();
  }
  if (name == "SubmitMaskingKey") {
    return static_cast<MaskingKeyRequest*>(message)->SerializeAsString();
  }
  if (name == "GetMaskingCohort") {
    return static_cast<MaskingCohortRequest*>(message)->SerializeAsString();
  }
  if (name == "Ping") {
    return static_cast<PingRequest*>(message)->SerializeAsString();
  }
  ADD_FAILURE() << "unrecorded federation method " << method
                << ": add it to the wire-privacy test";
  return "";
}

std::string DicomString(DcmDataset* dataset, const DcmTagKey& tag) {
  OFString value;
  if (dataset->findAndGetOFString(tag, value).bad()) return "";
  return value.c_str();
}

// A per-patient prediction: the subtype probabilities, as the site's own
// diagnose command computes them from the final model (4 decimals).
using Prediction = std::vector<double>;

// Looks for any run of float32 or float64 values matching a prediction's
// probabilities (within the 4-decimal rounding) at any byte offset.
class PredictionScanner {
 public:
  explicit PredictionScanner(std::vector<Prediction> predictions)
      : predictions_(std::move(predictions)) {
    for (size_t i = 0; i < predictions_.size(); ++i) {
      by_first_[Key(predictions_[i][0])].push_back(i);
    }
  }

  // The index of a prediction found in `bytes`, or -1.
  int Find(const std::string& bytes) const {
    for (size_t offset = 0; offset + 8 <= bytes.size(); ++offset) {
      float f;
      std::memcpy(&f, bytes.data() + offset, 4);
      int found = Match(bytes, offset, f, 4);
      if (found >= 0) return found;
      double d;
      std::memcpy(&d, bytes.data() + offset, 8);
      found = Match(bytes, offset, d, 8);
      if (found >= 0) return found;
    }
    return -1;
  }

 private:
  static int64_t Key(double value) { return std::llround(value * 1e4); }

  template <typename T>
  int Match(const std::string& bytes, size_t offset, T first,
            size_t width) const {
    double value = static_cast<double>(first);
    // Exact 0 and 1 say nothing about a patient.
    if (!(value > 1e-3 && value < 1 - 1e-3)) return -1;
    for (int64_t key = Key(value) - 1; key <= Key(value) + 1; ++key) {
      auto it = by_first_.find(key);
      if (it == by_first_.end()) continue;
      for (size_t index : it->second) {
        const Prediction& p = predictions_[index];
        if (offset + p.size() * width > bytes.size()) continue;
        bool all = true;
        for (size_t k = 0; k < p.size() && all; ++k) {
          T v;
          std::memcpy(&v, bytes.data() + offset + k * width, width);
          all = std::abs(static_cast<double>(v) - p[k]) <= 6e-5;
        }
        if (all) return static_cast<int>(index);
      }
    }
    return -1;
  }

  std::vector<Prediction> predictions_;
  std::unordered_map<int64_t, std::vector<size_t>> by_first_;
};

class WirePrivacyTest : public ::testing::Test {
 protected:
  void WriteKit(const std::string& site) {
    TlsMaterial tls = pki_.Participant(site, Role::kSite);
    std::string kit = dir_.Join("kits/" + site);
    ASSERT_TRUE(MakeDirectories(kit).ok());
    ASSERT_TRUE(WriteFileAtomically(kit + "/ca.pem", tls.ca_cert).ok());
    ASSERT_TRUE(WriteFileAtomically(kit + "/cert.pem", tls.cert).ok());
    ASSERT_TRUE(WriteFileAtomically(kit + "/key.pem", tls.key).ok());
  }

  TestPki pki_;
  TempDir dir_;
  Recording recording_;
};

TEST_F(WirePrivacyTest, NothingIdentifyingOrPerPatientLeavesTheSites) {
  const std::vector<std::string> sites = {"site-1", "site-2", "site-3"};
  absl::StatusOr<Subprocess> synth = Subprocess::Start(
      {BinaryPath("echofed-agent"), "synth", "--out", dir_.Join("data"),
       "--sites", "3", "--patients", "30", "--image-size", "64"},
      dir_.Join("synth.log"));
  ASSERT_TRUE(synth.ok());
  ASSERT_EQ(synth->Wait(absl::Seconds(120)), 0);

  CoordinatorServerOptions options;
  options.listen_address = "127.0.0.1:0";
  options.tls = pki_.Coordinator();
  options.enrolment = MakeEnrolment({{"site-1", "site"},
                                     {"site-2", "site"},
                                     {"site-3", "site"},
                                     {"op", "operator"}});
  options.coordinator.state_dir = dir_.Join("state");
  Recording* recording = &recording_;
  options.make_interceptors = testing::ObserveReceivedMessages(
      [recording](const std::string& method, void* message) {
        std::string bytes = Serialize(method, message);
        absl::MutexLock lock(&recording->mu);
        recording->messages.emplace_back(method, std::move(bytes));
      });
  absl::StatusOr<std::unique_ptr<CoordinatorServer>> server =
      CoordinatorServer::Start(std::move(options));
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", (*server)->port());

  std::vector<Subprocess> agents;
  for (const std::string& site : sites) {
    WriteKit(site);
    std::string config = dir_.Join(site + ".textproto");
    ASSERT_TRUE(WriteFileAtomically(
                    config, absl::StrCat("coordinator_address: \"", address,
                                         "\"\ncoordinator_name: \"localhost\"\n"
                                         "tls { ca_cert: \"kits/",
                                         site, "/ca.pem\" cert: \"kits/", site,
                                         "/cert.pem\" key: \"kits/", site,
                                         "/key.pem\" }\ndata_dir: \"data/",
                                         site, "\"\n"))
                    .ok());
    absl::StatusOr<Subprocess> agent =
        Subprocess::Start({BinaryPath("echofed-agent"), "run", "--config",
                           config, "--exit-after-run", "--threads", "1"},
                          dir_.Join(site + ".log"));
    ASSERT_TRUE(agent.ok());
    agents.push_back(std::move(*agent));
  }

  // Two training hospitals and one external validation hospital; an image
  // and clinical fusion model, so the clinical table is used too.
  Plan plan = testing::MakePlan({"site-1", "site-2"}, {"site-3"}, 2);
  plan.set_model("resnet_small_fusion");
  plan.set_image_size(64);
  plan.set_local_epochs(1);
  auto admin = Admin::NewStub(grpc::CreateCustomChannel(
      address, MakeChannelCredentials(pki_.Participant("op", Role::kOperator)),
      MakeChannelArguments("localhost")));
  StartRunResponse started;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    StartRunRequest request;
    *request.mutable_plan() = plan;
    grpc::Status status = admin->StartRun(&context, request, &started);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  RunStatus run;
  absl::Time give_up = absl::Now() + absl::Minutes(6);
  while (absl::Now() < give_up) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(10));
    RunStatusRequest request;
    request.set_run_id(started.run_id());
    if (admin->GetRunStatus(&context, request, &run).ok() &&
        (run.state() == RunStatus::DONE || run.state() == RunStatus::FAILED)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(250));
  }
  ASSERT_EQ(run.state(), RunStatus::DONE) << run.message();
  for (Subprocess& agent : agents) agent.Wait(absl::Seconds(30));
  // The last round's evaluations arrived (the check below has material).
  ASSERT_GE(run.rounds(run.rounds_size() - 1).evaluations_size(), 3);

  // Per-patient predictions of the final model, computed at each site.
  const std::string final_model =
      absl::StrFormat("%s/models/%s/round-%05d.efm", dir_.Join("state"),
                      started.run_id(), run.rounds_size() - 1);
  std::string plan_text;
  ASSERT_TRUE(
      google::protobuf::TextFormat::PrintToString(run.plan(), &plan_text));
  ASSERT_TRUE(WriteFileAtomically(dir_.Join("plan.textproto"), plan_text).ok());
  std::vector<Prediction> predictions;
  for (const std::string& site : sites) {
    absl::StatusOr<Subprocess> diagnose =
        Subprocess::Start({BinaryPath("echofed-agent"), "diagnose", "--model",
                           final_model, "--plan", dir_.Join("plan.textproto"),
                           "--data", dir_.Join("data/" + site), "--out",
                           dir_.Join("diagnosis/" + site), "--threads", "1"},
                          dir_.Join("diagnose-" + site + ".log"));
    ASSERT_TRUE(diagnose.ok());
    ASSERT_EQ(diagnose->Wait(absl::Seconds(120)), 0)
        << ReadFileToString(dir_.Join("diagnose-" + site + ".log"))
               .value_or("");
    std::string csv_path;
    for (const auto& entry :
         std::filesystem::directory_iterator(dir_.Join("diagnosis/" + site))) {
      if (entry.path().extension() == ".csv") csv_path = entry.path();
    }
    ASSERT_FALSE(csv_path.empty());
    std::vector<std::string> lines =
        absl::StrSplit(*ReadFileToString(csv_path), '\n', absl::SkipEmpty());
    std::vector<std::string> header = SplitCsvLine(lines[0]);
    std::vector<int> columns;
    for (size_t c = 0; c < header.size(); ++c) {
      if (absl::StartsWith(header[c], "p_")) columns.push_back(c);
    }
    ASSERT_EQ(columns.size(), 3u);
    for (size_t i = 1; i < lines.size(); ++i) {
      std::vector<std::string> fields = SplitCsvLine(lines[i]);
      Prediction p;
      for (int c : columns) {
        double value;
        if (absl::SimpleAtod(fields[c], &value)) p.push_back(value);
      }
      if (p.size() == 3) predictions.push_back(p);
    }
  }
  ASSERT_GE(predictions.size(), 80u);

  // What must not leave: identifiers and dates from the DICOM headers,
  // the clinical rows, and blocks of pixels from every image.
  std::set<std::string> needles;
  int images = 0;
  for (const std::string& site : sites) {
    std::string site_dir = dir_.Join("data/" + site);
    std::vector<std::string> manifest = absl::StrSplit(
        *ReadFileToString(site_dir + "/manifest.csv"), '\n', absl::SkipEmpty());
    for (size_t i = 1; i < manifest.size(); ++i) {
      std::vector<std::string> fields = SplitCsvLine(manifest[i]);
      needles.insert(fields[0]);  // patient id
      std::string image_path = site_dir + "/" + fields[1];
      DcmFileFormat file;
      if (absl::EndsWith(image_path, ".dcm") &&
          file.loadFile(image_path.c_str()).good()) {
        DcmDataset* dataset = file.getDataset();
        for (const DcmTagKey& tag :
             {DCM_PatientID, DCM_PatientName, DCM_PatientBirthDate,
              DCM_AccessionNumber, DCM_StudyInstanceUID, DCM_SeriesInstanceUID,
              DCM_SOPInstanceUID}) {
          std::string value = DicomString(dataset, tag);
          if (value.size() >= 6) needles.insert(value);
        }
      }
      absl::StatusOr<GrayImage> image = ReadGrayImage(image_path);
      ASSERT_TRUE(image.ok()) << image_path << ": " << image.status();
      ++images;
      for (int row :
           {image->height / 3, image->height / 2, 2 * image->height / 3}) {
        const uint8_t* start =
            image->pixels.data() + row * image->width + image->width / 2 - 12;
        std::string block(reinterpret_cast<const char*>(start), 24);
        if (std::set<char>(block.begin(), block.end()).size() >= 6) {
          needles.insert(block);
        }
      }
    }
    std::vector<std::string> clinical = absl::StrSplit(
        *ReadFileToString(site_dir + "/clinical.csv"), '\n', absl::SkipEmpty());
    for (size_t i = 1; i < clinical.size(); ++i) {
      // The row without its id: the values of one patient together.
      needles.insert(clinical[i].substr(clinical[i].find(',')));
    }
  }
  ASSERT_GE(images, 90);
  ASSERT_GE(needles.size(), 400u);

  std::vector<std::pair<std::string, std::string>> messages;
  {
    absl::MutexLock lock(&recording_.mu);
    messages = recording_.messages;
  }
  std::map<std::string, int> by_method;
  for (const auto& [method, bytes] : messages) ++by_method[method];
  ASSERT_GT(by_method["/echofed.Federation/UploadUpdate"], 0);
  ASSERT_GT(by_method["/echofed.Federation/ReportEvaluation"], 0);

  // The recording is complete enough to catch a leak: the initial model's
  // weights, sent by one site, are found in it.
  TensorBundle initial = *(*ModelFileReader::Open(absl::StrFormat(
                               "%s/models/%s/round-00000.efm",
                               dir_.Join("state"), started.run_id())))
                              ->ReadAll();
  std::string weights_sample = initial.data[0].substr(0, 32);
  bool sample_found = false;
  for (const auto& [method, bytes] : messages) {
    sample_found |= bytes.find(weights_sample) != std::string::npos;
  }
  EXPECT_TRUE(sample_found);

  PredictionScanner scanner(predictions);
  // And the scanner finds a prediction planted as float64 or float32 values
  // at an odd offset.
  {
    std::string as_doubles = "\x11\x22\x33", as_floats = "\x01";
    for (double p : predictions[7]) {
      float f = static_cast<float>(p);
      as_doubles.append(reinterpret_cast<const char*>(&p), 8);
      as_floats.append(reinterpret_cast<const char*>(&f), 4);
    }
    EXPECT_EQ(scanner.Find(as_doubles + "tail"), 7);
    EXPECT_EQ(scanner.Find(as_floats + "tail"), 7);
  }

  for (const auto& [method, bytes] : messages) {
    for (const std::string& needle : needles) {
      ASSERT_EQ(bytes.find(needle), std::string::npos)
          << method << " carried " << absl::CHexEscape(needle);
    }
    // Model weights are the model, not predictions: scan everything else.
    if (method == "/echofed.Federation/UploadUpdate") continue;
    int leaked = scanner.Find(bytes);
    EXPECT_EQ(leaked, -1) << method << " carried the prediction of patient #"
                          << leaked;
  }
}

}  // namespace
}  // namespace echofed
