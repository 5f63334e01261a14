"""dlum.stats.roc: DeLong (against the O(m*n) definition), bootstrap, curves, thresholds, degenerate inputs."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from scipy.stats import norm, t as student_t

from dlum.errors import InputError
from dlum.stats import (
    DegenerateDataWarning,
    bootstrap_auc_ci,
    calibration_table,
    delong_test,
    delong_test_unpaired,
    roc_auc_ci,
    roc_curve_points,
    threshold_for_sensitivity,
    youden_threshold,
)


def naive_placements(y, s):
    """pROC's delong.placements: the full Mann-Whitney kernel matrix (O(m*n))."""
    x, yy = s[y == 1], s[y == 0]
    mw = (x[:, None] > yy[None, :]) * 1.0 + (x[:, None] == yy[None, :]) * 0.5
    return mw.mean(), mw.mean(axis=1), mw.mean(axis=0)


def naive_cov(y, sa, sb):
    m, n = int((y == 1).sum()), int((y == 0).sum())
    ta, xa, ya = naive_placements(y, sa)
    tb, xb, yb = naive_placements(y, sb)
    sx = np.cov(np.vstack([xa, xb]))
    sy = np.cov(np.vstack([ya, yb]))
    return ta, tb, sx / m + sy / n


@pytest.fixture
def tied_data():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 300)
    a = np.round(rng.normal(size=300) + y, 1)  # rounding makes many ties
    b = np.round(0.5 * a + rng.normal(size=300), 1)
    return y, a, b


def test_auc_and_variance_match_the_kernel_definition(tied_data):
    y, a, b = tied_data
    ta, tb, s = naive_cov(y, a, b)
    ra = roc_auc_ci(y, a)
    assert ra.auc == pytest.approx(ta, abs=1e-12)
    assert ra.auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert ra.variance == pytest.approx(s[0, 0], abs=1e-14)
    assert ra.se == pytest.approx(math.sqrt(s[0, 0]), abs=1e-14)
    z = norm.ppf(0.975)
    assert ra.ci_low == pytest.approx(ta - z * ra.se, abs=1e-12)
    t = delong_test(y, a, b)
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    assert t.covariance == pytest.approx(s[0, 1], abs=1e-14)
    assert t.z == pytest.approx((ta - tb) / math.sqrt(var), rel=1e-10)
    assert t.p_value == pytest.approx(2 * norm.sf(abs(t.z)), rel=1e-10)
    assert t.ci_high - t.ci_low == pytest.approx(2 * z * math.sqrt(var), rel=1e-10)


def test_unpaired_test_matches_the_formula(tied_data):
    y, a, _ = tied_data
    y2, b = y[:200], a[100:300] * 0.3
    _, _, sa = naive_cov(y, a, a)
    _, _, sb = naive_cov(y2, b, b)
    sa, sb = sa[0, 0], sb[0, 0]
    r = delong_test_unpaired(y, a, y2, b)
    d = (roc_auc_score(y, a) - roc_auc_score(y2, b)) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (len(y) - 1) + sb**2 / (len(y2) - 1))
    assert r.statistic == pytest.approx(d, rel=1e-10)
    assert r.df == pytest.approx(df, rel=1e-10)
    assert r.p_value == pytest.approx(2 * student_t.sf(abs(d), df), rel=1e-10)


def test_level_changes_width_and_ci_is_clipped():
    y = np.array([0] * 5 + [1] * 5)
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.65, 0.6, 0.7, 0.8, 0.9, 1.0])
    r95, r80 = roc_auc_ci(y, s), roc_auc_ci(y, s, level=0.80)
    assert r80.ci_high - r80.ci_low < r95.ci_high - r95.ci_low
    assert r95.auc + 1.96 * r95.se > 1 and r95.ci_high == 1.0
    with pytest.raises(InputError):
        roc_auc_ci(y, s, level=1.5)


def test_one_class_gives_nan_and_warning():
    with pytest.warns(DegenerateDataWarning, match="only malignant"):
        r = roc_auc_ci([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(r.auc) and math.isnan(r.ci_low) and r.n_benign == 0
    with pytest.warns(DegenerateDataWarning):
        t = delong_test([0, 0], [0.1, 0.2], [0.3, 0.4])
    assert math.isnan(t.p_value)
    with pytest.warns(DegenerateDataWarning):
        assert roc_curve_points([0, 0], [0.1, 0.2]).empty
    with pytest.warns(DegenerateDataWarning):
        assert math.isnan(bootstrap_auc_ci([1, 1], [0.1, 0.2], n_boot=10).auc)


def test_single_case_of_a_class_gives_auc_without_variance():
    with pytest.warns(DegenerateDataWarning, match="at least 2"):
        r = roc_auc_ci([0, 0, 0, 1], [0.1, 0.2, 0.5, 0.3])
    assert r.auc == pytest.approx(2 / 3)
    assert math.isnan(r.variance)


def test_all_scores_tied():
    y = [0, 0, 0, 1, 1]
    r = roc_auc_ci(y, [0.4] * 5)
    assert (r.auc, r.variance, r.ci_low, r.ci_high) == (0.5, 0.0, 0.5, 0.5)
    t = delong_test(y, [0.4] * 5, [0.7] * 5)
    assert (t.z, t.p_value) == (0.0, 1.0)


def test_perfect_separation():
    y = [0, 0, 0, 1, 1, 1]
    r = roc_auc_ci(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    assert (r.auc, r.variance, r.se, r.ci_low, r.ci_high) == (1.0, 0.0, 0.0, 1.0, 1.0)
    rev = roc_auc_ci(y, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    assert (rev.auc, rev.ci_low, rev.ci_high) == (0.0, 0.0, 0.0)
    # zero variance of the difference, same AUC: z = 0, p = 1 (pROC)
    t = delong_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [1, 2, 3, 4, 5, 6])
    assert (t.diff, t.z, t.p_value) == (0.0, 0.0, 1.0)
    # zero variance, different AUC: infinite z, p = 0
    t2 = delong_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.5] * 6)
    assert t2.z == math.inf and t2.p_value == 0.0


def test_nan_scores_name_the_rows():
    with pytest.raises(InputError, match=r"positions \(0-based\) 1, 3"):
        roc_auc_ci([0, 1, 0, 1], [0.1, np.nan, 0.3, np.nan])
    s = pd.Series([0.1, 0.2, np.nan], index=["case-a", "case-b", "case-c"])
    with pytest.raises(InputError, match="rows case-c"):
        roc_auc_ci([0, 1, 1], s)
    with pytest.raises(InputError, match="scores_b"):
        delong_test([0, 1], [0.1, 0.2], [0.1, None])
    with pytest.raises(InputError, match="non-numeric values at rows 1"):
        roc_auc_ci([0, 1, 1], pd.Series([0.1, pd.NA, 0.3], dtype="Float64"))


def test_label_and_length_checks():
    r = roc_auc_ci(["benign", "malignant", "Malignant", "benign"], [0.1, 0.9, 0.8, 0.2])
    assert r.auc == 1.0
    with pytest.raises(InputError, match="0/1"):
        roc_auc_ci([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="one value per case"):
        roc_auc_ci([0, 1, 1], [0.1, 0.2])


def test_results_are_frozen_and_dict_ready():
    r = roc_auc_ci([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    assert r.to_dict()["auc"] == 0.75 and set(r.to_dict()) >= {"auc", "variance", "se", "ci_low", "ci_high"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.auc = 1.0  # type: ignore[misc]


def test_bootstrap_equals_a_plain_loop_over_the_same_draws(tied_data):
    y, a, _ = tied_data
    n_boot, seed = 200, 3
    fast = bootstrap_auc_ci(y, a, n_boot=n_boot, seed=seed)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    bp = rng.integers(0, len(pos), (n_boot, len(pos)))
    bn = rng.integers(0, len(neg), (n_boot, len(neg)))
    aucs = [roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[a[pos[i]], a[neg[j]]])
            for i, j in zip(bp, bn)]
    low, high = np.percentile(aucs, [2.5, 97.5])
    assert fast.ci_low == pytest.approx(low, abs=1e-12)
    assert fast.ci_high == pytest.approx(high, abs=1e-12)
    assert fast.se == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
    assert fast.auc == pytest.approx(roc_auc_score(y, a))
    assert bootstrap_auc_ci(y, a, n_boot=n_boot, seed=seed) == fast  # reproducible


def test_bootstrap_close_to_delong():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = rng.normal(size=400) + 1.2 * y
    boot, dl = bootstrap_auc_ci(y, s, n_boot=1000), roc_auc_ci(y, s)
    assert boot.ci_low == pytest.approx(dl.ci_low, abs=0.02)
    assert boot.ci_high == pytest.approx(dl.ci_high, abs=0.02)


def test_curve_points_and_thresholds():
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.3, 0.35, 0.4, 0.6, 0.7, 0.75, 0.9])
    curve = roc_curve_points(y, s, drop_intermediate=False)
    assert list(curve.columns) == ["threshold", "fpr", "tpr", "sensitivity", "specificity"]
    assert np.isinf(curve["threshold"].iloc[0]) and curve["tpr"].iloc[-1] == 1.0
    assert np.all(np.diff(curve["tpr"]) >= 0)

    def sens_spec(t):
        c = s >= t
        return c[y == 1].mean(), (~c)[y == 0].mean()

    best = max(sorted(set(s), reverse=True), key=lambda t: sum(sens_spec(t)) - 1)
    assert youden_threshold(y, s) == best
    for target in (0.5, 0.75, 1.0):
        want = max(t for t in s if sens_spec(t)[0] >= target)
        assert threshold_for_sensitivity(y, s, target) == want
    with pytest.raises(InputError):
        threshold_for_sensitivity(y, s, 1.5)


def test_calibration_table():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.6, 200)
    y = (rng.uniform(size=200) < p).astype(int)
    table = calibration_table(y, p, bins=10)
    assert len(table) == 10 and table["n"].sum() == 200
    true, pred = calibration_curve(y, p, n_bins=10)
    filled = table[table["n"] > 0]
    np.testing.assert_allclose(filled["observed"], true)
    np.testing.assert_allclose(filled["mean_predicted"], pred)
    assert table.loc[table["n"] == 0, "observed"].isna().all()  # empty bins kept as NaN
    assert (filled["observed_ci_low"] <= filled["observed"]).all()
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        calibration_table([0, 1], [0.2, 1.3])


def test_large_input_runs_without_warnings():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200_000)
    s = rng.normal(size=y.size) + y
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = roc_auc_ci(y, s)
    assert 0.7 < r.auc < 0.8 and r.se < 0.002
