"""dlum.app.figures: each builder draws what it is given (trace counts, labels, empty inputs)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from dlum.app import figures


def test_roc_figure_labels_and_operating_points():
    curve = pd.DataFrame({"threshold": [np.inf, 0.8, 0.3], "fpr": [0, 0.1, 1.0], "tpr": [0, 0.7, 1.0],
                          "sensitivity": [0, 0.7, 1.0], "specificity": [1, 0.9, 0.0]})
    empty = curve.iloc[0:0]
    fig = figures.roc_figure({"DL-UM": curve, "DL-M": empty}, {"DL-UM": "DL-UM: AUC 0.900 [0.8–1.0]"},
                             {"DL-UM": (0.7, 0.9)})
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert "DL-UM: AUC 0.900 [0.8–1.0]" in names and "DL-M" in names
    marker = [t for t in fig.data if t.mode == "markers"][0]
    assert marker.x[0] == pytest.approx(0.1) and marker.y[0] == 0.7  # (1 - specificity, sensitivity)


def test_calibration_and_confusion():
    table = pd.DataFrame({"n": [3, 0], "mean_predicted": [0.2, np.nan], "observed": [0.33, np.nan],
                          "observed_ci_low": [0.06, np.nan], "observed_ci_high": [0.79, np.nan]})
    fig = figures.calibration_figure({"DL-UM": table})
    assert len(fig.data) == 2 and len(fig.data[1].x) == 1  # empty bins are not drawn
    matrix = pd.DataFrame([[5, 1], [2, 7]], index=["Malignant", "Benign"], columns=["Called malignant", "Called benign"])
    heat = figures.confusion_figure(matrix)
    assert heat.data[0].z.tolist() == [[5, 1], [2, 7]]


def test_kappa_figures_and_bars():
    m = pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]], index=["A", "B"], columns=["A", "B"])
    fig = figures.kappa_heatmap({"unaided reads": m, "aided reads": m})
    assert len(fig.data) == 2 and fig.data[0].text[0][1] == "n/a"
    table = pd.DataFrame({"subgroup": ["all", "all"], "comparison": ["A vs B"] * 2, "session": ["unaided", "aided"],
                          "kappa": [0.2, 0.6], "ci_low": [0.0, 0.4], "ci_high": [0.4, 0.8]})
    assert len(figures.kappa_forest(table).data) == 2
    perf = pd.DataFrame({"subgroup": ["all"] * 2, "session": ["unaided", "aided"], "reader": ["A", "A"],
                         "unnecessary_rate": [0.3, 0.1]})
    bars = figures.biopsy_bars(perf, "unnecessary_rate")
    assert [t.text[0] for t in bars.data] == ["30.0%", "10.0%"]
