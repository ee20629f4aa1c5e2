#include "common/plan_util.h"

#include <cmath>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/dp_accountant.h"
#include "common/pki.h"

namespace echofed {

double DefaultWeightDecay(Plan::Trainer trainer) {
  return trainer == Plan::ADAMW ? 1e-2 : 1e-4;
}

void ApplyPlanDefaults(Plan* plan) {
  if (plan->model().empty()) plan->set_model("small_cnn");
  if (plan->image_size() == 0) plan->set_image_size(64);
  if (plan->rounds() == 0) plan->set_rounds(3);
  if (plan->local_epochs() == 0) plan->set_local_epochs(1);
  if (plan->batch_size() == 0) plan->set_batch_size(16);
  if (plan->learning_rate() == 0) plan->set_learning_rate(0.01);
  if (plan->strategy() == Plan::STRATEGY_UNSPECIFIED) {
    plan->set_strategy(Plan::FEDAVG);
  }
  if (plan->min_sites() == 0) plan->set_min_sites(1);
  if (plan->round_deadline_seconds() == 0)
    plan->set_round_deadline_seconds(600);
  if (plan->train_fraction() == 0) plan->set_train_fraction(0.7);
  if (plan->max_samples_per_site() == 0) {
    plan->set_max_samples_per_site(1000000);
  }
  if (plan->trainer() == Plan::TRAINER_UNSPECIFIED)
    plan->set_trainer(Plan::SGD);
  if (plan->normalization() == Plan::NORMALIZATION_UNSPECIFIED) {
    plan->set_normalization(Plan::PER_IMAGE_ZSCORE);
  }
  if (!plan->has_roi_margin()) plan->set_roi_margin(0.1);
  if (plan->min_cell_count() == 0) plan->set_min_cell_count(5);
  if (!plan->has_proximal_mu()) plan->set_proximal_mu(0.01);
  if (!plan->has_server_learning_rate()) plan->set_server_learning_rate(0.01);
  if (!plan->has_server_beta1()) plan->set_server_beta1(0.9);
  if (!plan->has_server_beta2()) plan->set_server_beta2(0.99);
  if (!plan->has_server_tau()) plan->set_server_tau(1e-3);
  if (!plan->has_trim_fraction()) plan->set_trim_fraction(0.25);
  if (plan->schedule() == Plan::SCHEDULE_UNSPECIFIED) {
    plan->set_schedule(Plan::CONSTANT);
  }
  if (plan->loss() == Plan::LOSS_UNSPECIFIED) {
    plan->set_loss(Plan::WEIGHTED_CROSS_ENTROPY);
  }
  if (!plan->has_focal_gamma()) plan->set_focal_gamma(2.0);
  if (!plan->has_augment()) plan->set_augment(true);
  if (plan->augmentation() == Plan::AUGMENTATION_UNSPECIFIED) {
    plan->set_augmentation(Plan::STRONG);
  }
  if (!plan->has_weight_decay()) {
    plan->set_weight_decay(DefaultWeightDecay(plan->trainer()));
  }
  if (!plan->has_keep_optimizer_state()) plan->set_keep_optimizer_state(true);
  if (!plan->has_test_time_flip()) plan->set_test_time_flip(false);
  if (!plan->has_mixup_alpha()) plan->set_mixup_alpha(0);
  if (plan->frame_step() == 0) plan->set_frame_step(1);
  if (plan->heads_size() == 0) plan->add_heads(Plan::SUBTYPE);
  if (plan->wire_precision() == Plan::WIRE_PRECISION_UNSPECIFIED) {
    plan->set_wire_precision(Plan::FULL);
  }
  if (plan->has_differential_privacy() &&
      plan->differential_privacy().delta() == 0) {
    plan->mutable_differential_privacy()->set_delta(kDefaultPrivacyDelta);
  }
}

bool UsesTestTimeFlip(const Plan& plan) { return plan.test_time_flip(); }

absl::Status ValidatePlan(const Plan& plan) {
  auto bad = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("plan.", field, ": ", why));
  };
  if (plan.class_names_size() < 2) {
    return bad("class_names", "at least two classes are needed");
  }
  std::set<std::string> classes(plan.class_names().begin(),
                                plan.class_names().end());
  if (static_cast<int>(classes.size()) != plan.class_names_size()) {
    return bad("class_names", "names must be distinct");
  }
  if (plan.image_size() < 16 || plan.image_size() > 1024) {
    return bad("image_size", "must be between 16 and 1024");
  }
  if (plan.rounds() < 1 || plan.rounds() > 100000) {
    return bad("rounds", "must be at least 1");
  }
  if (plan.local_epochs() < 1) return bad("local_epochs", "must be at least 1");
  if (plan.batch_size() < 1) return bad("batch_size", "must be at least 1");
  if (!(plan.learning_rate() > 0)) {
    return bad("learning_rate", "must be positive");
  }
  if (!Plan::Strategy_IsValid(plan.strategy()) ||
      plan.strategy() == Plan::STRATEGY_UNSPECIFIED) {
    return bad("strategy", "unknown strategy");
  }
  if (!(plan.proximal_mu() >= 0)) {
    return bad("proximal_mu", "must be 0 or more");
  }
  if (!(plan.server_learning_rate() > 0)) {
    return bad("server_learning_rate", "must be positive");
  }
  if (!(plan.server_beta1() >= 0 && plan.server_beta1() < 1)) {
    return bad("server_beta1", "must be in [0, 1)");
  }
  if (!(plan.server_beta2() >= 0 && plan.server_beta2() < 1)) {
    return bad("server_beta2", "must be in [0, 1)");
  }
  if (!(plan.server_tau() > 0)) return bad("server_tau", "must be positive");
  if (!(plan.trim_fraction() >= 0 && plan.trim_fraction() < 0.5)) {
    return bad("trim_fraction", "must be in [0, 0.5)");
  }
  if (!(plan.max_update_norm() >= 0) || std::isinf(plan.max_update_norm())) {
    return bad("max_update_norm", "must be a finite number >= 0 (0: off)");
  }
  if (!(plan.update_norm_outlier_factor() == 0 ||
        plan.update_norm_outlier_factor() > 1) ||
      std::isinf(plan.update_norm_outlier_factor())) {
    return bad("update_norm_outlier_factor", "must be 0 (off) or above 1");
  }
  if (plan.secure_aggregation()) {
    // The coordinator sees only the sum: nothing per update to rank or
    // measure.
    if (plan.strategy() == Plan::MEDIAN ||
        plan.strategy() == Plan::TRIMMED_MEAN) {
      return bad("secure_aggregation",
                 absl::StrCat(Plan::Strategy_Name(plan.strategy()),
                              " needs every update in the clear; secure "
                              "aggregation needs a linear strategy (FEDAVG, "
                              "FEDPROX, FEDBN, FEDADAM, FEDYOGI)"));
    }
    int train_sites = 0;
    for (const Plan::SiteRole& entry : plan.sites()) {
      if (entry.role() == Plan::TRAIN) ++train_sites;
    }
    if (train_sites < 2) {
      return bad("secure_aggregation",
                 "needs at least two training sites: a sum of one update is "
                 "the update");
    }
    if (plan.max_update_norm() > 0 || plan.update_norm_outlier_factor() > 0) {
      return bad("secure_aggregation",
                 "norm bounding measures single updates, which secure "
                 "aggregation hides; bound updates at the sites instead "
                 "(differential privacy clips them)");
    }
  }
  if (plan.has_differential_privacy()) {
    const DifferentialPrivacy& dp = plan.differential_privacy();
    if (!(dp.clip_norm() > 0) || std::isinf(dp.clip_norm())) {
      return bad("differential_privacy.clip_norm",
                 "must be a finite number > 0");
    }
    if (!(dp.noise_multiplier() > 0) || std::isinf(dp.noise_multiplier())) {
      return bad("differential_privacy.noise_multiplier",
                 "must be a finite number > 0");
    }
    // 0 is the default (1e-5) before ApplyPlanDefaults.
    if (!(dp.delta() >= 0 && dp.delta() < 1)) {
      return bad("differential_privacy.delta", "must be in (0, 1)");
    }
  }
  if (!(plan.weight_decay() >= 0 && plan.weight_decay() < 1)) {
    return bad("weight_decay", "must be in [0, 1)");
  }
  if (!(plan.focal_gamma() >= 0 && plan.focal_gamma() <= 10)) {
    return bad("focal_gamma", "must be between 0 and 10");
  }
  if (!(plan.mixup_alpha() >= 0 && plan.mixup_alpha() <= 10)) {
    return bad("mixup_alpha", "must be between 0 (off) and 10");
  }
  std::set<int> heads;
  for (int head : plan.heads()) {
    if (head == Plan::HEAD_UNSPECIFIED || !Plan::Head_IsValid(head)) {
      return bad("heads", "unknown head");
    }
    if (!heads.insert(head).second) {
      return bad("heads",
                 absl::StrCat(Plan::Head_Name(head), " is listed twice"));
    }
  }
  if (!heads.count(Plan::SUBTYPE)) {
    return bad("heads", "SUBTYPE must be among the heads");
  }
  if (heads.size() > 1 && !absl::EndsWith(plan.model(), "_fusion")) {
    return bad("heads", absl::StrCat("model '", plan.model(),
                                     "' reads images only; heads other than "
                                     "SUBTYPE need a *_fusion model"));
  }
  if (plan.min_sites() < 1) return bad("min_sites", "must be at least 1");
  if (plan.round_deadline_seconds() < 1) {
    return bad("round_deadline_seconds", "must be at least 1");
  }
  if (!(plan.train_fraction() > 0 && plan.train_fraction() <= 1)) {
    return bad("train_fraction", "must be in (0, 1]");
  }
  if (plan.max_samples_per_site() < 1) {
    return bad("max_samples_per_site", "must be at least 1");
  }
  if (!(plan.roi_margin() >= 0 && plan.roi_margin() <= 1)) {
    return bad("roi_margin", "must be between 0 and 1");
  }
  if (plan.min_cell_count() < 1) {
    return bad("min_cell_count", "must be at least 1");
  }
  if (!Plan::FrameSelection_IsValid(plan.frame_selection())) {
    return bad("frame_selection", "unknown frame selection");
  }
  // A loop has at most 2^31 frames; a step beyond a few thousand is a typo
  // that would silently keep frame 0 alone.
  if (plan.frame_step() < 1 || plan.frame_step() > 10000) {
    return bad("frame_step", "must be between 1 and 10000");
  }
  std::set<std::string> sites;
  int train_sites = 0;
  for (const Plan::SiteRole& site : plan.sites()) {
    if (absl::Status status = ValidateIdentityName(site.site()); !status.ok()) {
      return bad("sites", status.message());
    }
    if (!sites.insert(site.site()).second) {
      return bad("sites",
                 absl::StrCat("site '", site.site(), "' is listed twice"));
    }
    if (site.role() == Plan::ROLE_UNSPECIFIED) {
      return bad("sites", absl::StrCat("site '", site.site(), "' has no role"));
    }
    if (site.role() == Plan::TRAIN) ++train_sites;
  }
  if (train_sites < plan.min_sites()) {
    return bad("sites", absl::StrCat("only ", train_sites,
                                     " training sites for min_sites ",
                                     plan.min_sites()));
  }
  return absl::OkStatus();
}

Plan::Role RoleInPlan(const Plan& plan, const std::string& site) {
  for (const Plan::SiteRole& entry : plan.sites()) {
    if (entry.site() == site) return entry.role();
  }
  return Plan::ROLE_UNSPECIFIED;
}

}  // namespace echofed
