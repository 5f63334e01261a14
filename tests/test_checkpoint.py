import json

import pytest
import torch

from dlum.checkpoint import load_checkpoint, read_card, save_checkpoint
from dlum.errors import CheckpointError
from dlum.networks import DLUM, SingleBranch


def _card(model):
    return {"name": "t", "model": model.config(), "arch": model.arch}


@pytest.mark.parametrize("share", [False, True])
def test_round_trip_gives_identical_outputs(tmp_path, share):
    torch.manual_seed(0)
    model = DLUM(pretrained=False, share_backbone=share).eval()
    save_checkpoint(tmp_path, model, _card(model))
    loaded, card = load_checkpoint(tmp_path)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a, b = model(x, y), loaded(x, y)
    assert torch.equal(a.fused, b.fused)
    assert card.name == "t" and card.arch == "dlum"
    assert loaded.share_backbone is share


def test_fp16_storage_is_half_the_size_and_close(tmp_path):
    model = SingleBranch("us", pretrained=False).eval()
    save_checkpoint(tmp_path / "32", model, _card(model))
    save_checkpoint(tmp_path / "16", model, _card(model), dtype=torch.float16)
    size32 = (tmp_path / "32" / "model.safetensors").stat().st_size
    size16 = (tmp_path / "16" / "model.safetensors").stat().st_size
    assert size16 < 0.55 * size32
    m16, _ = load_checkpoint(tmp_path / "16")
    assert next(m16.parameters()).dtype == torch.float32


def test_bad_checkpoints_give_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    tmp_path.joinpath("card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="JSON"):
        read_card(tmp_path)
    tmp_path.joinpath("card.json").write_text(json.dumps({"model": {}, "arch": "vgg"}))
    with pytest.raises(CheckpointError, match="arch: 'vgg' is not one of dlum, dlu, dlm"):
        load_checkpoint(tmp_path)
    model = SingleBranch("mg", pretrained=False)
    tmp_path.joinpath("card.json").write_text(json.dumps(_card(model)))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_checkpoint(tmp_path)
    # a pickle (what torch.save writes) is refused, never unpickled
    torch.save(model.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path)
    # weights of another model
    other = DLUM(pretrained=False)
    save_checkpoint(tmp_path / "other", other, _card(other))
    (tmp_path / "other" / "card.json").write_text(json.dumps(_card(model)))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "other")
