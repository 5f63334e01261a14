import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlum.card import read_card
from dlum.errors import InputError
from dlum.predictions import read_predictions
from dlum.stats import calibration_summary, calibration_table
from dlum.visualize.reliability import (figure_folder, figure_svg, reliability_figure,
                                        reliability_svgs, write_figures)

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
    first = reliability_svgs(shipped, {"test": "Test split"})
    assert set(first) == {"reliability_test.svg", "reliability_external.svg"}
    assert first == reliability_svgs(shipped, {"test": "Test split"})
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
        reliability_svgs(pd.DataFrame({"split": ["validation"], "label": [1], "p_dlum": [0.5]}))
    with pytest.raises(InputError, match="no 'split' column"):
        reliability_svgs(shipped.drop(columns="split"))


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
    for name, text in reliability_svgs(shipped, SPLIT_TITLES).items():
        assert (docs / name).read_text() == text, f"{name}: run python -m dlum report --figures"
        assert f'src="docs/figures/{name}"' in readme
