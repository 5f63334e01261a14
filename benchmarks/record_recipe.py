"""Keep a training run's wall time as a README speed row (``benchmarks/recorded/``).

A full run of the frozen-stacked recipe takes longer than ``python -m benchmarks`` may, so its time
is measured by the run itself (``training.seconds_total`` in the card written by
``python -m dlum train --recipe frozen-stacked``) and recorded here with this machine's
description.

Usage: python -m benchmarks.record_recipe CHECKPOINT_DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_info, readme_row  # noqa: E402
from benchmarks.readme import RECORDED_DIR  # noqa: E402

#: The issue's budget for the shipped recipe on a 2-core CPU, all three models.
TARGET_S = 3600.0


def recipe_row(card) -> dict:
    """The README row of a frozen-stacked run, from its card."""
    training = card.training
    seconds = float(training["seconds_total"])
    fit = training.get("fit", {})
    lesions = ", ".join(f"{fit[m]['lesions']} {m.upper()}" for m in ("us", "mg") if m in fit)
    row = {"name": "frozen-stacked recipe, end to end", "median_s": seconds, "samples": 1}
    return readme_row(
        row,
        f"train DL-UM, DL-U and DL-M end to end with the shipped frozen-stacked recipe "
        f"({training.get('views', '?')} views of {lesions} training lesions, heads, stacked fusion, "
        f"held-out predictions; `python -m dlum train --recipe frozen-stacked`)",
        f"{seconds / 60:.1f} min", target_s=TARGET_S)


def main(argv=None) -> int:
    from dlum.card import read_card

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    args = parser.parse_args(argv)
    card = read_card(args.checkpoint)
    payload = {"benchmark": "training-recipe", "machine": machine_info(), "rows": [recipe_row(card)]}
    RECORDED_DIR.mkdir(parents=True, exist_ok=True)
    path = RECORDED_DIR / "training-recipe.json"
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
