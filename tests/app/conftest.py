"""Fixtures of the dashboard tests: a small DL-UM checkpoint and a lesion finder made here,
never the shipped ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.checkpoints import (  # noqa: F401  (re-exported for the page tests)
    TEST_INPUT_SIZE,
    TEST_METRICS,
    TEST_OPERATING_POINT,
    TEST_THRESHOLDS,
    write_test_checkpoint,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_page(at):
    """Run (or rerun) an AppTest; fail on any exception the page shows."""
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture(scope="session")
def app_checkpoint(tmp_path_factory) -> Path:
    """A random-weight DL-UM saved as a checkpoint folder (safetensors + card)."""
    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "test-ckpt")


def write_test_finder(folder: Path, *, level: float = 0.3, cut: float = 0.05,
                      gain: float = 60.0) -> Path:
    """A lesion finder checkpoint that marks *dark* regions: not a trained finder, but one whose
    boxes follow the image (hypoechoic blobs), so that the dashboard tests get real suggestions
    through ``load_finder`` and ``find``.

    An untrained finder (random VGG16 encoder) with its stem and decoder set by hand: the stem's
    first channel is ``relu(level - brightness)``, each later 3x3 convolution averages that one
    channel (BatchNorm as identity), and the head gives ``gain * (darkness - cut)``; every other
    weight is zero.
    """
    import torch

    from dlum.localize import new_finder, save_finder

    finder = new_finder(pretrained=False, input_size=64)
    net = finder.model
    state = net.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key.startswith("encoder.") or not value.is_floating_point():
                continue
            if key.endswith("running_var") or (key.endswith(".weight") and value.ndim == 1):
                value.fill_(1.0)  # BatchNorm: identity
            else:
                value.zero_()
        mean = torch.tensor([0.485, 0.456, 0.406])
        std = torch.tensor([0.229, 0.224, 0.225])
        # input channel c is (v - mean_c) / std_c: this sum is -(v - mean(mean)) = -v + …
        state["stem.0.weight"][0, :, 1, 1] = -std / 3
        state["stem.0.bias"][0] = level - float(mean.mean())
        state["stem.2.weight"][0, 0] = 1 / 9
        state["up2.0.weight"][0, net.widths[1]] = 1 / 9  # the stem's channels follow up4's
        state["up2.3.weight"][0, 0] = 1 / 9
        state["head.weight"][0, 0] = gain
        state["head.bias"][0] = -gain * cut
    net.load_state_dict(state)
    return save_finder(finder, folder, {"name": "test-dark-blob-finder"})


@pytest.fixture(scope="session")
def app_finder(tmp_path_factory) -> Path:
    """A lesion finder checkpoint that boxes dark blobs (:func:`write_test_finder`)."""
    return write_test_finder(tmp_path_factory.mktemp("finder") / "test-finder")


@pytest.fixture()
def use_finder(app_finder, monkeypatch) -> Path:
    """Point the app at the test lesion finder for one test (``$DLUM_FINDER``)."""
    monkeypatch.setenv("DLUM_FINDER", str(app_finder))
    return app_finder


@pytest.fixture()
def use_checkpoint(app_checkpoint, use_finder, monkeypatch) -> Path:
    """Point the app at the test checkpoint (``$DLUM_CHECKPOINT``) and the test lesion finder
    (``$DLUM_FINDER``) for one test, never at the shipped ones."""
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

