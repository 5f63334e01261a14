"""dlum.stats.decision_curve: net benefit (Vickers & Elkin 2006) against the dcurves package."""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlum.errors import CohortError, InputError
from dlum.stats import (
    BIRADS_3_4_RISK,
    DegenerateDataWarning,
    decision_curves,
    net_benefit,
    net_benefit_at,
    net_benefit_display,
)
from tests.stats.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "checkpoints" / "dlum-public-v2" / "predictions.csv"
MODELS = ("p_dlum", "p_dlu", "p_dlm")


@pytest.fixture(scope="module")
def public_test() -> pd.DataFrame:
    """The shipped checkpoint's held-out public test rows (BUS-BRA + MIAS / CBIS-DDSM pairs)."""
    if not SHIPPED.is_file():
        pytest.skip("the shipped checkpoint's predictions.csv is not present")
    frame = pd.read_csv(SHIPPED)
    return frame[frame["split"] == "test"].reset_index(drop=True)


REFERENCE = Path(__file__).resolve().parent / "data" / "dcurves_reference"


def _grid(frame: pd.DataFrame) -> np.ndarray:
    """0.01..0.99 plus thresholds that equal a probability exactly (P >= pt counts as biopsied
    in dlum and in dcurves alike, so the ties must agree too): scripts/dcurves_reference.py's grid."""
    ties = [frame[c].iloc[i] for c in MODELS for i in (3, 50)]
    return np.unique(np.concatenate([np.round(np.arange(1, 100) * 0.01, 2), ties]))


def _compare(public_test: pd.DataFrame, ref: pd.DataFrame, grid: np.ndarray) -> None:
    treat_all = ref[ref["model"] == "all"].reset_index(drop=True)
    treat_none = ref[ref["model"] == "none"].reset_index(drop=True)
    for column in MODELS:
        ours = net_benefit(public_test["label"], public_test[column], grid)
        theirs = ref[ref["model"] == column].reset_index(drop=True)
        assert len(ours) == len(theirs) == len(grid)
        np.testing.assert_allclose(ours["threshold"], theirs["threshold"], rtol=0, atol=0)
        for mine, reference in (("net_benefit", "net_benefit"), ("tp_rate", "tp_rate"),
                                ("fp_rate", "fp_rate"),
                                ("biopsies_avoided_per_100", "net_intervention_avoided")):
            np.testing.assert_allclose(ours[mine], theirs[reference], rtol=0, atol=1e-12,
                                       err_msg=f"{column} {mine}")
        np.testing.assert_allclose(ours["treat_all"], treat_all["net_benefit"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours["treat_none"], treat_none["net_benefit"], rtol=0, atol=1e-12)


def test_net_benefit_equals_dcurves_on_the_public_test_predictions(public_test):
    """Against dcurves 1.1.7's ``dca`` on the same rows, stored by scripts/dcurves_reference.py
    (dcurves needs pandas < 3 through lifelines, so it runs in its own environment)."""
    info = json.loads(REFERENCE.with_suffix(".json").read_text())
    if hashlib.sha256(SHIPPED.read_bytes()).hexdigest() != info["source_sha256"]:
        pytest.fail("predictions.csv changed since the dcurves reference was written: "
                    "rerun scripts/dcurves_reference.py")
    ref = pd.read_csv(REFERENCE.with_suffix(".csv"))
    grid = _grid(public_test)
    _compare(public_test, ref, grid)
    # the comparison is not vacuous: the curves differ between models and cross treat-all
    dlum = net_benefit(public_test["label"], public_test["p_dlum"], grid)
    dlm = net_benefit(public_test["label"], public_test["p_dlm"], grid)
    assert np.abs(dlum["net_benefit"] - dlm["net_benefit"]).max() > 0.01
    assert (dlum["net_benefit"] > dlum["treat_all"]).any() and (dlum["net_benefit"] < 0).any()


def test_net_benefit_equals_dcurves_live(public_test):
    """The same against dcurves itself, where it is installed (not a dlum dependency)."""
    dca = pytest.importorskip("dcurves").dca
    grid = _grid(public_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dcurves' own pandas warnings
        ref = dca(data=public_test[["label", *MODELS]], outcome="label", modelnames=list(MODELS),
                  thresholds=list(grid), nper=100)
    _compare(public_test, ref, grid)


def test_net_benefit_by_hand():
    # 5 cases, 2 malignant. At pt = 0.25 (odds 1/3): P >= 0.25 are 0.3 (benign), 0.25 (malignant,
    # a tie counts as biopsied) and 0.9 (malignant): TP = 2, FP = 1.
    y, p = [0, 0, 1, 1, 0], [0.1, 0.3, 0.25, 0.9, 0.2]
    row = net_benefit(y, p, [0.25]).iloc[0]
    assert row["tp_rate"] == pytest.approx(2 / 5) and row["fp_rate"] == pytest.approx(1 / 5)
    assert row["net_benefit"] == pytest.approx(2 / 5 - 1 / 5 * (1 / 3))
    assert row["treat_all"] == pytest.approx(2 / 5 - 3 / 5 * (1 / 3))
    assert row["treat_none"] == 0
    # net biopsies avoided per 100: (NB − NB_all) / odds · 100 = (2/15) · 3 · 100 = 40
    assert row["biopsies_avoided_per_100"] == pytest.approx(40.0)
    # above every probability nobody is biopsied: NB 0, and all the benign biopsies are avoided
    high = net_benefit(y, p, [0.95]).iloc[0]
    assert high["net_benefit"] == 0 and high["tp_rate"] == 0


def test_net_benefit_keeps_the_threshold_order_and_accepts_labels_as_text():
    a = net_benefit(["benign", "malignant", "malignant", "benign"], [0.2, 0.7, 0.4, 0.5], [0.6, 0.1, 0.45])
    b = net_benefit([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.5], [0.1, 0.45, 0.6])
    assert a["threshold"].tolist() == [0.6, 0.1, 0.45]
    pd.testing.assert_frame_equal(a.sort_values("threshold").reset_index(drop=True), b)


@pytest.mark.parametrize("y, p, t, message", [
    ([0, 2, 1], [0.1, 0.2, 0.3], [0.5], "must be 0/1"),
    ([0, 1, 1], [0.1, np.nan, 0.3], [0.5], "missing (NaN)"),
    ([0, 1, 1], [0.1, 1.2, 0.3], [0.5], "finite numbers in [0, 1]"),
    ([0, 1, 1], [0.1, np.inf, 0.3], [0.5], "finite numbers in [0, 1]"),
    ([0, 1, 1], [0.1, 0.2, 0.3], [0.0, 0.5], "strictly between 0 and 1"),
    ([0, 1, 1], [0.1, 0.2, 0.3], [1.0], "strictly between 0 and 1"),
    ([0, 1], [0.1, 0.2, 0.3], [0.5], "one value per case"),
    ([], [], [0.5], "needs cases"),
    ([1, 1, 1], [0.1, 0.2, 0.3], [0.5], "all 3 are malignant"),
    ([0, 0], [0.1, 0.2], [0.5], "all 2 are benign"),
])
def test_net_benefit_refuses_bad_inputs(y, p, t, message):
    with pytest.raises(InputError) as info:
        net_benefit(y, p, t)
    assert message in str(info.value)


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    y = np.array([1, 0] * 20)
    return pd.DataFrame({
        "label": y,
        "subgroup": np.where(np.arange(40) % 4 == 0, "discordant", "concordant"),
        "p_a": np.clip(0.3 * y + rng.random(40) * 0.7, 0, 1).round(4),
        "p_b": rng.random(40).round(4),
    })


def test_decision_curves_per_model_and_subgroup():
    frame = _frame()
    models = {"A": "p_a", "B": "p_b"}
    curves = decision_curves(frame, models, "concordant", thresholds=[0.1, 0.2])
    assert curves["model"].tolist() == ["A", "A", "B", "B"]
    part = frame[frame["subgroup"] == "concordant"]
    direct = net_benefit(part["label"], part["p_b"], [0.1, 0.2])
    np.testing.assert_allclose(curves[curves["model"] == "B"]["net_benefit"], direct["net_benefit"])
    # 'all' uses every row: a different prevalence-weighted treat-all
    everyone = decision_curves(frame, models, "all", thresholds=[0.1])
    assert len(everyone) == 2 and everyone["treat_all"].iloc[0] == pytest.approx(0.5 - 0.5 / 9)


def test_one_class_subgroup_is_a_note_not_an_error():
    frame = _frame()
    frame.loc[frame["subgroup"] == "discordant", "label"] = 1
    with pytest.warns(DegenerateDataWarning, match="only malignant"):
        curves = decision_curves(frame, {"A": "p_a"}, "discordant")
    assert curves.empty
    with pytest.warns(DegenerateDataWarning):
        at = net_benefit_at(frame, {"A": "p_a"}, "discordant", {"p_a": 0.3})
    assert math.isnan(at["net_benefit"].iloc[0]) and at["n"].iloc[0] == 10
    assert "n/a" in net_benefit_display(at).iloc[0, 2]


def test_net_benefit_at_reads_off_each_models_threshold_and_the_birads_boundary():
    frame = _frame()
    at = net_benefit_at(frame, {"A": "p_a", "B": "p_b"}, "all", {"p_a": 0.4, "p_b": 0.6})
    assert at["threshold"].tolist() == [0.4, 0.6] and (at["risk"] == BIRADS_3_4_RISK).all()
    for name, column, thr in (("A", "p_a", 0.4), ("B", "p_b", 0.6)):
        want = net_benefit(frame["label"], frame[column], [thr, BIRADS_3_4_RISK])
        row = at[at["model"] == name].iloc[0]
        assert row["net_benefit"] == pytest.approx(want["net_benefit"].iloc[0])
        assert row["biopsies_avoided_per_100"] == pytest.approx(want["biopsies_avoided_per_100"].iloc[0])
        assert row["net_benefit_at_risk"] == pytest.approx(want["net_benefit"].iloc[1])
        assert row["biopsies_avoided_per_100_at_risk"] == pytest.approx(
            want["biopsies_avoided_per_100"].iloc[1])
    shown = net_benefit_display(at)
    assert shown.columns[-1] == "Net biopsies avoided per 100 at 2%"
    assert shown["Net biopsies avoided per 100 at threshold"].iloc[0] == f"{at['biopsies_avoided_per_100'].iloc[0]:.1f}"
    # a threshold of 0 or 1 (a slider at its end) has no net benefit: NaN and a note, 2% still read
    with pytest.warns(DegenerateDataWarning, match="not strictly between 0 and 1"):
        edge = net_benefit_at(frame, {"A": "p_a"}, "all", {"p_a": 0.0})
    assert math.isnan(edge["net_benefit"].iloc[0])
    assert edge["net_benefit_at_risk"].iloc[0] == pytest.approx(at["net_benefit_at_risk"].iloc[0])
    with pytest.raises(CohortError, match="p_c"):
        net_benefit_at(frame, {"C": "p_c"}, "all", {"p_c": 0.5})
