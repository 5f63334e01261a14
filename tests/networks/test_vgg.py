from __future__ import annotations

import pytest
import torch
from torch import nn

from dlum.constants import VGG19_BLOCKS, VGG_FILTERS
from dlum.networks import VGGBranch


@pytest.fixture(scope="module")
def branch() -> VGGBranch:
    torch.manual_seed(0)
    return VGGBranch().eval()


def test_layout_follows_vgg19(branch):
    assert [len(b.convs) for b in branch.blocks] == list(VGG19_BLOCKS)
    assert [b.convs[-1].out_channels for b in branch.blocks] == list(VGG_FILTERS)
    for block in branch.blocks:
        assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in block.convs)
        assert len(block.relus) == len(block.convs) - 1
        assert isinstance(block.bn, nn.BatchNorm2d)
        assert block.bn.num_features == block.convs[-1].out_channels
        # no in-place activations: grad-cam needs to hook them
        assert not any(m.inplace for m in block.modules() if isinstance(m, nn.ReLU))
    assert [h[0].in_features for h in branch.heads] == list(VGG_FILTERS)
    assert all(h[0].out_features == 64 and h[-1].out_features == 1 for h in branch.heads)


def test_forward_shapes_and_pooling(branch):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        acts = branch.forward_features(x)
        logits, features = branch(x)
    # pooling after blocks 1-4 only
    assert [a.shape[-1] for a in acts] == [32, 16, 8, 4, 2]
    assert [a.shape[1] for a in acts] == list(VGG_FILTERS)
    assert len(logits) == 5 and all(t.shape == (2,) and t.dtype == torch.float32 for t in logits)
    assert features.shape == (2, 512)
    torch.testing.assert_close(features, acts[-1].mean(dim=(2, 3)))
    # each head reads its own block
    for k in range(5):
        torch.testing.assert_close(logits[k], branch.heads[k](acts[k].mean(dim=(2, 3))))


def test_block_is_conv_relu_then_conv_bn_relu(branch):
    block = branch.blocks[2]
    x = torch.randn(1, 128, 8, 8)
    with torch.no_grad():
        y = x
        for conv in block.convs[:-1]:
            y = torch.relu(conv(y))
        expected = torch.relu(block.bn(block.convs[-1](y)))
        torch.testing.assert_close(block(x), expected)


def test_cam_layer_is_last_relu_of_block(branch):
    x = torch.randn(1, 3, 32, 32)
    captured = {}
    hooks = [
        branch.cam_layer(k).register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o))
        for k in range(1, 6)
    ]
    try:
        with torch.no_grad():
            acts = branch.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    for k in range(1, 6):
        assert branch.cam_layer(k) is branch.blocks[k - 1].act
        torch.testing.assert_close(captured[k], acts[k - 1])
    assert branch.cam_layers() == [branch.cam_layer(k) for k in range(1, 6)]
    for bad in (0, 6):
        with pytest.raises(ValueError):
            branch.cam_layer(bad)


def test_random_init_source():
    assert VGGBranch().init_source == "random"
