"""Fixtures of the dashboard tests: a small DL-UM checkpoint made here, never the shipped one."""
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


@pytest.fixture(scope="session")
def app_checkpoint(tmp_path_factory) -> Path:
    """A random-weight DL-UM saved as a checkpoint folder (safetensors + card)."""
    return write_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "test-ckpt")


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

