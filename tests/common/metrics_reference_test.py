#!/usr/bin/python3
"""Checks common/metrics against scikit-learn on fixed-seed cases.

Usage: metrics_reference_test.py PATH/TO/metrics_reference_tool

For each data set (binary and 3-class, with tied scores, a class absent from
the truth, a small sample) the cases are written to CSV, the C++ tool builds
the additive aggregate with AddCase exactly as a site does and prints every
metric as JSON, and each metric is compared with scikit-learn, or, where
scikit-learn has none (specificity, NPV, Wilson intervals, DeLong, net
benefit), with a direct computation on the raw cases here.

Counts and ratios of counts must agree to 1e-9. Score-based metrics are
computed by the tool from 1000-bin histograms: on the binned scores (each
image's score replaced by its bin) AUCs and DeLong variances must agree with
the reference to 1e-9; on the raw scores AUCs must agree to 1e-3 (in the
30-case set, where one pair sharing a bin moves the AUC by more, to the
exact bound of the binning error), the other binned quantities to
tolerances stated where they are checked.

Needs Debian's python3-sklearn (run with /usr/bin/python3).
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import warnings

# Before the scikit-learn import: --help answers at once, even without it.
if __name__ == "__main__" and sys.argv[1:] in (["-h"], ["--help"]):
    print(__doc__)
    sys.exit(0)

import numpy as np  # noqa: E402
from scipy import optimize, stats  # noqa: E402
from sklearn import metrics  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

COUNT_TOLERANCE = 1e-9
AUC_TOLERANCE = 1e-3
BINS = 1000


class Checker:
    def __init__(self):
        self.failures = []
        self.checks = 0

    def near(self, name, ours, reference, tolerance):
        self.checks += 1
        if ours is None or reference is None or (
                isinstance(reference, float) and math.isnan(reference)):
            if not (ours is None and (reference is None or math.isnan(reference))):
                self.failures.append(f"{name}: ours {ours}, reference {reference}")
            return
        if abs(ours - reference) > tolerance:
            self.failures.append(
                f"{name}: ours {ours!r}, reference {reference!r} "
                f"(|diff| {abs(ours - reference):.3g} > {tolerance:g})")

    def equal(self, name, ours, reference):
        self.checks += 1
        if ours != reference:
            self.failures.append(f"{name}: ours {ours}, reference {reference}")

    def true(self, name, condition):
        self.checks += 1
        if not condition:
            self.failures.append(name)


def softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def make_cases(rng, n, prevalence, separation, tie_fraction, prototypes):
    """Truth by prevalence; probabilities from noisy logits; a fraction of
    cases replaced by exact (dyadic) prototype vectors, so that many cases
    of different classes share a score exactly."""
    k = len(prevalence)
    truth = rng.choice(k, size=n, p=prevalence)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), truth] += separation
    probabilities = softmax(logits)
    tied = rng.random(n) < tie_fraction
    choice = rng.integers(len(prototypes), size=n)
    probabilities[tied] = np.array(prototypes)[choice[tied]]
    return truth, probabilities


def data_sets():
    rng = np.random.default_rng(20261127)
    binary_prototypes = [[0.5, 0.5], [0.75, 0.25], [0.25, 0.75],
                         [0.875, 0.125], [0.375, 0.625]]
    three_prototypes = [[0.5, 0.25, 0.25], [0.125, 0.625, 0.25],
                        [0.25, 0.25, 0.5], [0.375, 0.375, 0.25],
                        [0.0, 0.0, 1.0]]
    sets = {}
    sets["binary"] = make_cases(rng, 400, [0.65, 0.35], 1.2, 0.3,
                                binary_prototypes)
    sets["three_class"] = make_cases(rng, 600, [0.5, 0.3, 0.2], 1.5, 0.2,
                                     three_prototypes)
    # Class 2 never true (a site without GN) but still predicted at times.
    truth, probabilities = make_cases(rng, 300, [0.6, 0.4, 0.0], 1.0, 0.2,
                                      three_prototypes)
    sets["class_absent"] = (truth, probabilities)
    sets["small"] = make_cases(rng, 30, [0.4, 0.4, 0.2], 1.0, 0.2,
                               three_prototypes)
    return sets


def write_csv(path, truth, probabilities):
    k = probabilities.shape[1]
    with open(path, "w") as out:
        out.write("truth," + ",".join(f"p{c}" for c in range(k)) + "\n")
        for t, row in zip(truth, probabilities):
            out.write(f"{t}," + ",".join(repr(float(p)) for p in row) + "\n")


def run_tool(tool, path):
    result = subprocess.run([tool, path], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{tool} failed: {result.stderr}")
    return json.loads(result.stdout)


def wilson(successes, trials):
    if trials == 0:
        return None, None
    z = stats.norm.ppf(0.975)
    center = (successes + z * z / 2) / (trials + z * z)
    half = z / (trials + z * z) * math.sqrt(
        successes * (trials - successes) / trials + z * z / 4)
    return max(0.0, center - half), min(1.0, center + half)


def midranks(x):
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    ranks = np.empty(len(x))
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and sorted_x[j] == sorted_x[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    result = np.empty(len(x))
    result[order] = ranks
    return result


def delong(positives, negatives):
    """AUC and DeLong variance on raw scores by midranks (Sun & Xu 2014), an
    algorithm independent of the tool's per-bin components."""
    m, n = len(positives), len(negatives)
    tx, ty = midranks(positives), midranks(negatives)
    tz = midranks(np.concatenate([positives, negatives]))
    auc = tz[:m].sum() / m / n - (m + 1) / 2 / n
    v10 = (tz[:m] - tx) / n
    v01 = 1 - (tz[m:] - ty) / m
    return auc, np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n


def binning_error_bound(positives, negatives):
    """The most binning can move an AUC: a positive-negative pair in the same
    bin counts one half, whatever the order of its raw scores."""
    same_bin = sum(np.sum((bin_of(negatives) == b) & (negatives != x))
                   for x, b in zip(positives, bin_of(positives)))
    return 0.5 * same_bin / (len(positives) * len(negatives))


def binned_auc(is_positive, scores):
    return metrics.roc_auc_score(is_positive, bin_of(scores))


def safe_ratio(numerator, denominator):
    return None if denominator == 0 else numerator / denominator


def bin_of(p):
    return np.minimum(BINS - 1, np.floor(p * BINS)).astype(int)


def check_set(check, name, truth, probabilities, ours):
    k = probabilities.shape[1]
    n = len(truth)
    labels = list(range(k))
    predicted = np.argmax(probabilities, axis=1)  # first maximum, as AddCase
    present = [c for c in labels if np.any(truth == c)]
    onehot = np.eye(k)[truth]
    p = f"{name}:"

    check.equal(p + "class_count", ours["class_count"], k)
    check.equal(p + "num_images", ours["num_images"], n)
    check.equal(p + "confusion", ours["confusion"],
                metrics.confusion_matrix(truth, predicted,
                                         labels=labels).ravel().tolist())
    check.near(p + "accuracy", ours["accuracy"],
               metrics.accuracy_score(truth, predicted), COUNT_TOLERANCE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true"
        check.near(p + "balanced_accuracy", ours["balanced_accuracy"],
                   metrics.balanced_accuracy_score(truth, predicted),
                   COUNT_TOLERANCE)
    check.near(p + "cohen_kappa", ours["cohen_kappa"],
               metrics.cohen_kappa_score(truth, predicted), COUNT_TOLERANCE)
    correct = int(np.sum(truth == predicted))
    for i, bound in enumerate(wilson(correct, n)):
        check.near(p + f"accuracy_ci[{i}]", ours["accuracy_ci"][i], bound,
                   COUNT_TOLERANCE)

    # Averages: scikit-learn's default labels are the classes in the truth
    # or the predictions, as ours; undefined values count as 0.
    for average in ("macro", "micro", "weighted"):
        precision, recall, f1, _ = metrics.precision_recall_fscore_support(
            truth, predicted, average=average, zero_division=0)
        check.near(p + f"{average} precision", ours[average]["precision"],
                   precision, COUNT_TOLERANCE)
        check.near(p + f"{average} recall", ours[average]["sensitivity"],
                   recall, COUNT_TOLERANCE)
        check.near(p + f"{average} f1", ours[average]["f1"], f1,
                   COUNT_TOLERANCE)

    # One-vs-rest counts from scikit-learn's per-class confusion matrices.
    confusions = metrics.multilabel_confusion_matrix(truth, predicted,
                                                     labels=labels)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        truth, predicted, labels=labels, average=None, zero_division=0)
    counted = [c for c in labels
               if support[c] > 0 or np.any(predicted == c)]
    specificity_sum = npv_sum = 0.0
    specificity_weighted = npv_weighted = 0.0
    tn_all = fp_all = fn_all = 0
    for c in labels:
        ours_c = ours["classes"][c]
        (tn, fp), (fn, tp) = confusions[c].tolist()
        q = p + f"class {c} "
        check.equal(q + "tp/fp/fn/tn",
                    [ours_c["true_positives"], ours_c["false_positives"],
                     ours_c["false_negatives"], ours_c["true_negatives"]],
                    [tp, fp, fn, tn])
        check.equal(q + "support", ours_c["support"], int(support[c]))
        # Ours is undefined (null) exactly where scikit-learn substitutes 0.
        for key, value, denominator in (("precision", precision[c], tp + fp),
                                        ("sensitivity", recall[c], tp + fn),
                                        ("f1", f1[c], 2 * tp + fp + fn)):
            check.near(q + key, ours_c[key],
                       None if denominator == 0 else float(value),
                       COUNT_TOLERANCE)
        specificity = safe_ratio(tn, tn + fp)
        npv = safe_ratio(tn, tn + fn)
        check.near(q + "specificity", ours_c["specificity"], specificity,
                   COUNT_TOLERANCE)
        check.near(q + "npv", ours_c["npv"], npv, COUNT_TOLERANCE)
        for key, (successes, trials) in (
                ("precision_ci", (tp, tp + fp)),
                ("sensitivity_ci", (tp, tp + fn)),
                ("specificity_ci", (tn, tn + fp)),
                ("npv_ci", (tn, tn + fn))):
            for i, bound in enumerate(wilson(successes, trials)):
                check.near(q + f"{key}[{i}]", ours_c[key][i], bound,
                           COUNT_TOLERANCE)
        if c in counted:
            specificity_sum += specificity or 0.0
            npv_sum += npv or 0.0
            specificity_weighted += support[c] * (specificity or 0.0)
            npv_weighted += support[c] * (npv or 0.0)
            tn_all += tn
            fp_all += fp
            fn_all += fn
    check.near(p + "macro specificity", ours["macro"]["specificity"],
               specificity_sum / len(counted), COUNT_TOLERANCE)
    check.near(p + "macro npv", ours["macro"]["npv"], npv_sum / len(counted),
               COUNT_TOLERANCE)
    check.near(p + "weighted specificity", ours["weighted"]["specificity"],
               specificity_weighted / n, COUNT_TOLERANCE)
    check.near(p + "weighted npv", ours["weighted"]["npv"], npv_weighted / n,
               COUNT_TOLERANCE)
    check.near(p + "micro specificity", ours["micro"]["specificity"],
               safe_ratio(tn_all, tn_all + fp_all), COUNT_TOLERANCE)
    check.near(p + "micro npv", ours["micro"]["npv"],
               safe_ratio(tn_all, tn_all + fn_all), COUNT_TOLERANCE)

    # Scores. Brier sums are kept exactly, not binned.
    check.true(p + "has_scores", ours["has_scores"])
    check.near(p + "brier", ours["brier"],
               float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1))),
               COUNT_TOLERANCE)
    aucs, binned_aucs, standard_errors = {}, {}, {}
    for c in labels:
        ours_c = ours["classes"][c]
        q = p + f"class {c} "
        is_c = (truth == c).astype(int)
        check.near(q + "brier", ours_c["brier"],
                   metrics.brier_score_loss(is_c, probabilities[:, c]),
                   COUNT_TOLERANCE)
        scores = probabilities[:, c]
        if c not in present:
            check.true(q + "auc undefined without positives",
                       ours_c["auc"] is None and ours_c["roc"] == [])
            continue
        positives, negatives = scores[truth == c], scores[truth != c]
        aucs[c] = metrics.roc_auc_score(is_c, scores)
        binned_aucs[c] = binned_auc(is_c, scores)
        check.near(q + "auc (binned scores)", ours_c["auc"], binned_aucs[c],
                   COUNT_TOLERANCE)
        check.near(q + "auc", ours_c["auc"], aucs[c],
                   max(AUC_TOLERANCE,
                       binning_error_bound(positives, negatives) + 1e-12))
        raw_auc, variance = delong(positives, negatives)
        check.near(q + "delong auc (reference self-check)", raw_auc, aucs[c],
                   1e-12)
        binned, binned_variance = delong(bin_of(positives).astype(float),
                                         bin_of(negatives).astype(float))
        check.near(q + "auc_variance (binned scores)", ours_c["auc_variance"],
                   binned_variance, 1e-12)
        # On raw scores binning moves the structural components by at most a
        # bin's share of the images; the variance is 1e-4..1e-2 here.
        check.near(q + "auc_variance", ours_c["auc_variance"], variance,
                   max(2e-5, 0.05 * variance))
        standard_errors[c] = math.sqrt(ours_c["auc_variance"])
        half = stats.norm.ppf(0.975) * math.sqrt(binned_variance)
        check.near(q + "auc_ci lower", ours_c["auc_ci"][0],
                   max(0.0, binned - half), COUNT_TOLERANCE)
        check.near(q + "auc_ci upper", ours_c["auc_ci"][1],
                   min(1.0, binned + half), COUNT_TOLERANCE)

        # ROC points: at threshold b/1000 every image in bin b or above is
        # called positive; the trapezoids are the AUC.
        roc = ours_c["roc"]
        check.true(q + "roc starts at (0, 0)", roc[0][1:] == [0, 0])
        check.true(q + "roc ends at (1, 1)", roc[-1][1:] == [1, 1])
        bins = bin_of(scores)
        for threshold, fpr, tpr in roc[1:]:
            b = round(threshold * BINS)
            check.near(q + f"roc tpr at {threshold}", tpr,
                       np.mean(bins[truth == c] >= b), COUNT_TOLERANCE)
            check.near(q + f"roc fpr at {threshold}", fpr,
                       np.mean(bins[truth != c] >= b), COUNT_TOLERANCE)
        fprs = [point[1] for point in roc]
        tprs = [point[2] for point in roc]
        check.near(q + "roc area", float(np.trapz(tprs, fprs)), ours_c["auc"],
                   1e-12)

        # Reliability: counts and observed fractions are exact; the mean
        # predicted probability uses bin midpoints (off by < 0.5/1000).
        group = bins * 10 // BINS
        for g, ours_bin in enumerate(ours_c["reliability"]):
            in_group = group == g
            check.equal(q + f"reliability[{g}] count", ours_bin["count"],
                        int(np.sum(in_group)))
            if np.any(in_group):
                check.near(q + f"reliability[{g}] observed",
                           ours_bin["observed_fraction"],
                           float(np.mean(is_c[in_group])), COUNT_TOLERANCE)
                check.near(q + f"reliability[{g}] predicted",
                           ours_bin["mean_predicted"],
                           float(np.mean(scores[in_group])), 5e-4 + 1e-12)
        calibration_error = sum(
            np.sum(group == g) * abs(np.mean(is_c[group == g]) -
                                     np.mean(scores[group == g]))
            for g in range(10) if np.any(group == g)) / n
        check.near(q + "expected_calibration_error",
                   ours_c["expected_calibration_error"], calibration_error,
                   1e-3)

        # Logistic recalibration on logit(p), fitted here on every image
        # (scikit-learn, no penalty); ours fits the bins' midpoints. Images
        # at exactly 0 or 1 have no logit: like the binning, this puts them
        # at the midpoint of the first or last bin.
        clipped = np.clip(scores, 0.5 / BINS, 1 - 0.5 / BINS)
        logit = np.log(clipped / (1 - clipped))
        outcome = is_c
        model = LogisticRegression(penalty=None, tol=1e-10, max_iter=1000)
        model.fit(logit.reshape(-1, 1), outcome)
        check.near(q + "calibration_slope", ours_c["calibration_slope"],
                   float(model.coef_[0][0]), 0.005)

        def negative_log_likelihood(intercept):
            eta = intercept + logit
            return float(np.sum(np.logaddexp(0, eta) - outcome * eta))
        intercept = optimize.minimize_scalar(negative_log_likelihood,
                                             bounds=(-10, 10),
                                             method="bounded",
                                             options={"xatol": 1e-10}).x
        check.near(q + "calibration_intercept",
                   ours_c["calibration_intercept"], float(intercept), 0.005)

        # Net benefit: thresholds sit on bin edges, so counts are exact.
        for threshold, net_benefit, treat_all in ours_c["decision_curve"]:
            called = scores >= threshold
            tp = np.sum(called & (truth == c))
            fp = np.sum(called & (truth != c))
            odds = threshold / (1 - threshold)
            check.near(q + f"net benefit at {threshold}", net_benefit,
                       tp / n - fp / n * odds, COUNT_TOLERANCE)
            prevalence = np.mean(is_c)
            check.near(q + f"treat all at {threshold}", treat_all,
                       prevalence - (1 - prevalence) * odds, COUNT_TOLERANCE)

    # Averaged AUCs. scikit-learn refuses a class without positives; ours
    # averages the classes that have them, compared here the same way: on
    # the binned scores exactly, on the raw scores to 1e-3 (not in the small
    # set, whose binning error the per-class checks above bound).
    raw = n >= 100
    weights = {c: np.sum(truth == c) for c in aucs}
    for key, by_class in (("", binned_aucs), (" (raw)", aucs)):
        if by_class is aucs and not raw:
            continue
        tolerance = COUNT_TOLERANCE if by_class is binned_aucs else AUC_TOLERANCE
        check.near(p + "macro_auc" + key, ours["macro_auc"],
                   float(np.mean(list(by_class.values()))), tolerance)
        check.near(p + "weighted_auc" + key, ours["weighted_auc"],
                   sum(weights[c] * by_class[c] for c in by_class) /
                   sum(weights.values()), tolerance)
    if len(present) == k and k > 2 and raw:
        check.near(p + "macro_auc (sklearn ovr)", ours["macro_auc"],
                   metrics.roc_auc_score(truth, probabilities,
                                         multi_class="ovr", average="macro"),
                   AUC_TOLERANCE)
        check.near(p + "weighted_auc (sklearn ovr)", ours["weighted_auc"],
                   metrics.roc_auc_score(truth, probabilities,
                                         multi_class="ovr",
                                         average="weighted"),
                   AUC_TOLERANCE)
        check.near(p + "hand_till_auc (sklearn ovo)", ours["hand_till_auc"],
                   metrics.roc_auc_score(truth, probabilities,
                                         multi_class="ovo", average="macro"),
                   AUC_TOLERANCE)
    if k == 2:
        check.near(p + "binary auc (sklearn)", ours["classes"][1]["auc"],
                   metrics.roc_auc_score(truth, probabilities[:, 1]),
                   AUC_TOLERANCE)
        check.near(p + "hand_till_auc (binary)", ours["hand_till_auc"],
                   metrics.roc_auc_score(truth, probabilities[:, 1]),
                   AUC_TOLERANCE)
    # Hand & Till over the pairs of present classes, pair by pair.
    for key, auc in (("", binned_auc), (" (raw)", metrics.roc_auc_score)):
        if auc is metrics.roc_auc_score and not raw:
            continue
        pair_aucs = []
        for i in present:
            for j in present:
                if i < j:
                    pair = (truth == i) | (truth == j)
                    a_ij = auc(truth[pair] == i, probabilities[pair, i])
                    a_ji = auc(truth[pair] == j, probabilities[pair, j])
                    pair_aucs.append((a_ij + a_ji) / 2)
        check.near(p + "hand_till_auc (pairs)" + key, ours["hand_till_auc"],
                   float(np.mean(pair_aucs)),
                   COUNT_TOLERANCE if auc is binned_auc else AUC_TOLERANCE)
        check.near(p + "micro_auc" + key, ours["micro_auc"],
                   auc(onehot.ravel(), probabilities.ravel()),
                   COUNT_TOLERANCE if auc is binned_auc else AUC_TOLERANCE)
    # The macro CI bounds the standard error by the mean of the classes'.
    if standard_errors:
        half = stats.norm.ppf(0.975) * np.mean(list(standard_errors.values()))
        check.near(p + "macro_auc_ci lower", ours["macro_auc_ci"][0],
                   max(0.0, ours["macro_auc"] - half), 1e-9)
        check.near(p + "macro_auc_ci upper", ours["macro_auc_ci"][1],
                   min(1.0, ours["macro_auc"] + half), 1e-9)


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    tool = sys.argv[1]
    check = Checker()
    with tempfile.TemporaryDirectory() as directory:
        for name, (truth, probabilities) in data_sets().items():
            path = os.path.join(directory, name + ".csv")
            write_csv(path, truth, probabilities)
            ours = run_tool(tool, path)
            check_set(check, name, truth, probabilities, ours)
    for failure in check.failures:
        print("FAIL", failure)
    print(f"{check.checks} checks, {len(check.failures)} failures")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
