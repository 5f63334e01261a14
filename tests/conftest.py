"""Shared fixtures: where the public data lives (skip when it is absent)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """The public data folder: $DLUM_DATA_DIR, else ../shared/data beside the repository."""
    env = os.environ.get("DLUM_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [REPO_ROOT.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = find_shared_data()
    if path is None:
        pytest.skip("public data (../shared/data or $DLUM_DATA_DIR) is not present")
    return path
