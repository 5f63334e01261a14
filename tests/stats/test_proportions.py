"""dlum.stats.proportions: interval methods, edge counts, bad input."""
from __future__ import annotations

import math

import pytest
from scipy.stats import beta, binomtest

from dlum.errors import InputError
from dlum.stats import proportion, proportion_ci


def test_exact_is_clopper_pearson():
    low, high = proportion_ci(7, 20, method="exact", level=0.9)
    assert low == pytest.approx(beta.ppf(0.05, 7, 14), abs=1e-12)
    assert high == pytest.approx(beta.ppf(0.95, 8, 13), abs=1e-12)
    ci = binomtest(7, 20).proportion_ci(0.9, method="exact")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert proportion_ci(7, 20, "clopper_pearson") == proportion_ci(7, 20, "exact")


def test_wilson_matches_scipy():
    ci = binomtest(26, 41).proportion_ci(0.95, method="wilson")
    assert proportion_ci(26, 41) == pytest.approx((ci.low, ci.high), abs=1e-12)
    ci_cc = binomtest(26, 41).proportion_ci(0.95, method="wilsoncc")
    assert proportion_ci(26, 41, "wilson_cc") == pytest.approx((ci_cc.low, ci_cc.high), abs=1e-12)


def test_r_prop_test_drops_the_correction_at_half():
    """R's prop.test(correct=TRUE) shrinks the correction to |x - n/2|: none at x = n/2."""
    assert proportion_ci(36, 72, "wilson_cc_r") == proportion_ci(36, 72, "wilson")
    assert proportion_ci(36, 72, "wilson_cc") != proportion_ci(36, 72, "wilson")
    # one away from n/2 the correction is 0.5 again, like the textbook interval
    assert proportion_ci(37, 72, "wilson_cc_r") == pytest.approx(proportion_ci(37, 72, "wilson_cc"))


def test_edges():
    for method in ("wilson", "exact", "wilson_cc", "wilson_cc_r"):
        low, high = proportion_ci(0, 12, method)
        assert low == 0.0 and 0 < high < 1
        low, high = proportion_ci(12, 12, method)
        assert high == 1.0 and 0 < low < 1
        assert all(math.isnan(v) for v in proportion_ci(0, 0, method))
    p = proportion(0, 0)
    assert math.isnan(p.estimate) and p.n == 0


def test_width_shrinks_with_level():
    w95 = proportion_ci(30, 80)[1] - proportion_ci(30, 80)[0]
    w80 = proportion_ci(30, 80, level=0.8)[1] - proportion_ci(30, 80, level=0.8)[0]
    assert w80 < w95


@pytest.mark.parametrize("x,n", [(5, 3), (-1, 4), (1.5, 4), ("a", 3)])
def test_bad_counts(x, n):
    with pytest.raises(InputError):
        proportion_ci(x, n)


def test_unknown_method():
    with pytest.raises(InputError, match="unknown interval method"):
        proportion_ci(1, 2, method="wald-ish")


def test_proportion_result():
    p = proportion(26, 41, "exact")
    assert p.estimate == pytest.approx(26 / 41)
    assert (p.ci_low, p.ci_high) == proportion_ci(26, 41, "exact")
    assert p.to_dict()["method"] == "exact"
