"""dlum.data.roi: DL-UM's ROI expansion (30% of the shortest side, 15% per side) and cropping."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dlum.constants import ROI_EXPANSION
from dlum.data.roi import box_from_centre, box_from_xywh, crop_roi, expand_box, parse_box, validate_box
from dlum.errors import InputError

SHAPE = (400, 500)  # height, width


@pytest.mark.parametrize(
    "box",
    [(100, 100, 200, 200), (100, 150, 300, 190), (240, 60, 260, 260), (10.4, 20.6, 110.2, 70.9)],
)
def test_expansion_is_15_percent_of_shortest_side_per_side(box):
    x0, y0, x1, y1 = box
    margin = ROI_EXPANSION / 2 * min(x1 - x0, y1 - y0)
    out = expand_box(box, SHAPE)
    assert all(isinstance(v, int) for v in out)
    # rounded outward: never less than the exact margin, never a whole pixel more
    assert out == (
        math.floor(x0 - margin),
        math.floor(y0 - margin),
        math.ceil(x1 + margin),
        math.ceil(y1 + margin),
    )


def test_expansion_of_square_box_adds_30_percent():
    x0, y0, x1, y1 = expand_box((100, 100, 200, 200), SHAPE)
    assert (x1 - x0, y1 - y0) == (130, 130)
    assert (x0, y0) == (85, 85)


def test_expansion_clamped_at_borders():
    assert expand_box((0, 5, 50, 60), SHAPE) == (0, 0, 58, 68)
    assert expand_box((460, 350, 500, 400), SHAPE) == (454, 344, 500, 400)
    assert expand_box((0, 0, 500, 400), SHAPE) == (0, 0, 500, 400)


def test_fraction_zero_and_custom():
    assert expand_box((100, 100, 200, 200), SHAPE, fraction=0.0) == (100, 100, 200, 200)
    assert expand_box((100, 100, 200, 200), SHAPE, fraction=1.0) == (50, 50, 250, 250)
    with pytest.raises(ValueError):
        expand_box((100, 100, 200, 200), SHAPE, fraction=-0.1)


def test_validate_clamps_box_past_border_and_rounds_outward():
    assert validate_box((-20, -5, 80, 60), SHAPE) == (0, 0, 80, 60)
    assert validate_box((450, 390, 520, 430), SHAPE) == (450, 390, 500, 400)
    assert validate_box((1.5, 2.5, 10.2, 20.7), SHAPE) == (1, 2, 11, 21)
    assert validate_box((1, 2, 10, 20), np.zeros(SHAPE)) == (1, 2, 10, 20)  # image as shape


@pytest.mark.parametrize(
    "box, problem",
    [
        ((10, 10, 10, 50), "empty"),
        ((10, 10, 50, 10), "empty"),
        ((50, 10, 10, 60), "inverted"),
        ((10, 60, 50, 10), "inverted"),
        ((10, float("nan"), 50, 60), "non-finite"),
        ((10, 10, float("inf"), 60), "non-finite"),
        ((500, 10, 600, 60), "outside"),
        ((-60, 10, 0, 60), "outside"),
        ((10, 400, 60, 450), "outside"),
        ((10, -50, 60, -1), "outside"),
        ((1, 2, 3), "4 numbers"),
        (("a", 2, 3, 4), "4 numbers"),
    ],
)
def test_invalid_boxes_raise_input_error(box, problem):
    with pytest.raises(InputError, match=problem) as err:
        validate_box(box, SHAPE, source="case_001.png")
    assert "case_001.png" in str(err.value)
    with pytest.raises(InputError, match=problem):
        expand_box(box, SHAPE)
    with pytest.raises(InputError, match=problem):
        crop_roi(np.zeros(SHAPE), box)


def test_crop_shape_and_content():
    image = np.arange(SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
    patch = crop_roi(image, (100, 150, 300, 190))  # 200 wide, 40 high: 6 px margin per side
    assert patch.shape == (52, 212)
    np.testing.assert_array_equal(patch, image[144:196, 94:306])
    np.testing.assert_array_equal(crop_roi(image, (100, 150, 300, 190), fraction=0), image[150:190, 100:300])


def test_crop_without_box_is_whole_image():
    image = np.random.default_rng(0).random(SHAPE)
    np.testing.assert_array_equal(crop_roi(image), image)
    assert crop_roi(image).shape == SHAPE


def test_box_from_xywh():
    assert box_from_xywh(10, 20, 30, 40) == (10, 20, 40, 60)


def test_box_from_centre_is_centre_plus_minus_radius_then_clamped():
    assert box_from_centre(100, 50, 20) == (80, 30, 120, 70)
    assert validate_box(box_from_centre(10.5, 390, 30), SHAPE) == (0, 360, 41, 400)  # clamped
    for bad in ((10, 10, 0), (10, 10, -3), (float("nan"), 10, 5), (10, 10, float("inf"))):
        with pytest.raises(InputError):
            box_from_centre(*bad)


@pytest.mark.parametrize(
    "text, box",
    [
        ("10,20,110,90", (10, 20, 110, 90)),
        (" 10, 20 , 110 ,90 ", (10, 20, 110, 90)),
        ("10 20 110 90", (10, 20, 110, 90)),
        ("(10.5, 20, 110, 90.25)", (10.5, 20, 110, 90.25)),
    ],
)
def test_parse_box(text, box):
    assert parse_box(text) == box


@pytest.mark.parametrize(
    "text", ["", "10,20,110", "10,20,110,90,5", "a,b,c,d", "10,20,nan,90", "110,20,10,90", "1,2,1,5"]
)
def test_parse_box_rejects(text):
    with pytest.raises(InputError, match="ROI box"):
        parse_box(text)
