import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlum.card import read_card
from dlum.errors import InputError
from dlum.predictions import read_predictions
from dlum.stats import calibration_summary, calibration_table
from dlum.stats import roc_auc_ci, roc_curve_points
from dlum.visualize.readme_figures import (figure_folder, figure_svg, readme_svgs,
                                           reliability_figure, roc_figure, write_figures)

SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "dlum-public-v2"


@pytest.fixture(scope="module")
def shipped():
    return read_predictions(SHIPPED / "predictions.csv")


def _lines(fig):
    """{model column: (x, y) of its plotted line}, from the errorbar containers' gids."""
    ax = fig.axes[0]
    return {c.lines[0].get_gid(): c.lines[0].get_data() for c in ax.containers}


def test_each_line_is_the_calibration_table_of_its_model(shipped):
    fig = reliability_figure(shipped, "test")
    test = shipped[shipped.split == "test"]
    lines = _lines(fig)
    assert set(lines) == {"p_dlum", "p_dlu", "p_dlm"}
    for column, (x, y) in lines.items():
        table = calibration_table(test.label, test[column])
        filled = table[table.n > 0]
        np.testing.assert_allclose(np.asarray(x, float), filled.mean_predicted.to_numpy())
        np.testing.assert_allclose(np.asarray(y, float), filled.observed.to_numpy())


def test_legend_scores_are_the_ones_the_card_reports(shipped):
    card = read_card(SHIPPED)
    legend = [t.get_text() for t in reliability_figure(shipped, "external").axes[0].get_legend().get_texts()]
    external = shipped[shipped.split == "external"]
    for column, name in (("p_dlum", "DL-UM"), ("p_dlm", "DL-M")):
        entry = card.metrics["external"]["all"].outputs[column]
        score = calibration_summary(external.label, external[column])
        assert entry.ece == pytest.approx(score.ece) and entry.brier == pytest.approx(score.brier)
        assert f"{name}: ECE {entry.ece:.3f}, Brier {entry.brier:.3f}" in legend


def test_svgs_are_valid_deterministic_and_keep_their_text(shipped):
    first = readme_svgs(shipped, {"test": "Test split"})
    assert set(first) == {"reliability_test.svg", "reliability_external.svg", "roc_test.svg",
                          "roc_external.svg"}
    assert first == readme_svgs(shipped, {"test": "Test split"})
    root = ET.fromstring(first["reliability_test.svg"])
    assert root.tag.endswith("svg")
    assert "Test split (n = 375)" in first["reliability_test.svg"]
    assert "DL-UM: ECE" in first["reliability_test.svg"]


def test_a_split_of_one_class_is_drawn_and_an_absent_one_is_a_message(shipped):
    benign = shipped[(shipped.split == "external") & (shipped.subgroup == "discordant")]
    assert benign.label.sum() == 0 and len(benign) > 0
    x, y = _lines(reliability_figure(benign, "external"))["p_dlum"]
    assert len(x) > 0 and np.all(np.asarray(y) == 0)
    assert figure_svg(reliability_figure(benign, "external")).startswith("<?xml")
    with pytest.raises(InputError, match="no validation rows"):
        reliability_figure(shipped, "validation")
    with pytest.raises(InputError, match="no test or external rows"):
        readme_svgs(pd.DataFrame({"split": ["validation"], "label": [1], "p_dlum": [0.5]}))
    with pytest.raises(InputError, match="no 'split' column"):
        readme_svgs(shipped.drop(columns="split"))


def test_figures_go_into_a_folder_never_over_a_file(tmp_path):
    written = write_figures({"a.svg": "<svg/>"}, tmp_path / "new" / "figures")
    assert [p.read_text() for p in written] == ["<svg/>"]
    blocker = tmp_path / "file"
    blocker.write_text("keep")
    with pytest.raises(InputError, match="is a file"):
        figure_folder(blocker)
    with pytest.raises(InputError, match="is a file"):
        write_figures({"a.svg": "<svg/>"}, blocker)
    assert blocker.read_text() == "keep"


def test_the_readme_figures_are_the_shipped_predictions_drawn_now(shipped):
    from dlum.reporting import SPLIT_TITLES

    docs = Path(__file__).resolve().parents[2] / "docs" / "figures"
    readme = (docs.parents[1] / "README.md").read_text()
    thresholds = read_card(SHIPPED).operating_point.thresholds
    for name, text in readme_svgs(shipped, SPLIT_TITLES, thresholds).items():
        assert (docs / name).read_text() == text, f"{name}: run python -m dlum report --figures"
        assert f'src="docs/figures/{name}"' in readme


def test_roc_curves_aucs_and_operating_points_are_the_cards(shipped):
    card = read_card(SHIPPED)
    thresholds = card.operating_point.thresholds
    fig = roc_figure(shipped, "test", thresholds=thresholds)
    ax = fig.axes[0]
    curves = {line.get_gid(): line.get_data() for line in ax.lines if line.get_gid()}
    test = shipped[shipped.split == "test"]
    assert set(curves) == {"p_dlum", "p_dlu", "p_dlm"}
    for column, (x, y) in curves.items():
        points = roc_curve_points(test.label, test[column])
        np.testing.assert_allclose(np.asarray(x, float), 1 - points.specificity.to_numpy())
        np.testing.assert_allclose(np.asarray(y, float), points.sensitivity.to_numpy())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    auc = roc_auc_ci(test.label, test.p_dlum)
    assert any(t.startswith(f"DL-UM: AUC {auc.auc:.3f}") for t in legend)
    entry = card.metrics["test"]["all"].outputs["p_dlum"]
    dots = [line.get_data() for line in ax.lines if line.get_marker() == "o"]
    assert len(dots) == 3
    assert any(np.allclose([d[0][0], d[1][0]], [1 - entry.specificity.value, entry.sensitivity.value])
               for d in dots)
    assert not [line for line in roc_figure(shipped, "test").axes[0].lines if line.get_marker() == "o"]
