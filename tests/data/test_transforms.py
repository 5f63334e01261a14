"""dlum.data.transforms: DL-UM pre-processing to a (3, 224, 224) tensor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlum.constants import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE
from dlum.data.roi import crop_roi
from dlum.data.transforms import preprocess, resize, to_network_input, to_unit_range
from dlum.errors import InputError


def test_to_unit_range():
    a = np.array([[-50.0, 0.0], [150.0, 50.0]])
    out = to_unit_range(a)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.25], [1.0, 0.5]])


@pytest.mark.parametrize("value", [0.0, 7.0, -3.5, 65535.0])
def test_to_unit_range_constant_image_is_zeros(value):
    out = to_unit_range(np.full((5, 6), value))
    assert out.dtype == np.float32 and out.shape == (5, 6)
    assert not np.isnan(out).any() and (out == 0).all()


def test_resize_numpy_and_tensor():
    a = np.random.default_rng(0).random((60, 90)).astype(np.float32)
    out = resize(a, 30)
    assert isinstance(out, np.ndarray) and out.shape == (30, 30) and out.dtype == np.float32
    assert resize(a, (20, 45)).shape == (20, 45)
    t = resize(torch.from_numpy(a).expand(3, -1, -1), (24, 24))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 24, 24)
    np.testing.assert_array_equal(resize(a, (60, 90)), a)  # same size: unchanged


def test_resize_antialiases_when_shrinking():
    # a one-pixel checkerboard averages to grey when shrunk with anti-aliasing (no aliasing)
    board = (np.indices((224, 224)).sum(0) % 2).astype(np.float32)
    small = resize(board, 28)
    assert np.abs(small - 0.5).max() < 0.05
    # bilinear weights are non-negative: values stay within the input's range
    ramp = np.linspace(0, 1, 37 * 53, dtype=np.float32).reshape(37, 53)
    up = resize(ramp, 224)
    assert up.min() >= -1e-6 and up.max() <= 1 + 1e-6


def test_to_network_input_shape_dtype_range():
    patch = np.random.default_rng(1).random((37, 81)) * 4000 + 100
    x = to_network_input(patch)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert x.shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert x.min().item() == 0.0 and x.max().item() == 1.0  # min-max after resizing: exact
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # grey replicated


def test_to_network_input_imagenet_normalisation():
    patch = np.random.default_rng(2).random((50, 40))
    plain = to_network_input(patch, size=32)
    norm = to_network_input(patch, size=32, imagenet=True)
    for c in range(3):
        np.testing.assert_allclose(norm[c], (plain[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rtol=1e-5, atol=1e-6)
    # where the patch is white (1.0) each channel holds (1 - mean) / std
    idx = torch.nonzero(plain[0] == 1.0)[0]
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    np.testing.assert_allclose(norm[:, idx[0], idx[1]], expected, rtol=1e-5)


def test_to_network_input_constant_patch_is_zeros():
    x = to_network_input(np.full((20, 30), 123.0), size=16)
    assert x.shape == (3, 16, 16) and not torch.isnan(x).any() and (x == 0).all()


@pytest.mark.parametrize("patch", [np.zeros((0, 5)), np.zeros((4, 5, 3)), np.zeros(7)])
def test_to_network_input_rejects_non_2d_or_empty(patch):
    with pytest.raises(InputError):
        to_network_input(patch)


def test_to_network_input_rejects_nan():
    patch = np.ones((10, 10))
    patch[2, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_network_input(patch)


def test_preprocess_equals_crop_then_network_input():
    image = np.random.default_rng(3).random((300, 400)).astype(np.float32) * 255
    box = (120, 80, 220, 140)
    x = preprocess(image, box, size=64)
    assert x.shape == (3, 64, 64)
    torch.testing.assert_close(x, to_network_input(crop_roi(image, box), size=64))
    # the lesion region matters: a different box gives a different input
    assert not torch.allclose(x, preprocess(image, (10, 10, 110, 70), size=64))


def test_preprocess_whole_image_and_imagenet():
    image = np.tile(np.linspace(0, 1000, 50, dtype=np.float32), (30, 1))
    x = preprocess(image, size=INPUT_SIZE, imagenet=True)
    assert x.shape == (3, INPUT_SIZE, INPUT_SIZE)
    # left-to-right ramp kept: darkest at the left edge, brightest at the right
    assert x[0, :, 0].mean() < x[0, :, -1].mean()
    np.testing.assert_allclose(x[:, 0, 0], [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)], rtol=1e-5)


def test_preprocess_invalid_box_and_image():
    with pytest.raises(InputError, match="case.png"):
        preprocess(np.zeros((50, 50)), (60, 60, 80, 80), source="case.png")
    with pytest.raises(InputError, match="2-D"):
        preprocess(np.zeros((50, 50, 3)))


def test_to_unit_range_rounding_noise_is_constant_but_real_contrast_kept():
    flat = np.float32(123.0) + np.array([0, 1, 2, 3], np.float32) * np.spacing(np.float32(123.0))
    assert (to_unit_range(flat) == 0).all()
    one_level = np.array([65534.0, 65535.0], np.float32)  # one 16-bit level is real contrast
    np.testing.assert_array_equal(to_unit_range(one_level), [0.0, 1.0])
    tiny = np.array([0.0, 1e-12], np.float32)  # small values are not small contrast
    np.testing.assert_array_equal(to_unit_range(tiny), [0.0, 1.0])
