"""Multi-reader multi-case (MRMC) analysis: the Obuchowski–Rockette model with Hillis degrees of freedom.

Obuchowski NA, Rockette HE. "Hypothesis testing of diagnostic accuracy for multiple readers and multiple
tests: an ANOVA approach with dependent observations." Commun Stat Simul Comput 24 (1995) 285-308.
Hillis SL, Obuchowski NA, Schartz KM, Berbaum KS. "A comparison of the Dorfman-Berbaum-Metz and
Obuchowski-Rockette methods for receiver operating characteristic (ROC) data." Stat Med 24 (2005)
1579-1607. Hillis SL. "A comparison of denominator degrees of freedom methods for multiple observer
ROC analysis." Stat Med 26 (2007) 596-619; Hillis SL, Berbaum KS, Metz CE. "Recent developments in the
Dorfman-Berbaum-Metz procedure for multireader ROC study analysis." Acad Radiol 15 (2008) 647-661.

Every reader reads every case under every treatment (a fully crossed design). A figure of merit
(empirical AUC, sensitivity or specificity) is computed per treatment x reader; their ANOVA gives the
mean squares MS_T, MS_R, MS_TR, and the covariance of the figures over case samples (jackknife, or
DeLong for the AUC) gives the error variance var_E and the covariances cov1 (same reader, other
treatment), cov2 (same treatment, other reader) and cov3 (both differ). Then

- random readers and cases: F = MS_T / (MS_TR + r max(cov2 - cov3, 0)) on (t - 1, df_H) with Hillis'
  df_H = den^2 / (MS_TR^2 / ((t - 1)(r - 1)));
- fixed readers: X2 = (t - 1) MS_T / (var_E - cov1 + (r - 1)(cov2 - cov3)) ~ chi-square(t - 1);
- fixed cases: F = MS_T / MS_TR on (t - 1, (t - 1)(r - 1)).

It follows MRMCaov 0.3.0 (R; ``mrmc()`` and ``summary()``) and matches it on its VanDyke example to
about 1e-12 (tests/stats/test_mrmc.py), including the truncation of mean CIs to [0, 1].

It is written here because no maintained Python package implements the OR/Hillis analysis: researchers
use R (MRMCaov, RJafroc) or Java (iMRMC). Only numpy and scipy's distributions are needed.

>>> import pandas as pd
>>> ratings = {  # reader -> ratings of cases 0..5 under treatment A; cases 3..5 are positive
...     1: [1, 2, 3, 2, 4, 5], 2: [1, 3, 2, 4, 4, 5], 3: [2, 1, 3, 3, 5, 4]}
>>> reads = pd.DataFrame([
...     {"reader": r, "treatment": t, "case": c, "truth": int(c >= 3),
...      "rating": ratings[r][c] + (t == "B" and c == 2)}  # B rates negative case 2 one step higher
...     for r in ratings for t in ("A", "B") for c in range(6)])
>>> res = mrmc(reads)  # empirical AUC, jackknife covariance, random readers and cases
>>> {t: round(auc, 4) for t, auc in res.treatment_means.items()}
{'A': 0.9259, 'B': 0.8704}
>>> res.statistic_name, round(res.statistic, 4), res.df1, round(res.df2, 3), round(res.p_value, 4)
('F', 1.3333, 1, 10.125, 0.2747)
>>> d = res.difference
>>> d.comparison, round(d.estimate, 4), round(d.ci_low, 4), round(d.ci_high, 4)
('A - B', 0.0556, -0.0515, 0.1626)
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2, f as f_dist, norm
from scipy.stats import t as student_t

from dlum.errors import InputError
from dlum.stats._base import Result, z_for_level
from dlum.stats._validate import _row_names, as_labels, warn
from dlum.stats.roc import _delong, _placements

__all__ = [
    "MRMCResult",
    "MRMCAnova",
    "MRMCComponents",
    "MRMCDifference",
    "MRMCMeanCI",
    "MRMCReaderDifference",
    "MRMCReaderTreatmentCI",
    "mrmc",
]

COLUMNS = ("reader", "treatment", "case", "truth", "rating")
METRICS = ("auc", "sensitivity", "specificity")
COV_METHODS = ("jackknife", "delong")
FACTOR_KINDS = ("random", "fixed")
_MAX_LISTED = 10


# --------------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MRMCAnova(Result):
    """Two-way ANOVA (treatment, reader, treatment x reader) of the treatment x reader figures of merit."""

    df_t: int
    df_r: int
    df_tr: int
    ss_t: float
    ss_r: float
    ss_tr: float
    ms_t: float
    ms_r: float
    ms_tr: float


@dataclass(frozen=True)
class MRMCComponents(Result):
    """Obuchowski–Rockette variance components: reader and treatment x reader variances (``var_TR`` may be
    negative), error variance and the three covariances with their correlations ``cov / var_E``."""

    var_R: float
    var_TR: float
    var_E: float
    cov1: float
    cov2: float
    cov3: float
    corr1: float
    corr2: float
    corr3: float


@dataclass(frozen=True)
class MRMCDifference(Result):
    """One treatment difference (``treatment_a - treatment_b``) averaged over readers, with its SE, CI and
    test: Student t on ``df`` for random readers or fixed cases, normal (``df`` None) for fixed readers."""

    treatment_a: object
    treatment_b: object
    comparison: str
    estimate: float
    se: float
    df: float | None
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float


@dataclass(frozen=True)
class MRMCMeanCI(Result):
    """A treatment's mean figure of merit over readers with a CI from that treatment's data only.

    ``ci_low``/``ci_high`` are truncated to [0, 1] (as MRMCaov does); ``*_untruncated`` are the raw
    estimate -/+ quantile * SE. ``ms_r`` is the reader mean square within the treatment (random readers),
    ``var_E`` its error variance (fixed readers), ``cov2`` its mean covariance between readers (None for
    fixed cases); ``df`` is None for the normal interval of fixed readers."""

    treatment: object
    estimate: float
    se: float
    df: float | None
    ci_low: float
    ci_high: float
    ci_low_untruncated: float
    ci_high_untruncated: float
    ms_r: float | None
    var_E: float | None
    cov2: float | None


@dataclass(frozen=True)
class MRMCReaderDifference(Result):
    """Fixed readers: one reader's treatment difference, SE = sqrt(2 (var_E,j - cov1,j)), normal CI and z test."""

    reader: object
    treatment_a: object
    treatment_b: object
    comparison: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    z: float
    p_value: float


@dataclass(frozen=True)
class MRMCReaderTreatmentCI(Result):
    """Fixed readers: one reader's figure of merit under one treatment, SE from the covariance diagonal,
    normal CI truncated to [0, 1] (``*_untruncated``: not truncated)."""

    treatment: object
    reader: object
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    ci_low_untruncated: float
    ci_high_untruncated: float


@dataclass(frozen=True)
class MRMCResult(Result):
    """An Obuchowski–Rockette MRMC analysis (see :func:`mrmc`).

    ``values[i][j]`` is the figure of merit of ``treatment_levels[i]`` read by ``reader_levels[j]``;
    ``covariance`` is the covariance matrix of those figures over case samples, rows and columns in
    ``covariance_labels`` order ((treatment, reader), treatment-major); None, like ``components``, for
    fixed cases. ``statistic`` is F (``statistic_name`` "F") on ``df1``, ``df2``, or for fixed readers a
    chi-square "X2" on ``df1`` (``df2`` None). ``difference`` is the first of ``differences`` (every
    pair of treatments, in order). ``reader_differences`` and ``reader_treatment_cis`` are given for fixed
    readers only.
    """

    metric: str
    cov: str | None
    readers: str
    cases: str
    threshold: float | None
    conf_level: float
    treatment_levels: tuple
    reader_levels: tuple
    n_cases: int
    n_positive: int
    n_negative: int
    values: tuple
    treatment_means: dict
    anova: MRMCAnova
    covariance: tuple | None
    covariance_labels: tuple | None
    components: MRMCComponents | None
    statistic_name: str
    statistic: float
    df1: int
    df2: float | None
    p_value: float
    denominator: float
    difference: MRMCDifference
    differences: tuple
    treatment_mean_cis: tuple
    reader_differences: tuple | None
    reader_treatment_cis: tuple | None

    def values_frame(self) -> pd.DataFrame:
        """The figures of merit as a table: one row per treatment, one column per reader."""
        return pd.DataFrame(np.array(self.values, dtype=float),
                            index=pd.Index(self.treatment_levels, name="treatment"),
                            columns=pd.Index(self.reader_levels, name="reader"))

    def covariance_frame(self) -> pd.DataFrame | None:
        """The covariance matrix with (treatment, reader) row and column labels (None for fixed cases)."""
        if self.covariance is None:
            return None
        index = pd.MultiIndex.from_tuples(self.covariance_labels, names=["treatment", "reader"])
        return pd.DataFrame(np.array(self.covariance, dtype=float), index=index, columns=index)


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------
def _choice(value, allowed: tuple, name: str) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else None
    if text not in allowed:
        raise InputError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")
    return text


def _listed(items) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _sorted_levels(values) -> list:
    levels = pd.unique(pd.Series(values, dtype=object))
    try:
        out = sorted(levels)
    except TypeError:
        out = sorted(levels, key=str)
    return [v.item() if hasattr(v, "item") else v for v in out]


def _table(reads) -> pd.DataFrame:
    if not isinstance(reads, pd.DataFrame):
        try:
            reads = pd.DataFrame(reads)
        except Exception as exc:
            raise InputError(f"reads must be a table (pandas DataFrame) with columns {', '.join(COLUMNS)} "
                             f"({exc})") from None
    missing = [c for c in COLUMNS if c not in reads.columns]
    if missing:
        raise InputError(f"reads lacks the column(s) {', '.join(missing)}; an MRMC table needs "
                         f"{', '.join(COLUMNS)} (one row per reader, treatment and case)")
    if len(reads) == 0:
        raise InputError("reads has no rows")
    for col in ("reader", "treatment", "case"):
        bad = reads[col].isna().to_numpy()
        if bad.any():
            raise InputError(f"reads column {col} is missing at {_row_names(reads[col], bad)}")
    rating = pd.to_numeric(reads["rating"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(rating)
    if bad.any():
        raise InputError(f"reads column rating has missing (NaN), infinite or non-numeric values at "
                         f"{_row_names(reads['rating'], bad)}")
    out = pd.DataFrame({"reader": reads["reader"].to_numpy(), "treatment": reads["treatment"].to_numpy(),
                        "case": reads["case"].to_numpy(), "truth": as_labels(reads["truth"], "truth"),
                        "rating": rating}, index=reads.index)
    return out


def _crossed(reads: pd.DataFrame, treatments: list, readers: list, cases: list) -> None:
    """Every reader rates every case once under every treatment; each case has one truth."""
    dup = reads.duplicated(["reader", "treatment", "case"], keep=False).to_numpy()
    if dup.any():
        raise InputError("reads has more than one rating of the same reader, treatment and case at "
                         f"{_row_names(reads, dup)}")
    truths = reads.groupby("case", sort=False)["truth"].nunique()
    mixed = truths.index[truths.to_numpy() > 1]
    if len(mixed):
        raise InputError(f"a case must have one truth; case(s) {_listed(mixed)} have both 0 and 1")
    problems = []
    have = reads.groupby(["reader", "treatment"], sort=False)["case"].nunique()
    n_cases = len(cases)
    for r in readers:
        for t in treatments:
            n = int(have.get((r, t), 0))
            if n == 0:
                problems.append(f"reader {r} has no ratings under treatment {t}")
            elif n < n_cases:
                seen = set(reads.loc[(reads["reader"] == r) & (reads["treatment"] == t), "case"])
                lacking = [c for c in cases if c not in seen]
                problems.append(f"reader {r} under treatment {t} lacks case(s) {_listed(lacking)}")
    if problems:
        raise InputError("the design must be fully crossed (every reader rates every case under every "
                         "treatment): " + "; ".join(problems[:_MAX_LISTED])
                         + (f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""))


# --------------------------------------------------------------------------------------------------
# Figures of merit and their covariance
# --------------------------------------------------------------------------------------------------
def _auc_jackknife(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical AUCs (Mann–Whitney, ties 1/2) of ``scores`` (k, n_cases) and their jackknife covariance
    (n - 1)/n sum_c (A_-c - mean)(A_-c - mean)' over the n left-out cases.

    Leaving out positive case i gives (m AUC - V10_i) / (m - 1), negative case j (n0 AUC - V01_j) / (n0 - 1),
    with DeLong's placements V10, V01: the same numbers as recomputing each AUC without the case.
    """
    m = int((y == 1).sum())
    n0 = len(y) - m
    pseudo = np.empty((len(y), len(scores)))
    aucs = np.empty(len(scores))
    for k, row in enumerate(scores):
        v10, v01 = _placements(y, row, m, n0)
        auc = v10.mean()
        aucs[k] = auc
        pseudo[y == 1, k] = (m * auc - v10) / (m - 1)
        pseudo[y == 0, k] = (n0 * auc - v01) / (n0 - 1)
    return aucs, _jackknife_cov(pseudo)


def _jackknife_cov(pseudo: np.ndarray) -> np.ndarray:
    n = pseudo.shape[0]
    centred = pseudo - pseudo.mean(axis=0)
    return (n - 1) / n * (centred.T @ centred)


def _binary_jackknife(calls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Proportions of the 0/1 ``calls`` (k, n) and their jackknife covariance over the n cases."""
    n = calls.shape[1]
    props = calls.mean(axis=1)
    pseudo = (n * props[None, :] - calls.T) / (n - 1)
    return props, _jackknife_cov(pseudo)


def _figures(metric: str, cov: str, y: np.ndarray, scores: np.ndarray, threshold, need_cov: bool):
    if metric == "auc":
        if not need_cov:
            m = int((y == 1).sum())
            aucs = np.array([_placements(y, row, m, len(y) - m)[0].mean() for row in scores])
            return aucs, None
        return _delong(y, scores) if cov == "delong" else _auc_jackknife(y, scores)
    subset = y == 1 if metric == "sensitivity" else y == 0
    calls = scores[:, subset] >= threshold
    if metric == "specificity":
        calls = ~calls
    calls = calls.astype(np.float64)
    if not need_cov:
        return calls.mean(axis=1), None
    return _binary_jackknife(calls)


# --------------------------------------------------------------------------------------------------
# Small numeric helpers (0/0 and infinite df as the limits they are)
# --------------------------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float:
    if den == 0.0:
        return math.nan if num == 0.0 else math.copysign(math.inf, num)
    return num / den


def _sqrt(x: float) -> float:
    return math.sqrt(max(x, 0.0)) if not math.isnan(x) else math.nan


def _t_quantile(level: float, df: float | None) -> float:
    if df is None or math.isinf(df):
        return z_for_level(level)
    if math.isnan(df) or df <= 0:
        return math.nan
    return float(student_t.ppf(1.0 - (1.0 - level) / 2.0, df))


def _two_sided_p(stat: float, df: float | None) -> float:
    if math.isnan(stat):
        return math.nan
    if df is None or math.isinf(df):
        return float(2.0 * norm.sf(abs(stat)))
    if math.isnan(df) or df <= 0:
        return math.nan
    return float(2.0 * student_t.sf(abs(stat), df))


def _f_p(stat: float, df1: int, df2: float) -> float:
    if math.isnan(stat) or math.isnan(df2) or df2 <= 0:
        return math.nan
    if math.isinf(df2):  # F(df1, inf) is chi-square(df1) / df1
        return float(chi2.sf(stat * df1, df1))
    return float(f_dist.sf(stat, df1, df2))


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


# --------------------------------------------------------------------------------------------------
# The analysis
# --------------------------------------------------------------------------------------------------
def _anova(theta: np.ndarray) -> MRMCAnova:
    t, r = theta.shape
    grand = theta.mean()
    tm, rm = theta.mean(axis=1), theta.mean(axis=0)
    ss_t = float(r * ((tm - grand) ** 2).sum())
    ss_r = float(t * ((rm - grand) ** 2).sum())
    ss_tr = float(((theta - tm[:, None] - rm[None, :] + grand) ** 2).sum())
    df_t, df_r, df_tr = t - 1, r - 1, (t - 1) * (r - 1)
    return MRMCAnova(df_t, df_r, df_tr, ss_t, ss_r, ss_tr, _ratio(ss_t, df_t) if df_t else math.nan,
                     _ratio(ss_r, df_r) if df_r else math.nan, _ratio(ss_tr, df_tr) if df_tr else math.nan)


def _covariances(cmat: np.ndarray, t_idx: np.ndarray, r_idx: np.ndarray) -> tuple[float, float, float, float]:
    """var_E, cov1, cov2, cov3 of a covariance matrix whose rows are the (treatment, reader) cells given."""
    same_t = t_idx[:, None] == t_idx[None, :]
    same_r = r_idx[:, None] == r_idx[None, :]
    var_e = float(np.diag(cmat).mean())
    return (var_e, _mean_or_nan(cmat[~same_t & same_r]), _mean_or_nan(cmat[same_t & ~same_r]),
            _mean_or_nan(cmat[~same_t & ~same_r]))


def _components(an: MRMCAnova, var_e: float, cov1: float, cov2: float, cov3: float, t: int) -> MRMCComponents:
    var_r = (an.ms_r - an.ms_tr) / t - cov1 + cov3
    var_tr = an.ms_tr - var_e + cov1 + (cov2 - cov3)
    return MRMCComponents(var_r, var_tr, var_e, cov1, cov2, cov3,
                          _ratio(cov1, var_e), _ratio(cov2, var_e), _ratio(cov3, var_e))


def _interval(est: float, q: float, se: float) -> tuple[float, float, float, float]:
    """est -/+ q * se truncated to [0, 1] (as MRMCaov truncates mean CIs), then the raw bounds."""
    low, high = est - q * se, est + q * se
    return min(max(low, 0.0), 1.0), min(max(high, 0.0), 1.0), low, high


def mrmc(reads, *, metric: str = "auc", cov: str = "jackknife", readers: str = "random",
         cases: str = "random", threshold: float | None = None, treatments=None,
         conf_level: float = 0.95) -> MRMCResult:
    """Obuchowski–Rockette MRMC analysis with Hillis degrees of freedom, as MRMCaov's ``mrmc()``/``summary()``.

    Args:
        reads: table with columns ``reader, treatment, case, truth, rating``, one row per reader, treatment
            and case, fully crossed; ``truth`` 1 = positive (malignant), 0 = negative; a higher ``rating``
            means more likely positive.
        metric: ``"auc"`` (empirical, Mann–Whitney, ties 1/2), ``"sensitivity"`` or ``"specificity"``
            (``rating >= threshold`` is a positive call).
        cov: covariance of the figures over cases: ``"jackknife"`` (all cases for the AUC, the positive
            (negative) cases for sensitivity (specificity)) or ``"delong"`` (AUC only).
        readers, cases: ``"random"`` or ``"fixed"`` (not both fixed). Fixed cases need no covariance.
        threshold: required for sensitivity and specificity, not allowed for the AUC.
        treatments: the treatments to compare, in order (default: every level, sorted); differences are
            first minus second, every pair in order; rows of other treatments are left out.
        conf_level: confidence level of every interval.

    Returns:
        :class:`MRMCResult`.

    Raises:
        InputError: missing columns, missing or non-numeric ratings, a design that is not fully crossed
            (a reader lacking a treatment or a case, or a duplicate read), a case with two truths, one
            class of truth only, fewer than 2 treatments, fewer than 2 readers with random readers,
            DeLong covariance for a binary metric, a missing threshold, unknown option values.
    """
    metric = _choice(metric, METRICS, "metric")
    cov_method = _choice(cov, COV_METHODS, "cov")
    readers = _choice(readers, FACTOR_KINDS, "readers")
    cases = _choice(cases, FACTOR_KINDS, "cases")
    if readers == "fixed" and cases == "fixed":
        raise InputError("only one of readers and cases may be fixed")
    if cov_method == "delong" and metric != "auc":
        raise InputError(f"DeLong covariance is defined for the AUC only, not {metric}; use cov='jackknife'")
    if metric == "auc":
        if threshold is not None:
            raise InputError("threshold is used by sensitivity and specificity only; the AUC uses the "
                             "ratings themselves (leave threshold=None)")
    else:
        if threshold is None:
            raise InputError(f"{metric} needs a threshold: ratings >= threshold count as positive calls")
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise InputError(f"threshold must be a number, got {threshold!r}") from None
        if math.isnan(threshold):
            raise InputError("threshold must be a number, got NaN")
    z_for_level(conf_level)  # validates the level

    data = _table(reads)
    if treatments is None:
        treatment_levels = _sorted_levels(data["treatment"])
    else:
        treatment_levels = list(treatments)
        if len(set(map(repr, treatment_levels))) != len(treatment_levels):
            raise InputError(f"treatments must be distinct, got {treatment_levels}")
        present = set(data["treatment"])
        absent = [t for t in treatment_levels if t not in present]
        if absent:
            raise InputError(f"treatment(s) {_listed(absent)} have no reads; the table holds "
                             f"{_listed(_sorted_levels(data['treatment']))}")
        data = data[data["treatment"].isin(treatment_levels)]
    if len(treatment_levels) < 2:
        raise InputError(f"an MRMC comparison needs at least 2 treatments, got {len(treatment_levels)} "
                         f"({_listed(treatment_levels)})")
    reader_levels = _sorted_levels(data["reader"])
    if readers == "random" and len(reader_levels) < 2:
        raise InputError(f"random readers need at least 2 readers, got {len(reader_levels)}; "
                         "use readers='fixed' to analyse one reader")
    case_levels = _sorted_levels(data["case"])
    _crossed(data, treatment_levels, reader_levels, case_levels)

    truth = data.groupby("case")["truth"].first().reindex(case_levels).to_numpy()
    n_pos = int((truth == 1).sum())
    n_neg = len(truth) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"truth has one class only (positive={n_pos}, negative={n_neg}); "
                         "MRMC analysis needs both positive and negative cases")
    need_cov = cases == "random"
    if need_cov:
        need = {"auc": (2, 2), "sensitivity": (2, 0), "specificity": (0, 2)}[metric]
        if n_pos < need[0] or n_neg < need[1]:
            raise InputError(f"the covariance of {metric} over random cases needs at least "
                             f"{need[0]} positive and {need[1]} negative cases (positive={n_pos}, "
                             f"negative={n_neg})")

    t, r = len(treatment_levels), len(reader_levels)
    wide = data.pivot(index=["treatment", "reader"], columns="case", values="rating")
    cells = list(itertools.product(treatment_levels, reader_levels))
    scores = wide.reindex(index=pd.MultiIndex.from_tuples(cells), columns=case_levels).to_numpy(np.float64)
    aucs, cmat = _figures(metric, cov_method, truth, scores, threshold, need_cov)
    theta = aucs.reshape(t, r)
    an = _anova(theta)
    t_idx = np.repeat(np.arange(t), r)
    r_idx = np.tile(np.arange(r), t)
    means = theta.mean(axis=1)
    level = conf_level
    pairs = list(itertools.combinations(range(t), 2))

    components = None
    reader_diffs = reader_cis = None
    if need_cov:
        var_e, cov1, cov2, cov3 = _covariances(cmat, t_idx, r_idx)
        components = _components(an, var_e, cov1, cov2, cov3, t)

    def cov2_within(i: int) -> float:
        block = cmat[i * r:(i + 1) * r, i * r:(i + 1) * r]
        return _mean_or_nan(block[~np.eye(r, dtype=bool)])

    def reader_spread(i: int) -> float:
        return float(theta[i].var(ddof=1)) if r > 1 else math.nan

    mean_cis = []
    if readers == "random" and cases == "random":
        stat_name = "F"
        den = an.ms_tr + r * max(cov2 - cov3, 0.0)
        stat = _ratio(an.ms_t, den)
        df1 = t - 1
        df2 = _ratio(den ** 2, an.ms_tr ** 2 / ((t - 1) * (r - 1)))
        p = _f_p(stat, df1, df2)
        diff_se, diff_df = _sqrt(2.0 * den / r), df2
        for i, tr in enumerate(treatment_levels):
            ms_r, c2 = reader_spread(i), cov2_within(i)
            extra = max(c2, 0.0)
            se = _sqrt(ms_r / r + extra)
            df = _ratio((ms_r + r * extra) ** 2, ms_r ** 2 / (r - 1))
            ci = _interval(float(means[i]), _t_quantile(level, df), se)
            mean_cis.append(MRMCMeanCI(tr, float(means[i]), se, df, *ci, ms_r, None, c2))
    elif readers == "fixed":
        stat_name = "X2"
        spread = (r - 1) * (cov2 - cov3) if r > 1 else 0.0
        den = var_e - cov1 + spread
        stat = (t - 1) * _ratio(an.ms_t, den)
        df1, df2 = t - 1, None
        p = float(chi2.sf(stat, df1)) if not math.isnan(stat) else math.nan
        diff_se, diff_df = _sqrt(2.0 * den / r), None
        z = z_for_level(level)
        for i, tr in enumerate(treatment_levels):
            block = cmat[i * r:(i + 1) * r, i * r:(i + 1) * r]
            ve, c2 = float(np.diag(block).mean()), cov2_within(i)
            se = _sqrt((ve + ((r - 1) * max(c2, 0.0) if r > 1 else 0.0)) / r)
            ci = _interval(float(means[i]), z, se)
            mean_cis.append(MRMCMeanCI(tr, float(means[i]), se, None, *ci, None, ve, c2))
        reader_diffs, reader_cis = [], []
        for j, rd in enumerate(reader_levels):
            sel = r_idx == j
            ve_j, c1_j, _, _ = _covariances(cmat[np.ix_(sel, sel)], t_idx[sel], r_idx[sel])
            se = _sqrt(2.0 * (ve_j - c1_j))
            for a, b in pairs:
                est = float(theta[a, j] - theta[b, j])
                zs = _ratio(est, se)
                reader_diffs.append(MRMCReaderDifference(
                    rd, treatment_levels[a], treatment_levels[b],
                    f"{treatment_levels[a]} - {treatment_levels[b]}", est, se,
                    est - z * se, est + z * se, zs, _two_sided_p(zs, None)))
        for k, (tr, rd) in enumerate(cells):
            se = _sqrt(float(cmat[k, k]))
            est = float(aucs[k])
            reader_cis.append(MRMCReaderTreatmentCI(tr, rd, est, se, *_interval(est, z, se)))
        reader_diffs, reader_cis = tuple(reader_diffs), tuple(reader_cis)
    else:  # random readers, fixed cases
        stat_name = "F"
        den = an.ms_tr
        stat = _ratio(an.ms_t, den)
        df1, df2 = t - 1, (t - 1) * (r - 1)
        p = _f_p(stat, df1, df2)
        diff_se, diff_df = _sqrt(2.0 * den / r), df2
        q = _t_quantile(level, r - 1)
        for i, tr in enumerate(treatment_levels):
            ms_r = reader_spread(i)
            se = _sqrt(ms_r / r)
            ci = _interval(float(means[i]), q, se)
            mean_cis.append(MRMCMeanCI(tr, float(means[i]), se, r - 1, *ci, ms_r, None, None))

    if math.isnan(stat):
        warn(f"mrmc: the {stat_name} statistic is undefined (0/0: the figures of merit do not vary "
             "between treatments, readers or case samples); it and its p-value are reported as NaN")
    q = _t_quantile(level, diff_df)
    differences = []
    for a, b in pairs:
        est = float(means[a] - means[b])
        st = _ratio(est, diff_se)
        differences.append(MRMCDifference(
            treatment_levels[a], treatment_levels[b], f"{treatment_levels[a]} - {treatment_levels[b]}",
            est, diff_se, diff_df, est - q * diff_se, est + q * diff_se, st, _two_sided_p(st, diff_df)))

    return MRMCResult(
        metric=metric, cov=cov_method if need_cov else None, readers=readers, cases=cases,
        threshold=threshold, conf_level=conf_level,
        treatment_levels=tuple(treatment_levels), reader_levels=tuple(reader_levels),
        n_cases=len(case_levels), n_positive=n_pos, n_negative=n_neg,
        values=tuple(tuple(float(v) for v in row) for row in theta),
        treatment_means={tr: float(means[i]) for i, tr in enumerate(treatment_levels)},
        anova=an,
        covariance=None if cmat is None else tuple(tuple(float(v) for v in row) for row in cmat),
        covariance_labels=tuple(cells) if need_cov else None,
        components=components, statistic_name=stat_name, statistic=float(stat), df1=df1,
        df2=df2,
        p_value=p, denominator=float(den), difference=differences[0], differences=tuple(differences),
        treatment_mean_cis=tuple(mean_cis), reader_differences=reader_diffs, reader_treatment_cis=reader_cis,
    )
