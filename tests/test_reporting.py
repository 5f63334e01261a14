import numpy as np
import pandas as pd
import pytest

from dlum import reporting

from dlum.reporting import (choose_threshold, finalise_card, results_markdown,
                            update_readme)


def _held_out(seed=0, n=120):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    frame = pd.DataFrame({
        "case_id": [f"c{i}" for i in range(n)], "label": y,
        "subgroup": rng.choice(["concordant", "discordant"], n),
        "split": np.where(np.arange(n) < n // 2, "validation", "test"),
        "p_dlum": np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1),
        "p_dlu": rng.random(n), "p_dlm": np.clip(y * 0.1 + rng.random(n) * 0.9, 0, 1),
    })
    return frame


def test_threshold_reaches_the_sensitivity_on_validation():
    frame = _held_out()
    val = frame[frame.split == "validation"]
    t = choose_threshold(val.label, val.p_dlum, 0.9)
    calls = val.p_dlum >= t
    assert calls[val.label == 1].mean() >= 0.9
    # and it is the highest such threshold: any higher one loses sensitivity
    higher = val.p_dlum[val.p_dlum > t].min()
    assert (val.p_dlum >= higher)[val.label == 1].mean() < 0.9


def test_card_metrics_come_from_the_test_split_only():
    frame = _held_out()
    card, test = finalise_card({"name": "x"}, frame)
    assert set(test.split) == {"test"} and len(test) == 60
    assert card["operating_point"]["chosen_on"] == "validation"
    m = reporting.test_metrics(test, card["operating_point"]["thresholds_per_model"])
    assert m["all"]["p_dlum"]["auc"] == pytest.approx(card["test_metrics"]["all"]["p_dlum"]["auc"])
    assert 0 <= card["test_metrics"]["all"]["delong_p_dlum_vs_dlu"] <= 1
    text = results_markdown(card)
    assert "DL-UM" in text and "discordant" in text


def test_readme_table_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n")
    assert update_readme(readme, "new table")
    assert readme.read_text() == "intro\n<!-- results:start -->\nnew table\n<!-- results:end -->\nend\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError):
        update_readme(readme, "x")
