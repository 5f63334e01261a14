"""dlum.data.cache: crops (expanded ROI, resized, uint8) stored as PNG strips and read back."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dlum.data.cache import CROP_FILES, build_crops, load_crops, make_crop, save_crops
from dlum.errors import InputError


def test_make_crop_is_the_expanded_roi_resized_and_scaled():
    image = np.zeros((200, 300), np.float32)
    image[50:150, 100:200] = 1000.0  # a bright 100x100 lesion on a dark film, 16-bit-like range
    crop = make_crop(image, (100, 50, 200, 150), size=64)
    assert crop.shape == (64, 64) and crop.dtype == np.uint8
    assert crop.min() == 0 and crop.max() == 255
    # 30% expansion: 15 px of dark margin on each side of a 100 px box -> about 7/130 of 64 px
    assert crop[32, :3].max() == 0 and crop[32, -3:].max() == 0
    assert crop[32, 32] == 255
    whole = make_crop(image, None, size=32)  # no box: the whole image, not expanded
    assert whole.shape == (32, 32) and whole[0, 0] == 0


def test_build_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (90, 120), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    lesions = pd.DataFrame({
        "modality": ["us", "mg", "us", "mg"],
        "image": [str(tmp_path / f) for f in ("a.png", "b.png", "a.png", "b.png")],
        "x0": [10, 0, 50, np.nan], "y0": [10, 0, 20, np.nan],
        "x1": [40, 60, 110, np.nan], "y1": [50, 60, 80, np.nan],
    })
    crops = build_crops(lesions, size=48, progress=False)
    assert crops["us"].shape == (2, 48, 48) and crops["mg"].shape == (2, 48, 48)
    assert not np.array_equal(crops["us"][0], crops["us"][1])
    paths = save_crops(crops, tmp_path / "cache")
    assert {p.name for p in paths.values()} == set(CROP_FILES.values())
    back = load_crops(tmp_path / "cache", {"us": 2, "mg": 2}, 48)
    for m in ("us", "mg"):
        np.testing.assert_array_equal(back[m], crops[m])  # lossless
    with pytest.raises(InputError, match="expected"):
        load_crops(tmp_path / "cache", {"us": 3, "mg": 2}, 48)
    with pytest.raises(InputError, match="not found"):
        load_crops(tmp_path, {"us": 1}, 48)
