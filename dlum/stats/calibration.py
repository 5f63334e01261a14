"""Is P(malignant) a probability? Expected calibration error and the Brier score.

* ECE with equal-count bins (cases sorted by P, cut into ``bins`` groups of equal size):
  ``ECE = sum_b n_b / n * |observed_b - mean P_b|`` (Naeini MP, Cooper GF, Hauskrecht M, AAAI 2015;
  equal-count bins as in Nixon J et al., "Measuring calibration in deep learning", CVPR
  Workshops 2019). Written here because scikit-learn has no ECE.
* Brier score: ``mean((P - y)^2)``, scikit-learn's ``brier_score_loss``.

>>> calibration_summary([0, 0, 1, 1], [0.0, 0.0, 1.0, 1.0], bins=2).ece
0.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlum.errors import InputError
from dlum.stats._base import Result
from dlum.stats._validate import as_labels, as_scores, same_length, warn

__all__ = ["CALIBRATED_ECE", "Calibration", "expected_calibration_error", "calibration_summary"]

#: An output whose ECE on the test split is at most this is called calibrated.
CALIBRATED_ECE = 0.05


@dataclass(frozen=True)
class Calibration(Result):
    """ECE (equal-count bins), Brier score, and the mean P against the observed rate."""

    ece: float
    brier: float
    mean_predicted: float
    observed: float
    bins: int
    n: int


def expected_calibration_error(y_true, probabilities, bins: int = 10) -> float:
    """ECE over ``bins`` equal-count bins of the cases sorted by P (NaN with no cases)."""
    return calibration_summary(y_true, probabilities, bins).ece


def calibration_summary(y_true, probabilities, bins: int = 10) -> Calibration:
    """ECE (equal-count bins), Brier score, mean P and observed malignancy rate."""
    from sklearn.metrics import brier_score_loss

    if int(bins) < 1:
        raise InputError(f"bins must be at least 1, got {bins!r}")
    y = as_labels(y_true).astype(float)
    p = as_scores(probabilities, "probabilities")
    same_length(y_true=y, probabilities=p)
    if ((p < 0) | (p > 1)).any():
        raise InputError("probabilities must lie in [0, 1]")
    n = len(y)
    if n == 0:
        warn("calibration_summary: no cases")
        return Calibration(math.nan, math.nan, math.nan, math.nan, int(bins), 0)
    order = np.argsort(p, kind="stable")
    ece = 0.0
    for part in np.array_split(order, min(int(bins), n)):
        ece += len(part) / n * abs(y[part].mean() - p[part].mean())
    brier = float(brier_score_loss(y, p, pos_label=1)) if len(np.unique(y)) else math.nan
    return Calibration(float(ece), brier, float(p.mean()), float(y.mean()), int(bins), n)
