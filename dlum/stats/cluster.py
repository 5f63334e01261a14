"""AUC confidence intervals that respect clustered cases: a two-way cluster bootstrap.

DeLong's CI treats every case as independent. In the public pseudo-paired cohort a case is a pair
(ultrasound lesion, mammography lesion): each mini-MIAS lesion appears in about 22 pairs and
BUS-BRA women contribute several images, so pairs sharing a woman are not independent and the
case-level CI is too narrow. This bootstrap resamples the clusters instead of the cases: the
ultrasound patients and the mammography women, independently (the "pigeonhole" bootstrap for
crossed random effects; Owen AB, "The pigeonhole bootstrap", Ann Appl Stat 2007; McCullagh P,
"Resampling and exchangeable arrays", Bernoulli 2000). A pair's weight in a replicate is the
number of times its US patient was drawn times the number of times its MG woman was drawn; the
replicate's AUC is the weighted Mann–Whitney statistic (ties count one half).

Written here because scikit-learn, scipy and statsmodels offer no clustered AUC bootstrap.

>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); s = np.array([0.1, 0.4, 0.35, 0.8])
>>> round(weighted_auc(y, s, np.ones(4)), 3)
0.75
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dlum.errors import InputError
from dlum.stats._base import Result, z_for_level
from dlum.stats._validate import as_labels, as_scores, same_length, warn

__all__ = ["ClusterBootstrapAuc", "weighted_auc", "cluster_bootstrap_auc_ci", "pair_clusters"]


@dataclass(frozen=True)
class ClusterBootstrapAuc(Result):
    """AUC with a percentile CI from resampling clusters; ``n_clusters`` per clustering."""

    auc: float
    ci_low: float
    ci_high: float
    se: float
    n_boot: int
    level: float
    n_clusters: tuple[int, ...]


def weighted_auc(y_true, scores, weights) -> float:
    """The Mann–Whitney AUC with case weights: P(score of a malignant > score of a benign), ties
    one half, each pair of cases counted with the product of their weights."""
    y = np.asarray(y_true).astype(int)
    uniq, inverse = np.unique(np.asarray(scores, dtype=float), return_inverse=True)
    return _weighted_auc(inverse, len(uniq), y == 1, np.asarray(weights, dtype=float))


def _weighted_auc(inverse: np.ndarray, n_uniq: int, positive: np.ndarray, weight: np.ndarray) -> float:
    """:func:`weighted_auc` on scores already coded as ranks of their distinct values (the
    bootstrap codes them once, not once per replicate)."""
    neg = np.bincount(inverse, weights=weight * ~positive, minlength=n_uniq)
    pos = np.bincount(inverse, weights=weight * positive, minlength=n_uniq)
    total = pos.sum() * neg.sum()
    return float((pos * (np.cumsum(neg) - 0.5 * neg)).sum() / total) if total > 0 else math.nan


def pair_clusters(patient_ids) -> list[np.ndarray]:
    """Cluster codes from ``patient_id`` cells: ``"us-woman+mg-woman"`` (a pseudo-pair) gives two
    clusterings (US patients, MG women); a plain id (a same-patient pair) gives one."""
    ids = pd.Series(patient_ids, dtype="string").fillna("").to_numpy(dtype=str)
    parts = [str(v).split("+", 1) for v in ids]
    if all(len(p) == 2 for p in parts):
        return [pd.factorize(np.array([p[k] for p in parts]))[0] for k in (0, 1)]
    return [pd.factorize(ids)[0]]


def cluster_bootstrap_auc_ci(y_true, scores, clusters, n_boot: int = 2000, level: float = 0.95,
                             seed: int | None = 0) -> ClusterBootstrapAuc:
    """Percentile CI of the AUC from resampling each clustering's clusters with replacement.

    Args:
        y_true, scores: labels (0/1, benign/malignant) and scores, one per case.
        clusters: one array of cluster codes per case, or a list of such arrays (crossed
            clusterings, e.g. :func:`pair_clusters`); each is resampled independently.
        n_boot, level, seed: replicates, CI level, seed of ``numpy.random.default_rng``.

    A replicate in which one class gets no weight is dropped (counted against ``n_boot``, with
    a warning when any are).
    """
    z_for_level(level)
    if int(n_boot) < 2:
        raise InputError(f"n_boot must be at least 2, got {n_boot!r}")
    y = as_labels(y_true)
    s = as_scores(scores)
    groups = [clusters] if np.ndim(clusters[0]) == 0 else list(clusters)
    codes = []
    for k, g in enumerate(groups):
        g = np.asarray(g)
        same_length(y_true=y, **{f"clusters[{k}]": g})
        codes.append(pd.factorize(g)[0])
    same_length(y_true=y, scores=s)
    nan = math.nan
    if len(np.unique(y)) < 2:
        warn("cluster_bootstrap_auc_ci: one class only, the AUC is undefined")
        return ClusterBootstrapAuc(nan, nan, nan, nan, int(n_boot), level,
                                   tuple(int(c.max() + 1) for c in codes))
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(s, return_inverse=True)
    positive = y == 1
    aucs = []
    for _ in range(int(n_boot)):
        weight = np.ones(len(y))
        for c in codes:
            k = int(c.max()) + 1
            weight = weight * np.bincount(rng.integers(0, k, k), minlength=k)[c]
        value = _weighted_auc(inverse, len(uniq), positive, weight)
        if not math.isnan(value):
            aucs.append(value)
    if len(aucs) < int(n_boot):
        warn(f"cluster_bootstrap_auc_ci: {int(n_boot) - len(aucs)} replicate(s) held one class "
             "only and were dropped")
    aucs_a = np.asarray(aucs)
    alpha = 1.0 - level
    low, high = np.percentile(aucs_a, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return ClusterBootstrapAuc(weighted_auc(y, s, np.ones(len(y))), float(low), float(high),
                               float(aucs_a.std(ddof=1)), int(n_boot), level,
                               tuple(int(c.max() + 1) for c in codes))
