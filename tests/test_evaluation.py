"""dlum.evaluation: every Cohort ROC table, checked against dlum.stats; each model at its own threshold."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dlum import evaluation as cohort
from dlum.card import read_card
from dlum.predictions import thresholds_for
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


def test_models_and_splits(preds):
    assert cohort.models_in(preds) == {"DL-UM": "p_dlum", "DL-U": "p_dlu", "DL-M": "p_dlm"}
    assert cohort.splits_in(preds) == ["test"]


# ----------------------------------------------------------------------------------------- AUCs
def test_auc_table_matches_roc_auc_ci(preds):
    table = cohort.auc_table(preds, cohort.models_in(preds))
    assert len(table) == 3 * 3
    for _, row in table.iterrows():
        part = cohort.subset(preds, row["subgroup"])
        ref = roc_auc_ci(part["label"], part[cohort.models_in(preds)[row["model"]]])
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
    op = cohort.operating_point_table(frame, {"DL-UM": "p_dlum"}, "discordant", {"p_dlum": 0.5})
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
    table = cohort.delong_table(preds, models, "all", {c: 0.5 for c in models.values()})
    assert list(zip(table["model_a"], table["model_b"])) == [("DL-UM", "DL-U"), ("DL-UM", "DL-M"),
                                                              ("DL-U", "DL-M")]
    for _, row in table.iterrows():
        ref = delong_test(preds["label"], preds[models[row["model_a"]]], preds[models[row["model_b"]]])
        assert row["delong_p"] == pytest.approx(ref.p_value, abs=1e-12)
        assert row["auc_diff"] == pytest.approx(ref.diff, abs=1e-12)
    assert cohort.delong_table(preds, {"DL-UM": "p_dlum"}, "all", {"p_dlum": 0.5}).empty
    assert "vs" in cohort.delong_display(table).iloc[0]["Comparison"]


# ------------------------------------------------------------------------------ operating point
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_operating_point_matches_binary_and_biopsy_metrics(preds, threshold):
    models = cohort.models_in(preds)
    table = cohort.operating_point_table(preds, models, "concordant", {c: threshold for c in models.values()})
    part = cohort.subset(preds, "concordant")
    for _, row in table.iterrows():
        calls = (part[cohort.models_in(preds)[row["model"]]] >= threshold).astype(int)
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
    row = cohort.operating_point_table(preds, {"DL-UM": "p_dlum"}, "all", {"p_dlum": 0.0}).iloc[0]
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
def test_each_model_is_judged_at_its_own_threshold(preds):
    models = cohort.models_in(preds)
    own = {"p_dlum": 0.3, "p_dlu": 0.6, "p_dlm": 0.9}
    table = cohort.operating_point_table(preds, models, "all", own).set_index("model")
    for name, column in models.items():
        calls = (preds[column] >= own[column]).astype(int)
        assert table.loc[name, "threshold"] == own[column]
        assert table.loc[name, "sensitivity"] == binary_metrics(preds["label"], calls).sensitivity.estimate
    delong = cohort.delong_table(preds, models, "all", own)
    assert delong.loc[0, ["threshold_a", "threshold_b"]].tolist() == [0.3, 0.6]
    assert cohort.metrics_display(table.reset_index())["Threshold"].tolist() == ["0.300", "0.600", "0.900"]


def readme_results() -> dict[tuple[str, str], tuple[float, ...]]:
    """``{(subgroup, model): (sensitivity, specificity, ECE, Brier)}`` of the README's test-split
    table."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows, subgroup = {}, None
    block = readme.split("<!-- results:start -->")[1].split("<!-- results:end -->")[0]
    for line in block.split("**External")[0].splitlines():  # the test split's section
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[1] not in ("model", "---"):
            subgroup = cells[0].split(" (")[0] or subgroup
            rows[(subgroup, cells[1])] = tuple(float(cells[i]) for i in (4, 5, 6, 7))
    return rows


def test_the_shipped_checkpoint_shows_the_readme_figures_at_each_models_card_threshold():
    """What Cohort ROC shows for the shipped checkpoint equals the README results table."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    ckpt = root / "checkpoints" / "dlum-public-v2"
    frame = cohort.select_split(cohort.read_predictions(ckpt / "predictions.csv"), "test")
    thresholds = {c: t.value for c, t in thresholds_for(frame, read_card(ckpt)).items()}
    rows = readme_results()
    assert len(rows) == 15
    for sub in ("all", "concordant", "discordant"):
        table = cohort.operating_point_table(frame, cohort.models_in(frame), sub, thresholds)
        for _, r in table.iterrows():
            assert (round(r["sensitivity"], 3), round(r["specificity"], 3)) == rows[(sub, r["model"])][:2]
        for _, r in cohort.calibration_metrics(frame, cohort.models_in(frame), sub).iterrows():
            assert (round(r["ece"], 3), round(r["brier"], 3)) == rows[(sub, r["model"])][2:]


def test_card_pairing(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps({"model": {}, "arch": "dlum",
                                                    "data": {"pairing": "pseudo"}}))
    assert cohort.is_pseudo_paired(read_card(tmp_path))
    (tmp_path / "card.json").write_text(json.dumps({"model": {}, "data": {"pairing": "same_patient"}}))
    assert not cohort.is_pseudo_paired(read_card(tmp_path))


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
    df["split"] = ["train", "validation", "test", "external"] * 3
    frame = load(df)
    assert cohort.splits_in(frame) == ["train", "validation", "test", "external"]
    assert len(cohort.select_split(frame, "external")) == 3
    assert len(cohort.select_split(frame, None)) == 12


def test_subgroup_counts(preds):
    counts = cohort.subgroup_counts(preds).set_index("subgroup")
    assert counts.loc["all", "n"] == counts.loc["concordant", "n"] + counts.loc["discordant", "n"]
    assert counts.loc["all", "n_malignant"] == int(preds["label"].sum())


def test_cluster_intervals_need_patient_ids_and_are_wider_for_reused_lesions():
    df = make_predictions(120)
    plain = cohort.auc_table(load(df), {"DL-UM": "p_dlum"}, n_boot=300)
    assert plain["auc_cluster_ci_low"].isna().all()
    df["patient_id"] = [f"us{i}+mg{i % 6}" for i in range(len(df))]  # 6 MG women, reused
    table = cohort.auc_table(load(df), {"DL-UM": "p_dlum"}, n_boot=300).set_index("subgroup")
    row = table.loc["all"]
    assert row["auc_cluster_ci_low"] <= row["auc"] <= row["auc_cluster_ci_high"]
    assert "clusters [" in cohort.auc_display(table.reset_index()).iloc[0, 1]
    delong_only = cohort.auc_table(load(df), {"DL-UM": "p_dlum"}, cluster=False).set_index("subgroup")
    assert delong_only["auc_cluster_ci_low"].isna().all()
    assert delong_only.loc["all", "auc_ci_low"] == row["auc_ci_low"]


def test_calibration_metrics_match_stats(preds):
    from dlum.stats import calibration_summary

    table = cohort.calibration_metrics(preds, {"DL-UM": "p_dlum"}, "all")
    ref = calibration_summary(preds["label"], preds["p_dlum"])
    assert table.loc[0, "ece"] == ref.ece and table.loc[0, "brier"] == ref.brier
    assert cohort.calibration_display(table).iloc[0]["Calibrated (ECE ≤ 0.05)"] in ("yes", "no")
