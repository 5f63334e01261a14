"""dlum.card: the model card read once, validated (a bad card names the field), written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlum.card import CardError, card_sections, read_card, results_rows, write_card

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v2"


def _card(**op):
    return {"name": "x", "arch": "dlum", "model": {"arch": "dlum"},
            "operating_point": {"thresholds_per_model": {"p_dlum": 0.4, **op}}}


def test_the_shipped_card_reads_with_each_outputs_threshold_and_held_out_results():
    import pandas as pd

    from dlum.reporting import choose_threshold

    card = read_card(SHIPPED)
    assert card.arch == "dlum" and card.pseudo_paired and card.input.size == 224
    held = pd.read_csv(SHIPPED / "held_out_predictions.csv")
    val = held[held.split == "validation"]
    for column in ("p_dlum", "p_us_head", "p_mg_head", "p_dlu", "p_dlm"):
        assert card.threshold_for(column) == pytest.approx(choose_threshold(val.label, val[column]))
    test = held[held.split == "test"]
    discordant = test[test.subgroup == "discordant"]
    calls = discordant.p_dlu >= card.threshold_for("p_dlu")
    sens = calls[discordant.label == 1].mean()
    assert card.results("p_dlu", "test", "discordant").sensitivity.value == pytest.approx(sens)
    assert set(card.metrics) == set(held.split) - {"validation"}


@pytest.mark.parametrize("value, message", [
    (float("nan"), "not a finite number"), (-0.1, "outside [0, 1]"), ("high", "'high' is not a number"),
    (True, "not a number"),
])
def test_a_bad_threshold_is_refused_naming_the_field(tmp_path, value, message):
    data = _card(p_us_head=value)
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match=r"operating_point\.thresholds_per_model\.p_us_head") as info:
        read_card(tmp_path)
    assert message in str(info.value)


@pytest.mark.parametrize("data, field", [
    ({"arch": "dlum"}, "model: missing"),
    ({"arch": "resnet", "model": {}}, "arch: 'resnet'"),
    ({"arch": "dlum", "model": {}, "input": {"size": "big"}}, "input.size"),
    ({"arch": "dlum", "model": {}, "metrics": {"test": {"all": {"p_dlum": {"auc": 2}}}}},
     "metrics.test.all.p_dlum.auc"),
    ([1, 2], "not a JSON object"),
])
def test_other_bad_cards_name_their_field(tmp_path, data, field):
    (tmp_path / "card.json").write_text(json.dumps(data))
    with pytest.raises(CardError, match=field.replace("(", r"\(").replace(".", r"\.")):
        read_card(tmp_path)


def test_write_card_round_trips_and_a_failed_write_leaves_the_old_card(tmp_path):
    card = read_card(SHIPPED)
    write_card(tmp_path, card)
    again = read_card(tmp_path)
    assert again == card
    before = (tmp_path / "card.json").read_bytes()
    bad = json.loads(before)
    bad["operating_point"]["thresholds_per_model"]["p_dlum"] = "oops"
    with pytest.raises(CardError):
        write_card(tmp_path, bad)
    assert (tmp_path / "card.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]  # no temporary file left


def test_legacy_test_metrics_read_as_the_test_split():
    card = json.loads((SHIPPED / "card.json").read_text())
    card["test_metrics"] = card.pop("metrics")["test"]
    from dlum.card import Card

    assert Card.from_dict(card).metrics["test"]["all"].n == card["test_metrics"]["all"]["n"]


def test_results_rows_and_sections_for_the_home_page():
    card = read_card(SHIPPED)
    rows = results_rows(card)
    assert len(rows) == len(card.metrics) * 3 * 5  # splits x subgroups x outputs
    dlu = next(r for r in rows if r["model"] == "DL-U" and r["subgroup"] == "all" and r["split"] == "test")
    auc = card.results("p_dlu")
    assert dlu["threshold"] == f"{card.threshold_for('p_dlu'):.3f}"
    assert dlu["AUC [95% CI]"] == f"{auc.auc.value:.3f} [{auc.auc.ci[0]:.3f}–{auc.auc.ci[1]:.3f}]"
    sections = card_sections(card)
    assert sections["identity"]["architecture"] == "DL-UM"
    assert "pairing_rule" in sections and "pairing_rule" not in sections["data"]
    assert card.data.get("pairing_rule")  # the card itself is not changed
