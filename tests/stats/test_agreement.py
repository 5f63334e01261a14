"""dlum.stats.agreement: kappa over declared levels, against scikit-learn, degenerate inputs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from dlum.errors import InputError
from dlum.stats import DegenerateDataWarning, agreement_table, kappa_band, weighted_kappa

BIRADS = [2, 3, 4, 5]


@pytest.fixture
def readers():
    rng = np.random.default_rng(5)
    a = rng.choice(BIRADS, 150)
    b = np.clip(a + rng.choice([-1, 0, 0, 1], 150), 2, 5)
    return a, b


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_sklearn(readers, weights):
    a, b = readers
    k = weighted_kappa(a, b, weights=weights, levels=BIRADS)
    assert k.kappa == pytest.approx(cohen_kappa_score(a, b, labels=BIRADS, weights=weights), abs=1e-12)
    assert k.se > 0 and k.ci_low < k.kappa < k.ci_high
    assert k.ci_high - k.ci_low == pytest.approx(2 * 1.959963984540054 * k.se)
    assert k.z == pytest.approx(k.kappa / k.se0)


def test_declared_levels_keep_an_unused_category():
    # BI-RADS 4 never used: the table keeps its row/column and the linear spacing 2-3-4-5
    a = [2, 3, 5, 5, 2, 3, 5, 2]
    b = [2, 5, 5, 3, 3, 3, 5, 2]
    declared = weighted_kappa(a, b, "linear", levels=BIRADS)
    observed = weighted_kappa(a, b, "linear")
    assert declared.levels == (2, 3, 4, 5) and observed.levels == (2, 3, 5)
    assert declared.table[2] == (0, 0, 0, 0)
    assert declared.kappa == pytest.approx(cohen_kappa_score(a, b, labels=BIRADS, weights="linear"))
    assert declared.kappa != pytest.approx(observed.kappa)
    # unweighted kappa does not depend on unused levels
    assert weighted_kappa(a, b, levels=BIRADS).kappa == pytest.approx(weighted_kappa(a, b).kappa)


def test_binary_weighted_equals_unweighted():
    a = [0, 1, 1, 0, 1, 0, 1, 1]
    b = [0, 1, 0, 0, 1, 1, 1, 1]
    ks = [weighted_kappa(a, b, w, levels=[0, 1]) for w in (None, "linear", "quadratic")]
    assert ks[0].kappa == pytest.approx(ks[1].kappa) == pytest.approx(ks[2].kappa)
    assert ks[0].se == pytest.approx(ks[2].se)


def test_perfect_agreement():
    k = weighted_kappa([2, 3, 4, 5, 4], [2, 3, 4, 5, 4], "quadratic", levels=BIRADS)
    assert k.kappa == pytest.approx(1.0) and k.se == pytest.approx(0.0, abs=1e-12)
    assert k.ci_high == 1.0


def test_undefined_kappa_is_nan_with_warning():
    with pytest.warns(DegenerateDataWarning, match="single level"):
        k = weighted_kappa([4, 4, 4], [4, 4, 4], levels=BIRADS)
    assert math.isnan(k.kappa) and k.n == 3
    with pytest.warns(DegenerateDataWarning, match="no rated cases"):
        assert math.isnan(weighted_kappa([], [], levels=BIRADS).kappa)
    with pytest.warns(DegenerateDataWarning, match="one level"):
        assert math.isnan(weighted_kappa([1, 1], [1, 1]).kappa)


def test_bad_ratings_name_the_rows():
    with pytest.raises(InputError, match=r"outside the declared levels .* positions \(0-based\) 1"):
        weighted_kappa([2, 6, 3], [2, 3, 3], levels=BIRADS)
    with pytest.raises(InputError, match="rows r2"):
        weighted_kappa(pd.Series([2, np.nan], index=["r1", "r2"]), [2, 3], levels=BIRADS)
    with pytest.raises(InputError, match="weights"):
        weighted_kappa([2], [2], weights="cubic")
    with pytest.raises(InputError, match="one value per case"):
        weighted_kappa([2, 3], [2])


def test_aliases_and_table(readers):
    a, b = readers
    assert weighted_kappa(a, b, "squared", BIRADS).kappa == weighted_kappa(a, b, "quadratic", BIRADS).kappa
    assert weighted_kappa(a, b, "equal", BIRADS).kappa == weighted_kappa(a, b, "linear", BIRADS).kappa
    table = agreement_table(a, b, BIRADS)
    assert table.shape == (4, 4) and table.to_numpy().sum() == 150
    assert table.loc[2, 3] == int(((a == 2) & (b == 3)).sum())
    # ratings given as floats or strings of the same numbers map onto numeric levels
    assert weighted_kappa(a.astype(float), b, "linear", BIRADS).kappa == pytest.approx(
        weighted_kappa(a, b, "linear", BIRADS).kappa)
    assert weighted_kappa(a, b, "linear", BIRADS).to_dict()["table"][0] == list(table.iloc[0])


def test_kappa_band_landis_koch():
    """Table 4's footnote (Xu et al. 2025): < 0 poor, 0-0.20 slight, 0.21-0.40 fair, 0.41-0.60
    moderate, 0.61-0.80 substantial, 0.81-1.00 almost perfect."""
    cases = {-0.05: "poor", 0.0: "slight", 0.048: "slight", 0.20: "slight", 0.332: "fair",
             0.40: "fair", 0.564: "moderate", 0.60: "moderate", 0.641: "substantial",
             0.80: "substantial", 0.820: "almost perfect", 1.0: "almost perfect"}
    assert {k: kappa_band(k) for k in cases} == cases
    for undefined in (float("nan"), None, "x", float("inf")):
        assert kappa_band(undefined) == "n/a"
    assert kappa_band(np.float64(0.5)) == "moderate"
