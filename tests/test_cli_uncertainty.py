"""``python -m dlum predict --uncertainty``: TTA intervals and the branches' agreement, in process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlum import cli
from dlum.uncertainty import DEFAULT_LEVEL
from tests.checkpoints import TEST_THRESHOLDS, write_test_checkpoint

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = {"us": REPO / "examples" / "phantom-12-us.png", "mg": REPO / "examples" / "phantom-12-mg.png",
           "us_roi": "98,45,192,179", "mg_roi": "49,88,141,186"}
PAIR = ["--us", str(EXAMPLE["us"]), "--us-roi", EXAMPLE["us_roi"],
        "--mg", str(EXAMPLE["mg"]), "--mg-roi", EXAMPLE["mg_roi"]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "test-ckpt")


def _predict(capsys, checkpoint, *args) -> dict:
    assert cli.main(["predict", "--checkpoint", str(checkpoint), "--precision", "fp32", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_predict_uncertainty_adds_intervals_flags_and_settings(capsys, checkpoint):
    plain = _predict(capsys, checkpoint, *PAIR)
    out = _predict(capsys, checkpoint, *PAIR, "--uncertainty", "--tta-seed", "3")
    assert out["p_dlum"] == plain["p_dlum"] and out["decision"] == plain["decision"]
    for name in ("p_dlum", "p_us_head", "p_mg_head"):
        low, high, t = out[f"{name}_low"], out[f"{name}_high"], TEST_THRESHOLDS[name]
        assert 0 <= low <= out[name] <= high <= 1  # the range holds the P reported
        assert out[f"{name}_uncertain"] == (low < t <= high)
    assert out["uncertain"] == out["p_dlum_uncertain"]  # a pair's call is DL-UM's
    us_side = out["p_us_head"] >= TEST_THRESHOLDS["p_us_head"]
    mg_side = out["p_mg_head"] >= TEST_THRESHOLDS["p_mg_head"]
    assert out["branches_disagree"] is (us_side != mg_side)
    assert out["uncertainty"]["seed"] == 3 and out["uncertainty"]["output"] == "p_dlum"
    assert out["uncertainty"]["level"] == DEFAULT_LEVEL == 1.0 and out["uncertainty"]["views"] >= 1
    again = _predict(capsys, checkpoint, *PAIR, "--uncertainty", "--tta-seed", "3")
    assert again == out  # same seed, same intervals
    assert "p_dlum_low" not in plain and "branches_disagree" not in plain


def test_predict_uncertainty_with_one_image_and_without_a_call(capsys, checkpoint):
    us = _predict(capsys, checkpoint, "--us", str(EXAMPLE["us"]), "--us-roi", EXAMPLE["us_roi"],
                  "--uncertainty")
    assert us["branches_disagree"] is None and "p_dlum_low" not in us and "p_mg_head_low" not in us
    assert us["uncertainty"]["output"] == "p_us_head" and us["uncertainty"]["seed"] == 0
    assert us["uncertain"] == us["p_us_head_uncertain"]
    whole = _predict(capsys, checkpoint, "--mg", str(EXAMPLE["mg"]), "--uncertainty")
    assert whole["decision"]["biopsy_recommended"] is None and whole["uncertain"] is None
    assert whole["p_mg_head_low"] <= whole["p_mg_head"] <= whole["p_mg_head_high"]


@pytest.mark.parametrize("args, phrase", [
    (["--tta-seed", "2"], "give --uncertainty too"),
    (["--uncertainty", "--tta-seed", "-1"], "seed must be a whole number 0 or more"),
])
def test_predict_uncertainty_mistakes_are_one_line(capsys, checkpoint, args, phrase):
    assert cli.main(["predict", "--checkpoint", str(checkpoint), *PAIR, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlum predict: error: ") and phrase in err and "Traceback" not in err
