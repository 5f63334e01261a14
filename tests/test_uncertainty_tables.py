"""dlum.uncertainty_tables: the uncertainty table, and DL-UM in certain and uncertain cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dlum.errors import CohortError, DLUMError
from dlum.predictions import Threshold
from dlum.uncertainty_tables import (UNCERTAINTY_COLUMNS, certainty_caption, certainty_display,
                                     certainty_table, read_uncertainty, uncertain_cases,
                                     write_uncertainty)

T = 0.4


@pytest.fixture()
def tables():
    """60 test cases (and 5 validation ones) with intervals around P; about a third straddle T."""
    rng = np.random.default_rng(11)
    n = 60
    label = rng.integers(0, 2, n)
    p = np.clip(0.25 + 0.35 * label + rng.normal(0, 0.2, n), 0, 1)
    half = rng.uniform(0.01, 0.15, n)
    frame = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": label, "split": "test",
                          "p_dlum": p})
    extra = pd.DataFrame({"case_id": [f"v{i}" for i in range(5)], "label": [0, 1, 0, 1, 0],
                          "split": "validation", "p_dlum": 0.5})
    intervals = pd.DataFrame({"case_id": frame["case_id"], "split": "test", "estimate": p,
                              "low": np.clip(p - half, 0, 1), "high": np.clip(p + half, 0, 1)})
    return pd.concat([frame, extra], ignore_index=True), intervals


def _counts(y, calls):
    tp, fn = int(((y == 1) & calls).sum()), int(((y == 1) & ~calls).sum())
    tn, fp = int(((y == 0) & ~calls).sum()), int(((y == 0) & calls).sum())
    return tp / (tp + fn), tn / (tn + fp)


def test_certain_and_uncertain_groups_match_a_direct_count(tables):
    frame, intervals = tables
    table = certainty_table(frame, intervals, {"p_dlum": T}).set_index("cases")
    test = frame[frame["split"] == "test"].merge(intervals[["case_id", "low", "high"]], on="case_id")
    straddle = (test["low"] < T) & (T <= test["high"])
    assert 0 < straddle.sum() < len(test)
    for name, keep in (("certain", ~straddle), ("uncertain", straddle),
                       ("all", np.ones(len(test), bool))):
        part = test[keep]
        y = part["label"].to_numpy()
        row = table.loc[name]
        assert row["n"] == len(part) and row["n_malignant"] == int(y.sum())
        assert row["share"] == pytest.approx(len(part) / len(test))
        assert row["auc"] == pytest.approx(roc_auc_score(y, part["p_dlum"]))
        assert row["auc_ci_low"] <= row["auc"] <= row["auc_ci_high"]
        sens, spec = _counts(y, part["p_dlum"].to_numpy() >= T)
        assert row["sensitivity"] == pytest.approx(sens) and row["specificity"] == pytest.approx(spec)
        assert row["sensitivity_ci_low"] <= row["sensitivity"] <= row["sensitivity_ci_high"]
    assert table.loc["certain", "n"] + table.loc["uncertain", "n"] == table.loc["all", "n"]
    assert table.attrs["missing"] == 0
    # a Threshold object is read as its value; another split is taken when asked
    same = certainty_table(frame, intervals, {"p_dlum": Threshold(T, "card")})
    pd.testing.assert_frame_equal(same, table.reset_index())
    assert certainty_table(frame, intervals, {"p_dlum": T}, split=None).attrs["missing"] == 5


def test_one_class_group_gives_nan_with_a_note(tables):
    frame, intervals = tables
    test = frame[frame["split"] == "test"]
    # only the benign cases straddle the threshold
    intervals = intervals.assign(low=np.where(test["label"] == 0, T - 0.1, 0.9),
                                 high=np.where(test["label"] == 0, T + 0.1, 0.95))
    table = certainty_table(frame, intervals, {"p_dlum": T}).set_index("cases")
    uncertain, certain = table.loc["uncertain"], table.loc["certain"]
    assert uncertain["n_malignant"] == 0 and math.isnan(uncertain["auc"])
    assert math.isnan(uncertain["sensitivity"]) and np.isfinite(uncertain["specificity"])
    assert "only benign" in uncertain["note"] and "sensitivity undefined" in uncertain["note"]
    assert certain["n_benign"] == 0 and "only malignant" in certain["note"]
    shown = certainty_display(table.reset_index())
    assert shown["AUC [95% CI]"].tolist()[:2] == ["n/a", "n/a"]
    assert shown["Sensitivity [95% CI]"].tolist()[1] == "n/a"


def test_missing_cases_and_unusable_inputs(tables):
    frame, intervals = tables
    table = certainty_table(frame, intervals.iloc[:50], {"p_dlum": T})
    assert table.attrs["missing"] == 10 and table.set_index("cases").loc["all", "n"] == 50
    assert "10 test case(s) without an interval" in certainty_caption(table, intervals, "ckpt")
    with pytest.raises(DLUMError, match="no usable operating threshold"):
        certainty_table(frame, intervals, {})
    with pytest.raises(DLUMError, match="no case of the test split"):
        certainty_table(frame, intervals.assign(case_id="other-" + intervals["case_id"]), {"p_dlum": T})
    with pytest.raises(CohortError, match="no column"):
        certainty_table(frame, intervals.drop(columns="high"), {"p_dlum": T})


def test_uncertain_cases_rule():
    assert uncertain_cases([0.4, 0.3, 0.41, 0.2], [0.5, 0.4, 0.5, 0.39], 0.4).tolist() == [
        False, True, False, False]


def test_write_then_read_round_trip_and_bad_files(tmp_path, tables):
    _, intervals = tables
    frame = intervals.assign(uncertain=uncertain_cases(intervals["low"], intervals["high"], T),
                             level=1.0, views=6, seed=0, precision="bfloat16")
    path = write_uncertainty(frame, tmp_path / "uncertainty.csv")
    assert path.read_text().splitlines()[0] == ",".join(UNCERTAINTY_COLUMNS)
    back = read_uncertainty(path)
    assert back["case_id"].tolist() == frame["case_id"].tolist()
    np.testing.assert_allclose(back["low"], frame["low"], atol=1e-6)
    assert back["uncertain"].tolist() == frame["uncertain"].tolist()
    assert set(back["views"]) == {6} and set(back["precision"]) == {"bfloat16"}
    table = certainty_table(pd.DataFrame(
        {"case_id": frame["case_id"], "label": np.arange(len(frame)) % 2, "split": "test",
         "p_dlum": frame["estimate"]}), back, {"p_dlum": T})
    caption = certainty_caption(table, back, "dlum-public-v2")
    assert "test split only" in caption and "6 augmented views" in caption and "0.400" in caption
    # level 1 (the default) is the views' range; another level is named as a central share
    assert "test-time-augmentation range (the lowest to the highest P" in caption
    assert "100%" not in caption and "central" not in caption
    share = certainty_caption(table, back.assign(level=0.8), "dlum-public-v2")
    assert "80% test-time-augmentation interval (the central 80% of P" in share
    bad = (b"case_id,low,high\n"
           b"a,0.2,0.1\n"
           b"b,0.1,1.2\n")
    with pytest.raises(CohortError) as err:
        read_uncertainty(bad, name="u.csv")
    text = str(err.value)
    assert "low is above high" not in text  # cell problems first: the order check needs clean cells
    assert "outside [0, 1]" in text
    with pytest.raises(CohortError, match="low is above high"):
        read_uncertainty(b"case_id,low,high\na,0.2,0.1\n")
    with pytest.raises(CohortError, match="missing required column"):
        read_uncertainty(b"case_id,low\na,0.2\n")


def test_the_shipped_uncertainty_table_is_the_test_split_at_the_card_threshold():
    from pathlib import Path

    from dlum.card import read_card
    from dlum.predictions import read_predictions
    from dlum.uncertainty import DEFAULT_LEVEL, DEFAULT_VIEWS

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"
    if not (shipped / "uncertainty.csv").is_file():
        pytest.skip("no uncertainty.csv beside the shipped checkpoint")
    table = read_uncertainty(shipped / "uncertainty.csv")
    predictions = read_predictions(shipped / "predictions.csv")
    test = predictions[predictions["split"] == "test"]
    assert sorted(table["case_id"]) == sorted(test["case_id"]) and set(table["split"]) == {"test"}
    t = read_card(shipped).threshold_for("p_dlum")
    assert table["uncertain"].tolist() == uncertain_cases(table["low"], table["high"], t).tolist()
    assert set(table["views"]) == {DEFAULT_VIEWS} and set(table["level"]) == {DEFAULT_LEVEL}
    merged = test.merge(table, on="case_id")
    assert (merged["estimate"] - merged["p_dlum"]).abs().max() < 0.025  # bf16 vs the fp32 table
    assert (table["low"] <= table["high"]).all()
