"""Cohort ROC's decision curves and branch-disagreement sections through AppTest (no browser).

The page's numbers are compared with ``dlum.stats.net_benefit_at`` and
``dlum.disagreement.disagreement_table`` computed here on the same rows and thresholds.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dlum.card import read_card
from dlum.disagreement import AGREE, DISAGREE, disagreement_table
from dlum.predictions import read_predictions, thresholds_for
from dlum.stats import net_benefit_at
from tests.app.conftest import REPO_ROOT, run_page as _run
from tests.test_evaluation import make_predictions

COHORT_ROC = str(REPO_ROOT / "pages" / "2_Cohort_ROC.py")
SHIPPED = REPO_ROOT / "checkpoints" / "dlum-public-v2"
TIMEOUT = 120

pytestmark = pytest.mark.slow


def _decision_figure(at: AppTest) -> dict:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith("-decision_curves")]
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def _table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _upload(at: AppTest, frame) -> AppTest:
    at.radio(key="source").set_value("Upload a predictions CSV")
    _run(at)
    at.file_uploader(key="predictions_upload").set_value(
        ("predictions.csv", frame.to_csv(index=False).encode(), "text/csv"))
    return _run(at)


def test_sections_on_the_shipped_checkpoint(monkeypatch):
    if not (SHIPPED / "predictions.csv").is_file():
        pytest.skip("the shipped checkpoint is not present")
    monkeypatch.setenv("DLUM_CHECKPOINT", str(SHIPPED))
    at = _run(AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT))
    frame = read_predictions(SHIPPED / "predictions.csv")
    frame = frame[frame["split"] == "test"]
    thresholds = thresholds_for(frame, read_card(SHIPPED))
    for subgroup in ("all", "discordant"):
        at.radio(key="subgroup").set_value(subgroup)
        _run(at)
        headings = [h.value for h in at.subheader]
        assert f"Decision curves, {subgroup} lesions" in headings
        assert f"When the branches disagree, {subgroup} lesions" in headings
        spec = _decision_figure(at)
        names = [t.get("name") for t in spec["data"]]
        assert {"Biopsy all", "Biopsy none", "DL-UM", "DL-U", "DL-M"} <= set(names)
        assert spec["layout"]["shapes"][0]["x0"] == 0.02
        # read off at each model's card threshold and at 2%: the page shows what dlum.stats gives
        models = {"DL-UM": "p_dlum", "DL-U": "p_dlu", "DL-M": "p_dlm"}
        want = net_benefit_at(frame, models, subgroup, {c: thresholds[c].value for c in models.values()})
        shown = _table(at, "Net biopsies avoided per 100 at 2%").set_index("Model")
        for _, row in want.iterrows():
            assert shown.loc[row["model"], "Net biopsies avoided per 100 at threshold"] == (
                f"{row['biopsies_avoided_per_100']:.1f}")
            assert shown.loc[row["model"], "Net biopsies avoided per 100 at 2%"] == (
                f"{row['biopsies_avoided_per_100_at_risk']:.1f}")
        # branches agree vs disagree, each branch at its card threshold
        expected = disagreement_table(frame, thresholds, subgroup).set_index("branches")
        branches = _table(at, "DL-UM branches").set_index("DL-UM branches")
        for group in (AGREE, DISAGREE):
            row = expected.loc[group]
            assert branches.loc[group, "Cases (malignant / benign)"] == (
                f"{row['n']} ({row['n_malignant']} / {row['n_benign']})")
            assert branches.loc[group, "AUC [95% CI]"].startswith(f"{row['auc']:.3f}")
        cross = next(d.value for d in at.dataframe if "All" in d.value.columns)
        assert cross["All"].iloc[-1].startswith(f"{expected['n'].sum()} (")
    assert not at.error


def test_sections_with_an_uploaded_table(no_checkpoint):
    frame = make_predictions(90)
    rng = np.random.default_rng(2)
    frame["p_us_head"] = np.clip(frame["p_dlum"] + rng.normal(0, 0.2, len(frame)), 0, 1).round(5)
    frame["p_mg_head"] = rng.random(len(frame)).round(5)
    at = _upload(_run(AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)), frame)
    assert not at.error
    spec = _decision_figure(at)
    assert {"DL-UM", "DL-U", "DL-M"} <= {t.get("name") for t in spec["data"]}
    # no card, no validation rows: every threshold is 0.5, the branches' too
    flags = (frame["p_us_head"] >= 0.5) != (frame["p_mg_head"] >= 0.5)
    branches = _table(at, "DL-UM branches").set_index("DL-UM branches")
    assert branches.loc[DISAGREE, "Cases (malignant / benign)"].startswith(f"{int(flags.sum())} (")
    # moving DL-UM's threshold moves its dot on the decision curve
    at.slider(key="threshold_p_dlum").set_value(0.7)
    _run(at)
    dots = [t for t in _decision_figure(at)["data"] if t.get("mode") == "markers"]
    assert 0.7 in [d["x"][0] for d in dots]
    # a threshold at the slider's end has no net benefit: a note, and no dot
    at.slider(key="threshold_p_dlum").set_value(0.0)
    _run(at)
    assert any("DL-UM: its threshold 0 is not strictly between 0 and 1" in i.value for i in at.info)
    dots = [t for t in _decision_figure(at)["data"] if t.get("mode") == "markers"]
    assert len(dots) == 2 and not at.error


def test_table_without_branches_and_a_one_class_subgroup(no_checkpoint):
    frame = make_predictions(30)
    frame.loc[frame["subgroup"] == "discordant", "label"] = "malignant"
    at = _upload(_run(AppTest.from_file(COHORT_ROC, default_timeout=TIMEOUT)), frame)
    assert any("no DL-UM branch outputs" in i.value for i in at.info)
    at.radio(key="subgroup").set_value("discordant")
    _run(at)
    assert not at.error
    spec = _decision_figure(at)
    assert not spec["data"]
    assert any("one class only" in a["text"] for a in spec["layout"]["annotations"])
    assert any("decision curves, discordant lesions: only malignant" in i.value for i in at.info)
    shown = _table(at, "Net biopsies avoided per 100 at 2%")
    assert (shown["Net biopsies avoided per 100 at threshold"] == "n/a").all()
