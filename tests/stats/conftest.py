"""Fixtures for the statistics tests: the R reference values (skip when they are absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT / ".." / "shared" / "reference" / "stats"


@pytest.fixture(scope="session")
def stats_reference() -> dict:
    """reference.json (values computed in R with pROC, irr, vcd, psych) plus its data sets as frames."""
    path = REFERENCE_DIR / "reference.json"
    if not path.is_file():
        pytest.skip("R reference values (../shared/reference/stats) are not present")
    ref = json.loads(path.read_text(encoding="utf-8"))
    frames = {name: pd.read_csv(REFERENCE_DIR / ds["csv"]) for name, ds in ref["datasets"].items()}
    return {"json": ref, "frames": frames}


MRMC_REFERENCE_DIR = REPO_ROOT / ".." / "shared" / "reference" / "mrmc"


@pytest.fixture(scope="session")
def mrmc_reference() -> dict:
    """vandyke_reference.json (MRMCaov 0.3.0 in R) and the VanDyke reads it was computed from."""
    path = MRMC_REFERENCE_DIR / "vandyke_reference.json"
    if not path.is_file():
        pytest.skip("MRMC reference values (../shared/reference/mrmc) are not present")
    ref = json.loads(path.read_text(encoding="utf-8"))
    return {"json": ref, "frame": pd.read_csv(MRMC_REFERENCE_DIR / "vandyke.csv")}
