import numpy as np
import pytest
import torch

from dlum.networks import DLUM
from dlum.visualize.cam import CAM_METHODS, _BranchLogit, compute_cams, overlay


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DLUM(pretrained=False).eval()


@pytest.fixture(scope="module")
def pair():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_ten_maps_in_unit_range_and_shared_model_untouched(model, pair):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = compute_cams(model, *pair)
    assert set(result.maps) == {"us", "mg"}
    for maps in result.maps.values():
        assert maps.shape == (5, 64, 64)
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert not np.allclose(result.maps["us"][0], result.maps["us"][4])
    assert _hooks(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_block_map_matches_grad_cam_called_directly(model, pair):
    """Our per-layer maps are grad-cam's own map for that one layer."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    us, mg = pair
    ours = compute_cams(model, us, mg, target="branch").maps["us"]
    wrapper = _BranchLogit(model, "us", None, "branch")
    for k in (2, 5):
        with GradCAM(model=wrapper, target_layers=[model.us_branch.cam_layer(k)]) as cam:
            theirs = cam(input_tensor=us.clone().requires_grad_(True),
                         targets=[BinaryClassifierOutputTarget(1)])[0]
        np.testing.assert_allclose(ours[k - 1], theirs, atol=1e-5)


def test_fused_target_depends_on_the_other_modality(model, pair):
    us, mg = pair
    a = compute_cams(model, us, mg).maps["us"]
    b = compute_cams(model, us, torch.flip(mg, dims=[3]) * 0.3).maps["us"]
    assert not np.allclose(a, b)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_every_offered_method_runs_on_one_modality(model, pair, method):
    result = compute_cams(model, None, pair[1], method=method)
    assert set(result.maps) == {"mg"} and result.maps["mg"].shape == (5, 64, 64)
    assert result.notes  # says the maps explain the branch's own output


def test_unknown_method_is_refused(model, pair):
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(model, *pair, method="Magic-CAM")


def test_overlay_is_rgb_uint8():
    image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    cam = np.zeros((64, 64), np.float32)
    cam[20:40, 20:40] = 1
    out = overlay(image, cam, opacity=0.6)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[30, 30], out[5, 5])


def test_only_methods_with_bounded_memory_are_offered(capsys):
    """Eigen-CAM's full SVD of block 1 at 224² needs ~19 GiB: it is not offered anywhere."""
    from dlum import cli

    assert "Eigen-CAM" not in CAM_METHODS and "Grad-CAM" in CAM_METHODS
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--checkpoint", "x", "--us", "a.png", "--cam-method", "Eigen-CAM"])
    assert info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(None, method="Eigen-CAM")
