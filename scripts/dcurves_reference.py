"""Write the decision-curve reference values the tests compare ``dlum.stats.net_benefit`` with.

The reference is the ``dcurves`` package (Python port of Vickers' R/Stata ``dca``; version
recorded in the output) run on the shipped checkpoint's public test predictions. dcurves needs
lifelines, which requires pandas < 3, while dlum pins pandas 3: so dcurves is not a dlum
dependency, and this script runs once in its own environment::

    python -m venv /tmp/dca && /tmp/dca/bin/pip install dcurves==1.1.7
    /tmp/dca/bin/python scripts/dcurves_reference.py      # from the repository root

It writes ``tests/stats/data/dcurves_reference.csv`` (every value with 17 significant digits)
and ``tests/stats/data/dcurves_reference.json`` (versions, the grid's rule, the source file's
SHA-256, so the test can tell when the predictions changed under it).
"""
from __future__ import annotations

import hashlib
import json
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "checkpoints" / "dlum-public-v2" / "predictions.csv"
OUT = ROOT / "tests" / "stats" / "data" / "dcurves_reference"
MODELS = ("p_dlum", "p_dlu", "p_dlm")


def grid(frame: pd.DataFrame) -> np.ndarray:
    """0.01..0.99 plus thresholds equal to a probability (P >= pt is biopsied in dlum and dcurves
    alike, so ties must agree too): rows 3 and 50 of each model."""
    ties = [frame[c].iloc[i] for c in MODELS for i in (3, 50)]
    return np.unique(np.concatenate([np.round(np.arange(1, 100) * 0.01, 2), ties]))


def main() -> int:
    from dcurves import dca

    frame = pd.read_csv(SOURCE)
    frame = frame[frame["split"] == "test"].reset_index(drop=True)
    thresholds = grid(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dcurves' own pandas warnings
        ref = dca(data=frame[["label", *MODELS]], outcome="label", modelnames=list(MODELS),
                  thresholds=list(thresholds), nper=100)
    keep = ["model", "threshold", "net_benefit", "tp_rate", "fp_rate", "net_intervention_avoided"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    ref[keep].to_csv(OUT.with_suffix(".csv"), index=False, float_format="%.17g")
    info = {"dcurves": metadata.version("dcurves"), "pandas": pd.__version__,
            "python": sys.version.split()[0], "source": str(SOURCE.relative_to(ROOT)),
            "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
            "rows": "split == 'test'", "models": list(MODELS), "nper": 100,
            "thresholds": "0.01..0.99 by 0.01 plus the probabilities of rows 3 and 50 of each model"}
    OUT.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {OUT.with_suffix('.csv')} ({len(ref)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
