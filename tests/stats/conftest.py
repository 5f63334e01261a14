"""Fixtures for the statistics tests: the R reference values (skip when they are absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_ROOT = REPO_ROOT / ".." / "shared" / "reference"


def _reference(folder: str, name: str) -> tuple[Path, dict]:
    """``(folder path, parsed JSON)`` of a reference set; the test is skipped when it is absent."""
    directory = REFERENCE_ROOT / folder
    path = directory / name
    if not path.is_file():
        pytest.skip(f"reference values (../shared/reference/{folder}) are not present")
    return directory, json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def stats_reference() -> dict:
    """reference.json (values computed in R with pROC, irr, vcd, psych) plus its data sets as frames."""
    directory, ref = _reference("stats", "reference.json")
    frames = {name: pd.read_csv(directory / ds["csv"]) for name, ds in ref["datasets"].items()}
    return {"json": ref, "frames": frames}


@pytest.fixture(scope="session")
def mrmc_reference() -> dict:
    """vandyke_reference.json (MRMCaov 0.3.0 in R) and the VanDyke reads it was computed from."""
    directory, ref = _reference("mrmc", "vandyke_reference.json")
    return {"json": ref, "frame": pd.read_csv(directory / "vandyke.csv")}
