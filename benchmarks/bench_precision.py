"""What the fast precision costs in agreement: bf16 vs fp32 P(malignant) on the test split of the
prepared public cohort, and the cohort throughput of the default path on real crops.

The fp32 reference is the checkpoint's own ``predictions.csv`` (``python -m dlum evaluate`` in fp32
reproduces it to ~1e-6) when it holds exactly the split's cases, else it is computed here in fp32.
The comparison is :func:`dlum.reporting.precision_agreement`: largest and median |Δp|, both AUCs
with DeLong's paired test, and the decisions that differ at the checkpoint's threshold.

Runs only where bf16 is the default (a GPU, or a CPU with AMX or AVX512-BF16) unless
``--precision bf16`` forces it: emulated bf16 on other CPUs takes seconds per pair. Needs
``python -m dlum prepare`` first (``cache/public``); without a cohort it says so and skips.

Run:  python -m benchmarks.bench_precision [--device cuda]
Prints a table, writes benchmarks/results/precision[-cuda].json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import device_label, format_table, readme_row, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COHORT = REPO / "cache" / "public" / "cohort.csv"


def _shipped_reference(checkpoint: Path, frame):
    """The checkpoint's fp32 ``predictions.csv`` rows of ``frame``'s cases when it holds them all
    (it may hold other held-out splits too), else None."""
    import pandas as pd

    path = checkpoint / "predictions.csv"
    if not path.is_file():
        return None
    shipped = pd.read_csv(path, dtype={"case_id": str})
    shipped = shipped[shipped["case_id"].isin(set(frame["case_id"]))]
    if sorted(shipped["case_id"]) != sorted(frame["case_id"]) or "p_dlum" not in shipped:
        return None
    return shipped


def main(argv=None) -> int:
    import torch

    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import crops_beside
    from dlum.errors import DLUMError
    from dlum.inference import Predictor
    from dlum.formatting import format_p_value
    from dlum.reporting import precision_agreement
    from dlum.runtime import fast_dtype, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "dlum-public-v2"))
    parser.add_argument("--cohort", default=str(DEFAULT_COHORT),
                        help="cohort table from `python -m dlum prepare` (default cache/public/cohort.csv)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16"),
                        help="auto (run only where bf16 is the default) or bf16 (force it)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    checkpoint, cohort_path = Path(args.checkpoint), Path(args.cohort)

    if args.precision != "bf16" and fast_dtype(device) != torch.bfloat16:
        print(f"bf16 is not the default on {device_label(device)['name']}: nothing to compare "
              "(force it with --precision bf16); skipped")
        return 0
    if not cohort_path.is_file():
        print(f"no prepared cohort at {cohort_path}: run `python -m dlum prepare --out "
              f"{cohort_path.parent}` first; skipped")
        return 0
    try:
        cohort = read_cohort(cohort_path, check_images=False)
        crops, _ = crops_beside(cohort_path, cohort)
        if crops is None:  # no matching crops.npz: crop the image files, checked first
            cohort = read_cohort(cohort_path)
        fast = Predictor(checkpoint, device=device, precision="bf16")
        start = time.perf_counter()
        other = fast.predict_cohort(cohort, split=args.split, batch_size=args.batch_size,
                                    progress=False, crops=crops)
        seconds = time.perf_counter() - start
        reference = _shipped_reference(checkpoint, other)
        source = "the checkpoint's predictions.csv"
        if reference is None:
            source = "computed here"
            reference = Predictor(checkpoint, device=device, precision="fp32").predict_cohort(
                cohort, split=args.split, batch_size=args.batch_size, progress=False, crops=crops)
        agreement = precision_agreement(reference, other, 0.5 if fast.card.threshold is None
                                        else fast.card.threshold)
    except DLUMError as exc:
        print(f"bench_precision: {exc}", file=sys.stderr)
        return 2
    n, a = agreement["n"], agreement
    agree = {"task": f"bf16 vs fp32 P(malignant), {args.split} split, {n} pairs", "reference": source,
             **agreement}
    speed = {"task": f"cohort inference on real crops, bf16, batch {args.batch_size}, {n} pairs",
             "median_s": seconds, "pairs_per_s": n / seconds}
    if args.split == "test" and cohort_path.resolve() == DEFAULT_COHORT.resolve():  # README rows
        p_text = format_p_value(a["delong_p"])
        figure = (f"P(malignant) differs by ≤ {a['max_abs_diff']:.3f} (median {a['median_abs_diff']:.4f}); "
                  f"AUC {a['auc_reference']:.3f} → {a['auc_other']:.3f} (paired DeLong p {p_text}); "
                  f"{a['decisions_differ']} of {n} decisions differ at the threshold {a['threshold']:.3f}")
        if a["decisions_differ"]:
            figure += f", all within {a['flipped_max_distance']:.3f} of it"
        readme_row(agree, f"bf16 vs fp32 probabilities, the {n} test pairs of the public cohort "
                   f"(shipped checkpoint; fp32 from {source})", figure, device=device.type)
        readme_row(speed, f"cohort inference on real crops (bf16, batch {args.batch_size})",
                   f"{n / seconds:,.1f} pairs/s ({n} pairs in {seconds:.0f} s)", device=device.type)
    rows = [agree, speed]
    print(format_table(rows, ["task", "median_s", "pairs_per_s", "max_abs_diff", "decisions_differ"]))
    print(f"fp32 reference: {source}; device: {device_label(device)['name']}")
    name = "precision" if device.type == "cpu" else "precision-cuda"
    print(f"wrote {write_results(name, rows, {'device': device_label(device)})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
