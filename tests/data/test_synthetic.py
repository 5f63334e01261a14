"""dlum.data.synthetic: seeded US + MG phantoms with pathology-dependent signs."""
from __future__ import annotations

import time

import numpy as np
import pytest

from dlum.constants import SYNTHETIC_SOURCE
from dlum.data.manifest import derive_subgroup, read_cohort
from dlum.data.synthetic import is_synthetic, make_phantom_case, make_phantom_cohort


@pytest.fixture(scope="module")
def cases():
    return [make_phantom_case(seed, malignant) for seed in range(12) for malignant in (False, True)]


def test_same_seed_same_case_and_seeds_differ():
    a, b = make_phantom_case(5, True), make_phantom_case(5, True)
    for key in ("us", "mg"):
        np.testing.assert_array_equal(a[key], b[key])
        assert a[f"{key}_box"] == b[f"{key}_box"]
    assert (a["us_birads"], a["mg_birads"]) == (b["us_birads"], b["mg_birads"])
    c = make_phantom_case(6, True)
    assert not np.array_equal(a["us"], c["us"])


@pytest.mark.parametrize("size", [224, 256])
def test_shapes_types_and_boxes(size):
    case = make_phantom_case(1, False, size=size)
    for key in ("us", "mg"):
        image, (x0, y0, x1, y1) = case[key], case[f"{key}_box"]
        assert image.shape == (size, size) and image.dtype == np.uint8
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        assert image.std() > 5  # not blank
    assert case["label"] == 0
    assert case["us_birads"] in (2, 3, 4, 5) and case["mg_birads"] in (2, 3, 4, 5)


def test_us_orientation_depends_on_pathology(cases):
    """Benign lesions are parallel (wider than tall), malignant ones taller than wide."""
    for case in cases:
        x0, y0, x1, y1 = case["us_box"]
        if case["label"]:
            assert (y1 - y0) > (x1 - x0)
        else:
            assert (x1 - x0) > (y1 - y0)


def _core(image, box):
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    w, h = max(2, (x1 - x0) // 6), max(2, (y1 - y0) // 6)
    return image[cy - h : cy + h, cx - w : cx + w].astype(float)


def test_us_lesions_are_hypoechoic_with_posterior_features(cases):
    shadow, enhancement = [], []
    for case in cases:
        us, (x0, y0, x1, y1) = case["us"], case["us_box"]
        assert _core(us, case["us_box"]).mean() < us.mean()  # darker than the image
        size = us.shape[0]
        depth = slice(y1 + 2, min(size, y1 + 40))
        cx = (x0 + x1) // 2
        under = us[depth, cx - 6 : cx + 6].mean()
        beside = us[depth, : max(1, x0 - 20)].mean() if x0 > 30 else us[depth, x1 + 20 :].mean()
        (shadow if case["label"] else enhancement).append(under / beside)
    assert np.median(shadow) < 0.9  # posterior acoustic shadowing
    assert np.median(enhancement) > 1.0  # posterior enhancement


def test_mg_lesions_are_brighter_and_kinds_follow_pathology(cases):
    kinds = {0: set(), 1: set()}
    for case in cases:
        kinds[case["label"]].add(case["mg_signs"]["kind"])
        if case["mg_signs"]["kind"] != "calcification" and not case["mg_signs"]["masked"]:
            assert _core(case["mg"], case["mg_box"]).mean() > np.median(case["mg"])
    assert kinds[0] <= {"circumscribed_mass", "calcification"}
    assert kinds[1] <= {"spiculated_mass", "calcification"}


def test_birads_include_discordant_cases():
    cases = [make_phantom_case(s, s % 2 == 0, size=96) for s in range(80)]
    subgroups = derive_subgroup([c["us_birads"] for c in cases], [c["mg_birads"] for c in cases])
    assert 0.1 < np.mean(subgroups == "discordant") < 0.6
    malignant = [c["us_birads"] for c in cases if c["label"]]
    benign = [c["us_birads"] for c in cases if not c["label"]]
    assert np.mean(malignant) > np.mean(benign) + 0.8


def test_fast_enough():
    make_phantom_case(0, True)  # warm caches
    start = time.perf_counter()
    for seed in range(10):
        make_phantom_case(seed, bool(seed % 2))
    assert (time.perf_counter() - start) / 10 < 0.5  # generous: a few ms on an idle core


def test_phantom_cohort_is_a_valid_labelled_table(tmp_path):
    path = make_phantom_cohort(tmp_path / "ph", n=20, seed=2)
    df = read_cohort(path)
    assert len(df) == 20
    assert set(df["split"]) == {"train", "validation", "test"}
    assert (df["source"] == SYNTHETIC_SOURCE).all() and is_synthetic(df).all()
    assert (df["pairing"] == "same_patient").all()
    assert df["patient_id"].is_unique
    assert df["label"].sum() == 8  # 40% malignant
    assert not is_synthetic("BUS-BRA+mini-MIAS")
    again = read_cohort(make_phantom_cohort(tmp_path / "ph2", n=20, seed=2))
    assert df["label"].tolist() == again["label"].tolist()
    assert df["us_birads"].tolist() == again["us_birads"].tolist()
