import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dlum import reporting
from dlum.errors import DLUMError, InputError
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


def _card():
    from dlum.card import Card

    return Card.from_dict({"name": "x", "arch": "dlum", "model": {}, "data": {"pairing": "pseudo"}})


def test_card_metrics_come_from_the_held_out_splits_only():
    frame = _held_out()
    frame.loc[frame.index[-20:], "split"] = "external"
    card, held = finalise_card(_card(), frame)
    assert set(held.split) == {"test", "external"} and len(held) == 60
    assert card.operating_point.chosen_on == "validation"
    assert set(card.metrics) == {"test", "external"}
    test = held[held.split == "test"]
    m = reporting.subgroup_metrics(test, card.operating_point.thresholds)
    assert m["all"].outputs["p_dlum"].auc.value == pytest.approx(
        roc_auc_score(test.label, test.p_dlum))
    assert card.metrics["test"]["all"] == m["all"]
    assert 0 <= card.metrics["test"]["all"].delong_p["p_dlu"] <= 1
    text = results_markdown(card)
    assert "**Test split**" in text and "**External split (a second centre)**" in text
    assert "DL-UM" in text and "discordant" in text


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="split"), "no 'split' column"),
    (lambda f: f[f.split != "validation"], "validation rows with both"),
    (lambda f: f[~((f.split == "validation") & (f.label == 1))], "validation rows with both"),
    (lambda f: f[f.split == "validation"], "no test or external rows"),
])
def test_finalise_refuses_held_out_predictions_it_cannot_use(change, message):
    from dlum.errors import DLUMError

    with pytest.raises(DLUMError, match=message):
        finalise_card(_card(), change(_held_out()))


def test_readme_table_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n")
    assert update_readme(readme, "new table")
    assert readme.read_text() == "intro\n<!-- results:start -->\nnew table\n<!-- results:end -->\nend\n"
    readme.write_text("no markers")
    with pytest.raises(DLUMError, match="markers"):
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
