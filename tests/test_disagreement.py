"""dlum.disagreement: DL-UM's branches on opposite sides of their thresholds, and DL-UM there."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dlum.disagreement import (
    AGREE,
    DISAGREE,
    branch_agreement,
    branches_disagree,
    crosstab_display,
    disagreement_crosstab,
    disagreement_display,
    disagreement_table,
    has_branches,
)
from dlum.errors import CohortError, InputError
from dlum.predictions import Threshold
from dlum.stats import binary_metrics, roc_auc_ci

THRESHOLDS = {"p_dlum": 0.4, "p_us_head": 0.3, "p_mg_head": 0.6}


def test_branches_disagree_scalars_arrays_and_ties():
    assert branches_disagree(0.7, 0.2, 0.5, 0.5) is True
    assert branches_disagree(0.7, 0.9, 0.5, 0.5) is False
    assert branches_disagree(0.1, 0.2, 0.5, 0.5) is False
    # P >= threshold is malignant: a branch exactly at its threshold is positive
    assert branches_disagree(0.5, 0.49, 0.5, 0.5) is True
    assert branches_disagree(0.5, 0.6, 0.5, 0.6) is False
    # each branch against its own threshold
    assert branches_disagree(0.35, 0.35, 0.3, 0.6) is True
    out = branches_disagree(np.array([0.9, 0.9, 0.1, 0.1]), pd.Series([0.9, 0.1, 0.9, 0.1]), 0.5, 0.5)
    assert out.dtype == bool and out.tolist() == [False, True, True, False]
    # per-case thresholds broadcast too
    assert branches_disagree([0.4, 0.4], [0.9, 0.9], [0.3, 0.5], 0.5).tolist() == [False, True]


@pytest.mark.parametrize("args, message", [
    (([0.1, np.nan], [0.2, 0.3], 0.5, 0.5), "p_us has missing"),
    (([0.1, 0.2], ["x", 0.3], 0.5, 0.5), "p_mg must be numbers"),
    (([0.1, 0.2, 0.3], [0.2, 0.3], 0.5, 0.5), "one value per case"),
])
def test_branches_disagree_refuses_bad_inputs(args, message):
    with pytest.raises(InputError, match=message):
        branches_disagree(*args)


def _frame(n: int = 80, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = np.array([1, 0] * (n // 2))
    us = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1).round(4)
    mg = np.clip(0.30 * y + 0.70 * rng.random(n), 0, 1).round(4)
    return pd.DataFrame({
        "case_id": [f"c{i}" for i in range(n)],
        "label": y,
        "subgroup": np.where(np.arange(n) % 3 == 0, "discordant", "concordant"),
        "p_dlum": ((us + mg) / 2).round(4),
        "p_us_head": us,
        "p_mg_head": mg,
    })


def test_disagreement_table_matches_the_statistics_on_each_group():
    frame = _frame()
    table = disagreement_table(frame, THRESHOLDS, "all")
    assert table["branches"].tolist() == [AGREE, DISAGREE]
    flags = (frame["p_us_head"] >= 0.3) != (frame["p_mg_head"] >= 0.6)
    assert 0 < flags.sum() < len(frame)
    for name, mask in ((AGREE, ~flags), (DISAGREE, flags)):
        row = table[table["branches"] == name].iloc[0]
        part = frame[mask]
        assert row["n"] == len(part) and row["n_malignant"] == part["label"].sum()
        auc = roc_auc_ci(part["label"], part["p_dlum"])
        assert (row["auc"], row["auc_ci_low"], row["auc_ci_high"]) == pytest.approx(
            (auc.auc, auc.ci_low, auc.ci_high))
        bm = binary_metrics(part["label"], (part["p_dlum"] >= 0.4).astype(int))
        assert row["sensitivity"] == pytest.approx(bm.sensitivity.estimate)
        assert row["specificity"] == pytest.approx(bm.specificity.estimate)
        assert row["threshold"] == 0.4


def test_disagreement_table_takes_threshold_objects_and_a_subgroup():
    frame = _frame()
    objects = {c: Threshold(v, "card") for c, v in THRESHOLDS.items()}
    concordant = disagreement_table(frame, objects, "concordant")
    assert concordant["n"].sum() == (frame["subgroup"] == "concordant").sum()
    assert (concordant["birads_subgroup"] == "concordant").all()
    labels = branch_agreement(frame, objects)
    assert set(labels) == {AGREE, DISAGREE} and labels.index.equals(frame.index)


def test_one_class_group_gives_nan_and_a_note():
    frame = _frame()
    flags = (frame["p_us_head"] >= 0.3) != (frame["p_mg_head"] >= 0.6)
    frame.loc[flags, "label"] = 0  # every disagreeing case benign
    table = disagreement_table(frame, THRESHOLDS)
    row = table[table["branches"] == DISAGREE].iloc[0]
    assert math.isnan(row["auc"]) and "one class" in row["note"]
    shown = disagreement_display(table)
    assert shown["AUC [95% CI]"].iloc[1].startswith("n/a (one class")
    assert shown["AUC [95% CI]"].iloc[0].startswith(f"{table['auc'].iloc[0]:.3f} [")
    # no disagreeing case at all: an empty group, still a row
    table = disagreement_table(frame, {**THRESHOLDS, "p_us_head": 0.0, "p_mg_head": 0.0})
    assert table["n"].tolist() == [len(frame), 0]
    assert disagreement_display(table)["AUC [95% CI]"].iloc[1].startswith("n/a")


def test_crosstab_against_birads_subgroups():
    frame = _frame()
    cross = disagreement_crosstab(frame, THRESHOLDS)
    flags = (frame["p_us_head"] >= 0.3) != (frame["p_mg_head"] >= 0.6)
    want = pd.crosstab(np.where(flags, DISAGREE, AGREE), frame["subgroup"])
    for _, row in cross.iterrows():
        assert row["n"] == want.loc[row["branches"], row["birads"]]
    assert cross["n"].sum() == len(frame) and cross["n_malignant"].sum() == frame["label"].sum()
    shown = crosstab_display(cross)
    assert shown["DL-UM branches"].tolist() == [AGREE, DISAGREE, "total"]
    assert shown["All"].iloc[2] == f"{len(frame)} ({frame['label'].sum()} malignant)"
    assert list(shown.columns[1:3]) == ["BI-RADS concordant", "BI-RADS discordant"]
    only = disagreement_crosstab(frame, THRESHOLDS, "discordant")
    assert set(only["birads"]) == {"discordant"} and len(only) == 2


def test_missing_branch_columns_or_thresholds_are_clear_errors():
    frame = _frame().drop(columns="p_mg_head")
    assert not has_branches(frame) and has_branches(_frame())
    with pytest.raises(CohortError, match="p_mg_head"):
        disagreement_table(frame, THRESHOLDS)
    with pytest.raises(CohortError, match="no operating threshold for 'p_us_head'"):
        disagreement_table(_frame(), {"p_dlum": 0.4, "p_mg_head": 0.5})
