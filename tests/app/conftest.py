"""Fixtures of the dashboard tests: a small DL-UM checkpoint made here, never the shipped one."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

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


@pytest.fixture(scope="session")
def app_checkpoint(tmp_path_factory) -> Path:
    """A random-weight DL-UM saved as a checkpoint folder (safetensors + card)."""
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
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "test-ckpt", model, card)


@pytest.fixture()
def use_checkpoint(app_checkpoint, monkeypatch) -> Path:
    """Point the app at the test checkpoint for one test (``$DLUM_CHECKPOINT``)."""
    monkeypatch.setenv("DLUM_CHECKPOINT", str(app_checkpoint))
    return app_checkpoint


@pytest.fixture()
def no_checkpoint(tmp_path, monkeypatch) -> Path:
    """Point the app at an empty folder: pages must say so, not fail."""
    empty = tmp_path / "no-checkpoint"
    empty.mkdir()
    monkeypatch.setenv("DLUM_CHECKPOINT", str(empty))
    return empty


@pytest.fixture(scope="session")
def predictor(app_checkpoint):
    """The test checkpoint loaded as the app loads it (GPU and its precision when present)."""
    from dlum.inference import Predictor

    return Predictor(app_checkpoint, device="auto", precision="auto")

