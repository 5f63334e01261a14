"""dlum.stats.subgroups: one tidy table per rater and subgroup; degenerate subgroups answered."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from dlum.errors import CohortError, InputError
from dlum.stats import (
    DegenerateDataWarning,
    binary_metrics,
    biopsy_metrics,
    delong_test,
    mcnemar_test,
    roc_auc_ci,
    subgroup_comparisons,
    subgroup_summary,
)
from dlum.stats.subgroups import COMPARISON_COLUMNS, SUMMARY_COLUMNS


@pytest.fixture
def cohort():
    rng = np.random.default_rng(11)
    n = 160
    label = rng.integers(0, 2, n)
    return pd.DataFrame({
        "case_id": [f"c{i:03d}" for i in range(n)],
        "label": label,
        "subgroup": rng.choice(["concordant", "discordant"], n),
        "p_dlum": np.clip(0.5 * label + rng.uniform(0, 0.6, n), 0, 1),
        "p_dlu": np.clip(0.3 * label + rng.uniform(0, 0.7, n), 0, 1),
        "reader_us": np.clip(label * 2 + rng.integers(2, 4, n), 2, 5),
    })


def test_rows_match_the_functions_on_each_subset(cohort):
    table = subgroup_summary(cohort, ["p_dlum", "p_dlu"])
    assert list(table.columns) == SUMMARY_COLUMNS
    assert list(zip(table["rater"], table["subgroup"])) == [
        (r, g) for r in ("p_dlum", "p_dlu") for g in ("all", "concordant", "discordant")]
    for _, row in table.iterrows():
        sub = cohort if row["subgroup"] == "all" else cohort[cohort["subgroup"] == row["subgroup"]]
        calls = (sub[row["rater"]] >= 0.5).astype(int)
        auc = roc_auc_ci(sub["label"], sub[row["rater"]])
        bm, bio = binary_metrics(sub["label"], calls), biopsy_metrics(sub["label"], calls)
        assert row["n"] == len(sub) and row["n_malignant"] == int(sub["label"].sum())
        assert row["auc"] == pytest.approx(auc.auc) and row["auc_ci_low"] == pytest.approx(auc.ci_low)
        assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (bm.tp, bm.fp, bm.tn, bm.fn)
        assert row["sensitivity_ci_high"] == pytest.approx(bm.sensitivity.ci_high)
        assert row["unnecessary_biopsies"] == bio.unnecessary_biopsies
        assert row["unnecessary_rate"] == pytest.approx(bio.unnecessary_rate.estimate)
        assert row["note"] == ""


def test_thresholds_names_and_decision_auc(cohort):
    table = subgroup_summary(cohort, {"US reader": "reader_us"}, thresholds={"US reader": 4},
                             auc_from="decisions", subgroups=["all"])
    assert list(table["rater"]) == ["US reader"] and table["threshold"].iloc[0] == 4
    bm = binary_metrics(cohort["label"], (cohort["reader_us"] >= 4).astype(int))
    assert table["auc"].iloc[0] == pytest.approx(bm.auc)  # (sensitivity + specificity) / 2
    by_score = subgroup_summary(cohort, "reader_us", thresholds=4, subgroups=["all"])
    assert by_score["auc"].iloc[0] == pytest.approx(roc_auc_ci(cohort["label"], cohort["reader_us"]).auc)
    with pytest.raises(InputError):
        subgroup_summary(cohort, "reader_us", auc_from="votes")


def test_one_class_subgroup_gives_nan_auc_and_warning(cohort):
    frame = cohort.copy()
    frame.loc[frame["subgroup"] == "discordant", "label"] = 1
    with pytest.warns(DegenerateDataWarning, match="discordant"):
        table = subgroup_summary(frame, "p_dlum")
    row = table.set_index("subgroup").loc["discordant"]
    assert math.isnan(row["auc"]) and math.isnan(row["specificity"])
    assert row["sensitivity"] >= 0 and "one class" in row["note"]
    assert not math.isnan(table.set_index("subgroup").loc["all", "auc"])


def test_empty_subgroup_gives_a_row_of_nans(cohort):
    frame = cohort.assign(subgroup="concordant")
    with pytest.warns(DegenerateDataWarning, match="no cases"):
        table = subgroup_summary(frame, "p_dlum")
    row = table.set_index("subgroup").loc["discordant"]
    assert row["n"] == 0 and row["tp"] == 0 and row["recommended_biopsies"] == 0
    assert math.isnan(row["auc"]) and math.isnan(row["sensitivity"]) and "empty" in row["note"]


def test_bad_tables_list_every_problem(cohort):
    frame = cohort.drop(columns=["subgroup"]).assign(label=cohort["label"].replace({1: 7}))
    frame.loc[3, "p_dlum"] = np.nan
    with pytest.raises(CohortError) as info:
        subgroup_summary(frame, ["p_dlum", "p_missing"])
    problems = "\n".join(info.value.problems)
    assert "subgroup" in problems and "p_missing" in problems
    assert "label" in problems and "rows 3" in problems
    assert len(info.value.problems) == 3
    # without a subgroup column only "all" can be asked for
    assert len(subgroup_summary(cohort.drop(columns="subgroup"), "p_dlum", subgroups=["all"])) == 1


def test_labels_as_words(cohort):
    words = cohort.assign(label=cohort["label"].map({0: "benign", 1: "malignant"}))
    pd.testing.assert_frame_equal(subgroup_summary(words, "p_dlum"), subgroup_summary(cohort, "p_dlum"))


def test_comparisons(cohort):
    table = subgroup_comparisons(cohort, [("p_dlum", "p_dlu")])
    assert list(table.columns) == COMPARISON_COLUMNS and len(table) == 3
    for _, row in table.iterrows():
        sub = cohort if row["subgroup"] == "all" else cohort[cohort["subgroup"] == row["subgroup"]]
        t = delong_test(sub["label"], sub["p_dlum"], sub["p_dlu"])
        assert row["delong_p"] == pytest.approx(t.p_value) and row["auc_diff"] == pytest.approx(t.diff)
        m = mcnemar_test(sub["label"], (sub["p_dlum"] >= 0.5).astype(int), (sub["p_dlu"] >= 0.5).astype(int))
        assert row["mcnemar_sensitivity_p"] == pytest.approx(m.p_value)
        assert 0 <= row["chi2_specificity_p"] <= 1


def test_comparisons_degenerate(cohort):
    frame = cohort.assign(subgroup="concordant")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = subgroup_comparisons(frame, [("p_dlum", "p_dlu")])
    row = table.set_index("subgroup").loc["discordant"]
    assert row["n"] == 0 and math.isnan(row["delong_p"]) and row["note"]
    assert any(issubclass(w.category, DegenerateDataWarning) for w in caught)


def test_scores_outside_unit_interval_need_a_threshold(cohort):
    with pytest.raises(CohortError, match="reader_us.*no threshold"):
        subgroup_summary(cohort, "reader_us")
    with pytest.raises(CohortError, match="reader_us.*no threshold"):
        subgroup_comparisons(cohort, [("p_dlum", "reader_us")])
    with pytest.warns(DegenerateDataWarning, match="chi-square is undefined"):  # both sensitivities are 1
        table = subgroup_comparisons(cohort, [("p_dlum", "reader_us")], thresholds={"reader_us": 4})
    assert len(table) == 3 and table["chi2_sensitivity_p"].isna().all()
    with pytest.raises(CohortError, match="subgroup=None"):
        subgroup_summary(cohort, "p_dlum", subgroup=None)
