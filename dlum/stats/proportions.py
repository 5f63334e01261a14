"""Confidence intervals for one proportion (sensitivity, specificity, biopsy rates, ...).

Wilson (score) and Clopper–Pearson ("exact") intervals come from statsmodels' ``proportion_confint``;
they agree with R's ``prop.test(correct=FALSE)`` and ``binom.test``. statsmodels has no
continuity-corrected Wilson interval, so the two corrected variants are written here:

- ``"wilson_cc"``: the textbook interval of Newcombe (1998), method 4 (full 0.5 correction);
- ``"wilson_cc_r"``: what R's ``prop.test(x, n, correct=TRUE)`` prints. R shrinks the correction to
  ``min(0.5, |x - n/2|)``, so when ``x == n/2`` it silently falls back to the plain Wilson interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from dlum.errors import InputError
from dlum.stats._base import Result, z_for_level

__all__ = ["Proportion", "proportion", "proportion_ci", "CI_METHODS"]

#: Accepted ``method`` names (aliases map onto statsmodels' names or the corrected Wilson variants).
CI_METHODS = {
    "wilson": "wilson",
    "exact": "beta",
    "clopper_pearson": "beta",
    "beta": "beta",
    "wilson_cc": "wilson_cc",
    "wilson_cc_r": "wilson_cc_r",
    "agresti_coull": "agresti_coull",
    "jeffreys": "jeffreys",
    "normal": "normal",
}


@dataclass(frozen=True)
class Proportion(Result):
    """A proportion ``x / n`` with its confidence interval."""

    estimate: float
    ci_low: float
    ci_high: float
    x: int
    n: int
    method: str = "wilson"
    level: float = 0.95


def _check_counts(x, n) -> tuple[int, int]:
    try:
        xi, ni = int(x), int(n)
    except (TypeError, ValueError):
        raise InputError(f"counts must be whole numbers, got x={x!r}, n={n!r}") from None
    if xi != x or ni != n or ni < 0 or xi < 0 or xi > ni:
        raise InputError(f"need whole counts with 0 <= x <= n, got x={x!r}, n={n!r}")
    return xi, ni


def _wilson_cc(x: int, n: int, z: float, yates: float) -> tuple[float, float]:
    """Continuity-corrected Wilson interval, R ``prop.test`` algebra with correction ``yates``.

    Written here because statsmodels offers no corrected Wilson interval (see module docstring).
    """
    p = x / n
    z22n = z * z / (2.0 * n)
    pc = p + yates / n
    if pc >= 1.0:
        upper = 1.0
    else:
        upper = (pc + z22n + z * math.sqrt(pc * (1.0 - pc) / n + z22n / (2.0 * n))) / (1.0 + 2.0 * z22n)
    pc = p - yates / n
    if pc <= 0.0:
        lower = 0.0
    else:
        lower = (pc + z22n - z * math.sqrt(pc * (1.0 - pc) / n + z22n / (2.0 * n))) / (1.0 + 2.0 * z22n)
    return lower, upper


def proportion_ci(x: int, n: int, method: str = "wilson", level: float = 0.95) -> tuple[float, float]:
    """Two-sided confidence interval ``(low, high)`` for ``x`` successes out of ``n``.

    Args:
        x: successes (e.g. true positives).
        n: trials (e.g. malignant cases); ``n == 0`` gives ``(nan, nan)``.
        method: ``"wilson"`` (default), ``"exact"`` (Clopper–Pearson), ``"wilson_cc"`` (Newcombe 1998),
            ``"wilson_cc_r"`` (R ``prop.test(correct=TRUE)``), or another statsmodels method name.
        level: confidence level.

    >>> [round(v, 4) for v in proportion_ci(26, 41)]
    [0.4812, 0.7641]
    """
    xi, ni = _check_counts(x, n)
    key = CI_METHODS.get(method)
    if key is None:
        raise InputError(f"unknown interval method {method!r}; choose one of {sorted(CI_METHODS)}")
    z = z_for_level(level)
    if ni == 0:
        return (math.nan, math.nan)
    if key == "wilson_cc":
        low, high = _wilson_cc(xi, ni, z, 0.5)
    elif key == "wilson_cc_r":
        low, high = _wilson_cc(xi, ni, z, min(0.5, abs(xi - ni * 0.5)))
    else:
        low, high = proportion_confint(xi, ni, alpha=1.0 - level, method=key)
    # the bounds at x = 0 and x = n are exactly 0 and 1 (as in R); avoid round-off such as 2.8e-17
    low = 0.0 if xi == 0 else low
    high = 1.0 if xi == ni else high
    return (float(np.clip(low, 0.0, 1.0)), float(np.clip(high, 0.0, 1.0)))


def proportion(x: int, n: int, method: str = "wilson", level: float = 0.95) -> Proportion:
    """``x / n`` with its interval as a :class:`Proportion` (estimate NaN when ``n == 0``)."""
    low, high = proportion_ci(x, n, method=method, level=level)
    xi, ni = int(x), int(n)
    return Proportion(xi / ni if ni else math.nan, low, high, xi, ni, method, level)
