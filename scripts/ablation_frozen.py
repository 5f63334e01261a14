"""Ablation of the frozen-stacked recipe's fusion on the VALIDATION split (never test or external).

Usage: python scripts/ablation_frozen.py COHORT_CSV [--views N] [--out JSON]

Computes each distinct training and validation lesion's pooled block features once (frozen
ImageNet backbones, as ``dlum.frozen``), then compares, on the validation pairs and by
cross-validation on the training split (grouped by US patient / MG woman):

* US head only, MG head only (block-5 logistic regressions);
* stacked fusion on out-of-fold block-5 logits (the recipe);
* stacked fusion on in-fold logits (the same heads' own training logits: free to memorise);
* one logistic regression on the concatenated block-5 features of the pairs (what an end-to-end
  fusion head can learn: MG lesion identity).

Prints a Markdown table for docs/training.md and writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main(argv=None) -> int:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import crops_beside
    from dlum.frozen import FrozenConfig, _block_slices, _lesion_table, _pipeline, block_features, \
        fit_probe
    from dlum.networks import DLUM
    from dlum.networks.pretrained import uses_imagenet_normalisation
    from dlum.runtime import fast_dtype, resolve_device
    from dlum.training import Augment, TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/ablation_frozen.json")
    args = parser.parse_args(argv)
    cohort = read_cohort(args.cohort, check_images=False)
    crops, problem = crops_beside(args.cohort, cohort)
    if crops is None:
        raise SystemExit(f"no matching crops.npz beside {args.cohort}: {problem}")
    config = FrozenConfig(views=args.views)
    device = resolve_device("auto")
    dtype = fast_dtype(device, "auto")
    torch.manual_seed(0)
    model = DLUM(pretrained=True).eval()
    imagenet = uses_imagenet_normalisation(model.init_source)
    augment = Augment(TrainConfig(rotate_deg=config.rotate_deg, scale=config.scale,
                                  translate=config.translate, intensity=config.intensity))
    split = cohort["split"].to_numpy()
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "validation")
    y_train, y_val = cohort["label"].to_numpy()[train], cohort["label"].to_numpy()[val]
    t0 = time.perf_counter()
    heads, oof, infold, val_logit, feats = {}, {}, {}, {}, {}
    for m in ("us", "mg"):
        branch = model.branch_for(m).to(memory_format=torch.channels_last)
        b5 = _block_slices(branch)[-1]
        lesions = _lesion_table(cohort, crops, train, m)
        images = [crops.crops[m][int(c)] for c in lesions["crop"]]
        views = [block_features(branch, images, imagenet=imagenet, size=224, device=device, dtype=dtype)]
        for v in range(1, args.views):
            torch.manual_seed(v)
            views.append(block_features(branch, images, imagenet=imagenet, size=224, device=device,
                                        dtype=dtype, augment=augment))
        x = np.concatenate(views)[:, b5]
        y = np.tile(lesions["label"].to_numpy(), args.views)
        groups = np.tile(lesions["group"].to_numpy(), args.views)
        view = np.repeat(np.arange(args.views), len(lesions))
        head, oof_logits = fit_probe(x, y, groups, view, c_grid=config.c_grid, folds=config.folds,
                                     seed=0)
        heads[m] = head
        oof[m] = pd.Series(oof_logits, index=lesions["crop"].to_numpy())
        infold[m] = pd.Series(head.logits(x[view == 0]), index=lesions["crop"].to_numpy())
        val_crops = np.unique(crops.index[m][val])
        xv = block_features(branch, [crops.crops[m][int(c)] for c in val_crops], imagenet=imagenet,
                            size=224, device=device, dtype=dtype)[:, b5]
        val_logit[m] = pd.Series(head.logits(xv), index=val_crops)
        feats[m] = (pd.DataFrame(x[view == 0], index=lesions["crop"].to_numpy()),
                    pd.DataFrame(xv, index=val_crops))
    seconds = time.perf_counter() - t0

    def per_row(series, rows, m):
        return series.loc[crops.index[m][rows]].to_numpy()

    u_val, m_val = per_row(val_logit["us"], val, "us"), per_row(val_logit["mg"], val, "mg")
    results = {}
    results["US head only"] = roc_auc_score(y_val, u_val)
    results["MG head only"] = roc_auc_score(y_val, m_val)
    for name, source in (("stacked fusion on out-of-fold logits (the recipe)", oof),
                         ("stacked fusion on in-fold logits", infold)):
        pairs = np.column_stack([per_row(source[m], train, m) for m in ("us", "mg")])
        stack = LogisticRegression(max_iter=5000).fit(pairs, y_train)
        results[name] = roc_auc_score(y_val, stack.decision_function(np.column_stack([u_val, m_val])))
    xtr = np.hstack([feats[m][0].loc[crops.index[m][train]].to_numpy() for m in ("us", "mg")])
    xva = np.hstack([feats[m][1].loc[crops.index[m][val]].to_numpy() for m in ("us", "mg")])
    concat = _pipeline(0.01).fit(xtr, y_train)
    results["one logistic regression on concatenated block-5 features of the pairs"] = roc_auc_score(
        y_val, concat.decision_function(xva))
    train_fit = roc_auc_score(y_train, concat.decision_function(xtr))
    cv = {m: heads[m].cv_auc for m in heads}
    lines = [f"| variant (views = {args.views}) | validation AUC ({len(val)} pairs, "
             f"{len(np.unique(crops.index['mg'][val]))} MG lesions) |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in results.items()]
    print("\n".join(lines))
    print(f"\nGrouped CV AUC on train: US head {cv['us']:.3f}, MG head {cv['mg']:.3f}; the "
          f"concatenated-feature fusion fits its own training pairs at AUC {train_fit:.3f}. "
          f"Features: {seconds:.0f} s.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"views": args.views, "validation_auc": results,
                                          "cv_auc": cv, "concat_train_auc": train_fit,
                                          "feature_seconds": seconds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
