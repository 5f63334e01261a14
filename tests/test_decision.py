"""dlum.decision: the one biopsy / follow-up rule (Xu et al. 2025), for pairs and single images."""
from __future__ import annotations

import math

import pytest

from dlum.card import Card
from dlum.decision import BIOPSY, FOLLOW_UP, NO_CALL, DecisionError, case_result, decide, decision_text
from dlum.inference import PairPrediction

CARD = Card.from_dict({
    "name": "c", "arch": "dlum", "model": {},
    "operating_point": {"thresholds_per_model": {"p_dlum": 0.44, "p_us_head": 0.31,
                                                 "p_mg_head": 0.34}},
    "metrics": {"test": {"all": {
        "n": 10, "malignant": 4, "benign": 6,
        "p_dlum": {"sensitivity": 0.5, "sensitivity_ci": [0.2, 0.8], "specificity": 0.64},
        "p_us_head": {"sensitivity": 0.96, "sensitivity_ci": [0.91, 0.98], "specificity": 0.51},
    }}},
})


def _prediction(p_dlum=0.7, p_us=0.6, p_mg=0.4, mode="pair", precision="float32", whole=()):
    return PairPrediction(p_dlum=p_dlum, p_us_head=p_us, p_mg_head=p_mg,
                          p_us_blocks=None if p_us is None else [0.1, 0.2, 0.3, 0.4, p_us],
                          p_mg_blocks=None if p_mg is None else [0.5, 0.4, 0.3, 0.2, p_mg],
                          mode=mode, whole_image=whole, precision=precision, model_version="m1")


@pytest.mark.parametrize("p, biopsy", [(0.2, False), (0.4399, False), (0.44, True), (0.93, True)])
def test_a_pair_is_judged_at_the_fused_threshold(p, biopsy):
    d = decide(_prediction(p_dlum=p), CARD)
    assert d.biopsy_recommended is biopsy and d.label == (BIOPSY if biopsy else FOLLOW_UP)
    assert (d.output, d.threshold, d.threshold_source) == ("p_dlum", 0.44, "card")
    assert (d.sensitivity, d.specificity, d.sensitivity_ci) == (0.5, 0.64, (0.2, 0.8))
    assert d.specificity_ci is None


def test_one_image_is_judged_at_its_heads_own_threshold_with_its_own_figures():
    us = decide(_prediction(p_dlum=None, p_us=0.33, p_mg=None, mode="us-only"), CARD)
    assert (us.output, us.threshold, us.label) == ("p_us_head", 0.31, BIOPSY)  # 0.33 < 0.44
    assert (us.sensitivity, us.specificity) == (0.96, 0.51)
    assert "threshold 0.310" in decision_text(us) and "96.0% [91.0–98.0]" in decision_text(us)
    assert any("One image only" in n for n in us.notes)
    mg = decide(_prediction(p_dlum=None, p_us=None, p_mg=0.2, mode="mg-only"), CARD)
    assert (mg.threshold, mg.label, mg.sensitivity) == (0.34, FOLLOW_UP, None)


def test_a_card_without_operating_point_uses_the_default_and_says_so():
    card = Card.from_dict({"arch": "dlum", "model": {}})
    d = decide(_prediction(p_dlum=0.6), card)
    assert (d.threshold, d.threshold_source, d.biopsy_recommended) == (0.5, "default", True)
    assert any("no operating threshold" in n for n in d.notes)
    assert "default threshold 0.500" in decision_text(d)


@pytest.mark.parametrize("p", [math.nan, math.inf, -0.1, 1.5, None])
def test_a_probability_that_is_not_one_is_an_error_not_a_decision(p):
    with pytest.raises(DecisionError, match="no decision can be made"):
        decide(_prediction(p_dlum=p), CARD)


@pytest.mark.parametrize("p, precision, marked", [(0.45, "bfloat16", True), (0.42, "bfloat16", True),
                                                  (0.45, "float32", False), (0.6, "bfloat16", False)])
def test_a_bf16_call_near_the_threshold_is_marked(p, precision, marked):
    d = decide(_prediction(p_dlum=p, precision=precision), CARD)
    assert any("bfloat16" in n and "float32" in n for n in d.notes) is marked


def test_a_whole_image_read_gets_no_call_until_confirmed():
    withheld = decide(_prediction(whole=("us",)), CARD)
    assert withheld.biopsy_recommended is None and withheld.label == NO_CALL and not withheld.made
    assert "Ultrasound image was read whole" in withheld.withheld
    confirmed = decide(_prediction(whole=("us",)), CARD, whole_image_confirmed=True)
    assert confirmed.made and confirmed.label == BIOPSY
    assert any("confirmed" in n for n in confirmed.notes)


def test_case_result_holds_outputs_decision_and_model_rounded():
    d = decide(_prediction(p_dlum=0.123456789), CARD)
    out = case_result(_prediction(p_dlum=0.123456789), d, inputs={"us": "a.png"})
    assert out["us"] == "a.png" and out["p_dlum"] == 0.1235 and out["mode"] == "pair"
    assert out["decision"]["label"] == FOLLOW_UP and out["decision"]["threshold"] == 0.44
    assert out["model"] == {"name": "m1", "precision": "float32"} and "seconds" not in out


def test_p_is_called_calibrated_only_when_the_test_ece_says_so():
    def card(ece):
        return Card.from_dict({"arch": "dlum", "model": {},
                               "operating_point": {"thresholds_per_model": {"p_dlum": 0.5}},
                               "metrics": {"test": {"all": {"p_dlum": {"auc": 0.8, "ece": ece}}}}})

    good, bad = decide(_prediction(), card(0.03)), decide(_prediction(), card(0.2))
    assert good.calibrated and "is calibrated" in good.calibration_text()
    assert bad.calibrated is False and "not calibrated (ECE 0.200" in bad.calibration_text()
    assert decide(_prediction(), CARD).calibrated is None
