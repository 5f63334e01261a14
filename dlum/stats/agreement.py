"""Inter-observer agreement: Cohen's kappa, unweighted or weighted, over declared levels.

Cohen J (1968) weighted kappa, with the large-sample standard errors of Fleiss, Cohen & Everitt
(1969): the non-null SE gives the CI, the null SE (kappa = 0) the z test. Computed by statsmodels'
``cohens_kappa``, which agrees with R's vcd ``Kappa`` / irr ``kappa2`` and the textbook (psych's
``cohen.kappa`` uses a different weighted variance). The contingency table is built here over the
*declared* levels (BI-RADS 2..5, or 0/1 for biopsy calls), so a category that neither rater used keeps
its row and column and the linear/quadratic weights keep their spacing.

Weights are agreement weights 1 - |i - j| / (k - 1) (linear; irr "equal", vcd "Equal-Spacing") or
1 - (|i - j| / (k - 1))^2 (quadratic; irr "squared", vcd "Fleiss-Cohen") over level positions.

``kappa_band`` words a kappa as Landis & Koch (1977) do, as the article's Table 4 footnote reads
its kappas (Xu et al. 2025).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.stats.inter_rater import cohens_kappa

from dlum.errors import InputError
from dlum.stats._base import Result, z_for_level
from dlum.stats._validate import _row_names, same_length, warn

__all__ = ["Kappa", "weighted_kappa", "agreement_table", "kappa_band"]

_WEIGHTS = {
    None: None, "none": None, "unweighted": None,
    "linear": "linear", "equal": "linear", "equal-spacing": "linear",
    "quadratic": "quadratic", "squared": "quadratic", "fleiss-cohen": "quadratic",
}


@dataclass(frozen=True)
class Kappa(Result):
    """Cohen's kappa with its SE and CI (kappa -/+ z * se, clipped to [-1, 1] as vcd does), and the
    test of kappa = 0 (``z = kappa / se0``, two-sided ``p_value``). ``table`` is the agreement table
    over ``levels`` (rows = rater a, columns = rater b)."""

    kappa: float
    se: float
    ci_low: float
    ci_high: float
    se0: float
    z: float
    p_value: float
    weights: str
    levels: tuple
    table: tuple
    n: int
    level: float


def _is_missing(values: np.ndarray) -> np.ndarray:
    return np.array([v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA
                     or (isinstance(v, np.floating) and np.isnan(v)) for v in values], dtype=bool)


def _codes(values, levels: list, name: str) -> np.ndarray:
    """Position of each rating in ``levels``; unknown or missing ratings are an error naming the rows."""
    arr = np.asarray(values, dtype=object)
    missing = _is_missing(arr)
    if missing.any():
        raise InputError(f"{name} has missing ratings at {_row_names(values, missing)}")
    numeric = all(isinstance(v, (int, float, np.integer, np.floating, bool, np.bool_)) for v in levels)
    key = (lambda v: float(v)) if numeric else (lambda v: str(v))
    lookup = {key(v): i for i, v in enumerate(levels)}
    codes = np.empty(len(arr), dtype=np.int64)
    unknown = np.zeros(len(arr), dtype=bool)
    for i, v in enumerate(arr):
        try:
            codes[i] = lookup[key(v)]
        except (KeyError, TypeError, ValueError):
            unknown[i] = True
    if unknown.any():
        raise InputError(f"{name} has ratings outside the declared levels {list(levels)} at "
                         f"{_row_names(values, unknown)}")
    return codes


def _levels(ratings_a, ratings_b, levels) -> list:
    if levels is not None:
        out = list(levels)
        if len(set(out)) != len(out):
            raise InputError(f"levels must be distinct, got {out}")
        return out
    values = pd.unique(pd.Series(list(ratings_a) + list(ratings_b), dtype=object).dropna())
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def agreement_table(ratings_a, ratings_b, levels=None) -> pd.DataFrame:
    """Counts of (rater a, rater b) rating pairs over ``levels`` (default: every level either used),
    rows = rater a, columns = rater b; unused declared levels keep a row and column of zeros."""
    same_length(ratings_a=ratings_a, ratings_b=ratings_b)
    lv = _levels(ratings_a, ratings_b, levels)
    a = _codes(ratings_a, lv, "ratings_a")
    b = _codes(ratings_b, lv, "ratings_b")
    k = len(lv)
    table = np.bincount(a * k + b, minlength=k * k).reshape(k, k) if k else np.zeros((0, 0), int)
    return pd.DataFrame(table, index=pd.Index(lv, name="rater_a"), columns=pd.Index(lv, name="rater_b"))


def weighted_kappa(ratings_a, ratings_b, weights: str | None = None, levels=None,
                   level: float = 0.95) -> Kappa:
    """Cohen's kappa between two raters, unweighted (``weights=None``) or ``"linear"`` / ``"quadratic"``.

    Args:
        ratings_a, ratings_b: one rating per case (e.g. BI-RADS 2-5, or 0/1 biopsy calls).
        weights: None, "linear" or "quadratic" (irr/vcd names "equal", "squared", "fleiss-cohen" too).
        levels: the declared categories in order (default: the sorted levels either rater used).
        level: confidence level of the CI.

    Returns:
        :class:`Kappa`. Undefined kappa (no cases, one level, chance agreement 1): NaN with a warning.

    >>> k = weighted_kappa([2, 3, 4, 5, 4], [2, 3, 4, 4, 4], "linear", levels=[2, 3, 4, 5])
    >>> round(k.kappa, 4)
    0.8
    """
    if isinstance(weights, str):
        weights_key = weights.strip().lower()
    else:
        weights_key = weights
    if weights_key not in _WEIGHTS:
        raise InputError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    wt = _WEIGHTS[weights_key]
    zq = z_for_level(level)
    table_df = agreement_table(ratings_a, ratings_b, levels)
    lv = tuple(v.item() if hasattr(v, "item") else v for v in table_df.index)
    table = table_df.to_numpy()
    as_tuple = tuple(tuple(int(c) for c in row) for row in table)
    n = int(table.sum())
    name = wt or "unweighted"
    nan = math.nan

    def undefined(why: str) -> Kappa:
        warn(f"weighted_kappa: {why}; kappa is undefined and reported as NaN")
        return Kappa(nan, nan, nan, nan, nan, nan, nan, name, lv, as_tuple, n, level)

    if n == 0:
        return undefined("no rated cases")
    k = len(lv)
    if k < 2:
        return undefined(f"only one level ({list(lv)})")
    pos = np.arange(k, dtype=float)
    if wt is None:
        disagree = (pos[:, None] != pos[None, :]).astype(float)
    elif wt == "linear":
        disagree = np.abs(pos[:, None] - pos[None, :]) / (k - 1)
    else:
        disagree = (pos[:, None] - pos[None, :]) ** 2 / (k - 1) ** 2
    freq = table / n
    expected_disagreement = float((disagree * np.outer(freq.sum(1), freq.sum(0))).sum())
    if expected_disagreement <= 0.0:
        return undefined("chance agreement is 1 (both raters used a single level)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = cohens_kappa(table, wt=wt, return_results=True)
    kappa = float(res.kappa)
    se = float(res.std_kappa)
    se0 = float(res.std_kappa0)
    if se0 > 0:
        z = kappa / se0
        p = float(2.0 * norm.sf(abs(z)))
    else:
        z, p = nan, nan
    low = max(kappa - zq * se, -1.0)
    high = min(kappa + zq * se, 1.0)
    return Kappa(kappa, se, low, high, se0, z, p, name, lv, as_tuple, n, level)


#: Landis & Koch (1977) bands: upper bound (inclusive) -> word; above 0.80 "almost perfect".
KAPPA_BANDS = ((0.20, "slight"), (0.40, "fair"), (0.60, "moderate"), (0.80, "substantial"))


def kappa_band(kappa) -> str:
    """Landis & Koch's word for a kappa, as the article's Table 4 footnote (Xu et al. 2025):
    < 0 poor, 0-0.20 slight, 0.21-0.40 fair, 0.41-0.60 moderate, 0.61-0.80 substantial, above 0.80
    almost perfect; "n/a" for an undefined kappa (None, NaN).

    >>> kappa_band(0.048), kappa_band(0.713), kappa_band(float("nan"))
    ('slight', 'substantial', 'n/a')
    """
    try:
        value = float(kappa)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(value):
        return "n/a"
    if value < 0:
        return "poor"
    for upper, word in KAPPA_BANDS:
        if value <= upper:
            return word
    return "almost perfect"
