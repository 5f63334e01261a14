"""Does stronger mammography augmentation, or more augmented MG views, help the frozen recipe?
TRAINING and VALIDATION splits only.

Usage: python scripts/mg_augmentation.py COHORT_CSV [--us-views N] [--out JSON]

The lever "stronger MG augmentation" of the scarce-mammography recipe (docs/training.md). The
frozen recipe (``dlum.frozen``) fits the MG heads on the 68 training mini-MIAS lesions, each as
the plain crop plus ``views`` - 1 augmented copies (flip, +/-10 degrees, +/-10% scale, 5% shift,
gamma/contrast 0.2). Each variant below keeps everything else of the recipe (the MG start, the
block-5 choice by grouped cross-validation, the penalty search, the US branch, the stacked fusion
on out-of-fold block-5 logits) and changes only the MG views:

* ``recipe``: 4 views, the recipe's augmentation (the shipped setting);
* ``more views``: 16 views, the same augmentation;
* ``strong``: 16 views, any rotation (a mammography patch has no up), +/-20% scale, 10% shift,
  gamma/contrast 0.3.

Reported per variant: the MG block-5 head's grouped 5-fold CV AUC on the 68 training lesions
(grouped by woman), and on the validation split (186 pairs, 8 MG lesions) DL-M's AUC and DL-UM's
AUC and ECE, with the recipe's US branch (``--us-views`` views; it is the same for every variant).
Test and external rows are never read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {  # name: (views, rotate_deg, scale, translate, intensity)
    "recipe": (4, 10.0, 0.1, 0.05, 0.2),
    "more views": (16, 10.0, 0.1, 0.05, 0.2),
    "strong": (16, 180.0, 0.2, 0.1, 0.3),
}


def main(argv=None) -> int:
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from dlum.configs import FROZEN_STARTS
    from dlum.constants import MG, TRAIN, US, VALIDATION
    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import crops_beside
    from dlum.frozen import FrozenConfig, _block_slices, _lesion_table, block_features, fit_probe
    from dlum.networks.dlum import SingleBranch
    from dlum.networks.pretrained import uses_imagenet_normalisation
    from dlum.runtime import describe_device, fast_dtype, resolve_device
    from dlum.stats.calibration import expected_calibration_error
    from dlum.training import Augment, TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort")
    parser.add_argument("--us-views", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/mg_augmentation.json")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    cohort = read_cohort(args.cohort, check_images=False)
    crops, problem = crops_beside(args.cohort, cohort)
    if crops is None:
        raise SystemExit(f"no matching crops.npz beside {args.cohort}: {problem}")
    device = resolve_device("auto")
    dtype = fast_dtype(device, "auto")
    recipe = FrozenConfig()
    split = cohort["split"].to_numpy()
    train, val = np.flatnonzero(split == TRAIN), np.flatnonzero(split == VALIDATION)
    y_val = cohort["label"].to_numpy()[val]

    def branch_fit(modality: str, views: int, augment):
        """The recipe's heads for one branch: block-5 head (ImageNet or identity block 5, as
        grouped CV chooses), its out-of-fold training logits and its validation logits, per
        crop."""
        torch.manual_seed(recipe.seed)
        branch = SingleBranch(modality, pretrained=FROZEN_STARTS[modality]).branch.to(device).eval()
        branch = branch.to(memory_format=torch.channels_last)
        imagenet = uses_imagenet_normalisation(branch.init_source)
        lesions = _lesion_table(cohort, crops, train, modality)
        images = [crops.crops[modality][int(c)] for c in lesions["crop"]]
        on = dict(imagenet=imagenet, size=recipe.input_size, device=device, dtype=dtype,
                  batch_size=recipe.batch_size)
        x = [block_features(branch, images, **on)]
        for v in range(1, views):
            torch.manual_seed(recipe.seed * 1000 + v)  # the recipe's draws
            x.append(block_features(branch, images, augment=augment, **on))
        x = np.concatenate(x)
        n = len(lesions)
        y = np.tile(lesions["label"].to_numpy(), views)
        groups = np.tile(lesions["group"].to_numpy(), views)
        view = np.repeat(np.arange(views), n)
        slices = _block_slices(branch)
        fits = {name: fit_probe(x[:, slices[k]], y, groups, view, c_grid=recipe.c_grid,
                                folds=recipe.folds, seed=recipe.seed)
                for name, k in (("imagenet", -2), ("identity", -1))}
        chosen = "identity" if fits["identity"][0].cv_auc > fits["imagenet"][0].cv_auc else "imagenet"
        head, oof = fits[chosen]
        val_crops = np.unique(crops.index[modality][val])
        xv = block_features(branch, [crops.crops[modality][int(c)] for c in val_crops], **on)
        return {"block5": chosen, "cv_auc": {k: f[0].cv_auc for k, f in fits.items()},
                "oof": pd.Series(oof, index=lesions["crop"].to_numpy()),
                "val": pd.Series(head.logits(xv[:, slices[-1 if chosen == "identity" else -2]]),
                                 index=val_crops)}

    def per_row(series: pd.Series, rows, modality: str) -> np.ndarray:
        return series.loc[crops.index[modality][rows]].to_numpy()

    def augment_of(rotate, scale, translate, intensity):
        return Augment(TrainConfig(rotate_deg=rotate, scale=scale, translate=translate,
                                   intensity=intensity))

    t0 = time.perf_counter()
    us = branch_fit(US, args.us_views, augment_of(recipe.rotate_deg, recipe.scale,
                                                  recipe.translate, recipe.intensity))
    us_seconds = time.perf_counter() - t0
    u_val = per_row(us["val"], val, US)
    results = {}
    for name, (views, *aug) in VARIANTS.items():
        t0 = time.perf_counter()
        mg = branch_fit(MG, views, augment_of(*aug))
        pairs = np.column_stack([per_row(us["oof"], train, US), per_row(mg["oof"], train, MG)])
        stack = LogisticRegression(C=1.0, max_iter=5000).fit(pairs, cohort["label"].to_numpy()[train])
        m_val = per_row(mg["val"], val, MG)
        p_val = stack.predict_proba(np.column_stack([u_val, m_val]))[:, 1]
        results[name] = {
            "views": views, "rotate_deg": aug[0], "scale": aug[1], "translate": aug[2],
            "intensity": aug[3], "mg_block5": mg["block5"], "mg_cv_auc": mg["cv_auc"],
            "validation": {"dl_m_auc": float(roc_auc_score(y_val, m_val)),
                           "dl_um_auc": float(roc_auc_score(y_val, p_val)),
                           "dl_um_ece": float(expected_calibration_error(y_val, p_val))},
            "fusion": [float(v) for v in (*stack.coef_[0], stack.intercept_[0])],
            "seconds": time.perf_counter() - t0}
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    mg_lesions = len(np.unique(crops.index[MG][val]))
    lines = [f"| MG views (US views = {args.us_views}) | MG block-5 grouped CV AUC (68 lesions) "
             f"| validation DL-M AUC ({len(val)} pairs, {mg_lesions} MG lesions) | DL-UM AUC "
             f"| DL-UM ECE |", "|---|---|---|---|---|"]
    for name, r in results.items():
        cv = r["mg_cv_auc"][r["mg_block5"]]
        lines.append(f"| {name}: {r['views']} views, ±{r['rotate_deg']:g}°, scale ±{r['scale']:g}, "
                     f"shift {r['translate']:g}, intensity {r['intensity']:g} | {cv:.3f} "
                     f"({r['mg_block5']}) | {r['validation']['dl_m_auc']:.3f} | "
                     f"{r['validation']['dl_um_auc']:.3f} | {r['validation']['dl_um_ece']:.3f} |")
    print("\n".join(lines))
    out = {"us": {"views": args.us_views, "block5": us["block5"], "cv_auc": us["cv_auc"],
                  "validation_auc": float(roc_auc_score(y_val, u_val)), "seconds": us_seconds},
           "variants": results, "device": describe_device(device),
           "precision": str(dtype).removeprefix("torch."), "torch": torch.__version__,
           "seconds": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
