"""Training and evaluation of the ultrasound lesion finder (:mod:`dlum.localize`).

Data: the public ultrasound lesions with the public cohort's own splits
(:func:`dlum.data.pairing.public_lesions`, the same call ``python -m dlum prepare`` makes):
BUS-BRA patients 7:1:2 into train / validation / test, BrEaST-Lesions-USG ``external`` (its 4
normal images, which have no tumour mask, left out by the reader). Masks are the datasets' own
lesion masks (:func:`dlum.data.public.tumour_mask_path`).

1. **Only the training split's masks train** the decoder. The frozen VGG16 encoder's features of
   every training image are computed once for ``views`` versions of it (view 0 plain; the others
   flipped, shifted, scaled, slightly rotated and gamma-changed, image and mask together), kept
   in memory in bf16; each epoch shows every training image once, in one of its views drawn at
   random. Loss: binary cross-entropy + soft Dice (Milletari et al. 2016) at the decoder's
   resolution (stride 2), AdamW with a cosine learning rate.
2. **Model selection on validation only**: after each epoch the validation images' boxes are
   found at each probability threshold of ``thresholds``; the epoch and threshold with the
   highest mean box IoU (predicted box against the mask's box) are kept. The low-confidence
   threshold ``min_score`` is then set on validation (:func:`calibrate_min_score`), and the
   plausible lesion size is the 1st-99th percentile of the training masks' area share.
3. **Metrics** on the validation, test and external splits with the saved finder itself
   (:func:`evaluate_finder`: ``find`` on each image as read from disk): Dice of the thresholded
   probability map (resized to the image) with the mask, IoU of the box with the mask's box
   (median, mean, share >= 0.5 and >= 0.7), share of images found and of low-confidence ones.
"""
from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlum.constants import EXTERNAL, TEST, TRAIN, VALIDATION
from dlum.errors import DLUMError
from dlum.configs import FinderTrainConfig
from dlum.localize import (FinderNet, LesionFinder, box_iou,
                           dice, finding_from_probability, load_finder, mask_box, new_finder,
                           save_finder)

__all__ = ["RESULTS_FILE", "FinderTrainConfig", "calibrate_min_score", "evaluate_finder",
           "finder_lesions", "fit_finder", "read_mask", "summarise"]

SPLITS = (TRAIN, VALIDATION, TEST, EXTERNAL)
#: Per-image results written beside the finder.
RESULTS_FILE = "finder_results.csv"


# ----------------------------------------------------------------------------------------- data
def finder_lesions(data_dir: str | Path, seed: int = 0, limit: int | None = None) -> pd.DataFrame:
    """The public ultrasound lesions with their cohort split and mask: ``lesion_id, patient_id,
    dataset, split, image, mask`` (at most ``limit`` per split, the first by lesion id)."""
    from dlum.constants import US
    from dlum.data.pairing import public_lesions
    from dlum.data.public import tumour_mask_path

    lesions = public_lesions(data_dir, seed)
    us = lesions[lesions["modality"] == US].copy()
    us["mask"] = [str(tumour_mask_path(d, i)) for d, i in zip(us["dataset"], us["image"])]
    missing = [m for m in us["mask"] if not Path(m).is_file()]
    if missing:
        raise DLUMError(f"{len(missing)} lesion mask(s) are missing, e.g. {missing[0]}")
    us = us[["lesion_id", "patient_id", "dataset", "split", "image", "mask"]]
    if limit is not None:
        us = us.sort_values("lesion_id").groupby("split", sort=False).head(limit)
    return us.reset_index(drop=True)


def read_mask(path: str | Path) -> np.ndarray:
    """A lesion mask as a boolean array (non-zero = lesion). Read with Pillow: masks are 1-bit
    or 8-bit PNGs, which :func:`dlum.data.io.read_image` refuses as scans on purpose."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L")) > 0


def _grid(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image in [0, 1] and mask (area fraction) on the network's ``size`` grid."""
    from dlum.data.transforms import resize, to_unit_range

    return to_unit_range(resize(image, size)), np.clip(resize(mask.astype(np.float32), size), 0, 1)


class _Augment:
    """Flip, shift / scale / rotation (image and mask together) and gamma, on the unit grid."""

    def __init__(self, config: FinderTrainConfig, generator: torch.Generator):
        self.config, self.generator = config, generator

    def __call__(self, unit: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2.functional import affine

        c = self.config
        x = torch.from_numpy(np.stack([unit, mask]).astype(np.float32))
        r = (torch.rand(6, generator=self.generator) * 2 - 1).tolist()  # uniform in [-1, 1]
        if c.flip and r[0] < 0:
            x = x.flip(-1)
        height, width = x.shape[-2:]
        x = affine(x, angle=r[1] * c.rotate_deg, translate=[r[2] * c.translate * width,
                                                            r[3] * c.translate * height],
                   scale=1 + r[4] * c.scale, shear=[0.0, 0.0],
                   interpolation=InterpolationMode.BILINEAR)
        gamma = math.exp(r[5] * c.gamma)
        return x[0].clamp(0, 1).numpy() ** gamma, x[1].clamp(0, 1).numpy()


def _network_input(unit: np.ndarray) -> torch.Tensor:
    """A unit-range grid image as the network's input (3, S, S), as
    :func:`dlum.data.transforms.to_network_input` builds it."""
    from dlum.data.transforms import imagenet_normalize

    x = torch.from_numpy(np.ascontiguousarray(unit, dtype=np.float32))
    return imagenet_normalize(x.unsqueeze(0).expand(3, -1, -1))


class _Features:
    """Frozen-encoder features of a set of grid images, kept in bf16: blocks 3-5, the unit image
    and the mask (area fraction) on the grid."""

    def __init__(self, n: int, size: int):
        s = size
        self.f3 = torch.empty(n, 256, s // 4, s // 4, dtype=torch.bfloat16)
        self.f4 = torch.empty(n, 512, s // 8, s // 8, dtype=torch.bfloat16)
        self.f5 = torch.empty(n, 512, s // 16, s // 16, dtype=torch.bfloat16)
        self.unit = torch.empty(n, s, s, dtype=torch.bfloat16)
        self.mask = torch.empty(n, s, s, dtype=torch.bfloat16)
        self.filled = 0

    def add(self, net: FinderNet, units: list[np.ndarray], masks: list[np.ndarray]) -> None:
        from dlum.runtime import autocast

        x = torch.stack([_network_input(u) for u in units])
        with torch.inference_mode(), autocast(torch.device("cpu"), torch.bfloat16):
            f3, f4, f5 = net.encode(x)
        i, j = self.filled, self.filled + len(units)
        self.f3[i:j], self.f4[i:j], self.f5[i:j] = f3, f4, f5
        self.unit[i:j] = torch.from_numpy(np.stack(units))
        self.mask[i:j] = torch.from_numpy(np.stack(masks))
        self.filled = j

    def batch(self, rows) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        from dlum.data.transforms import imagenet_normalize

        rows = torch.as_tensor(rows)
        x = imagenet_normalize(self.unit[rows].float().unsqueeze(1).expand(-1, 3, -1, -1))
        return [self.f3[rows], self.f4[rows], self.f5[rows]], x, self.mask[rows].float()


def _encode_split(net: FinderNet, rows: pd.DataFrame, size: int, views: int,
                  augment: _Augment | None, progress: bool, label: str) -> _Features:
    from tqdm import tqdm

    from dlum.data.io import read_image

    features = _Features(len(rows) * views, size)
    pending: tuple[list, list] = ([], [])
    for image_path, mask_path in tqdm(list(zip(rows["image"], rows["mask"])), desc=label,
                                      disable=not progress, leave=False):
        unit, mask = _grid(read_image(image_path, max_pixels=None), read_mask(mask_path), size)
        for v in range(views):
            u, m = (unit, mask) if v == 0 or augment is None else augment(unit, mask)
            pending[0].append(u)
            pending[1].append(m)
        if len(pending[0]) >= 32:
            features.add(net, *pending)
            pending = ([], [])
    if pending[0]:
        features.add(net, *pending)
    return features


# ------------------------------------------------------------------------------------- training
def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft Dice (Milletari et al. 2016), per image then averaged."""
    import torch.nn.functional as F

    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    soft_dice = 1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)
    return bce + soft_dice.mean()


def _probabilities(net: FinderNet, features: _Features, batch_size: int = 64) -> np.ndarray:
    """Probability maps (N, S, S) of cached features, in the finder's precision path."""
    from dlum.runtime import autocast

    out = []
    net.eval()
    with torch.inference_mode(), autocast(torch.device("cpu"), torch.bfloat16):
        for start in range(0, features.filled, batch_size):
            f, x, _ = features.batch(range(start, min(start + batch_size, features.filled)))
            out.append(torch.sigmoid(net.decode(f, x).float())[:, 0].numpy())
    return np.concatenate(out)


def _grid_boxes(probabilities: np.ndarray, threshold: float) -> list:
    size = probabilities.shape[-1]
    return [finding_from_probability(p, (size, size), mask_threshold=threshold).box
            for p in probabilities]


def _select(net: FinderNet, val: _Features, thresholds) -> tuple[float, float, np.ndarray]:
    """(best mean box IoU on validation, its threshold, the validation probability maps)."""
    probabilities = _probabilities(net, val)
    truth = [mask_box(m >= 0.5) for m in val.mask[: val.filled].float().numpy()]
    best = (-1.0, thresholds[0])
    for t in thresholds:
        ious = [box_iou(b, g) for b, g in zip(_grid_boxes(probabilities, t), truth)]
        best = max(best, (float(np.mean(ious)), float(t)), key=lambda bt: bt[0])
    return best[0], best[1], probabilities


def calibrate_min_score(scores, ious, *, good: float = 0.5) -> dict[str, Any]:
    """The low-confidence threshold: the score that best separates boxes with IoU >= ``good``
    from worse ones on validation (Youden's J = share of poor boxes flagged + share of good
    boxes kept - 1; ties: the lower score). Returns the threshold with what it does there."""
    scores, ious = np.asarray(scores, float), np.asarray(ious, float)
    is_good = ious >= good
    candidates = np.unique(np.concatenate([[0.0], scores]))
    if is_good.all() or not is_good.any():
        threshold = 0.0
    else:
        j = [np.mean(scores[~is_good] < c) + np.mean(scores[is_good] >= c) - 1 for c in candidates]
        threshold = float(candidates[int(np.argmax(j))])
    flagged = scores < threshold
    return {"min_score": round(threshold, 4), "rule": f"Youden's J on validation: box IoU >= {good} "
            "(good) against below (poor)",
            "validation_good": int(is_good.sum()), "validation_poor": int((~is_good).sum()),
            "poor_flagged": float(np.mean(flagged[~is_good])) if (~is_good).any() else None,
            "good_flagged": float(np.mean(flagged[is_good])) if is_good.any() else None}


def evaluate_finder(finder: LesionFinder, rows: pd.DataFrame, *, progress: bool = False,
                    label: str = "") -> pd.DataFrame:
    """``finder`` on each of ``rows`` (``lesion_id``, ``image``, ``mask``), the image read from
    disk and passed to :meth:`LesionFinder.find`: one row per image with the Dice of the
    thresholded probability map (resized to the image) with the mask, the IoU of the found box
    with the mask's box, the score and the seconds ``find`` took."""
    import torch.nn.functional as F
    from tqdm import tqdm

    from dlum.data.io import read_image

    records = []
    for lesion_id, image_path, mask_path in tqdm(list(zip(rows["lesion_id"], rows["image"],
                                                          rows["mask"])), desc=label,
                                                 disable=not progress, leave=False):
        image, mask = read_image(image_path, max_pixels=None), read_mask(mask_path)
        start = time.perf_counter()
        finding, probability = finder.find_with_map(image)
        seconds = time.perf_counter() - start
        if probability is None:
            segmented = np.zeros(image.shape, dtype=bool)
        else:
            full = F.interpolate(torch.from_numpy(probability)[None, None], size=image.shape,
                                 mode="bilinear", align_corners=False)[0, 0].numpy()
            segmented = full >= finder.mask_threshold
        records.append({
            "lesion_id": lesion_id, "dice": dice(segmented, mask),
            "box_iou": box_iou(finding.box, mask_box(mask)), "score": finding.score,
            "found": finding.box is not None, "seconds": seconds,
            "box": finding.box, "mask_box": mask_box(mask),
        })
    return pd.DataFrame(records)


def summarise(table: pd.DataFrame, min_score: float) -> dict[str, Any]:
    """The card's results of one split from :func:`evaluate_finder`'s table."""
    iou = table["box_iou"].to_numpy(float)
    confident = table["found"].to_numpy(bool) & (table["score"].to_numpy(float) >= min_score)

    def r(x):
        return round(float(x), 4)

    return {
        "images": int(len(table)),
        "dice_mean": r(table["dice"].mean()),
        "dice_median": r(table["dice"].median()),
        "box_iou_median": r(np.median(iou)),
        "box_iou_mean": r(np.mean(iou)),
        "box_iou_at_least_0.5": r(np.mean(iou >= 0.5)),
        "box_iou_at_least_0.7": r(np.mean(iou >= 0.7)),
        "found": r(table["found"].mean()),
        "low_confidence": r(np.mean(~confident)),
        "confident_box_iou_median": r(np.median(iou[confident])) if confident.any() else None,
        "confident_box_iou_at_least_0.5": r(np.mean(iou[confident] >= 0.5)) if confident.any() else None,
        "seconds_median": r(table["seconds"].median()),
    }


def fit_finder(data_dir: str | Path, out_dir: str | Path,
               config: FinderTrainConfig = FinderTrainConfig(), *, progress: bool = True,
               log=print, name: str | None = None) -> dict[str, Any]:
    """Train the lesion finder on the training split's masks, select on validation, write the
    checkpoint (``model.safetensors``, ``card.json``) and per-image ``finder_results.csv``, and
    return the card."""
    from dlum.runtime import describe_device

    t_start = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    lesions = finder_lesions(data_dir, config.seed, config.limit)
    by_split = {s: lesions[lesions["split"] == s] for s in SPLITS}
    if by_split[TRAIN].empty or by_split[VALIDATION].empty:
        raise DLUMError("the lesion finder needs training and validation images")
    finder = new_finder(pretrained=True, input_size=config.input_size, widths=config.widths,
                        seed=config.seed)
    net = finder.model
    size = config.input_size
    augment = _Augment(config, generator)
    t0 = time.perf_counter()
    train = _encode_split(net, by_split[TRAIN], size, config.views, augment, progress, "train")
    val = _encode_split(net, by_split[VALIDATION], size, 1, None, progress, "validation")
    feature_seconds = time.perf_counter() - t0
    log(f"features of {train.filled} training views and {val.filled} validation images in "
        f"{feature_seconds:.0f} s")
    shares = (train.mask[: train.filled : config.views] >= 0.5).float().mean((1, 2)).numpy()
    plausible = [round(float(max(np.percentile(shares, 1), 1e-4)), 5),
                 round(float(min(np.percentile(shares, 99), 1.0)), 5)]

    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n_train = len(by_split[TRAIN])
    steps = config.epochs * math.ceil(n_train / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.lr, total_steps=steps,
                                                   pct_start=0.1)
    history, best = [], (-1.0, None, None, None)
    from dlum.runtime import autocast

    t0 = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        net.train()
        view = torch.randint(0, config.views, (n_train,), generator=generator)
        order = torch.randperm(n_train, generator=generator) * config.views + view
        losses = []
        for start in range(0, n_train, config.batch_size):
            features, x, mask = train.batch(order[start:start + config.batch_size])
            target = torch.nn.functional.avg_pool2d(mask.unsqueeze(1), 2)
            with autocast(torch.device("cpu"), torch.bfloat16):
                logits = net.decode(features, x, full=False)
            loss = _loss(logits, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        score, threshold, _ = _select(net, val, config.thresholds)
        history.append({"epoch": epoch, "train_loss": round(float(np.mean(losses)), 4),
                        "val_box_iou_mean": round(score, 4), "threshold": threshold})
        log(f"epoch {epoch}/{config.epochs}: loss {np.mean(losses):.4f}, validation mean box IoU "
            f"{score:.4f} at threshold {threshold:.2f} ({time.perf_counter() - t0:.0f} s)")
        if score > best[0]:
            best = (score, threshold, epoch, {k: v.clone() for k, v in net.trained_state().items()})
    train_seconds = time.perf_counter() - t0
    net.load_state_dict(best[3], strict=False)
    net.eval()

    del train, val
    card = {
        "name": name or Path(out_dir).name,
        "description": "Ultrasound lesion finder: suggests the lesion box (ROI) of a breast "
                       "ultrasound image for DL-UM. Trained on BUS-BRA only; mammography has no "
                       "finder.",
        "input": {"size": size},
        "postprocess": {"mask_threshold": best[1], "connectivity": 8, "plausible_area": plausible,
                        "plausible_area_rule": "1st-99th percentile of the training masks' share "
                                               "of the image"},
        "confidence": {"min_score": 0.0,
                       "score": "mean probability in the largest component x its share of the "
                                "above-threshold probability mass x plausible size (1 inside "
                                "postprocess.plausible_area, proportionally less outside)"},
        "data": {
            "sources": ["BUS-BRA (Gómez-Flores et al., Med Phys 2023)",
                        "BrEaST-Lesions-USG (Pawłowska et al., Sci Data 2024)"],
            "splits": "the public cohort's (dlum.data.pairing.public_lesions, seed "
                      f"{config.seed}): BUS-BRA by patient 7:1:2, BrEaST-Lesions-USG external "
                      "(normal images, without a tumour mask, left out)",
            "images": {s: int(len(r)) for s, r in by_split.items()},
            "patients": {s: int(r["patient_id"].nunique()) for s, r in by_split.items()},
            "masks": "the datasets' lesion masks; training uses the train split's only",
        },
        "training": {
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
            "loss": "binary cross-entropy + soft Dice at stride 2",
            "optimiser": "AdamW, one-cycle cosine learning rate",
            "selection": "epoch and mask threshold with the highest mean box IoU on validation",
            "epoch_kept": best[2], "val_box_iou_mean": round(best[0], 4), "history": history,
            "feature_seconds": round(feature_seconds, 1), "train_seconds": round(train_seconds, 1),
            "hardware": {"device": describe_device(torch.device("cpu")),
                         "torch_threads": torch.get_num_threads(),
                         "machine": platform.machine(), "torch": torch.__version__},
        },
    }
    out_dir = Path(out_dir)
    save_finder(finder, out_dir, card)

    # every figure from here on comes from the saved finder, each image read from disk
    shipped = load_finder(out_dir)
    tables = {split: evaluate_finder(shipped, by_split[split], progress=progress, label=split)
              for split in (VALIDATION, TEST, EXTERNAL) if not by_split[split].empty}
    calibration = calibrate_min_score(tables[VALIDATION]["score"], tables[VALIDATION]["box_iou"])
    card["confidence"].update(calibration)
    card["results"] = {split: summarise(t, calibration["min_score"]) for split, t in tables.items()}
    for split, summary in card["results"].items():
        log(f"{split}: Dice {summary['dice_mean']:.3f}, median box IoU "
            f"{summary['box_iou_median']:.3f}, IoU >= 0.5 {summary['box_iou_at_least_0.5']:.3f}, "
            f"low confidence {summary['low_confidence']:.3f}")
    card["training"]["seconds"] = round(time.perf_counter() - t_start, 1)
    save_finder(shipped, out_dir, card)
    per_image = pd.concat([t.assign(split=s) for s, t in tables.items()], ignore_index=True)
    for column in ("box", "mask_box"):
        per_image[column] = [None if b is None else " ".join(map(str, b)) for b in per_image[column]]
    from dlum.files import atomic_path

    with atomic_path(out_dir / RESULTS_FILE) as tmp:
        per_image.round(4).to_csv(tmp, index=False, lineterminator="\n")
    return load_finder(out_dir).card
