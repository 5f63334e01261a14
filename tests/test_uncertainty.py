"""dlum.uncertainty: seeded test-time augmentation intervals of one case and of a cohort."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dlum.data.io import read_image
from dlum.errors import DLUMError, InputError
from dlum.inference import Predictor
from dlum.uncertainty import (CONTRAST, DEFAULT_LEVEL, DEFAULT_VIEWS, LOG_GAMMA, SCALE, SHIFT,
                              Interval, UncertaintyError, View, augment, case_uncertainty,
                              cohort_uncertainty, draw_views, holding, interval_of)
from tests.checkpoints import TEST_THRESHOLDS, write_test_checkpoint

REPO = Path(__file__).resolve().parents[1]
# the shipped example pair (a generated phantom) and its lesion boxes
US_IMAGE = REPO / "examples" / "phantom-12-us.png"
MG_IMAGE = REPO / "examples" / "phantom-12-mg.png"
BOXES = {"us_box": (98, 45, 192, 179), "mg_box": (49, 88, 141, 186)}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    folder = write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "test-ckpt")
    return Predictor(folder, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def images():
    return read_image(US_IMAGE), read_image(MG_IMAGE)


def _intervals(predictor, images, **kw):
    us, mg = images
    return case_uncertainty(predictor, us, mg, thresholds=TEST_THRESHOLDS, **{**BOXES, **kw})


# ------------------------------------------------------------------------------------- views
def test_views_come_from_the_seed_in_the_training_ranges():
    views = draw_views(3, 12)
    assert views == draw_views(3, 12)
    assert views[:5] == draw_views(3, 5)  # drawn view by view
    assert views != draw_views(4, 12)
    for v in views:
        assert abs(v.shift_x) <= SHIFT and abs(v.shift_y) <= SHIFT
        assert 1 - SCALE <= v.scale <= 1 + SCALE
        assert math.exp(-LOG_GAMMA) <= v.gamma <= math.exp(LOG_GAMMA)
        assert 1 - CONTRAST <= v.contrast <= 1 + CONTRAST
    assert {v.flip for v in draw_views(0, 12)} == {True, False}


def test_augment_flips_shifts_and_keeps_every_view_in_unit_range():
    rng = np.random.default_rng(0)
    patch = torch.from_numpy(rng.random((1, 16, 16), dtype=np.float32))
    patch = (patch - patch.min()) / (patch.max() - patch.min())
    plain, flipped, moved = augment(patch, [View(False, 0, 0, 1, 1, 1), View(True, 0, 0, 1, 1, 1),
                                            View(False, 2 / 16, 0, 1, 1, 1)])[0]
    torch.testing.assert_close(plain, patch[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(flipped, patch[0].flip(-1), atol=1e-5, rtol=0)
    # two pixels right; the two columns moved in from outside are black before min–max
    torch.testing.assert_close(moved[:, 2:], (patch[0, :, :-2] - patch[0, :, :-2].min())
                               / (patch[0, :, :-2].max() - patch[0, :, :-2].min()), atol=1e-5, rtol=0)
    many = augment(patch.repeat(3, 1, 1), draw_views(1, 5))
    assert many.shape == (3, 5, 16, 16)
    assert float(many.amin()) == 0.0 and float(many.amax()) == 1.0


# ------------------------------------------------------------------------------------ one case
def test_same_seed_same_interval_other_seed_other_views(predictor, images):
    first = _intervals(predictor, images, seed=7, views=4)
    assert set(first) == {"p_dlum", "p_us_head", "p_mg_head"}
    assert _intervals(predictor, images, seed=7, views=4) == first
    other = _intervals(predictor, images, seed=8, views=4)
    assert any((other[k].low, other[k].high) != (first[k].low, first[k].high) for k in first)
    for k, iv in first.items():
        assert iv.output == k and iv.seed == 7 and iv.level == DEFAULT_LEVEL and iv.views == 4
        assert iv.threshold == TEST_THRESHOLDS[k]
        assert other[k].estimate == pytest.approx(iv.estimate, abs=1e-6)  # view 0 is not augmented


def test_estimate_is_the_prediction_and_levels_nest(predictor, images):
    us, mg = images
    pair = predictor.predict_pair(us=us, mg=mg, **BOXES)
    wide = _intervals(predictor, images, level=1.0, views=5)
    mid = _intervals(predictor, images, level=0.9, views=5)
    narrow = _intervals(predictor, images, level=0.5, views=5)
    for k in wide:
        assert wide[k].estimate == pytest.approx(getattr(pair, k), abs=1e-5)
        # the views' range holds the estimate; a narrower share lies inside a wider one
        assert wide[k].low <= wide[k].estimate <= wide[k].high
        assert 0 <= wide[k].low <= mid[k].low <= narrow[k].low <= narrow[k].high <= mid[k].high \
            <= wide[k].high <= 1
    assert any(wide[k].high > wide[k].low for k in wide)  # the views do move P


@pytest.fixture(scope="module")
def public_pair(shared_data):
    """A real (pseudo-)pair: a BUS-BRA ultrasound with its mask's box and a mini-MIAS mammogram
    with its centre + radius box; skipped without the public data."""
    from PIL import Image

    from dlum.data.public import read_mias

    us_path = shared_data / "us" / "busbra" / "Images" / "bus_0001-l.png"
    mask_path = shared_data / "us" / "busbra" / "Masks" / "mask_0001-l.png"
    if not us_path.is_file() or not mask_path.is_file():
        pytest.skip("BUS-BRA bus_0001-l is not in the public data folder")
    ys, xs = np.nonzero(np.asarray(Image.open(mask_path).convert("L")) > 0)
    lesion = read_mias(shared_data / "mg" / "mias").iloc[0]
    return ((read_image(us_path), read_image(lesion["image"])),
            {"us_box": (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
             "mg_box": tuple(int(lesion[k]) for k in ("x0", "y0", "x1", "y1"))})


def test_default_is_the_range_and_always_holds_the_estimate(predictor, public_pair):
    (us, mg), boxes = public_pair
    pair = predictor.predict_pair(us=us, mg=mg, **boxes)
    assert DEFAULT_LEVEL == 1.0
    for seed in range(4):
        got = case_uncertainty(predictor, us, mg, thresholds=TEST_THRESHOLDS, seed=seed, **boxes)
        for k, iv in got.items():
            assert iv.level == 1.0 and iv.is_range
            assert iv.low <= iv.estimate <= iv.high, (seed, k)
            # and the P the prediction shows, read in its own forward, once held
            p = getattr(pair, k)
            shown = holding(iv, p)
            assert shown.low <= p <= shown.high
            assert shown.low <= iv.low and shown.high >= iv.high


def test_range_is_the_min_and_max_of_the_pooled_views():
    rng = np.random.default_rng(4)
    for _ in range(20):
        values = rng.random(5)
        iv = interval_of(values, "p_dlum", level=DEFAULT_LEVEL, views=4, seed=0, threshold=0.5)
        assert (iv.low, iv.high, iv.estimate) == (values.min(), values.max(), values[0])
        assert iv.low <= iv.estimate <= iv.high
        narrow = interval_of(values, "p_dlum", level=0.5, views=4, seed=0, threshold=0.5)
        assert iv.low <= narrow.low <= narrow.high <= iv.high


def test_holding_widens_only_a_range():
    wide = Interval("p_dlum", 0.62, 0.60, 0.71, 1.0, 4, 0, 0.599)
    below = holding(wide, 0.598)
    assert (below.low, below.high) == (0.598, 0.71) and below.estimate == wide.estimate
    assert not wide.uncertain and below.uncertain  # the shown P is on the other side of t
    assert holding(wide, 0.65) == wide and holding(wide, None) == wide
    narrow = Interval("p_dlum", 0.62, 0.64, 0.71, 0.8, 4, 0, 0.5)
    assert holding(narrow, 0.62) == narrow  # a central share need not hold P


def test_text_reads_range_at_level_one_and_a_share_otherwise():
    rng = np.random.default_rng(9)
    low, high = sorted(rng.uniform(0.05, 0.95, 2))
    whole = Interval("p_dlum", low, low, high, 1.0, 4, 0, None)
    assert whole.text().startswith("TTA range ") and whole.text().endswith(" over 5 views")
    assert "%" not in whole.text()
    share = Interval("p_dlum", low, low, high, 0.8, 6, 0, None)
    assert share.text().startswith("80% TTA interval ") and "views" not in share.text()
    for iv in (whole, share):
        for digits in (1, 2, 3):
            a, b = (float(x) for x in re.search(r"([\d.]+)–([\d.]+)", iv.text(digits)).groups())
            # rounded outward: the printed ends hold the interval
            assert a <= iv.low and b >= iv.high
            assert iv.low - a < 10 ** -digits and b - iv.high < 10 ** -digits
    # outward rounding keeps the printed range round P printed with more digits
    tight = Interval("p_dlum", 0.6151, 0.6151, 0.7, 1.0, 4, 0, None)
    assert tight.text() == f"TTA range 0.61–0.70 over {tight.views + 1} views"


def test_one_image_gives_only_its_branch(predictor, images):
    us, mg = images
    only_us = case_uncertainty(predictor, us=us, us_box=BOXES["us_box"], thresholds=TEST_THRESHOLDS)
    assert set(only_us) == {"p_us_head"} and only_us["p_us_head"].views == DEFAULT_VIEWS
    assert only_us["p_us_head"].estimate == pytest.approx(
        predictor.predict_pair(us=us, us_box=BOXES["us_box"]).p_us_head, abs=1e-5)
    # the branch reads the same views with or without the other image
    pair = _intervals(predictor, images)["p_us_head"]
    assert (only_us["p_us_head"].low, only_us["p_us_head"].high) == pytest.approx((pair.low, pair.high),
                                                                                  abs=1e-5)
    only_mg = case_uncertainty(predictor, mg=str(MG_IMAGE), mg_box=BOXES["mg_box"])  # a path works too
    assert set(only_mg) == {"p_mg_head"} and only_mg["p_mg_head"].threshold is None
    assert not only_mg["p_mg_head"].uncertain  # no threshold, never uncertain


@pytest.mark.parametrize("threshold, uncertain", [
    (0.39, False),  # every view above: positive whatever the view
    (0.40, False),  # low == t: P >= t is positive, so every view is still positive
    (0.50, True),
    (0.60, True),  # high == t: the top view is positive, the others negative
    (0.61, False),
    (None, False),
])
def test_uncertain_when_the_interval_straddles_the_threshold(threshold, uncertain):
    iv = Interval("p_dlum", 0.5, 0.40, 0.60, 0.9, 6, 0, threshold)
    assert iv.uncertain is uncertain
    assert iv.text() == "90% TTA interval 0.40–0.60"


@pytest.mark.parametrize("kw, phrase", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"), ({"seed": "0"}, "seed"),
    ({"views": 0}, "views"), ({"views": 65}, "views"), ({"views": 2.0}, "views"),
    ({"views": True}, "views"),
    ({"level": 0}, "level"), ({"level": 1.5}, "level"), ({"level": float("nan")}, "level"),
    ({"thresholds": {"p_dlum": 2}}, "threshold of p_dlum"),
    ({"thresholds": {"p_dlum": "high"}}, "threshold of p_dlum"),
])
def test_bad_settings_are_refused_with_a_message(predictor, images, kw, phrase):
    us, mg = images
    args = {"thresholds": TEST_THRESHOLDS, **BOXES, **kw}
    with pytest.raises(UncertaintyError) as err:
        case_uncertainty(predictor, us, mg, **args)
    assert isinstance(err.value, DLUMError) and phrase in str(err.value)


def test_no_image_and_a_constant_image_are_refused(predictor):
    with pytest.raises(InputError, match="at least one image"):
        case_uncertainty(predictor)
    with pytest.raises(InputError, match="constant"):
        case_uncertainty(predictor, us=np.full((50, 60), 7.0, np.float32))


# -------------------------------------------------------------------------------------- cohort
def test_cohort_intervals_are_the_cases_intervals(predictor, tmp_path):
    from dlum.data.crops import row_box
    from dlum.data.manifest import read_cohort
    from dlum.data.synthetic import make_phantom_cohort

    cohort = read_cohort(make_phantom_cohort(tmp_path, n=5, seed=2, size=64))
    table = cohort_uncertainty(predictor, cohort, thresholds=TEST_THRESHOLDS, seed=5, views=3,
                               cases_per_batch=2, progress=False)
    assert len(table) == 3 * len(cohort)
    assert set(table["output"]) == {"p_dlum", "p_us_head", "p_mg_head"}
    assert (table["views"] == 3).all() and (table["precision"] == "float32").all()
    for i in (0, len(cohort) - 1):  # first batch and the last, half-full one
        row = cohort.iloc[i]
        case = case_uncertainty(predictor, row["us_image"], row["mg_image"],
                                us_box=row_box(row, "us"), mg_box=row_box(row, "mg"),
                                thresholds=TEST_THRESHOLDS, seed=5, views=3)
        for name, iv in case.items():
            got = table[(table["case_id"] == row["case_id"]) & (table["output"] == name)].iloc[0]
            assert (got["estimate"], got["low"], got["high"]) == pytest.approx(
                (iv.estimate, iv.low, iv.high), abs=1e-5)
            assert bool(got["uncertain"]) == (got["low"] < TEST_THRESHOLDS[name] <= got["high"])
    split = cohort["split"].iloc[0]
    only = cohort_uncertainty(predictor, cohort, split=split, views=1, progress=False)
    assert set(only["split"]) == {split} and len(only) == 3 * int((cohort["split"] == split).sum())
    with pytest.raises(DLUMError, match="split"):
        cohort_uncertainty(predictor, cohort, split="external", progress=False)
    with pytest.raises(UncertaintyError, match="cases per batch"):
        cohort_uncertainty(predictor, cohort, cases_per_batch=0, progress=False)
