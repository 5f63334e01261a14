"""TTA intervals of DL-UM for one split of a prepared cohort: the checkpoint's ``uncertainty.csv``.

Usage: python scripts/tta_cohort.py COHORT_CSV [--checkpoint DIR] [--split test] [--seed 0]
                                    [--views N] [--level 1] [--out CSV] [--force]

Reads the cohort's crops (``crops.npz`` beside the table, from ``python -m dlum prepare``), and
computes each pair's test-time-augmentation interval of P(malignant) in batches
(:func:`dlum.uncertainty.cohort_uncertainty`; the views are drawn once from the seed, the same for
every case). Writes DL-UM's (``p_dlum``) intervals as ``case_id, split, estimate, low, high,
uncertain`` (uncertain: the interval straddles the card's operating threshold) plus the settings
(level, views, seed, precision), by default to ``<checkpoint>/uncertainty.csv``, where the Cohort
ROC page finds it. The 375 test pairs of the public cohort take about 10–20 minutes on the
project's 2-core CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import crops_beside
    from dlum.errors import DLUMError
    from dlum.inference import Predictor
    from dlum.uncertainty import DEFAULT_LEVEL, DEFAULT_VIEWS, cohort_uncertainty
    from dlum.uncertainty_tables import UNCERTAINTY_FILE, write_uncertainty

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", help="cohort table of a prepared cohort (crops.npz beside it)")
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=DEFAULT_VIEWS)
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                        help="share of the views' P the interval spans (default 1: their range)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--cases-per-batch", type=int, default=2)
    parser.add_argument("--out", default=None, help=f"default: <checkpoint>/{UNCERTAINTY_FILE}")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path(args.checkpoint) / UNCERTAINTY_FILE
    try:
        if out.exists() and not args.force:
            raise DLUMError(f"{out} exists; pass --force to replace it")
        cohort = read_cohort(args.cohort, check_images=False)
        crops, problem = crops_beside(args.cohort, cohort)
        if crops is None:
            raise DLUMError(f"no matching crops.npz beside {args.cohort}"
                            + (f": {problem}" if problem else " (run python -m dlum prepare)"))
        predictor = Predictor(args.checkpoint, precision=args.precision)
        card = predictor.card
        thresholds = dict(card.operating_point.thresholds) if card.operating_point else {}
        start = time.perf_counter()
        table = cohort_uncertainty(predictor, cohort, crops, split=args.split,
                                   thresholds=thresholds, seed=args.seed, views=args.views,
                                   level=args.level, cases_per_batch=args.cases_per_batch)
        seconds = time.perf_counter() - start
        fused = table[table["output"] == "p_dlum"].reset_index(drop=True)
        write_uncertainty(fused, out)
    except DLUMError as err:
        print(f"tta_cohort: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(fused)} intervals to {out} in {seconds:.0f} s "
          f"({seconds / max(len(fused), 1):.2f} s per case, {table['precision'].iloc[0]}); "
          f"{int(fused['uncertain'].sum())} uncertain at the threshold "
          f"{thresholds.get('p_dlum', float('nan')):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
