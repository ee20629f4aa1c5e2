// Many sites against one coordinator (issue 7, "Load"): the real
// echofed-coordinator process, and N simulated sites in this process, each a
// real gRPC client with its own certificate and its own TLS connection. Each
// site joins, long-polls, downloads the global model, changes it slightly,
// uploads it, and reports a (suppressed) evaluation at the end, exactly as
// an agent would with the NOOP trainer. Prints round times and the
// coordinator's peak RSS against the model size.
//
//   load_bench [--sites 200] [--parameters 1000000] [--rounds 3]

#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/grpc_util.h"
#include "common/pki.h"
#include "common/subprocess.h"
#include "common/tensor_bundle.h"
#include "coordinator/cli/admin_client.h"
#include "coordinator/cli/kits.h"
#include "models/classifier.h"
#include "models/state_exchange.h"
#include "proto/federation.grpc.pb.h"

namespace echofed {
namespace {

std::string Bin(const std::string& name) {
  return ExecutableDir() + "/" + name;
}

// One simulated hospital: the agent's protocol without the training.
class SimulatedSite {
 public:
  SimulatedSite(std::string name, const TlsMaterial& tls,
                const std::string& address)
      : name_(std::move(name)) {
    grpc::ChannelArguments args = MakeChannelArguments("localhost");
    // Its own connection, as a separate hospital would have.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    stub_ = Federation::NewStub(
        grpc::CreateCustomChannel(address, MakeChannelCredentials(tls), args));
  }

  absl::Status Run() {
    {
      grpc::ClientContext context;
      // 200 handshakes at once can overflow the listen backlog: wait for
      // the connection rather than fail fast (the agent retries instead).
      context.set_wait_for_ready(true);
      JoinRequest request;
      request.set_device("cpu");
      request.mutable_data()->set_images(10);
      request.mutable_data()->set_patients(10);
      JoinResponse response;
      if (absl::Status status =
              FromGrpcStatus(stub_->Join(&context, request, &response));
          !status.ok()) {
        return status;
      }
    }
    while (true) {
      grpc::ClientContext context;
      context.set_wait_for_ready(true);
      NextTaskRequest request;
      request.set_wait_seconds(20);
      Task task;
      if (absl::Status status =
              FromGrpcStatus(stub_->NextTask(&context, request, &task));
          !status.ok()) {
        return status;
      }
      absl::Status done;
      switch (task.kind()) {
        case Task::INITIALIZE: {
          auto model = CreateClassifier(
              {task.plan().model(), task.plan().class_names_size()});
          if (!model.ok()) return model.status();
          absl::StatusOr<TensorBundle> bundle =
              ExportState(**model, task.plan().model());
          if (!bundle.ok()) return bundle.status();
          done = Upload(task, *bundle);
          break;
        }
        case Task::TRAIN: {
          absl::StatusOr<TensorBundle> global =
              Download(task.run_id(), task.round() - 1);
          if (!global.ok()) return global.status();
          // A tiny change, as the NOOP trainer makes.
          float first;
          std::memcpy(&first, global->data[0].data(), 4);
          first += 1e-6f;
          std::memcpy(global->data[0].data(), &first, 4);
          if (absl::Status status = SealBundle(&*global); !status.ok()) {
            return status;
          }
          done = Upload(task, *global);
          break;
        }
        case Task::EVALUATE: {
          absl::StatusOr<TensorBundle> global =
              Download(task.run_id(), task.round());
          if (!global.ok()) return global.status();
          done = ReportSuppressed(task);
          break;
        }
        case Task::STOP:
          return absl::OkStatus();
        default:
          break;
      }
      if (!done.ok()) return done;
    }
  }

 private:
  absl::StatusOr<TensorBundle> Download(const std::string& run, int round) {
    grpc::ClientContext context;
    DownloadRequest request;
    request.set_run_id(run);
    request.set_round(round);
    auto reader = stub_->DownloadModel(&context, request);
    BundleAssembler assembler;
    absl::Status status = ReceiveModelStream(
        *reader, context,
        [&](const ModelChunk& chunk) { return assembler.Accept(chunk); });
    if (!status.ok()) return status;
    return assembler.Finish();
  }

  absl::Status Upload(const Task& task, const TensorBundle& bundle) {
    grpc::ClientContext context;
    UploadReceipt receipt;
    auto writer = stub_->UploadUpdate(&context, &receipt);
    UploadChunk first;
    UploadHeader* header = first.mutable_header();
    header->set_run_id(task.run_id());
    header->set_round(task.round());
    header->set_num_samples(10);
    header->set_upload_id(absl::StrCat(name_, "-", task.round()));
    writer->Write(first);
    BundleSource source(&bundle);
    ModelChunker chunker(&source);
    UploadChunk chunk;
    while (true) {
      absl::StatusOr<bool> more = chunker.Next(chunk.mutable_chunk());
      if (!more.ok()) return more.status();
      if (!*more || !writer->Write(chunk)) break;
    }
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }

  absl::Status ReportSuppressed(const Task& task) {
    grpc::ClientContext context;
    EvaluationReport report;
    report.set_run_id(task.run_id());
    report.set_round(task.round());
    EvalAggregate* aggregate = report.mutable_aggregate();
    aggregate->set_split(task.role() == Plan::TRAIN ? INTERNAL_VALIDATION
                                                    : EXTERNAL_VALIDATION);
    const int classes = task.plan().class_names_size();
    aggregate->set_class_count(classes);
    for (int i = 0; i < classes * classes; ++i) aggregate->add_confusion(0);
    aggregate->set_suppressed(true);
    ReportReceipt receipt;
    return FromGrpcStatus(stub_->ReportEvaluation(&context, report, &receipt));
  }

  std::string name_;
  std::unique_ptr<Federation::Stub> stub_;
};

int Main(int argc, char** argv) {
  CLI::App app{"many simulated sites against one coordinator"};
  int sites = 200;
  int64_t parameters = 1'000'000;
  int rounds = 3;
  int window_kib = 0;
  int grpc_memory_mib = 0;
  app.add_option("--sites", sites, "simulated sites")->capture_default_str();
  app.add_option("--stream-window-kib", window_kib,
                 "coordinator stream_window_kib (0: its default)");
  app.add_option("--grpc-memory-mib", grpc_memory_mib,
                 "coordinator grpc_memory_mib (0: its default)");
  app.add_option("--parameters", parameters, "model parameters (float32)")
      ->capture_default_str();
  app.add_option("--rounds", rounds, "rounds")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::string work =
      absl::StrCat(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp",
                   "/echofed-load-bench-", ::getpid());
  std::filesystem::remove_all(work);
  std::string pki = work + "/pki";
  auto check = [](const absl::Status& status, const char* what) {
    if (!status.ok()) {
      std::cerr << what << ": " << status << "\n";
      std::exit(1);
    }
  };
  check(InitStudyPki(pki, "load", 2), "pki");
  check(IssueKit(
            pki,
            {"coordinator", Role::kCoordinator, {"localhost", "127.0.0.1"}, 2}),
        "coordinator kit");
  check(IssueKit(pki, {"operator", Role::kOperator, {}, 2}), "operator kit");
  std::vector<std::string> names;
  for (int i = 1; i <= sites; ++i) {
    names.push_back(absl::StrFormat("site-%03d", i));
    check(IssueKit(pki, {names.back(), Role::kSite, {}, 2}), "site kit");
  }
  check(WriteFileAtomically(
            work + "/coordinator.textproto",
            "listen_address: \"127.0.0.1:0\"\n"
            "tls { ca_cert: \"pki/coordinator/ca.pem\" cert: "
            "\"pki/coordinator/cert.pem\" key: \"pki/coordinator/key.pem\" }\n"
            "state_dir: \"state\"\n"
            "enrolment_file: \"pki/enrolment.textproto\"\n" +
                (window_kib > 0
                     ? absl::StrCat("stream_window_kib: ", window_kib, "\n")
                     : std::string()) +
                (grpc_memory_mib > 0
                     ? absl::StrCat("grpc_memory_mib: ", grpc_memory_mib, "\n")
                     : std::string())),
        "config");
  absl::StatusOr<Subprocess> coordinator = Subprocess::Start(
      {Bin("echofed-coordinator"), "--config", work + "/coordinator.textproto",
       "--port-file", work + "/port"},
      work + "/coordinator.log");
  check(coordinator.status(), "coordinator");
  int port = 0;
  for (int i = 0; i < 400 && port == 0; ++i) {
    absl::StatusOr<std::string> text = ReadFileToString(work + "/port");
    if (!text.ok() ||
        !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port)) {
      absl::SleepFor(absl::Milliseconds(25));
    }
  }
  if (port == 0) {
    std::cerr << "coordinator did not start\n";
    return 1;
  }
  std::string address = absl::StrCat("127.0.0.1:", port);

  std::vector<std::unique_ptr<SimulatedSite>> simulated;
  for (const std::string& name : names) {
    absl::StatusOr<TlsMaterial> kit = LoadKit(pki + "/" + name);
    check(kit.status(), "kit");
    simulated.push_back(std::make_unique<SimulatedSite>(name, *kit, address));
  }
  std::vector<absl::Status> results(sites);
  std::vector<std::thread> threads;
  for (int i = 0; i < sites; ++i) {
    threads.emplace_back([&, i] { results[i] = simulated[i]->Run(); });
  }

  AdminClient admin(address, *LoadKit(pki + "/operator"), "localhost");
  Plan plan;
  plan.set_name("load benchmark");
  for (const char* name : {"NB", "GNB", "GN"}) plan.add_class_names(name);
  plan.set_model(absl::StrCat("bench_blob_", parameters));
  plan.set_image_size(32);
  plan.set_rounds(rounds);
  plan.set_trainer(Plan::NOOP);
  plan.set_min_sites(sites);
  plan.set_round_deadline_seconds(600);
  plan.set_evaluate_every_round(false);
  for (const std::string& name : names) {
    Plan::SiteRole* role = plan.add_sites();
    role->set_site(name);
    role->set_role(Plan::TRAIN);
  }
  absl::Time started = absl::Now();
  absl::StatusOr<std::string> run_id = admin.StartRun(plan);
  check(run_id.status(), "start run");
  absl::StatusOr<RunStatus> status;
  while (absl::Now() < started + absl::Minutes(30)) {
    status = admin.GetRunStatus(*run_id);
    if (status.ok() && (status->state() == RunStatus::DONE ||
                        status->state() == RunStatus::FAILED)) {
      break;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  for (std::thread& thread : threads) thread.join();
  const int64_t coordinator_peak = coordinator->PeakRssNow();
  coordinator->Terminate();
  int failed = 0;
  for (const absl::Status& result : results) {
    if (!result.ok()) {
      if (failed++ < 3) std::cerr << "site: " << result << "\n";
    }
  }
  if (!status.ok() || status->state() != RunStatus::DONE || failed > 0) {
    std::cerr << "run did not finish cleanly ("
              << (status.ok() ? RunStatus::State_Name(status->state())
                              : status.status().ToString())
              << ", " << failed << " sites failed); logs in " << work << "\n";
    return 1;
  }
  std::vector<double> round_seconds;
  for (int r = 1; r < status->rounds_size(); ++r) {
    round_seconds.push_back((status->rounds(r).closed_unix_ms() -
                             status->rounds(r - 1).closed_unix_ms()) /
                            1000.0);
  }
  std::sort(round_seconds.begin(), round_seconds.end());
  const double model_mib = parameters * 4 / 1048576.0;
  const double rss_mib = coordinator_peak / 1048576.0;
  std::cout << "\n| sites | params | rounds | median s/round | coordinator "
               "peak RSS MiB | model MiB | RSS / model | contributors per "
               "round |\n|---|---|---|---|---|---|---|---|\n";
  std::cout << absl::StrFormat(
      "| %d | %d | %d | %.2f | %.0f | %.1f | %.1f | %d |\n", sites, parameters,
      rounds,
      round_seconds.empty() ? 0.0 : round_seconds[round_seconds.size() / 2],
      rss_mib, model_mib, rss_mib / model_mib,
      status->rounds(status->rounds_size() - 1).contributors_size());
  std::filesystem::remove_all(work);
  return 0;
}

}  // namespace
}  // namespace echofed

int main(int argc, char** argv) { return echofed::Main(argc, argv); }
