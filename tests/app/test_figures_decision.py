"""dlum.app.figures.decision_curve_figure: what it draws from dlum.stats' decision-curve tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlum.app import figures
from dlum.stats import BIRADS_3_4_RISK, decision_curves, net_benefit_at


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    y = np.array([1, 0] * 25)
    return pd.DataFrame({"label": y, "subgroup": "concordant",
                         "p_dlum": np.clip(0.4 * y + 0.6 * rng.random(50), 0, 1).round(4),
                         "p_dlm": rng.random(50).round(4)})


def test_decision_curve_figure_lines_markers_and_boundary():
    frame = _frame()
    models = {"DL-UM": "p_dlum", "DL-M": "p_dlm"}
    curves = decision_curves(frame, models, "all", thresholds=[0.02, 0.1, 0.3, 0.5, 0.9])
    at = net_benefit_at(frame, models, "all", {"p_dlum": 0.3, "p_dlm": 0.5})
    fig = figures.decision_curve_figure(curves, at, BIRADS_3_4_RISK)
    lines = {t.name: t for t in fig.data if t.mode == "lines"}
    assert set(lines) == {"Biopsy all", "Biopsy none", "DL-UM", "DL-M"}
    np.testing.assert_allclose(lines["DL-UM"].y, curves[curves["model"] == "DL-UM"]["net_benefit"])
    assert set(lines["Biopsy none"].y) == {0.0}
    assert lines["DL-UM"].line.color == figures.MODEL_COLORS["DL-UM"]
    markers = [t for t in fig.data if t.mode == "markers"]
    assert [m.x[0] for m in markers] == [0.3, 0.5]
    assert markers[0].y[0] == pytest.approx(at["net_benefit"].iloc[0])
    # the BI-RADS 3/4 boundary at 2%, labelled
    assert [s.x0 for s in fig.layout.shapes] == [BIRADS_3_4_RISK]
    assert any("BI-RADS 3/4 (2%)" in a.text for a in fig.layout.annotations)
    # y clipped: from a little below 0 to just above the largest net benefit (treat-all at 0.9
    # is far below and off the plot)
    low, high = fig.layout.yaxis.range
    top = curves[["net_benefit", "treat_all"]].to_numpy().max()
    assert low < 0 < top < high < 1.2 * top
    assert curves["treat_all"].min() < low


def test_decision_curve_figure_without_curves_shows_the_note():
    empty = pd.DataFrame(columns=["model", "threshold", "net_benefit", "treat_all", "treat_none",
                                  "tp_rate", "fp_rate", "biopsies_avoided_per_100"])
    fig = figures.decision_curve_figure(empty, None, None, note="only malignant cases")
    assert len(fig.data) == 0 and not fig.layout.shapes
    assert [a.text for a in fig.layout.annotations] == ["only malignant cases"]
