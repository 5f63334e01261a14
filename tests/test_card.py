"""dlum.card: the model card read once, validated (a bad card names the field), written atomically."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlum.card import CardError, card_sections, read_card, results_rows, write_card

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "dlum-public-v1"


def _card(**op):
    return {"name": "x", "arch": "dlum", "model": {"arch": "dlum"},
            "operating_point": {"thresholds_per_model": {"p_dlum": 0.4, **op}}}


def test_the_shipped_card_reads_with_each_outputs_threshold_and_test_results():
    card = read_card(SHIPPED)
    assert card.arch == "dlum" and card.pseudo_paired and card.input.size == 224
    assert card.threshold == pytest.approx(0.443196)
    assert card.threshold_for("p_dlu") == pytest.approx(0.30378315)
    assert card.results("p_dlu", "test", "discordant").sensitivity.value == pytest.approx(2 / 9)
    assert set(card.metrics) == {"test"}


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

    assert Card.from_dict(card).metrics["test"]["all"].n == 426


def test_results_rows_and_sections_for_the_home_page():
    card = read_card(SHIPPED)
    rows = results_rows(card)
    assert len(rows) == 3 * 5  # subgroups x outputs
    dlu = next(r for r in rows if r["model"] == "DL-U" and r["subgroup"] == "all")
    assert dlu["threshold"] == "0.304" and dlu["AUC [95% CI]"] == "0.878 [0.844–0.913]"
    sections = card_sections(card)
    assert sections["identity"]["architecture"] == "DL-UM"
    assert "pairing_rule" in sections and "pairing_rule" not in sections["data"]
    assert card.data.get("pairing_rule")  # the card itself is not changed
