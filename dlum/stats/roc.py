"""ROC analysis: AUC with DeLong variance and CI, DeLong tests, bootstrap CI, curve points, thresholds.

DeLong ER, DeLong DM, Clarke-Pearson DL. "Comparing the areas under two or more correlated receiver
operating characteristic curves: a nonparametric approach." Biometrics 44 (1988) 837-845, computed with
the fast midrank algorithm of Sun X, Xu W. "Fast implementation of DeLong's algorithm for comparing the
areas under correlated receiver operating characteristic curves." IEEE Signal Process Lett 21 (2014)
1389-1393: O(n log n) instead of the O(n_malignant * n_benign) kernel matrix.

The DeLong part is written here because scikit-learn (``roc_auc_score``, ``roc_curve``) gives the AUC but
no DeLong variance, covariance or paired test, and statsmodels and scipy have none either. It follows
pROC 1.18 (``var(roc, method="delong")``, ``ci.auc``, ``roc.test(method="delong")``): sample
variances with n - 1, the CI clipped to [0, 1], ties counted one half, and higher score = more
likely malignant (pROC ``direction = "<"``). Curve points and calibration bins come from scikit-learn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t

from dlum.errors import InputError
from dlum.stats._base import Result, z_for_level
from dlum.stats._validate import as_labels, as_scores, same_length, warn
from dlum.stats.proportions import proportion_ci

__all__ = [
    "RocAuc",
    "DelongTest",
    "DelongUnpairedTest",
    "BootstrapAuc",
    "roc_auc_ci",
    "delong_test",
    "delong_test_unpaired",
    "bootstrap_auc_ci",
    "roc_curve_points",
    "youden_threshold",
    "threshold_for_sensitivity",
    "calibration_table",
]


@dataclass(frozen=True)
class RocAuc(Result):
    """AUC with its DeLong variance, standard error and (clipped) confidence interval."""

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float
    level: float
    n_malignant: int
    n_benign: int


@dataclass(frozen=True)
class DelongTest(Result):
    """DeLong's test for two correlated ROC curves (same cases): z = (AUC_a - AUC_b) / SE."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    var_a: float
    var_b: float
    covariance: float
    level: float
    n_malignant: int
    n_benign: int


@dataclass(frozen=True)
class DelongUnpairedTest(Result):
    """DeLong's test for two ROC curves on different cases (pROC ``paired=FALSE``): Welch-type t."""

    auc_a: float
    auc_b: float
    diff: float
    statistic: float
    df: float
    p_value: float


@dataclass(frozen=True)
class BootstrapAuc(Result):
    """AUC with a stratified percentile bootstrap interval (pROC ``ci.auc(method="bootstrap")``)."""

    auc: float
    ci_low: float
    ci_high: float
    se: float
    n_boot: int
    level: float
    seed: int | None


# --------------------------------------------------------------------------------------------------
# DeLong core (vectorised; see module docstring for why it is hand-written)
# --------------------------------------------------------------------------------------------------
def _placements(y: np.ndarray, s: np.ndarray, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components of one score vector, from midranks in O(n log n).

    Sun & Xu (2014) write V10_i = (midrank of malignant case i among all cases - its midrank among the
    malignant cases) / n_benign; that difference is the number of benign cases scored below i plus half
    of those tied with it. It is computed here from one sort (``np.unique``) and per-value counts, so no
    separate rankings are needed: V10_i = (benign below + benign tied / 2) / n, and for a benign case
    V01_j = (malignant above + malignant tied / 2) / m (pROC's ``delong.placements`` X and Y).
    """
    uniq, inverse = np.unique(s, return_inverse=True)
    is_pos = y == 1
    code_pos, code_neg = inverse[is_pos], inverse[~is_pos]
    benign = np.bincount(code_neg, minlength=len(uniq))
    malignant = np.bincount(code_pos, minlength=len(uniq))
    benign_below = np.cumsum(benign) - benign
    malignant_above = m - np.cumsum(malignant)
    v10 = (benign_below + 0.5 * benign)[code_pos] / n
    v01 = (malignant_above + 0.5 * malignant)[code_neg] / m
    return v10, v01


def _delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``scores`` of shape (k, n_cases).

    AUC_r is the mean of V10 (ties count 1/2); S = cov(V10) / m + cov(V01) / n with sample covariances
    (n - 1), pROC's SX/m + SY/n. Needs m >= 2 and n >= 2 (checked by the callers).
    """
    m = int((y == 1).sum())
    n = len(y) - m
    parts = [_placements(y, row, m, n) for row in scores]
    v10 = np.vstack([p[0] for p in parts])
    v01 = np.vstack([p[1] for p in parts])
    aucs = v10.mean(axis=1)
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def _prepare(y_true, scores_list, names) -> tuple[np.ndarray, np.ndarray]:
    y = as_labels(y_true)
    arrays = [as_scores(s, name) for s, name in zip(scores_list, names)]
    same_length(y_true=y, **{name: a for name, a in zip(names, arrays)})
    return y, np.vstack(arrays) if arrays else np.empty((0, len(y)))


def _class_counts_ok(y: np.ndarray, what: str) -> tuple[int, int, bool]:
    m = int((y == 1).sum())
    n = int(len(y) - m)
    if m == 0 or n == 0:
        present = "no cases" if len(y) == 0 else f"only {'malignant' if n == 0 else 'benign'} cases"
        warn(f"{what}: {present} (malignant={m}, benign={n}); AUC is undefined and reported as NaN")
        return m, n, False
    return m, n, True


def _auc_only(y: np.ndarray, s: np.ndarray) -> float:
    """Mann–Whitney AUC (ties 1/2) for one score vector; any class sizes >= 1."""
    ranks = rankdata(s)
    m = int((y == 1).sum())
    n = len(y) - m
    return float((ranks[y == 1].sum() - m * (m + 1) / 2.0) / (m * n))


def roc_auc_ci(y_true, scores, level: float = 0.95) -> RocAuc:
    """AUC with DeLong variance and confidence interval, clipped to [0, 1] as pROC's ``ci.auc``.

    Args:
        y_true: pathology, 1 = malignant (or "benign"/"malignant").
        scores: higher = more likely malignant (probabilities, BI-RADS, 0/1 calls).
        level: confidence level.

    Returns:
        :class:`RocAuc`. One class only: every field NaN, with a :class:`DegenerateDataWarning`.
        Fewer than two cases of a class: AUC given, variance NaN (with a warning).

    Raises:
        InputError: NaN scores (the message names the rows), labels other than 0/1, unequal lengths.

    >>> r = roc_auc_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> r.auc
    0.75
    """
    z = z_for_level(level)
    y, s = _prepare(y_true, [scores], ["scores"])
    m, n, ok = _class_counts_ok(y, "roc_auc_ci")
    nan = math.nan
    if not ok:
        return RocAuc(nan, nan, nan, nan, nan, level, m, n)
    if m < 2 or n < 2:
        warn(f"roc_auc_ci: DeLong variance needs at least 2 malignant and 2 benign cases "
             f"(malignant={m}, benign={n}); variance and CI reported as NaN")
        return RocAuc(_auc_only(y, s[0]), nan, nan, nan, nan, level, m, n)
    aucs, cov = _delong(y, s)
    auc, var = float(aucs[0]), max(float(cov[0, 0]), 0.0)
    se = math.sqrt(var)
    low, high = min(max(auc - z * se, 0.0), 1.0), min(max(auc + z * se, 0.0), 1.0)
    return RocAuc(auc, var, se, low, high, level, m, n)


def delong_test(y_true, scores_a, scores_b, level: float = 0.95) -> DelongTest:
    """DeLong's test comparing two correlated AUCs on the same cases (pROC ``roc.test(paired=TRUE)``).

    z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov); two-sided p; the CI of the difference is
    diff -/+ z_(1-alpha/2) * SE (not clipped). Zero variance of the difference with equal AUCs gives
    z = 0, p = 1 as pROC does (pROC replaces the 0/0 by 0); with unequal AUCs z is +-inf and p = 0.

    >>> t = delong_test([0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.3, 0.2, 0.4, 0.5])
    >>> round(t.diff, 4)
    0.1667
    """
    zq = z_for_level(level)
    y, s = _prepare(y_true, [scores_a, scores_b], ["scores_a", "scores_b"])
    m, n, ok = _class_counts_ok(y, "delong_test")
    nan = math.nan
    if not ok:
        return DelongTest(nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, level, m, n)
    if m < 2 or n < 2:
        warn(f"delong_test: needs at least 2 malignant and 2 benign cases (malignant={m}, benign={n}); "
             "the test is reported as NaN")
        a, b = _auc_only(y, s[0]), _auc_only(y, s[1])
        return DelongTest(a, b, a - b, nan, nan, nan, nan, nan, nan, nan, nan, level, m, n)
    aucs, cov = _delong(y, s)
    auc_a, auc_b = float(aucs[0]), float(aucs[1])
    diff = auc_a - auc_b
    var = max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0)
    se = math.sqrt(var)
    if se > 0.0:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    elif diff == 0.0:
        z, p = 0.0, 1.0
    else:
        z, p = math.copysign(math.inf, diff), 0.0
    return DelongTest(auc_a, auc_b, diff, se, z, p, diff - zq * se, diff + zq * se,
                      float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1]), level, m, n)


def delong_test_unpaired(y_a, scores_a, y_b, scores_b) -> DelongUnpairedTest:
    """DeLong's test for two AUCs from different cases (pROC ``roc.test(paired=FALSE)``).

    D = (AUC_a - AUC_b) / sqrt(S_a + S_b), Welch–Satterthwaite df
    (S_a + S_b)^2 / (S_a^2 / (N_a - 1) + S_b^2 / (N_b - 1)), two-sided p from Student's t.
    """
    nan = math.nan
    parts = []
    for tag, y_raw, s_raw in (("a", y_a, scores_a), ("b", y_b, scores_b)):
        y, s = _prepare(y_raw, [s_raw], [f"scores_{tag}"])
        m, n, ok = _class_counts_ok(y, f"delong_test_unpaired (curve {tag})")
        if not ok or m < 2 or n < 2:
            if ok:
                warn(f"delong_test_unpaired (curve {tag}): needs at least 2 malignant and 2 benign cases")
            return DelongUnpairedTest(nan, nan, nan, nan, nan, nan)
        aucs, cov = _delong(y, s)
        parts.append((float(aucs[0]), max(float(cov[0, 0]), 0.0), len(y)))
    (auc_a, s_a, n_a), (auc_b, s_b, n_b) = parts
    diff = auc_a - auc_b
    total = s_a + s_b
    if total > 0.0:
        stat = diff / math.sqrt(total)
        df = total**2 / (s_a**2 / (n_a - 1) + s_b**2 / (n_b - 1))
        p = float(2.0 * student_t.sf(abs(stat), df))
    elif diff == 0.0:
        stat, df, p = 0.0, nan, 1.0
    else:
        stat, df, p = math.copysign(math.inf, diff), nan, 0.0
    return DelongUnpairedTest(auc_a, auc_b, diff, stat, df, p)


# --------------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------------
def bootstrap_auc_ci(y_true, scores, n_boot: int = 2000, level: float = 0.95, seed: int | None = 0
                     ) -> BootstrapAuc:
    """Percentile bootstrap CI of the AUC, resampling malignant and benign cases separately
    (stratified, as pROC's default ``ci.auc(method="bootstrap", boot.stratified=TRUE)``).

    Vectorised over replicates: each replicate's AUC is computed from per-replicate counts of the
    benign scores (cumulative counts over the sorted distinct scores), so no per-replicate sort or loop.
    Replicate b draws malignant indices ``rng.integers(0, m, (n_boot, m))`` then benign indices
    ``rng.integers(0, n, (n_boot, n))`` from ``numpy.random.default_rng(seed)``. Percentiles use
    numpy's default (R's ``quantile`` type 7).
    """
    z_for_level(level)
    if int(n_boot) < 1:
        raise InputError(f"n_boot must be at least 1, got {n_boot!r}")
    n_boot = int(n_boot)
    y, s = _prepare(y_true, [scores], ["scores"])
    s = s[0]
    m, n, ok = _class_counts_ok(y, "bootstrap_auc_ci")
    nan = math.nan
    if not ok:
        return BootstrapAuc(nan, nan, nan, nan, n_boot, level, seed)
    rng = np.random.default_rng(seed)
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boot_pos = rng.integers(0, m, size=(n_boot, m))
    boot_neg = rng.integers(0, n, size=(n_boot, n))
    uniq, inverse = np.unique(s, return_inverse=True)
    n_uniq = len(uniq)
    code_pos, code_neg = inverse[pos_idx], inverse[neg_idx]
    aucs = np.empty(n_boot)
    chunk = max(1, 4_000_000 // max(n_uniq, m, n))  # bound the (chunk, n_uniq) work arrays
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        rows = stop - start
        offsets = np.arange(rows)[:, None] * n_uniq
        counts = np.bincount((code_neg[boot_neg[start:stop]] + offsets).ravel(),
                             minlength=rows * n_uniq).reshape(rows, n_uniq)
        below = np.cumsum(counts, axis=1) - counts  # benign cases strictly below each distinct score
        placement = below + 0.5 * counts
        aucs[start:stop] = np.take_along_axis(placement, code_pos[boot_pos[start:stop]], axis=1).sum(1)
    aucs /= m * n
    alpha = 1.0 - level
    low, high = np.percentile(aucs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return BootstrapAuc(_auc_only(y, s), float(low), float(high), float(aucs.std(ddof=1)) if n_boot > 1
                        else nan, n_boot, level, seed)


# --------------------------------------------------------------------------------------------------
# Curves and operating points (scikit-learn)
# --------------------------------------------------------------------------------------------------
_CURVE_COLUMNS = ["threshold", "fpr", "tpr", "sensitivity", "specificity"]


def roc_curve_points(y_true, scores, drop_intermediate: bool = True) -> pd.DataFrame:
    """ROC curve as a table (``sklearn.metrics.roc_curve``): threshold, fpr, tpr, sensitivity,
    specificity. A case is called malignant when ``score >= threshold``; the first row (threshold
    +inf) is the origin. One class only: an empty table and a warning."""
    from sklearn.metrics import roc_curve

    y, s = _prepare(y_true, [scores], ["scores"])
    _, _, ok = _class_counts_ok(y, "roc_curve_points")
    if not ok:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in _CURVE_COLUMNS})
    fpr, tpr, thr = roc_curve(y, s[0], drop_intermediate=drop_intermediate)
    return pd.DataFrame({"threshold": thr, "fpr": fpr, "tpr": tpr, "sensitivity": tpr,
                         "specificity": 1.0 - fpr})


def youden_threshold(y_true, scores) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (the highest such threshold
    when several tie). Use it on a validation set, then apply ``score >= threshold`` elsewhere."""
    curve = roc_curve_points(y_true, scores, drop_intermediate=False)
    curve = curve[np.isfinite(curve["threshold"])]
    if curve.empty:
        return math.nan
    j = (curve["tpr"] - curve["fpr"]).to_numpy()
    return float(curve["threshold"].to_numpy()[int(np.argmax(j))])


def threshold_for_sensitivity(y_true, scores, sensitivity: float = 0.95) -> float:
    """Highest threshold whose sensitivity (``score >= threshold``) reaches ``sensitivity``.

    Picks an operating point on a validation set, e.g. "catch at least 95% of cancers"."""
    if not 0.0 <= sensitivity <= 1.0:
        raise InputError(f"sensitivity must be between 0 and 1, got {sensitivity!r}")
    curve = roc_curve_points(y_true, scores, drop_intermediate=False)
    curve = curve[np.isfinite(curve["threshold"])]
    reached = curve[curve["tpr"] >= sensitivity - 1e-12]
    if reached.empty:
        return math.nan
    return float(reached["threshold"].iloc[0])


def calibration_table(y_true, probabilities, bins: int = 10, level: float = 0.95) -> pd.DataFrame:
    """Reliability table for a calibration plot (``sklearn.calibration.calibration_curve``, uniform bins).

    One row per bin (empty bins kept, with NaNs): ``bin, p_low, p_high, n, mean_predicted, observed``
    (fraction malignant) and its Wilson interval ``observed_ci_low, observed_ci_high``."""
    from sklearn.calibration import calibration_curve

    if int(bins) < 1:
        raise InputError(f"bins must be at least 1, got {bins!r}")
    bins = int(bins)
    y, p = _prepare(y_true, [probabilities], ["probabilities"])
    p = p[0]
    outside = (p < 0) | (p > 1)
    if outside.any():
        raise InputError(f"probabilities must lie in [0, 1]; {int(outside.sum())} value(s) outside, "
                         f"first at position {int(np.flatnonzero(outside)[0])} (0-based)")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # same bin rule as calibration_curve (uniform strategy), to attach counts to its output
    ids = np.searchsorted(edges[1:-1], p)
    counts = np.bincount(ids, minlength=bins)
    positives = np.bincount(ids, weights=y, minlength=bins).astype(int)
    observed = np.full(bins, np.nan)
    predicted = np.full(bins, np.nan)
    if len(p):
        prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="uniform", pos_label=1)
        observed[counts > 0] = prob_true
        predicted[counts > 0] = prob_pred
    cis = [proportion_ci(int(k), int(c), "wilson", level) for k, c in zip(positives, counts)]
    return pd.DataFrame({
        "bin": np.arange(bins), "p_low": edges[:-1], "p_high": edges[1:], "n": counts,
        "mean_predicted": predicted, "observed": observed,
        "observed_ci_low": [c[0] for c in cis], "observed_ci_high": [c[1] for c in cis],
    })
