"""Damaged copies of a checkpoint, for the tests that check they are refused."""
from __future__ import annotations

import shutil
from pathlib import Path


def copy_with_nan_weights(source: Path, target: Path, branch: str = "us") -> Path:
    """Copy the checkpoint folder ``source`` to ``target`` with the last weight matrix of
    ``branch`` (its block-5 head) set to NaN: that branch's output becomes NaN."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(weights))
    # the branch's last stored weight matrix: its block-5 head (all that a frozen-backbone
    # checkpoint stores) or, in a full checkpoint, the same
    name = [k for k in state if k.startswith(branch) and k.endswith("weight") and state[k].ndim >= 2][-1]
    state[name] = state[name] * float("nan")
    save_file(state, str(weights), metadata=meta)
    return target
