"""Cohort ROC's "Certain and uncertain cases": shown for the checkpoint's own predictions when its
``uncertainty.csv`` is there, and equal to ``dlum.uncertainty_tables.certainty_table``."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dlum.predictions import read_predictions
from dlum.uncertainty_tables import (certainty_display, certainty_table, read_uncertainty,
                                     write_uncertainty)
from tests.app.conftest import REPO_ROOT
from tests.test_evaluation import make_predictions

COHORT_ROC = str(REPO_ROOT / "pages" / "2_Cohort_ROC.py")
T = 0.35

pytestmark = pytest.mark.slow


@pytest.fixture()
def checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    make_predictions(60).to_csv(folder / "predictions.csv", index=False)
    (folder / "card.json").write_text(json.dumps({
        "name": "test-ckpt", "model": {}, "arch": "dlum", "data": {"pairing": "pseudo"},
        "operating_point": {"thresholds_per_model": {"p_dlum": T}}}))
    monkeypatch.setenv("DLUM_CHECKPOINT", str(folder))
    return folder


def _subheaders(at: AppTest) -> list[str]:
    return [s.value for s in at.subheader]


def _run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    return at


def test_certain_and_uncertain_cases_on_the_checkpoint_predictions(checkpoint):
    frame = read_predictions(checkpoint / "predictions.csv")
    half = np.random.default_rng(3).uniform(0.02, 0.2, len(frame))
    intervals = pd.DataFrame({"case_id": frame["case_id"], "split": "test", "estimate": frame["p_dlum"],
                              "low": np.clip(frame["p_dlum"] - half, 0, 1),
                              "high": np.clip(frame["p_dlum"] + half, 0, 1), "level": 0.9,
                              "views": 6, "seed": 0, "precision": "float32"})
    write_uncertainty(intervals, checkpoint / "uncertainty.csv")
    at = _run(AppTest.from_file(COHORT_ROC, default_timeout=120))
    assert "Certain and uncertain cases" in _subheaders(at)
    shown = next(d.value for d in at.dataframe if "Cases" in d.value.columns)
    expected = certainty_display(certainty_table(frame, read_uncertainty(checkpoint / "uncertainty.csv"),
                                                 {"p_dlum": T}))
    pd.testing.assert_frame_equal(shown.reset_index(drop=True), expected, check_dtype=False)
    caption = "\n".join(c.value for c in at.caption)
    assert "test split only" in caption and "`test-ckpt`" in caption and f"{T:.3f}" in caption
    # another table than the checkpoint's: the section is not shown
    at.radio(key="source").set_value("Synthetic example")
    assert "Certain and uncertain cases" not in _subheaders(_run(at))


def test_no_section_without_uncertainty_csv_and_a_bad_file_is_a_message(checkpoint):
    at = _run(AppTest.from_file(COHORT_ROC, default_timeout=120))
    assert "Certain and uncertain cases" not in _subheaders(at)
    (checkpoint / "uncertainty.csv").write_text("case_id,low,high\nc000,0.5,0.2\n")
    at = AppTest.from_file(COHORT_ROC, default_timeout=120)
    at.run()
    assert not at.exception
    assert any("low is above high" in e.value for e in at.error)
