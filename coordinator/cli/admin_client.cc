#include "coordinator/cli/admin_client.h"

#include <chrono>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/dp_accountant.h"
#include "common/metrics.h"
#include "common/run_status.h"
#include "common/tensor_bundle.h"

namespace echofed {
namespace {

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        absl::ToChronoMilliseconds(timeout));
  return context;
}

// Downloads are checked by the ChunkAssembler as they arrive.
ModelFileOptions VerifiedModelFile() {
  ModelFileOptions options;
  options.digests_verified = true;
  return options;
}

std::string Percent(double value) {
  return std::isnan(value) ? "   n/a" : absl::StrFormat("%5.1f%%", 100 * value);
}

// Macro one-vs-rest AUC with its 95% DeLong interval (conservative across
// classes, see MetricsSummary::macro_auc_ci).
std::string MacroAuc(const EvalAggregate& aggregate) {
  MetricsSummary summary = Summarize(aggregate);
  if (std::isnan(summary.macro_auc)) return "n/a";
  if (std::isnan(summary.macro_auc_ci.lower)) {
    return absl::StrFormat("%.3f", summary.macro_auc);
  }
  return absl::StrFormat("%.3f (%.3f-%.3f)", summary.macro_auc,
                         summary.macro_auc_ci.lower,
                         summary.macro_auc_ci.upper);
}

// The extra heads of a fusion model, pooled over the sites per set: AUC of
// the binary heads, Harrell's C of the prognosis head.
std::string FormatHeads(const Plan& plan, const RoundRecord& round) {
  std::string out;
  for (int head : plan.heads()) {
    if (head == Plan::SUBTYPE) continue;
    const std::string name = Plan::Head_Name(static_cast<Plan::Head>(head));
    for (EvalSplit split : {INTERNAL_VALIDATION, EXTERNAL_VALIDATION}) {
      EvalAggregate binary;
      SurvivalAggregate survival;
      int sites = 0, suppressed = 0;
      for (const SiteEvaluation& evaluation : round.evaluations()) {
        for (const HeadAggregate& reported : evaluation.heads()) {
          if (reported.head() != head) continue;
          const bool is_survival = head == Plan::PROGNOSIS;
          if ((is_survival ? reported.survival().split()
                           : reported.binary().split()) != split) {
            continue;
          }
          ++sites;
          if (is_survival ? reported.survival().suppressed()
                          : reported.binary().suppressed()) {
            ++suppressed;
            continue;
          }
          absl::Status added =
              is_survival ? AddSurvivalAggregate(reported.survival(), &survival)
                          : AddAggregate(reported.binary(), &binary);
          added.IgnoreError();  // validated by the coordinator
        }
      }
      if (sites == 0) continue;
      const char* set = split == INTERNAL_VALIDATION ? "internal" : "external";
      std::string value;
      if (head == Plan::PROGNOSIS) {
        ConcordanceIndex c = CIndex(survival);
        value = std::isnan(c.c_index)
                    ? "C-index n/a"
                    : absl::StrFormat("C-index %.3f (%.3f-%.3f), %d patients",
                                      c.c_index, c.ci.lower, c.ci.upper,
                                      survival.num_patients());
      } else {
        MetricsSummary summary = Summarize(binary);
        const ClassMetrics& positive =
            summary.classes.size() == 2 ? summary.classes[1] : ClassMetrics();
        value =
            std::isnan(positive.auc)
                ? "AUC n/a"
                : absl::StrFormat("AUC %.3f (%.3f-%.3f), %d images",
                                  positive.auc, positive.auc_ci.lower,
                                  positive.auc_ci.upper, binary.num_images());
      }
      absl::StrAppend(
          &out, absl::StrFormat(
                    "  %-16s %-9s %s%s\n", name, set, value,
                    suppressed > 0
                        ? absl::StrFormat(" (%d sites suppressed)", suppressed)
                        : ""));
    }
  }
  return out;
}

}  // namespace

AdminClient::AdminClient(const std::string& address, const TlsMaterial& tls,
                         const std::string& server_name)
    : stub_(Admin::NewStub(grpc::CreateCustomChannel(
          address, MakeChannelCredentials(tls),
          MakeChannelArguments(server_name.empty() ? HostOf(address)
                                                   : server_name)))) {}

absl::StatusOr<std::string> AdminClient::StartRun(const Plan& plan) {
  StartRunRequest request;
  *request.mutable_plan() = plan;
  StartRunResponse response;
  auto context = Context(absl::Seconds(30));
  absl::Status status =
      FromGrpcStatus(stub_->StartRun(context.get(), request, &response));
  if (!status.ok()) return status;
  return response.run_id();
}

absl::Status AdminClient::StopRun(const std::string& run_id) {
  StopRunRequest request;
  request.set_run_id(run_id);
  StopRunResponse response;
  auto context = Context(absl::Seconds(30));
  return FromGrpcStatus(stub_->StopRun(context.get(), request, &response));
}

absl::StatusOr<RunStatus> AdminClient::GetRunStatus(const std::string& run_id) {
  RunStatusRequest request;
  request.set_run_id(run_id);
  RunStatus response;
  auto context = Context(absl::Seconds(30));
  absl::Status status =
      FromGrpcStatus(stub_->GetRunStatus(context.get(), request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<ListRunsResponse> AdminClient::ListRuns() {
  ListRunsResponse response;
  auto context = Context(absl::Seconds(30));
  absl::Status status = FromGrpcStatus(
      stub_->ListRuns(context.get(), ListRunsRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<std::string> AdminClient::DownloadModel(
    const std::string& run_id, int round, const std::string& path) {
  AdminDownloadRequest request;
  request.set_run_id(run_id);
  request.set_round(round);
  auto context = Context(absl::Minutes(60));
  std::unique_ptr<grpc::ClientReader<ModelChunk>> reader =
      stub_->DownloadModel(context.get(), request);
  std::unique_ptr<ModelFileWriter> writer;
  ChunkAssembler assembler(
      {},
      [&](const ModelManifest& manifest) -> absl::Status {
        absl::StatusOr<std::unique_ptr<ModelFileWriter>> created =
            ModelFileWriter::Create(path, manifest, VerifiedModelFile());
        if (!created.ok()) return created.status();
        writer = std::move(*created);
        return absl::OkStatus();
      },
      [&](int, absl::string_view bytes) { return writer->Append(bytes); });
  if (absl::Status status = ReceiveModelStream(
          *reader, *context,
          [&](const ModelChunk& chunk) { return assembler.Accept(chunk); });
      !status.ok()) {
    return status;
  }
  absl::StatusOr<std::string> digest = assembler.Finish();
  if (!digest.ok()) return digest.status();
  return writer->Commit();
}

std::string FormatRound(const RunStatus& status, const RoundRecord& round) {
  const Plan& plan = status.plan();
  std::string out = absl::StrFormat(
      "round %d/%d  model %s  contributors %d  mean train loss %.4f\n",
      round.round(), plan.rounds(),
      absl::BytesToHexString(round.model_digest()).substr(0, 12),
      round.contributors_size(), round.mean_train_loss());
  if (round.has_audit_head()) {
    // In full: it is what `echofed audit verify` checks a log against.
    absl::StrAppend(
        &out, "  audit log at commit: ", round.audit_head().records(),
        " records, head ", PrintableText(round.audit_head().hash()), "\n");
  }
  if (round.excluded_size() > 0) {
    absl::StrAppend(&out, "  left out by norm bounding: ",
                    absl::StrJoin(round.excluded(), ", "), "\n");
  }
  if (round.masking_attempts() > 0) {
    absl::StrAppend(
        &out, "  secure aggregation: only the masked sum was seen",
        round.masking_attempts() > 1
            ? absl::StrCat("; masked ", round.masking_attempts(),
                           " times, dropped after masking: ",
                           absl::StrJoin(round.masking_dropouts(), ", "))
            : "",
        "\n");
  }
  if (round.privacy_size() > 0) {
    std::vector<std::string> spent;
    for (const SitePrivacy& privacy : round.privacy()) {
      spent.push_back(absl::StrFormat("%s %.4g (delta %g)",
                                      PrintableText(privacy.site()),
                                      privacy.epsilon(), privacy.delta()));
    }
    absl::StrAppend(
        &out, "  privacy spent (epsilon): ", absl::StrJoin(spent, ", "), "\n");
  }
  absl::StrAppend(&out, absl::StrFormat("  %-16s %-9s %7s %9s %9s %8s  %s\n",
                                        "site", "set", "images", "accuracy",
                                        "macro-F1", "loss", "AUC (95% CI)"));
  EvalAggregate internal, external;
  // The study's unit of analysis: one case per patient (a patient's mean
  // image probability), pooled the same way; sites whose agents report no
  // patient-level aggregate are left out of it and counted.
  EvalAggregate internal_patients, external_patients;
  int without_patient_level = 0;
  for (const SiteEvaluation& evaluation : round.evaluations()) {
    const EvalAggregate& a = evaluation.aggregate();
    bool is_internal = a.split() == INTERNAL_VALIDATION;
    if (a.suppressed()) {
      absl::StrAppend(
          &out, absl::StrFormat("  %-16s %-9s  suppressed: fewer patients than "
                                "the minimum cell count\n",
                                evaluation.site(),
                                is_internal ? "internal" : "external"));
      continue;
    }
    AddAggregate(a, is_internal ? &internal : &external).IgnoreError();
    if (!evaluation.has_patient_aggregate()) {
      ++without_patient_level;
    } else if (!evaluation.patient_aggregate().suppressed()) {
      AddAggregate(evaluation.patient_aggregate(),
                   is_internal ? &internal_patients : &external_patients)
          .IgnoreError();
    }
    absl::StrAppend(
        &out, absl::StrFormat("  %-16s %-9s %7d %9s %9s %8.4f  %s\n",
                              evaluation.site(),
                              is_internal ? "internal" : "external",
                              a.num_images(), Percent(Accuracy(a)),
                              Percent(MacroF1(a)), MeanLoss(a), MacroAuc(a)));
  }
  // Pooled rows: images, then patients (no loss: it is a per-image sum).
  struct PooledRow {
    const char* label;
    const char* set;
    const EvalAggregate* pooled;
    bool with_loss;
  };
  for (const PooledRow& row :
       {PooledRow{"POOLED", "internal", &internal, true},
        PooledRow{"POOLED", "external", &external, true},
        PooledRow{"POOLED patients", "internal", &internal_patients, false},
        PooledRow{"POOLED patients", "external", &external_patients, false}}) {
    const EvalAggregate& pooled = *row.pooled;
    if (pooled.num_images() == 0) continue;
    absl::StrAppend(
        &out,
        absl::StrFormat(
            "  %-16s %-9s %7d %9s %9s %8s  %s\n", row.label, row.set,
            pooled.num_images(), Percent(Accuracy(pooled)),
            Percent(MacroF1(pooled)),
            row.with_loss ? absl::StrFormat("%.4f", MeanLoss(pooled)) : "",
            MacroAuc(pooled)));
  }
  if (without_patient_level > 0 &&
      internal_patients.num_images() + external_patients.num_images() > 0) {
    absl::StrAppend(&out,
                    absl::StrFormat("  (patient rows leave out %d site set(s) "
                                    "whose agents report images only)\n",
                                    without_patient_level));
  }
  absl::StrAppend(&out, FormatHeads(plan, round));
  return out;
}

std::string PrintableText(absl::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

std::string FormatPrivacy(const RunStatus& status) {
  const Plan& plan = status.plan();
  if (!plan.has_differential_privacy()) return "";
  const DifferentialPrivacy& dp = plan.differential_privacy();
  absl::StatusOr<PrivacySpent> projected = ProjectedRunEpsilon(plan);
  std::string out = absl::StrFormat(
      "differential privacy: clip norm %g, noise multiplier %g; epsilon per "
      "training site over %d rounds: %s\n",
      dp.clip_norm(), dp.noise_multiplier(), plan.rounds(),
      projected.ok() ? absl::StrFormat("%.4g at delta %g", projected->epsilon,
                                       projected->delta)
                     : std::string(projected.status().message()));
  std::vector<SitePrivacySpent> spent = LatestSitePrivacy(status);
  if (spent.empty()) {
    absl::StrAppend(&out, "  no site has spent any yet\n");
  }
  for (const SitePrivacySpent& site : spent) {
    absl::StrAppend(
        &out, absl::StrFormat("  %-16s epsilon %.4g at delta %g (round %d)\n",
                              PrintableText(site.site), site.epsilon,
                              site.delta, site.round));
  }
  return out;
}

std::string FormatSites(const RunStatus& status) {
  std::string out;
  int64_t now = absl::ToUnixMillis(absl::Now());
  for (const SiteStatus& site : status.sites()) {
    std::string seen =
        site.last_seen_unix_ms() == 0
            ? "never"
            : absl::StrFormat("%.0fs ago",
                              (now - site.last_seen_unix_ms()) / 1000.0);
    // A validation site never trains: no epoch, batch or loss, but what
    // it is doing in the run's phase.
    if (site.role() == Plan::EXTERNAL_VALIDATION && site.joined()) {
      absl::StrAppend(
          &out,
          absl::StrFormat("  %-16s %-20s %s  seen %s  %s\n", site.site(),
                          Plan::Role_Name(site.role()),
                          PrintableText(ValidationSiteState(status, site)),
                          seen, PrintableText(site.device())));
      continue;
    }
    // Epoch, batch and loss describe a training in progress; once the site
    // has uploaded (or before it starts) they are stale, so only its
    // activity is shown, as on the status page.
    std::string progress =
        site.activity() == "training"
            ? absl::StrFormat("epoch %d batch %d loss %.4f  ", site.epoch(),
                              site.batch(), site.loss())
            : "";
    absl::StrAppend(
        &out, absl::StrFormat("  %-16s %-20s %-12s %sseen %s  %s\n",
                              site.site(), Plan::Role_Name(site.role()),
                              PrintableText(site.activity()), progress, seen,
                              PrintableText(site.device())));
  }
  return out;
}

}  // namespace echofed
