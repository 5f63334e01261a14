"""A DL-UM recipe for scarce mammography data: frozen ImageNet backbones, linear heads, stacked fusion.

Why: in a pseudo-paired cohort each of the ~66 training mini-MIAS lesions appears in ~22 pairs,
always with the same label. A fine-tuned MG branch and a fusion head over 1,024 features learn
MG *lesion identity*, which predicts every training label and nothing on new lesions (the shipped
``dlum-public-v1``: fused AUC 0.637 against 0.878 for its own US branch). This recipe keeps the
DL-UM network (Xu et al., Breast Cancer Research 2025: two VGG19 branches, a deep-supervision head
per block, a fusion head on the block-5 features) and gives the data as little room to memorise
as possible:

1. **Backbones frozen** at ImageNet features (torchvision's VGG19 when cached, else VGG16
   deepened with identity convolutions), for both branches. ImageNet's block 5 is the least
   transferable; where a branch's head does better in grouped cross-validation with block 5 as
   the identity (Dirac convolutions, so block 5 passes block 4's pooled output on), that is used.
2. **Each head is a logistic regression** on its block's global-average-pooled features
   (standardised, L2-penalised), embedded exactly in the paper's head (FC 64 → ReLU → FC 1: two
   hidden units carry ``+z`` and ``−z``). Training uses every distinct lesion once per view
   (``views`` augmented copies), never once per pair, so a reused MG lesion does not weigh 22
   times. The penalty is chosen by cross-validation grouped by patient (US) and woman (MG) on the
   training split only.
3. **The fusion is stacked**: a logistic regression on the two block-5 logits, fitted on
   *out-of-fold* logits of the training pairs (each lesion's logit from a head that never saw its
   patient or woman), so the fusion learns how much a new woman's MG output is worth, not who
   she is. Out-of-fold fitting also calibrates the fused probability (Platt scaling on held-out
   logits). The result is embedded exactly in the fusion head (four hidden units).
4. DL-U and DL-M are the two branches trained alone: with frozen backbones and heads fitted on one
   modality's lesions they are the same functions as DL-UM's US and MG branches.

Nothing here looks at validation, test or external labels: the validation split is only used
later, by ``report``, to choose the operating thresholds. The whole recipe runs on a 2-core CPU
(feature extraction dominates; ``docs/training.md`` has the figures).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlum.configs import FROZEN_STARTS
from dlum.constants import MG, MODALITIES, TRAIN, US, VGG19_BLOCKS
from dlum.data.crops import CropSet
from dlum.errors import DLUMError

__all__ = ["FROZEN_RECIPE", "FrozenConfig", "LinearHead", "fit_frozen", "block_features",
           "fit_probe", "embed_linear_head", "embed_stacked_fusion", "identity_block"]

FROZEN_RECIPE = "frozen-stacked"


@dataclass(frozen=True)
class FrozenConfig:
    """Settings of the frozen-backbone, stacked-fusion recipe."""

    views: int = 4  # augmented views per training lesion (view 0 is the plain crop)
    #: ImageNet start of each branch: "auto" or a name in dlum.networks.pretrained.IMAGENET_SOURCES
    us_backbone: str = FROZEN_STARTS["us"]
    mg_backbone: str = FROZEN_STARTS["mg"]
    c_grid: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
    folds: int = 5
    seed: int = 0
    batch_size: int = 16
    input_size: int = 224  # the paper's; smaller sides are for quick checks only
    precision: str = "auto"
    device: str = "auto"
    weights_dtype: str = "float32"  # heads and fusion (and a tuned block 5): the rest is not stored
    #: fine-tune the US branch's block 5 on cached block-4 features for this many epochs
    #: (dlum.block5_tuning; 0: frozen), kept only where its out-of-fold grouped CV AUC on the
    #: training split beats the frozen block 5's
    us_tune_epochs: int = 0
    tune_lr: float = 3e-5
    #: grouped folds of the out-of-fold tunings (each is a full tuning; 0: ``folds``)
    tune_folds: int = 0
    #: tune only block 5's last K convolutions, the others kept as identities (0: all four)
    tune_last_convs: int = 0
    #: fit even when a patient or an image is in two splits (warned, recorded in the card)
    allow_split_overlap: bool = False
    # augmentation of the extra views (as the paper recipe's, a little stronger for MG)
    rotate_deg: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    intensity: float = 0.2

    def __post_init__(self):
        if self.views < 1:
            raise DLUMError(f"views must be at least 1 (got {self.views})")
        if self.us_tune_epochs < 0 or not self.tune_lr > 0:
            raise DLUMError("us_tune_epochs must be at least 0 and tune_lr above 0")
        if self.folds < 2:
            raise DLUMError(f"folds must be at least 2 (got {self.folds})")
        if self.tune_folds == 1 or self.tune_folds < 0:
            raise DLUMError(f"tune_folds must be 0 (as folds) or at least 2 (got {self.tune_folds})")
        if self.tune_last_convs < 0:
            raise DLUMError(f"tune_last_convs must be 0 (all) or more (got {self.tune_last_convs})")
        if (self.tune_last_convs or self.tune_folds) and not self.us_tune_epochs:
            # they shape a tuning that would not run: say so rather than ignore them
            raise DLUMError("tune_last_convs and tune_folds shape block 5's tuning: "
                            "they need us_tune_epochs above 0 (--us-tune-epochs)")
        if self.input_size < 32:  # five 2x2 pools
            raise DLUMError(f"input_size must be at least 32 (got {self.input_size})")
        if not self.c_grid or min(self.c_grid) <= 0:
            raise DLUMError("c_grid must hold positive penalties")
        from dlum.networks.pretrained import IMAGENET_SOURCES

        for name in ("us_backbone", "mg_backbone"):
            if getattr(self, name) not in ("auto", *IMAGENET_SOURCES):
                raise DLUMError(f"{name} must be 'auto' or one of {IMAGENET_SOURCES} "
                                f"(got {getattr(self, name)!r})")


@dataclass(frozen=True)
class LinearHead:
    """``logit = w · x + b`` on raw (unstandardised) pooled features; ``c`` the chosen penalty
    and ``cv_auc`` its grouped cross-validation AUC on the training split."""

    w: np.ndarray
    b: float
    c: float
    cv_auc: float

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.w + self.b


# ------------------------------------------------------------------------------------ features
def network_batches(crops: list[np.ndarray], *, imagenet: bool, size: int, batch_size: int,
                    augment=None):
    """The crops as network inputs, ``batch_size`` at a time (channels-last CPU tensors), each
    crop through ``augment`` (a :class:`dlum.training.Augment`) first when given."""
    from dlum.data.transforms import to_network_input

    for start in range(0, len(crops), batch_size):
        part = crops[start:start + batch_size]
        if augment is not None:
            part = [augment(c, None) for c in part]
        x = torch.stack([to_network_input(c, size=size, imagenet=imagenet) for c in part])
        yield x.contiguous(memory_format=torch.channels_last)


def block_features(branch, crops: list[np.ndarray], *, imagenet: bool, size: int,
                   device: torch.device, dtype: torch.dtype, batch_size: int = 16,
                   augment=None, block5_inputs: list | None = None) -> np.ndarray:
    """Global-average-pooled activations of the five blocks (64+128+256+512+512 = 1,472 values)
    of each crop, through a frozen branch, then 512 more: what block 5 would give as an identity
    (the pooled block-4 output, averaged); ``augment`` (a :class:`dlum.training.Augment`) is
    applied to each crop first when given. ``block5_inputs``, when given, receives block 5's
    input (block 4's pooled activation) of each batch as float16, for :mod:`dlum.block5_tuning`."""
    from dlum.runtime import autocast

    out = []
    for x in network_batches(crops, imagenet=imagenet, size=size, batch_size=batch_size,
                             augment=augment):
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, dtype):
            acts = branch.forward_features(x)
            block5_input = branch.pool(acts[-2])
            identity5 = block5_input.float().mean(dim=(2, 3))
            if block5_inputs is not None:
                block5_inputs.append(block5_input.to(torch.float16).cpu().numpy())
        out.append(torch.cat([a.float().mean(dim=(2, 3)) for a in acts] + [identity5], 1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _block_slices(branch) -> list[slice]:
    """Columns of :func:`block_features` per block, then those of an identity block 5."""
    widths = [block.bn.num_features for block in branch.blocks] + [branch.blocks[-2].bn.num_features]
    edges = np.cumsum([0] + widths)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def identity_block(block) -> None:
    """Make a :class:`dlum.networks.vgg.VGGBlock` the identity on non-negative inputs: Dirac
    convolutions, BatchNorm that changes nothing (as the VGG16 → VGG19 deepening does for its
    extra convolutions)."""
    with torch.no_grad():
        for conv in block.convs:
            torch.nn.init.dirac_(conv.weight)
            conv.bias.zero_()
        block.bn.weight.fill_(1.0)
        block.bn.bias.zero_()
        block.bn.running_mean.zero_()
        block.bn.running_var.fill_(1.0 - block.bn.eps)  # (x - 0) / sqrt(var + eps) = x


# -------------------------------------------------------------------------------------- probes
def _pipeline(c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _folds(y: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    k = max(2, min(folds, n_groups, int(min(np.bincount(y.astype(int), minlength=2)))))
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y, groups))


def fit_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray, view: np.ndarray, *,
              c_grid, folds: int, seed: int) -> tuple[LinearHead, np.ndarray]:
    """A logistic-regression head: the penalty with the best grouped-CV AUC (scored on the plain
    views), then refitted on every row. Returns the head and the out-of-fold logits of the plain
    views (``view == 0``) in their order."""
    from sklearn.metrics import roc_auc_score

    plain = view == 0
    splits = _folds(y[plain], groups[plain], folds, seed)
    plain_groups = groups[plain]
    best = (-1.0, None, None)
    for c in c_grid:
        oof = np.zeros(int(plain.sum()))
        for train_idx, test_idx in splits:
            train_groups = set(plain_groups[train_idx])
            rows = np.isin(groups, list(train_groups))  # every view of the training groups
            model = _pipeline(c).fit(x[rows], y[rows])
            oof[test_idx] = model.decision_function(x[plain][test_idx])
        auc = roc_auc_score(y[plain], oof)
        if auc > best[0]:
            best = (auc, c, oof)
    auc, c, oof = best
    model = _pipeline(c).fit(x, y)
    scaler, lr = model[0], model[1]
    w = lr.coef_[0] / scaler.scale_
    b = float(lr.intercept_[0] - np.sum(lr.coef_[0] * scaler.mean_ / scaler.scale_))
    return LinearHead(w, b, float(c), float(auc)), oof


# ----------------------------------------------------------------------------------- embedding
def embed_linear_head(head, w: np.ndarray, b: float) -> None:
    """Write ``logit = w · x + b`` into a :class:`dlum.networks.vgg.ClassificationHead`
    (FC → ReLU → FC) exactly: hidden unit 0 is ``s(w·x + b)``, unit 1 its negative, the output
    ``(h0 − h1) / s``; ``s`` scales the first layer's weights to about 1 so that fp16 storage
    keeps their precision."""
    fc1, fc2 = head[0], head[2]
    s = 1.0 / max(float(np.abs(w).max()), 1e-12)
    with torch.no_grad():
        fc1.weight.zero_()
        fc1.bias.zero_()
        fc2.weight.zero_()
        fc2.bias.zero_()
        fc1.weight[0] = torch.as_tensor(s * w, dtype=fc1.weight.dtype)
        fc1.bias[0] = s * b
        fc1.weight[1] = -fc1.weight[0]
        fc1.bias[1] = -fc1.bias[0]
        fc2.weight[0, 0] = 1.0 / s
        fc2.weight[0, 1] = -1.0 / s


def embed_stacked_fusion(fusion, us: LinearHead, mg: LinearHead, alpha: float, beta: float,
                         gamma: float) -> None:
    """Write ``alpha · logit_US + beta · logit_MG + gamma`` (the block-5 logits) into the fusion
    head on the concatenated block-5 features, exactly (four hidden units)."""
    fc1, fc2 = fusion[0], fusion[2]
    n_us = len(us.w)
    su = 1.0 / max(float(np.abs(us.w).max()), 1e-12)
    sm = 1.0 / max(float(np.abs(mg.w).max()), 1e-12)
    with torch.no_grad():
        for layer in (fc1, fc2):
            layer.weight.zero_()
            layer.bias.zero_()
        fc1.weight[0, :n_us] = torch.as_tensor(su * us.w, dtype=fc1.weight.dtype)
        fc1.bias[0] = su * us.b
        fc1.weight[1] = -fc1.weight[0]
        fc1.bias[1] = -fc1.bias[0]
        fc1.weight[2, n_us:] = torch.as_tensor(sm * mg.w, dtype=fc1.weight.dtype)
        fc1.bias[2] = sm * mg.b
        fc1.weight[3] = -fc1.weight[2]
        fc1.bias[3] = -fc1.bias[2]
        fc2.weight[0, 0], fc2.weight[0, 1] = alpha / su, -alpha / su
        fc2.weight[0, 2], fc2.weight[0, 3] = beta / sm, -beta / sm
        fc2.bias[0] = gamma


# ------------------------------------------------------------------------------- tuned block 5
def _tuned_convs(config: FrozenConfig) -> str:
    k = config.tune_last_convs
    return f"its last {k} convolution{'s' if k > 1 else ''}" if k else "all its convolutions"


def keep_tuned(tuned_cv_auc: float, frozen_cv_auc: float) -> bool:
    """The tuned block 5 replaces the frozen one only where its out-of-fold grouped CV AUC on the
    training split is higher (the same rule as the identity block 5's)."""
    return tuned_cv_auc > frozen_cv_auc


def tune_block5_out_of_fold(start, maps: list[np.ndarray], y: np.ndarray, groups: np.ndarray,
                            config: FrozenConfig, *, device: torch.device = torch.device("cpu"),
                            dtype: torch.dtype = torch.float32):
    """Block 5 fine-tuned (from ``start``) on every training lesion, its head, and honest
    out-of-fold logits: for each grouped fold a block tuned and a head fitted without the fold's
    patients give the fold's logits, so the stacked fusion never sees in-fold US outputs (a tuned
    block cross-validates far above what it does on new patients). ``maps``: block 5's inputs
    per view, lesions in the order of ``y``. Returns ``(block, head, oof_logits, log)``; the
    head's ``cv_auc`` is the out-of-fold AUC. The tunings run on ``device`` in ``dtype``
    (:mod:`dlum.block5_tuning`)."""
    from sklearn.metrics import roc_auc_score

    from dlum.block5_tuning import pooled_output, tune_block5

    n, n_views = len(y), len(maps)

    def tuned_head(idx: np.ndarray):
        block = copy.deepcopy(start)
        views = maps if len(idx) == n else [m[idx] for m in maps]  # no copy of the whole set
        tune_block5(block, views, y[idx], epochs=config.us_tune_epochs, lr=config.tune_lr,
                    seed=config.seed, last_convs=config.tune_last_convs, device=device,
                    dtype=dtype)
        x = np.concatenate([pooled_output(block, m, device=device, dtype=dtype) for m in views])
        head, _ = fit_probe(x, np.tile(y[idx], n_views), np.tile(groups[idx], n_views),
                            np.repeat(np.arange(n_views), len(idx)), c_grid=config.c_grid,
                            folds=config.folds, seed=config.seed)
        return block, head

    t0 = time.perf_counter()
    oof = np.zeros(n)
    tune_folds = config.tune_folds or config.folds
    for train_idx, test_idx in _folds(y, groups, tune_folds, config.seed):
        block, head = tuned_head(train_idx)
        oof[test_idx] = head.logits(pooled_output(block, maps[0][test_idx], device=device,
                                                  dtype=dtype))
    cv_auc = float(roc_auc_score(y, oof))
    block, head = tuned_head(np.arange(n))
    log = {"epochs": config.us_tune_epochs, "lr": config.tune_lr, "folds": tune_folds,
           "last_convs": config.tune_last_convs or len(start.convs),
           "precision": str(dtype).removeprefix("torch."),
           "cv_auc_out_of_fold": cv_auc,
           "cv_auc_in_fold_head": head.cv_auc, "seconds": time.perf_counter() - t0}
    return block, LinearHead(head.w, head.b, head.c, cv_auc), oof, log


# ------------------------------------------------------------------------------------------ fit
def _start_deviations(model) -> list[str]:
    """How each branch's ImageNet start differs from a full-precision VGG19 (the paper's)."""
    from dlum.networks.pretrained import VGG16_DEEPENED, VGG19_CAFFE_Q8

    notes = {VGG16_DEEPENED: "starts from ImageNet VGG16, deepened to VGG19 with identity "
                             "(Dirac) convolutions",
             VGG19_CAFFE_Q8: "starts from the original ImageNet VGG19 quantised to 8 bits (a "
                             "256-value codebook per layer)"}
    out = []
    for modality in MODALITIES:
        note = notes.get(model.branch_for(modality).init_source)
        if note:
            out.append(f"{modality.upper()} branch {note}")
    return out


def _lesion_table(cohort: pd.DataFrame, crops: CropSet, rows: np.ndarray, modality: str) -> pd.DataFrame:
    """One row per distinct crop of ``modality`` used by ``rows``: crop number, label, group
    (the US patient or the MG woman)."""
    part = cohort.iloc[rows]
    patient = part["patient_id"].astype(str)
    side = 0 if modality == US else 1
    groups = patient.str.split("+").str[side] if patient.str.contains("+", regex=False).all() else patient
    table = pd.DataFrame({"crop": crops.index[modality][rows], "label": part["label"].to_numpy(),
                          "group": groups.to_numpy(), "row": rows})
    return table.drop_duplicates("crop").sort_values("crop").reset_index(drop=True)


def fit_frozen(cohort: pd.DataFrame, crops: CropSet, out_dir: str | Path,
               config: FrozenConfig = FrozenConfig(), *, progress: bool = True,
               data_info: dict | None = None):
    """Fit DL-UM with the frozen-backbone stacked recipe on the ``train`` rows of ``cohort``,
    write the checkpoint (``model.safetensors``, ``card.json``) and the validation / test /
    external rows' predictions (``held_out_predictions.csv``, with ``p_dlu`` and ``p_dlm``),
    and return the card. ``report --held-out`` then sets the operating points.

    Raises:
        dlum.data.manifest.SplitOverlapError: a patient or an image in two splits, unless
            ``config.allow_split_overlap``; nothing is written then.
    """
    import platform

    from sklearn.linear_model import LogisticRegression

    from dlum.card import Card
    from dlum.checkpoint import load_checkpoint, save_checkpoint
    from dlum.networks import DLUM
    from dlum.networks.pretrained import uses_imagenet_normalisation
    from dlum.runtime import describe_device, fast_dtype, resolve_device
    from dlum.training import (Augment, TrainConfig, _git_commit, _write_held_out_predictions,
                               guard_split_overlap)

    t_start = time.perf_counter()
    code_commit = _git_commit()  # what is checked out now: a long fit may end on another commit
    overlap = guard_split_overlap(cohort, crops, allow=config.allow_split_overlap)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.flatnonzero(cohort["split"].to_numpy() == TRAIN)
    if len(rows) == 0 or cohort["label"].iloc[rows].nunique() != 2:
        raise DLUMError("the frozen recipe needs training rows of both classes (split = train)")
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dtype = fast_dtype(device, config.precision)
    try:
        same = config.mg_backbone == config.us_backbone  # one start: read the weights once
        model = DLUM(pretrained="imagenet" if config.us_backbone == "auto" else config.us_backbone,
                     mg_pretrained=None if same else
                     "imagenet" if config.mg_backbone == "auto" else config.mg_backbone)
    except RuntimeError as exc:
        raise DLUMError(f"the frozen recipe needs ImageNet weights ({exc}; install them with "
                        "`make install`, see README)") from exc
    model = model.to(device).eval()
    if config.tune_last_convs > len(model.branch_for(US).blocks[-1].convs):
        raise DLUMError(f"tune_last_convs: block 5 has {len(model.branch_for(US).blocks[-1].convs)} "
                        f"convolutions (got {config.tune_last_convs})")
    imagenet = uses_imagenet_normalisation(model.init_source)
    augment = Augment(TrainConfig(rotate_deg=config.rotate_deg, scale=config.scale,
                                  translate=config.translate, intensity=config.intensity))
    size = config.input_size
    heads: dict[str, list[LinearHead]] = {}
    oof_block5: dict[str, pd.Series] = {}
    identity_blocks: list[str] = []
    tuned_blocks: list[str] = []
    log: dict[str, Any] = {}
    for modality in MODALITIES:
        branch = model.branch_for(modality).to(memory_format=torch.channels_last)
        lesions = _lesion_table(cohort, crops, rows, modality)
        images = [crops.crops[modality][int(c)] for c in lesions["crop"]]
        t0 = time.perf_counter()
        tune = modality == US and config.us_tune_epochs > 0
        maps: list[list[np.ndarray]] = [[] for _ in range(config.views)]
        views = [block_features(branch, images, imagenet=imagenet, size=size, device=device,
                                dtype=dtype, batch_size=config.batch_size,
                                block5_inputs=maps[0] if tune else None)]
        for v in range(1, config.views):
            torch.manual_seed(config.seed * 1000 + v)
            views.append(block_features(branch, images, imagenet=imagenet, size=size, device=device,
                                        dtype=dtype, batch_size=config.batch_size, augment=augment,
                                        block5_inputs=maps[v] if tune else None))
            if progress:
                print(f"frozen recipe: {modality.upper()} view {v + 1}/{config.views} done", flush=True)
        x = np.concatenate(views)
        y = np.tile(lesions["label"].to_numpy(), config.views)
        groups = np.tile(lesions["group"].to_numpy(), config.views)
        view = np.repeat(np.arange(config.views), len(lesions))
        heads[modality] = []
        slices = _block_slices(branch)
        n_blocks = len(branch.blocks)
        fits = [fit_probe(x[:, sl], y, groups, view, c_grid=config.c_grid, folds=config.folds,
                          seed=config.seed) for sl in slices]
        # Block 5: ImageNet's, or the identity (block 4's pooled output) when its head does
        # better in grouped cross-validation on the training split.
        identity = fits[n_blocks][0].cv_auc > fits[n_blocks - 1][0].cv_auc
        chosen = fits[:n_blocks - 1] + [fits[n_blocks] if identity else fits[n_blocks - 1]]
        tuning = None
        if tune:  # block 5 fine-tuned from the identity on the cached block-4 features
            start = copy.deepcopy(branch.blocks[-1])
            identity_block(start)
            block, head, oof, tuning = tune_block5_out_of_fold(
                start, [np.concatenate(m) for m in maps], lesions["label"].to_numpy().astype(int),
                lesions["group"].to_numpy(), config, device=device, dtype=dtype)
            tuning["kept"] = keep_tuned(head.cv_auc, chosen[-1][0].cv_auc)
            if tuning["kept"]:
                branch.blocks[-1].load_state_dict(block.state_dict())
                chosen[-1] = (head, oof)
                tuned_blocks.append(modality)
            del maps
        if identity and not (tuning and tuning["kept"]):
            identity_block(branch.blocks[-1])
            identity_blocks.append(modality)
        for k, (head, oof) in enumerate(chosen, start=1):
            heads[modality].append(head)
            embed_linear_head(branch.heads[k - 1], head.w, head.b)
        oof_block5[modality] = pd.Series(chosen[-1][1], index=lesions["crop"].to_numpy())
        log[modality] = {"lesions": int(len(lesions)), "rows": int(len(x)),
                         "feature_seconds": time.perf_counter() - t0,
                         "penalty_per_block": [h.c for h in heads[modality]],
                         "cv_auc_per_block": [h.cv_auc for h in heads[modality]],
                         "block5": ("tuned" if modality in tuned_blocks else
                                    "identity" if identity else "imagenet"),
                         "cv_auc_block5_imagenet": fits[n_blocks - 1][0].cv_auc,
                         "cv_auc_block5_identity": fits[n_blocks][0].cv_auc,
                         **({"block5_tuning": tuning} if tuning else {})}
    # stacked fusion on out-of-fold block-5 logits of the training pairs
    pairs = np.column_stack([oof_block5[m].loc[crops.index[m][rows]].to_numpy() for m in (US, MG)])
    labels = cohort["label"].to_numpy()[rows]
    stack = LogisticRegression(C=1.0, max_iter=5000).fit(pairs, labels)
    alpha, beta = (float(v) for v in stack.coef_[0])
    gamma = float(stack.intercept_[0])
    embed_stacked_fusion(model.fusion_head, heads[US][-1], heads[MG][-1], alpha, beta, gamma)
    log["fusion"] = {"alpha_us": alpha, "beta_mg": beta, "gamma": gamma,
                     "fitted_on": f"{len(rows)} training pairs, out-of-fold block-5 logits"}
    seconds_fit = time.perf_counter() - t_start
    card = Card.from_dict({
        "name": out_dir.name,
        "model": {**model.config(), "frozen_backbone": True, "identity_block5": identity_blocks,
                  **({"tuned_block5": tuned_blocks,
                      "tuned_block5_convs": config.tune_last_convs or VGG19_BLOCKS[-1]}
                     if tuned_blocks else {})},
        "arch": "dlum",
        "initialisation": (model.init_source if model.mg_branch.init_source == model.init_source
                           else f"US: {model.init_source}; MG: {model.mg_branch.init_source}"),
        "input": {"size": size, "imagenet_normalisation": imagenet, "roi_expansion": 0.30,
                  "intensity": "min-max to [0, 1] per crop"},
        "training": {"recipe": FROZEN_RECIPE, **asdict(config), "train_rows": int(len(rows)),
                     "seconds": seconds_fit, "fit": log, "split_overlap": overlap,
                     "deviations_from_paper": [
                         *_start_deviations(model),
                         "backbones frozen at ImageNet features (the paper fine-tunes both)",
                         "block 5 of a branch made the identity (Dirac convolutions) where its head "
                         "did better that way in grouped cross-validation on the training split",
                         *([f"US block 5 fine-tuned ({_tuned_convs(config)}, "
                            f"{config.us_tune_epochs} epochs, Adam "
                            f"{config.tune_lr:g}) on cached block-4 features, from the identity, "
                            "kept because its out-of-fold CV AUC beat the frozen block's"]
                           if tuned_blocks else []),
                         "heads fitted as L2-penalised logistic regressions on each block's pooled "
                         "features (penalty by grouped cross-validation), not by focal loss with Adam",
                         "fusion fitted on out-of-fold block-5 logits (stacking), not end to end",
                         "no US/MG consistency loss; no epoch selection (nothing iterates)",
                     ]},
        "hardware": {"device": describe_device(device), "torch": torch.__version__,
                     "python": platform.python_version()},
        "data": data_info or {},
        "code_commit": code_commit,
        "baselines": {
            "dlu": {"recipe": FROZEN_RECIPE, "weights": "the DL-UM US branch (same function: "
                    "frozen backbone, heads fitted on ultrasound lesions alone)"},
            "dlm": {"recipe": FROZEN_RECIPE, "weights": "the DL-UM MG branch (same function: "
                    "frozen backbone, heads fitted on mammography lesions alone)"},
        },
    }, str(out_dir / "card.json"))
    save_checkpoint(out_dir, model, card, dtype=getattr(torch, config.weights_dtype))
    kept, _ = load_checkpoint(out_dir, device)
    predict_config = TrainConfig(arch="dlum", input_size=size)
    _write_held_out_predictions(out_dir, cohort, crops, kept, predict_config, imagenet, rows, device)
    held = pd.read_csv(out_dir / "held_out_predictions.csv")
    held["p_dlu"], held["p_dlm"] = held["p_us_head"], held["p_mg_head"]
    from dlum.predictions import write_predictions

    write_predictions(held, out_dir / "held_out_predictions.csv")
    from dataclasses import replace

    from dlum.card import write_card

    card = replace(card, training={**card.training,
                                   "seconds_total": time.perf_counter() - t_start})
    write_card(out_dir, card)
    from dlum.card import read_card

    return read_card(out_dir)  # as written (JSON lists, not tuples)
