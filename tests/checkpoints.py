"""The small random-weight checkpoint the tests use, and damaged copies of a checkpoint for the
tests that check they are refused."""
from __future__ import annotations

import shutil
from pathlib import Path

#: Input side of the test checkpoint: small, so that CPU tests stay fast.
TEST_INPUT_SIZE = 64

#: The test checkpoint's thresholds (each output its own) and DL-UM's test figures.
TEST_THRESHOLDS = {"p_dlum": 0.5, "p_us_head": 0.45, "p_mg_head": 0.55}
TEST_OPERATING_POINT = {"thresholds_per_model": dict(TEST_THRESHOLDS), "chosen_on": "validation",
                        "rule": "test fixture", "min_sensitivity": 0.9}
TEST_METRICS = {"test": {"all": {
    "n": 40, "malignant": 16, "benign": 24,
    "p_dlum": {"auc": 0.5, "auc_ci": [0.3, 0.7], "sensitivity": 0.875,
               "sensitivity_ci": [0.64, 0.97], "specificity": 0.75, "specificity_ci": [0.55, 0.88]},
    "p_us_head": {"auc": 0.5, "auc_ci": None, "sensitivity": 0.5, "sensitivity_ci": None,
                  "specificity": 0.5, "specificity_ci": None},
}}}


def write_test_checkpoint(folder: Path) -> Path:
    """A random-weight DL-UM (input 64 px, the thresholds above) saved as a checkpoint folder."""
    import torch

    from dlum.checkpoint import save_checkpoint
    from dlum.networks import DLUM

    torch.manual_seed(0)
    model = DLUM(pretrained=False).eval()
    card = {
        "name": "test-ckpt",
        "model": model.config(),
        "arch": "dlum",
        "input": {"size": TEST_INPUT_SIZE, "imagenet_normalisation": False},
        "operating_point": dict(TEST_OPERATING_POINT),
        "data": {"pairing": "pseudo", "note": "random weights made by the tests"},
        "pairing_rule": "test fixture: no data",
        "metrics": TEST_METRICS,
    }
    return save_checkpoint(folder, model, card)



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
