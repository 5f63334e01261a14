"""Damaged copies of a checkpoint, for the tests that check they are refused."""
from __future__ import annotations

import shutil
from pathlib import Path


def copy_with_nan_weights(source: Path, target: Path, branch: str = "us") -> Path:
    """Copy the checkpoint folder ``source`` to ``target`` with one convolution of ``branch``
    set to NaN: every output through that branch becomes NaN."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata()
    state = load_file(str(weights))
    name = next(k for k in state if k.startswith(branch) and k.endswith("weight") and state[k].ndim == 4)
    state[name] = state[name] * float("nan")
    save_file(state, str(weights), metadata=meta)
    return target
