"""Decision metrics at an operating point: sensitivity/specificity with CIs, biopsy figures, and the
tests that compare two raters (McNemar for paired calls, chi-square / Fisher for two proportions).

As in Xu et al. (Breast Cancer Research 2025, DL-UM), Table 2: recommended biopsies are all cases
called malignant (BI-RADS 4-5 or ``score >= threshold``), unnecessary biopsies those among them that are
benign at pathology (reported per recommended biopsy), missed malignancies the malignant cases called
benign; for a dichotomous rater AUC = (sensitivity + specificity) / 2. Tests use scipy
(``chi2_contingency``, ``fisher_exact``) and statsmodels (``mcnemar``), which agree with R's
``chisq.test``, ``fisher.test`` and ``mcnemar.test``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2_contingency, fisher_exact
from statsmodels.stats.contingency_tables import mcnemar

from dlum.errors import InputError
from dlum.stats._base import Result
from dlum.stats._validate import as_decisions, as_labels, same_length, warn
from dlum.stats.proportions import Proportion, proportion

__all__ = [
    "BinaryMetrics",
    "BiopsyMetrics",
    "McNemarTest",
    "Chi2Test",
    "binary_metrics",
    "biopsy_metrics",
    "mcnemar_test",
    "chi2_test",
]


@dataclass(frozen=True)
class BinaryMetrics(Result):
    """Confusion counts and the five proportions (each a :class:`Proportion` with CI); ``auc`` is
    (sensitivity + specificity) / 2, the AUC of a dichotomous rater."""

    tp: int
    fp: int
    tn: int
    fn: int
    n: int
    sensitivity: Proportion
    specificity: Proportion
    ppv: Proportion
    npv: Proportion
    accuracy: Proportion
    auc: float


@dataclass(frozen=True)
class BiopsyMetrics(Result):
    """Biopsy figures of a set of calls (1 = biopsy recommended).

    ``unnecessary_rate`` = FP / recommended (as the paper reports), ``missed_rate`` = FN / malignant,
    ``biopsy_rate`` = recommended / n; ``unnecessary_per_benign`` = FP / benign (1 - specificity) and
    ``missed_per_predicted_benign`` = FN / (FN + TN) (1 - NPV) for completeness.
    """

    n: int
    n_malignant: int
    n_benign: int
    recommended_biopsies: int
    unnecessary_biopsies: int
    missed_malignancies: int
    unnecessary_rate: Proportion
    missed_rate: Proportion
    biopsy_rate: Proportion
    unnecessary_per_benign: Proportion
    missed_per_predicted_benign: Proportion


@dataclass(frozen=True)
class McNemarTest(Result):
    """McNemar's test of two raters' paired calls on the malignant (sensitivity) or benign
    (specificity) cases. ``statistic`` is chi-square, or for ``exact=True`` the smaller discordant count."""

    statistic: float
    p_value: float
    on: str
    exact: bool
    correction: bool
    both_correct: int
    a_correct_b_wrong: int
    a_wrong_b_correct: int
    both_wrong: int
    prop_a: float
    prop_b: float
    n: int


@dataclass(frozen=True)
class Chi2Test(Result):
    """Pearson chi-square test of two independent proportions x_a/n_a vs x_b/n_b (2x2 table), with
    Fisher's exact p; ``small_expected`` flags an expected cell count below 5 (then prefer Fisher)."""

    statistic: float
    p_value: float
    fisher_p_value: float
    correction: bool
    min_expected: float
    small_expected: bool
    prop_a: float
    prop_b: float


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(((y == 1) & (pred == 1)).sum())
    fp = int(((y == 0) & (pred == 1)).sum())
    tn = int(((y == 0) & (pred == 0)).sum())
    fn = int(((y == 1) & (pred == 0)).sum())
    return tp, fp, tn, fn


def _labels_and_calls(y_true, *preds_and_names):
    y = as_labels(y_true)
    preds = [as_decisions(p, name) for p, name in preds_and_names]
    same_length(y_true=y, **{name: p for p, (_, name) in zip(preds, preds_and_names)})
    return y, preds


def binary_metrics(y_true, y_pred, ci: str = "wilson", level: float = 0.95) -> BinaryMetrics:
    """Sensitivity, specificity, PPV, NPV and accuracy of 0/1 calls, each with a CI (``proportion_ci``
    method ``ci``), and AUC = (sensitivity + specificity) / 2. Undefined proportions (no malignant
    cases, no calls of a kind) are NaN.

    >>> bm = binary_metrics([1, 1, 0, 0], [1, 0, 0, 0])
    >>> bm.sensitivity.estimate, bm.specificity.estimate, bm.auc
    (0.5, 1.0, 0.75)
    """
    y, (pred,) = _labels_and_calls(y_true, (y_pred, "y_pred"))
    tp, fp, tn, fn = _counts(y, pred)
    sens = proportion(tp, tp + fn, ci, level)
    spec = proportion(tn, tn + fp, ci, level)
    auc = (sens.estimate + spec.estimate) / 2.0
    return BinaryMetrics(
        tp, fp, tn, fn, len(y), sens, spec,
        proportion(tp, tp + fp, ci, level),
        proportion(tn, tn + fn, ci, level),
        proportion(tp + tn, len(y), ci, level),
        auc,
    )


def biopsy_metrics(y_true, y_pred, ci: str = "wilson", level: float = 0.95) -> BiopsyMetrics:
    """Recommended biopsies (TP + FP), unnecessary biopsies (FP), missed malignancies (FN) and their
    rates with CIs, for calls ``y_pred`` (1 = biopsy recommended).

    >>> b = biopsy_metrics([1, 1, 0, 0, 0], [1, 0, 1, 1, 0])
    >>> b.recommended_biopsies, b.unnecessary_biopsies, b.missed_malignancies
    (3, 2, 1)
    """
    y, (pred,) = _labels_and_calls(y_true, (y_pred, "y_pred"))
    tp, fp, tn, fn = _counts(y, pred)
    n = len(y)
    n_mal, n_ben = tp + fn, tn + fp
    recommended = tp + fp
    return BiopsyMetrics(
        n, n_mal, n_ben, recommended, fp, fn,
        unnecessary_rate=proportion(fp, recommended, ci, level),
        missed_rate=proportion(fn, n_mal, ci, level),
        biopsy_rate=proportion(recommended, n, ci, level),
        unnecessary_per_benign=proportion(fp, n_ben, ci, level),
        missed_per_predicted_benign=proportion(fn, fn + tn, ci, level),
    )


def mcnemar_test(y_true, pred_a, pred_b, on: str = "sensitivity", exact: bool = False,
                 correction: bool = True) -> McNemarTest:
    """McNemar's test comparing two raters' calls on the same cases.

    ``on="sensitivity"`` uses the malignant cases (correct = called malignant), ``"specificity"`` the
    benign ones (correct = called benign). Chi-square with or without continuity correction as R's
    ``mcnemar.test``; ``exact=True`` is the binomial test on the discordant pairs. No discordant pairs:
    statistic 0, p = 1.
    """
    if on not in ("sensitivity", "specificity"):
        raise InputError(f"on must be 'sensitivity' or 'specificity', got {on!r}")
    y, (a, b) = _labels_and_calls(y_true, (pred_a, "pred_a"), (pred_b, "pred_b"))
    target = 1 if on == "sensitivity" else 0
    keep = y == target
    ca, cb = a[keep] == target, b[keep] == target
    both = int((ca & cb).sum())
    a_only = int((ca & ~cb).sum())
    b_only = int((~ca & cb).sum())
    neither = int((~ca & ~cb).sum())
    n = int(keep.sum())
    prop_a = (both + a_only) / n if n else math.nan
    prop_b = (both + b_only) / n if n else math.nan
    if n == 0:
        warn(f"mcnemar_test: no {'malignant' if target else 'benign'} cases; the test is NaN")
        stat, p = math.nan, math.nan
    elif a_only + b_only == 0:
        stat, p = 0.0, 1.0
    else:
        res = mcnemar(np.array([[both, a_only], [b_only, neither]]), exact=exact, correction=correction)
        stat, p = float(res.statistic), float(min(res.pvalue, 1.0))
    return McNemarTest(stat, p, on, bool(exact), bool(correction), both, a_only, b_only, neither,
                       prop_a, prop_b, n)


def chi2_test(x_a: int, n_a: int, x_b: int, n_b: int, correction: bool = True) -> Chi2Test:
    """Chi-square test of x_a/n_a vs x_b/n_b (R ``chisq.test(matrix(c(x_a, n_a-x_a, x_b, n_b-x_b), 2,
    byrow=TRUE))``; Yates' correction when ``correction``), plus Fisher's exact p-value.

    A zero row or column (e.g. both proportions 1) leaves chi-square undefined: NaN with a warning,
    while Fisher's p is still given.
    """
    for name, value in (("x_a", x_a), ("n_a", n_a), ("x_b", x_b), ("n_b", n_b)):
        if int(value) != value or value < 0:
            raise InputError(f"{name} must be a whole count >= 0, got {value!r}")
    if x_a > n_a or x_b > n_b:
        raise InputError(f"need x <= n, got {x_a}/{n_a} and {x_b}/{n_b}")
    table = np.array([[x_a, n_a - x_a], [x_b, n_b - x_b]], dtype=float)
    prop_a = x_a / n_a if n_a else math.nan
    prop_b = x_b / n_b if n_b else math.nan
    fisher_p = float(fisher_exact(table.astype(int))[1]) if (n_a and n_b) else math.nan
    if (table.sum(0) == 0).any() or (table.sum(1) == 0).any():
        warn(f"chi2_test: a row or column of the 2x2 table is empty ({x_a}/{n_a} vs {x_b}/{n_b}); "
             "chi-square is undefined (NaN)")
        return Chi2Test(math.nan, math.nan, fisher_p, bool(correction), math.nan, True, prop_a, prop_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stat, p, _, expected = chi2_contingency(table, correction=correction)
    min_expected = float(expected.min())
    return Chi2Test(float(stat), float(p), fisher_p, bool(correction), min_expected, min_expected < 5,
                    prop_a, prop_b)
