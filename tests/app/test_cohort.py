"""dlum.app.cohort: predictions validation and every Cohort ROC table, checked against dlum.stats."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dlum.app import cohort
from dlum.errors import CohortError
from dlum.stats import (
    binary_metrics,
    biopsy_metrics,
    calibration_table,
    delong_test,
    roc_auc_ci,
    roc_curve_points,
)


def make_predictions(n: int = 80, seed: int = 0, *, perfect: bool = False) -> pd.DataFrame:
    """A small predictions table: DL-UM informative, DL-U weaker, DL-M noise."""
    rng = np.random.default_rng(seed)
    y = np.array([1, 0] * (n // 2))
    rng.shuffle(y)
    subgroup = np.where(np.arange(n) % 3 == 0, "discordant", "concordant")
    if perfect:
        p_dlum = np.where(y == 1, 0.6 + 0.4 * rng.random(n), 0.4 * rng.random(n))
    else:
        p_dlum = 1 / (1 + np.exp(-(rng.normal(1.2 * (2 * y - 1), 1.0))))
    return pd.DataFrame({
        "case_id": [f"c{i:03d}" for i in range(n)],
        "label": np.where(y == 1, "malignant", "benign"),
        "subgroup": subgroup,
        "p_dlum": p_dlum.round(5),
        "p_dlu": (1 / (1 + np.exp(-(rng.normal(0.6 * (2 * y - 1), 1.0))))).round(5),
        "p_dlm": rng.random(n).round(5),
        "split": "test",
    })


def load(frame: pd.DataFrame) -> pd.DataFrame:
    return cohort.read_predictions(frame.to_csv(index=False).encode(), name="test.csv")


@pytest.fixture(scope="module")
def preds() -> pd.DataFrame:
    return load(make_predictions())


# ------------------------------------------------------------------------------------ validation
def test_read_predictions_types_and_models(preds):
    assert preds["label"].dtype.kind == "i" and set(preds["label"]) == {0, 1}
    assert preds["p_dlum"].dtype == float
    assert preds.index[0] == 1  # data-row numbers
    assert cohort.models_in(preds) == {"DL-UM": "p_dlum", "DL-U": "p_dlu", "DL-M": "p_dlm"}
    assert cohort.splits_in(preds) == ["test"]


def test_labels_as_numbers_and_empty_subgroup_accepted():
    df = make_predictions(10).astype(object)
    df["label"] = np.where(df["label"] == "malignant", "1", "0")
    df.loc[0, "subgroup"] = ""
    out = load(df)
    assert out["label"].tolist() == [1 if v == "1" else 0 for v in df["label"]]
    assert out.loc[1, "subgroup"] == "undetermined"


def test_every_problem_listed_at_once_with_rows():
    df = make_predictions(20).astype(object)
    df.loc[2, "label"] = "maybe"          # data row 3
    df.loc[5, "p_dlum"] = 1.4             # data row 6
    df.loc[7, "p_dlu"] = "abc"            # data row 8
    df.loc[9, "case_id"] = "c001"         # duplicate of data row 2
    df.loc[3, "subgroup"] = "unknown"     # data row 4
    df.loc[4, "split"] = "holdout"        # data row 5
    with pytest.raises(CohortError) as info:
        load(df)
    problems = info.value.problems
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    assert "row 3 ('maybe')" in text
    assert "outside [0, 1] at row 6" in text
    assert "'p_dlu'" in text and "row 8 ('abc')" in text
    assert "'c001' appears more than once: rows 2, 10" in text
    assert "row 4 ('unknown')" in text
    assert "row 5 ('holdout')" in text
    assert info.value.source == "test.csv"


def test_wrong_columns_named():
    with pytest.raises(CohortError) as info:
        cohort.read_predictions(b"id,truth,prob\na,1,0.5\n", name="wrong.csv")
    message = str(info.value)
    for column in cohort.REQUIRED_COLUMNS:
        assert column in message
    assert "found: id, truth, prob" in message


@pytest.mark.parametrize("data, expected", [(b"", "empty"), (b"case_id,label,subgroup,p_dlum\n", "no rows"),
                                            (b"\xff\xfe\x00garbage", "readable")])
def test_unreadable_or_empty(data, expected):
    with pytest.raises(CohortError) as info:
        cohort.read_predictions(data, name="x.csv")
    assert expected in str(info.value)


# ----------------------------------------------------------------------------------------- AUCs
def test_auc_table_matches_roc_auc_ci(preds):
    table = cohort.auc_table(preds, cohort.models_in(preds))
    assert len(table) == 3 * 3
    for _, row in table.iterrows():
        part = cohort.subset(preds, row["subgroup"])
        ref = roc_auc_ci(part["label"], part[cohort.MODELS[row["model"]]])
        assert row["auc"] == pytest.approx(ref.auc, abs=1e-12)
        assert row["auc_ci_low"] == pytest.approx(ref.ci_low, abs=1e-12)
        assert row["auc_ci_high"] == pytest.approx(ref.ci_high, abs=1e-12)
        assert row["n"] == len(part)


def test_perfect_scores_give_auc_one():
    frame = load(make_predictions(40, perfect=True))
    table = cohort.auc_table(frame, {"DL-UM": "p_dlum"})
    assert np.allclose(table["auc"], 1.0)
    curve = cohort.roc_curves(frame, {"DL-UM": "p_dlum"}, "all")["DL-UM"]
    assert ((curve["fpr"] == 0) & (curve["tpr"] == 1)).any()


def test_one_class_subgroup_is_nan_with_a_note():
    df = make_predictions(30)
    df.loc[df["subgroup"] == "discordant", "label"] = "benign"
    frame = load(df)
    table = cohort.auc_table(frame, {"DL-UM": "p_dlum"}).set_index("subgroup")
    assert math.isnan(table.loc["discordant", "auc"])
    assert "one class" in table.loc["discordant", "note"]
    assert np.isfinite(table.loc["all", "auc"]) and table.loc["all", "note"] == ""
    assert cohort.roc_curves(frame, {"DL-UM": "p_dlum"}, "discordant")["DL-UM"].empty
    label = cohort.legend_label("DL-UM", table.loc["discordant"])
    assert label.startswith("DL-UM: AUC n/a (") and "one class" in label
    shown = cohort.auc_display(cohort.auc_table(frame, {"DL-UM": "p_dlum"}))
    assert any("n/a" in str(v) for v in shown.iloc[0])
    # decisions are still answered
    op = cohort.operating_point_table(frame, {"DL-UM": "p_dlum"}, "discordant", 0.5)
    assert math.isnan(op.loc[0, "sensitivity"]) and np.isfinite(op.loc[0, "specificity"])


def test_roc_curves_match_stats(preds):
    curves = cohort.roc_curves(preds, {"DL-U": "p_dlu"}, "concordant")
    part = cohort.subset(preds, "concordant")
    pd.testing.assert_frame_equal(curves["DL-U"], roc_curve_points(part["label"], part["p_dlu"]))


def test_legend_label_has_auc_and_ci(preds):
    row = cohort.auc_table(preds, {"DL-UM": "p_dlum"}).iloc[0]
    label = cohort.legend_label("DL-UM", row)
    assert label == f"DL-UM: AUC {row['auc']:.3f} [{row['auc_ci_low']:.3f}–{row['auc_ci_high']:.3f}]"


# --------------------------------------------------------------------------------------- DeLong
def test_delong_table_matches_delong_test(preds):
    models = cohort.models_in(preds)
    table = cohort.delong_table(preds, models, "all", 0.5)
    assert list(zip(table["model_a"], table["model_b"])) == [("DL-UM", "DL-U"), ("DL-UM", "DL-M"),
                                                              ("DL-U", "DL-M")]
    for _, row in table.iterrows():
        ref = delong_test(preds["label"], preds[models[row["model_a"]]], preds[models[row["model_b"]]])
        assert row["delong_p"] == pytest.approx(ref.p_value, abs=1e-12)
        assert row["auc_diff"] == pytest.approx(ref.diff, abs=1e-12)
    assert cohort.delong_table(preds, {"DL-UM": "p_dlum"}, "all").empty
    assert "vs" in cohort.delong_display(table).iloc[0]["Comparison"]


# ------------------------------------------------------------------------------ operating point
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_operating_point_matches_binary_and_biopsy_metrics(preds, threshold):
    table = cohort.operating_point_table(preds, cohort.models_in(preds), "concordant", threshold)
    part = cohort.subset(preds, "concordant")
    for _, row in table.iterrows():
        calls = (part[cohort.MODELS[row["model"]]] >= threshold).astype(int)
        bm, bio = binary_metrics(part["label"], calls), biopsy_metrics(part["label"], calls)
        for name in ("sensitivity", "specificity", "ppv", "npv"):
            ref = getattr(bm, name)
            for got, want in ((row[name], ref.estimate), (row[f"{name}_ci_low"], ref.ci_low),
                              (row[f"{name}_ci_high"], ref.ci_high)):
                assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)
        assert row["recommended_biopsies"] == bio.recommended_biopsies
        assert row["unnecessary_biopsies"] == bio.unnecessary_biopsies
        assert row["missed_malignancies"] == bio.missed_malignancies
    assert len(cohort.metrics_display(table)) == len(table)
    assert "%" in cohort.biopsy_display(table).iloc[0]["Unnecessary biopsies (of recommended)"]


def test_threshold_zero_calls_everything_malignant(preds):
    row = cohort.operating_point_table(preds, {"DL-UM": "p_dlum"}, "all", 0.0).iloc[0]
    assert row["sensitivity"] == 1.0 and row["specificity"] == 0.0
    assert row["recommended_biopsies"] == len(preds)
    assert row["unnecessary_biopsies"] == int((preds["label"] == 0).sum())


def test_confusion_matrix(preds):
    matrix = cohort.confusion_matrix(preds, "p_dlum", "discordant", 0.4)
    part = cohort.subset(preds, "discordant")
    bm = binary_metrics(part["label"], (part["p_dlum"] >= 0.4).astype(int))
    assert matrix.to_numpy().tolist() == [[bm.tp, bm.fn], [bm.fp, bm.tn]]
    assert matrix.to_numpy().sum() == len(part)


def test_calibration_tables_match_stats(preds):
    tables = cohort.calibration_tables(preds, {"DL-UM": "p_dlum"}, "all", bins=5)
    pd.testing.assert_frame_equal(tables["DL-UM"], calibration_table(preds["label"], preds["p_dlum"], bins=5))


# ------------------------------------------------------------------------------- checkpoint facts
def test_card_threshold_and_pairing(tmp_path):
    assert cohort.read_card_json(tmp_path) is None
    assert cohort.operating_threshold(None) == 0.5
    (tmp_path / "card.json").write_text(json.dumps({"model": {}, "operating_point": {"threshold": 0.37},
                                                    "data": {"pairing": "pseudo"}}))
    card = cohort.read_card_json(tmp_path)
    assert cohort.operating_threshold(card) == 0.37
    assert cohort.is_pseudo_paired(card)
    assert not cohort.is_pseudo_paired({"data": {"pairing": "same_patient"}})
    assert cohort.operating_threshold({"operating_point": {"threshold": "n/a"}}) == 0.5
    (tmp_path / "card.json").write_text("{not json")
    assert cohort.read_card_json(tmp_path) is None


def test_pairing_column_marks_pseudo():
    df = make_predictions(10)
    df["pairing"] = ["pseudo"] + ["same_patient"] * 9
    assert cohort.is_pseudo_paired(None, load(df))
    df["pairing"] = "same_patient"
    assert not cohort.is_pseudo_paired(None, load(df))


def test_checkpoint_predictions_path(tmp_path):
    assert cohort.checkpoint_predictions_path(tmp_path) is None
    (tmp_path / "predictions.csv").write_text("x")
    assert cohort.checkpoint_predictions_path(tmp_path) == tmp_path / "predictions.csv"


def test_select_split():
    df = make_predictions(12)
    df["split"] = ["train", "validation", "test"] * 4
    frame = load(df)
    assert cohort.splits_in(frame) == ["train", "validation", "test"]
    assert len(cohort.select_split(frame, "test")) == 4
    assert len(cohort.select_split(frame, None)) == 12


def test_subgroup_counts(preds):
    counts = cohort.subgroup_counts(preds).set_index("subgroup")
    assert counts.loc["all", "n"] == counts.loc["concordant", "n"] + counts.loc["discordant", "n"]
    assert counts.loc["all", "n_malignant"] == int(preds["label"].sum())
