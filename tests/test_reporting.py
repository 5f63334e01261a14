import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dlum import reporting
from dlum.errors import InputError
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


def test_precision_agreement_counts_differences_and_flipped_decisions():
    rng = np.random.default_rng(0)
    n = 200
    label = rng.integers(0, 2, n)
    p32 = np.clip(0.3 * label + rng.uniform(0, 0.7, n), 0, 1)
    ref = pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": label, "p_dlum": p32})
    nudge = np.zeros(n)
    near = np.flatnonzero(np.abs(p32 - 0.5) < 0.01)[:3]  # push three cases across the threshold
    nudge[near] = np.where(p32[near] >= 0.5, -0.02, 0.02)
    other = ref.assign(p_dlum=p32 + nudge).iloc[::-1]  # row order must not matter
    got = reporting.precision_agreement(ref, other, threshold=0.5)
    assert got["n"] == n and got["decisions_differ"] == len(near) > 0
    assert got["max_abs_diff"] == pytest.approx(0.02) and got["median_abs_diff"] == 0.0
    assert got["flipped_max_distance"] < 0.01
    assert got["auc_reference"] == pytest.approx(roc_auc_score(label, p32))
    assert 0 < got["delong_p"] <= 1
    same = reporting.precision_agreement(ref, ref, threshold=0.5)
    assert same["decisions_differ"] == 0 and same["max_abs_diff"] == 0 and same["delong_p"] == 1


def test_precision_agreement_refuses_different_cases():
    ref = pd.DataFrame({"case_id": ["a", "b"], "label": [0, 1], "p_dlum": [0.1, 0.9]})
    with pytest.raises(InputError, match="same cases"):
        reporting.precision_agreement(ref, ref.iloc[:1], threshold=0.5)
    with pytest.raises(InputError, match="lack p_dlum"):
        reporting.precision_agreement(ref, ref.drop(columns="p_dlum"), threshold=0.5)
