"""dlum.stats.decisions: counts, proportions, biopsy figures, McNemar and chi-square."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, chi2_contingency, fisher_exact
from sklearn.metrics import confusion_matrix, roc_auc_score

from dlum.errors import InputError
from dlum.stats import DegenerateDataWarning, binary_metrics, biopsy_metrics, chi2_test, mcnemar_test


@pytest.fixture
def calls():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 120)
    a = np.where(rng.uniform(size=120) < 0.8, y, 1 - y)
    b = np.where(rng.uniform(size=120) < 0.7, y, 1 - y)
    return y, a, b


def test_binary_metrics_counts_and_auc(calls):
    y, a, _ = calls
    bm = binary_metrics(y, a)
    tn, fp, fn, tp = confusion_matrix(y, a).ravel()
    assert (bm.tp, bm.fp, bm.tn, bm.fn, bm.n) == (tp, fp, tn, fn, 120)
    assert bm.sensitivity.estimate == pytest.approx(tp / (tp + fn))
    assert bm.specificity.estimate == pytest.approx(tn / (tn + fp))
    assert bm.ppv.estimate == pytest.approx(tp / (tp + fp))
    assert bm.npv.estimate == pytest.approx(tn / (tn + fn))
    assert bm.accuracy.estimate == pytest.approx((tp + tn) / 120)
    # for a dichotomous rater (sens + spec) / 2 is the ROC AUC of its calls
    assert bm.auc == pytest.approx(roc_auc_score(y, a))
    assert bm.sensitivity.ci_low < bm.sensitivity.estimate < bm.sensitivity.ci_high
    assert bm.to_dict()["sensitivity"]["x"] == tp


def test_binary_metrics_undefined_proportions_are_nan():
    bm = binary_metrics([0, 0, 0], [0, 0, 0])
    assert math.isnan(bm.sensitivity.estimate) and math.isnan(bm.ppv.estimate)
    assert bm.specificity.estimate == 1.0


def test_biopsy_metrics_relations(calls):
    y, a, _ = calls
    bm, bio = binary_metrics(y, a), biopsy_metrics(y, a)
    assert bio.recommended_biopsies == bm.tp + bm.fp
    assert bio.unnecessary_biopsies == bm.fp and bio.missed_malignancies == bm.fn
    assert bio.unnecessary_rate.estimate == pytest.approx(1 - bm.ppv.estimate)
    assert bio.missed_rate.estimate == pytest.approx(1 - bm.sensitivity.estimate)
    assert bio.unnecessary_per_benign.estimate == pytest.approx(1 - bm.specificity.estimate)
    assert bio.biopsy_rate.estimate == pytest.approx(bio.recommended_biopsies / 120)


def test_no_biopsies_recommended():
    bio = biopsy_metrics([1, 0, 0], [0, 0, 0])
    assert bio.recommended_biopsies == 0 and math.isnan(bio.unnecessary_rate.estimate)
    assert bio.missed_rate.estimate == 1.0


def test_bad_calls():
    with pytest.raises(InputError, match="threshold scores first"):
        binary_metrics([0, 1], [0.2, 0.9])
    with pytest.raises(InputError, match="positions"):
        biopsy_metrics([0, 1, 1], [0, np.nan, 1])
    with pytest.raises(InputError, match="one value per case"):
        binary_metrics([0, 1, 1], [0, 1])


def test_mcnemar(calls):
    y, a, b = calls
    res = mcnemar_test(y, a, b, on="specificity", correction=False)
    ben = y == 0
    n01 = int(((a[ben] == 0) & (b[ben] == 1)).sum())
    n10 = int(((a[ben] == 1) & (b[ben] == 0)).sum())
    assert res.a_correct_b_wrong == n01 and res.a_wrong_b_correct == n10
    assert res.statistic == pytest.approx((n01 - n10) ** 2 / (n01 + n10))
    exact = mcnemar_test(y, a, b, on="specificity", exact=True)
    assert exact.p_value == pytest.approx(binomtest(min(n01, n10), n01 + n10).pvalue)
    assert res.prop_a == pytest.approx((a[ben] == 0).mean())


def test_mcnemar_degenerate():
    same = mcnemar_test([1, 1, 0], [1, 0, 0], [1, 0, 0])
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    with pytest.warns(DegenerateDataWarning):
        none = mcnemar_test([0, 0], [1, 0], [0, 0], on="sensitivity")
    assert math.isnan(none.p_value)
    with pytest.raises(InputError, match="sensitivity"):
        mcnemar_test([0, 1], [0, 1], [0, 1], on="accuracy")


def test_chi2_matches_scipy():
    res = chi2_test(30, 40, 18, 35)
    table = [[30, 10], [18, 17]]
    stat, p, _, _ = chi2_contingency(table, correction=True)
    assert (res.statistic, res.p_value) == pytest.approx((stat, p))
    assert res.fisher_p_value == pytest.approx(fisher_exact(table)[1])
    assert not res.small_expected
    assert chi2_test(3, 4, 1, 5).small_expected


def test_chi2_degenerate_and_bad_input():
    with pytest.warns(DegenerateDataWarning, match="empty"):
        res = chi2_test(10, 10, 12, 12)
    assert math.isnan(res.statistic) and res.fisher_p_value == 1.0
    with pytest.raises(InputError):
        chi2_test(5, 4, 1, 2)
    with pytest.raises(InputError):
        chi2_test(1.5, 4, 1, 2)
