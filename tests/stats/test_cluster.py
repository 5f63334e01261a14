"""Two-way cluster bootstrap of the AUC (US patients x MG women) against plain references."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dlum.stats import cluster_bootstrap_auc_ci, pair_clusters, roc_auc_ci, weighted_auc


def _cases(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = np.round(rng.normal(y * 1.0, 1.0), 1)  # ties on purpose
    return y, s


def test_weighted_auc_equals_mann_whitney_and_integer_weights_equal_repeats():
    y, s = _cases()
    assert weighted_auc(y, s, np.ones(len(y))) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    w = np.random.default_rng(1).integers(0, 4, len(y))
    repeated = np.repeat(np.arange(len(y)), w)
    assert weighted_auc(y, s, w) == pytest.approx(roc_auc_score(y[repeated], s[repeated]), abs=1e-12)


def test_one_case_per_cluster_is_close_to_delongs_interval():
    y, s = _cases(600)
    boot = cluster_bootstrap_auc_ci(y, s, np.arange(len(y)), n_boot=1000, seed=0)
    delong = roc_auc_ci(y, s)
    assert boot.auc == pytest.approx(delong.auc, abs=1e-12)
    width, reference = boot.ci_high - boot.ci_low, delong.ci_high - delong.ci_low
    assert 0.8 * reference < width < 1.2 * reference


def test_reused_lesions_widen_the_interval():
    """Pairs that share an MG woman carry less information than independent cases."""
    rng = np.random.default_rng(2)
    n_women, reuse = 20, 15
    woman_effect = rng.normal(0, 1.5, n_women)
    label_of_woman = rng.integers(0, 2, n_women)
    women = np.repeat(np.arange(n_women), reuse)
    y = label_of_woman[women]
    s = y * 0.8 + woman_effect[women] + rng.normal(0, 0.5, len(y))
    us = np.arange(len(y))
    clustered = cluster_bootstrap_auc_ci(y, s, [us, women], n_boot=500, seed=0)
    naive = roc_auc_ci(y, s)
    assert clustered.ci_high - clustered.ci_low > 1.5 * (naive.ci_high - naive.ci_low)
    assert clustered.n_clusters == (len(y), n_women)
    again = cluster_bootstrap_auc_ci(y, s, [us, women], n_boot=500, seed=0)
    assert (again.ci_low, again.ci_high) == (clustered.ci_low, clustered.ci_high)


def test_pair_clusters_reads_pseudo_pair_and_patient_ids():
    us, mg = pair_clusters(["busbra:4+mias:110", "busbra:4+mias:76", "busbra:5+mias:110"])
    assert us.tolist() == [0, 0, 1] and mg.tolist() == [0, 1, 0]
    (one,) = pair_clusters(["p1", "p1", "p2"])
    assert one.tolist() == [0, 0, 1]


def test_one_class_is_nan_with_a_warning():
    from dlum.stats import DegenerateDataWarning

    with pytest.warns(DegenerateDataWarning):
        r = cluster_bootstrap_auc_ci([1, 1, 1], [0.1, 0.2, 0.3], [0, 1, 2], n_boot=10)
    assert np.isnan(r.auc)
