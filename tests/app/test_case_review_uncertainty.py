"""Case Review shows the TTA range beside P(malignant) (always holding it), marks an uncertain call and flags
branches that disagree (``streamlit.testing.v1.AppTest``, the test checkpoint with chosen
thresholds)."""
from __future__ import annotations

import json
import math
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from dlum.app import case_review as cr
from dlum.data.io import read_image
from dlum.inference import Predictor
from dlum.uncertainty import DEFAULT_LEVEL, case_uncertainty, holding
from tests.app.conftest import REPO_ROOT

CASE_REVIEW = str(REPO_ROOT / "pages" / "1_Case_Review.py")
FILES = {m: REPO_ROOT / "examples" / f"phantom-12-{m}.png" for m in ("us", "mg")}
BOXES = {"us": (98, 45, 192, 179), "mg": (49, 88, 141, 186)}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reading(app_checkpoint):
    """The test checkpoint's fp32 prediction and TTA ranges of the example pair (seed 0), each
    held to the P the page shows, as the page holds them."""
    predictor = Predictor(app_checkpoint, device="cpu", precision="fp32")
    images = {m: read_image(FILES[m]) for m in FILES}
    kw = {"us_box": BOXES["us"], "mg_box": BOXES["mg"]}
    prediction = predictor.predict_pair(us=images["us"], mg=images["mg"], **kw)
    intervals = case_uncertainty(predictor, images["us"], images["mg"], seed=0, **kw)
    return prediction, {k: holding(iv, getattr(prediction, k)) for k, iv in intervals.items()}


def _range_text(iv, digits: int = 2) -> str:
    """The ends as the page prints them: rounded outward."""
    scale = 10 ** digits
    low, high = math.floor(iv.low * scale + 1e-9) / scale, math.ceil(iv.high * scale - 1e-9) / scale
    return f"TTA range {low:.{digits}f}–{high:.{digits}f} over {iv.views + 1} views"


def _with_thresholds(source, target, thresholds):
    shutil.copytree(source, target)
    card = json.loads((target / "card.json").read_text())
    card["operating_point"]["thresholds_per_model"] = thresholds
    card["operating_point"]["threshold"] = thresholds["p_dlum"]
    (target / "card.json").write_text(json.dumps(card))
    return target


def _run_pair(monkeypatch, checkpoint) -> AppTest:
    monkeypatch.setenv("DLUM_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("DLUM_PRECISION", "fp32")
    at = AppTest.from_file(CASE_REVIEW, default_timeout=120)
    at.run()
    assert not at.exception and not at.error, ([e.value for e in at.exception], [e.value for e in at.error])
    for m in FILES:
        at.file_uploader(key=f"{m}_file").set_value((FILES[m].name, FILES[m].read_bytes(), "image/png"))
    at.run()
    for m in FILES:
        for name, value in zip(("x0", "y0", "x1", "y1"), BOXES[m]):
            at.number_input(key=f"{m}_{name}").set_value(value)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    return at


def _texts(at) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.warning]
    return "\n".join(str(p) for p in parts)


def _badges(at) -> list[str]:
    return [str(m.value) for m in at.markdown if "-badge[" in str(m.value)]


def test_case_review_shows_the_interval_uncertain_and_branches_disagree(
        app_checkpoint, use_finder, reading, monkeypatch, tmp_path):
    prediction, intervals = reading
    fused = intervals["p_dlum"]
    assert fused.low < fused.high  # the example's views move P, so a threshold can sit inside
    thresholds = {"p_dlum": (fused.low + fused.high) / 2,
                  "p_us_head": prediction.p_us_head / 2,  # the US branch calls it malignant ...
                  "p_mg_head": (prediction.p_mg_head + 1) / 2}  # ... the MG branch benign
    at = _run_pair(monkeypatch, _with_thresholds(app_checkpoint, tmp_path / "split", thresholds))
    texts = _texts(at)
    for name, p in (("p_dlum", prediction.p_dlum), ("p_us_head", prediction.p_us_head),
                    ("p_mg_head", prediction.p_mg_head)):
        iv = intervals[name]
        assert iv.level == DEFAULT_LEVEL == 1.0 and iv.low <= p <= iv.high
        assert f"{p:.3f} ({_range_text(iv)})" in texts
    badges = "\n".join(_badges(at))
    assert "Uncertain" in badges and "Branches disagree" in badges
    assert any("**Uncertain:**" in w.value and f"{thresholds['p_dlum']:.3f}" in w.value
               for w in at.warning)
    assert any("**Branches disagree:**" in i.value and "ultrasound branch calls it malignant" in i.value
               and "mammography branch calls it benign" in i.value for i in at.info)
    assert f"{fused.views} augmented views" in texts and "seed 0" in texts
    assert "TTA range: the lowest to the highest P" in texts and "90%" not in texts


def test_case_review_without_flags_when_certain_and_agreeing(
        app_checkpoint, use_finder, reading, monkeypatch, tmp_path):
    prediction, intervals = reading
    fused = intervals["p_dlum"]
    thresholds = {"p_dlum": fused.low,  # low == t: every view is a positive call
                  "p_us_head": 0.0, "p_mg_head": 0.0}  # both branches positive
    at = _run_pair(monkeypatch, _with_thresholds(app_checkpoint, tmp_path / "agree", thresholds))
    assert f"{prediction.p_dlum:.3f} ({_range_text(fused)})" in _texts(at)
    badges = "\n".join(_badges(at))
    assert "Uncertain" not in badges and "Branches disagree" not in badges
    assert not any("**Uncertain:**" in w.value for w in at.warning)


def test_branch_disagreement_text_and_one_image():
    from dlum.card import Card

    card = Card.from_dict({"arch": "dlum", "model": {}, "operating_point": {
        "thresholds_per_model": {"p_dlum": 0.5, "p_us_head": 0.3, "p_mg_head": 0.6}}})
    disagree, text = cr.branch_disagreement(0.31, 0.59, card)
    assert disagree is True and "(P 0.310 ≥ 0.300)" in text and "(P 0.590 < 0.600)" in text
    assert cr.branch_disagreement(0.31, 0.61, card) == (False, "")
    assert cr.branch_disagreement(0.31, None, card) == (None, "")
    no_heads = Card.from_dict({"arch": "dlum", "model": {}, "operating_point": {
        "thresholds_per_model": {"p_dlum": 0.5}}})
    assert cr.branch_disagreement(0.31, 0.59, no_heads) == (None, "")


def test_probability_text_holds_the_probability_it_shows():
    import numpy as np

    from dlum.uncertainty import Interval

    rng = np.random.default_rng(3)
    for _ in range(50):
        low, high = sorted(rng.uniform(0.01, 0.99, 2))
        # P read in the prediction's own forward: inside the range, or just outside it (bf16)
        p = float(np.clip(rng.choice([low, high]) + rng.uniform(-0.01, 0.01), 0, 1))
        iv = Interval("p_dlum", low, low, high, 1.0, 4, 0, None)
        text = cr.CaseUncertainty({"p_dlum": iv}, "p_dlum").probability_text(p)
        shown, rest = text.split(" (TTA range ")
        a, b = (float(x) for x in rest.split(" ")[0].split("–"))
        assert a <= float(shown) <= b, text
    narrow = Interval("p_dlum", 0.5, 0.55, 0.6, 0.8, 4, 7, None)
    case = cr.CaseUncertainty({"p_dlum": narrow}, "p_dlum")
    assert "(80% TTA interval 0.55–0.60)" in case.probability_text(0.5)  # a share need not hold P
    assert case.method_text().startswith("TTA interval: the central 80% of P")
