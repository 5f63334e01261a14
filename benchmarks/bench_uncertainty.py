"""Benchmark of the per-case uncertainty: what a test-time-augmentation range costs on top of
one prediction (``dlum.uncertainty.case_uncertainty`` after ``Predictor.predict_pair``), warm, with
the shipped checkpoint in the default precision (bf16 where the CPU computes it natively, else
fp32), for several view counts; and whether the same seed gives the same range (the default level:
the lowest to the highest P over the plain view and the augmented views).

Case Review computes the range after the main result, so the extra wait is the whole
``case_uncertainty`` call (its views, plus the un-augmented view, in one batched forward); the
target of the uncertainty issue is 1.5 s on the project's CPU.

The pair is the shipped example (``examples/phantom-12-*.png`` with their boxes).

Run:  python -m benchmarks.bench_uncertainty [--checkpoint DIR] [--repeats N]
Prints a table, writes benchmarks/results/uncertainty.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import device_label, format_table, readme_row, timeit, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
#: Acceptance target of the uncertainty issue: extra seconds per case on the project's CPU.
TARGET_EXTRA_S = 1.5
EXAMPLE = {"us": REPO / "examples" / "phantom-12-us.png", "mg": REPO / "examples" / "phantom-12-mg.png",
           "us_box": (98, 45, 192, 179), "mg_box": (49, 88, 141, 186)}


def _row(task: str, t: dict, **extra) -> dict:
    return {"task": task, "median_s": t["median"], "iqr_s": t["iqr"], "min_s": t["min"], **extra}


def main(argv=None) -> int:
    import torch

    from dlum.data.io import read_image
    from dlum.inference import Predictor
    from dlum.runtime import cpu_bf16_kind
    from dlum.uncertainty import DEFAULT_VIEWS, case_uncertainty

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--views", type=int, nargs="*", default=None,
                        help="view counts to time (default: 2, 4, the default and 8)")
    args = parser.parse_args(argv)
    predictor = Predictor(args.checkpoint, device="cpu")
    precision = "bf16" if predictor.dtype == torch.bfloat16 else "fp32"
    us, mg = read_image(EXAMPLE["us"]), read_image(EXAMPLE["mg"])
    boxes = {"us_box": EXAMPLE["us_box"], "mg_box": EXAMPLE["mg_box"]}
    thresholds = predictor.card.operating_point.thresholds if predictor.card.operating_point else {}
    pair = timeit(lambda: predictor.predict_pair(us=us, mg=mg, **boxes), args.repeats, warmup=2)
    rows = [_row(f"one pair → probabilities ({precision}), for reference", pair)]
    counts = sorted(set(args.views or [2, 4, DEFAULT_VIEWS, 8]))
    for views in counts:
        def tta(views=views):
            return case_uncertainty(predictor, us, mg, thresholds=thresholds, seed=0, views=views,
                                    **boxes)

        t = timeit(tta, args.repeats, warmup=1)
        first, again = tta(), tta()
        fused = first["p_dlum"]
        row = _row(f"TTA range, {views} views + the plain one ({precision})", t,
                   views=views, per_view_s=t["median"] / (views + 1),
                   over_pair_s=t["median"] - pair["median"],
                   p_dlum=round(fused.estimate, 4), low=round(fused.low, 4),
                   high=round(fused.high, 4), uncertain=fused.uncertain,
                   reproducible=first == again)
        if views == DEFAULT_VIEWS:
            why = f", {cpu_bf16_kind()} on this CPU" if precision == "bf16" else ""
            readme_row(row, f"per-case uncertainty: TTA range of a pair after its prediction "
                       f"(lowest to highest P over the default {views} augmented views + the "
                       f"plain one, one batched forward), extra wait, default {precision}{why}; "
                       f"same seed, same range: "
                       f"{'yes' if first == again else 'NO'}",
                       target_s=TARGET_EXTRA_S)
        rows.append(row)
    print(format_table(rows, ["task", "median_s", "iqr_s", "min_s", "per_view_s", "reproducible"]))
    print(f"threads: {torch.get_num_threads()}; device: {device_label(predictor.device)['name']}")
    print(f"wrote {write_results('uncertainty', rows, {'device': device_label(predictor.device)})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
