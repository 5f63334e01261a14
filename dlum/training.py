"""Training DL-UM, DL-U and DL-M (Xu et al., Breast Cancer Research 2025, "Training").

The paper's recipe by default: Adam (lr 1e-4, beta1 0.9), batch 16, focal loss on every
deep-supervision head and on the fused output plus an MAE consistency term between the US and MG
block-5 probabilities (DL-UM); a checkpoint per epoch, the epoch with the lowest mean validation
loss kept. Runs on one device, or on several through ``torchrun`` (DistributedDataParallel).

Training refuses a cohort that puts a patient or an image in two splits
(:func:`dlum.data.manifest.check_split_overlap`; with ``fold``, in the training and validation
folds) unless ``allow_split_overlap`` is set; then it warns and the card records the overlap.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import re
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from dlum.card import Card
from dlum.checkpoint import dedup_shared, load_checkpoint, load_state, save_checkpoint
from dlum.constants import MG, MODALITIES, TRAIN, US, VALIDATION, Arch
from dlum.data.crops import CropSet
from dlum.data.transforms import to_network_input
from dlum.errors import CheckpointError, DLUMError
from dlum.runtime import autocast, describe_device, fast_dtype, resolve_device
from dlum.settings import distributed
from dlum.files import atomic_path, write_text_atomic
from dlum.configs import TrainConfig

__all__ = ["TrainConfig", "PairDataset", "Augment", "fit", "train_step", "train_one_epoch",
           "validate", "build_card", "loss_and_optimizer", "assign_folds", "guard_split_overlap",
           "ARCHS"]

#: The ``--arch`` choices as plain strings (kept for callers that predate :class:`Arch`).
ARCHS = tuple(a.value for a in Arch)
class Augment:
    """Light, label-preserving augmentation of one uint8 crop: flip, small affine, intensity.

    Applied to the expanded-ROI crop before it is resized to the network input, so that the
    evaluation path (no augmentation) is exactly the inference path.
    """

    def __init__(self, config: TrainConfig):
        from torchvision.transforms import v2

        steps = []
        if config.flip:
            steps.append(v2.RandomHorizontalFlip())
        if config.rotate_deg or config.scale or config.translate:
            steps.append(
                v2.RandomAffine(
                    degrees=config.rotate_deg,
                    translate=(config.translate, config.translate),
                    scale=(1 - config.scale, 1 + config.scale),
                )
            )
        self.spatial = v2.Compose(steps) if steps else None
        self.intensity = config.intensity

    def __call__(self, crop: np.ndarray, generator: torch.Generator) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None]
        if self.spatial is not None:
            x = self.spatial(x)
        if self.intensity:
            # gamma and contrast jitter on the [0, 1] scale
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
            r = torch.rand(2, generator=generator)
            gamma = math.exp((r[0].item() * 2 - 1) * self.intensity)
            contrast = 1 + (r[1].item() * 2 - 1) * self.intensity
            x = ((x.clamp(0, 1) ** gamma - 0.5) * contrast + 0.5).clamp(0, 1)
        return x[0].numpy()


class PairDataset(Dataset):
    """Rows of a cohort with their US and MG crops → (us, mg, label) network inputs."""

    def __init__(
        self,
        crops: CropSet,
        rows: np.ndarray,
        *,
        imagenet: bool,
        augment: Augment | None = None,
        modalities: tuple[str, ...] = (US, MG),
        seed: int = 0,
        size: int = 224,
        redraw_mg: dict[int, np.ndarray] | None = None,
    ):
        """``redraw_mg``: per label, MG crop numbers to draw each pair's MG partner from afresh
        at every use (pseudo-pairs re-drawn every epoch) instead of the row's own."""
        self.size = size
        self.redraw_mg = redraw_mg
        self.crops = crops
        self.rows = np.asarray(rows)
        self.imagenet = imagenet
        self.augment = augment
        self.modalities = modalities
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.rows)

    def _input(self, modality: str, row: int) -> torch.Tensor:
        if modality == MG and self.redraw_mg is not None:
            pool = self.redraw_mg[int(self.crops.labels[row])]
            crop = self.crops.crops[MG][int(pool[torch.randint(len(pool), (1,), generator=self.generator)])]
        else:
            crop = self.crops.crop(modality, row)
        if self.augment is not None:
            crop = self.augment(crop, self.generator)
        return to_network_input(crop, size=self.size, imagenet=self.imagenet)

    def __getitem__(self, i: int):
        row = int(self.rows[i])
        empty = torch.zeros(0)
        us = self._input(US, row) if US in self.modalities else empty
        mg = self._input(MG, row) if MG in self.modalities else empty
        return us, mg, torch.tensor(float(self.crops.labels[row]))


def assign_folds(cohort: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Patient-level fold number (0..folds-1) per row, stratified by pathology.

    Uses scikit-learn's StratifiedGroupKFold so that no patient is in two folds; for a pseudo
    pair (``patient_id`` ``<US patient>+<MG woman>``) the group is the US patient (its MG woman is
    paired with US patients of every fold: :func:`fit` refuses that unless allowed).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from dlum.data.manifest import row_people

    fold_of = np.full(len(cohort), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    groups = row_people(cohort)["us"].astype(str)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(cohort)), cohort["label"], groups)):
        fold_of[held] = k
    return fold_of


def guard_split_overlap(cohort: pd.DataFrame, crops: CropSet | None, *, allow: bool,
                        splits=None) -> dict[str, Any]:
    """Refuse (or, with ``allow``, warn about) a patient or an image in two splits of ``cohort``.

    Images are compared by the bytes hashes ``crops`` holds (by path without them). ``splits``
    (per row) replaces the table's ``split`` column, e.g. with the folds of a cross-validation
    run. Returns the card's record: ``found`` (how many), ``compared`` (images by ``bytes`` or
    ``path``) and, when some were allowed, ``allowed`` and the first ``listed``.

    Raises:
        dlum.data.manifest.SplitOverlapError: some were found and ``allow`` is False.
    """
    from dlum.data.manifest import check_split_overlap

    digests = None
    if crops is not None and crops.digests is not None:
        digests = {m: crops.row_digests(m) for m in MODALITIES}
    found = check_split_overlap(cohort, splits=splits, digests=digests, allow=allow)
    record: dict[str, Any] = {"found": len(found), "compared": "bytes" if digests else "path"}
    if found:
        listed = [str(p) for p in found.items]
        record.update(allowed=True, listed=listed[:20])
        shown = "\n  - ".join(listed[:5])
        rest = f"\n  … and {len(found) - 5} more" if len(found) > 5 else ""
        warnings.warn(f"training although {len(found)} patient(s) or image(s) are in two splits "
                      f"(allow_split_overlap; recorded in the card):\n  - {shown}{rest}",
                      stacklevel=3)
    return record


def _fold_splits(cohort: pd.DataFrame, train: np.ndarray, val: np.ndarray, fold: int) -> np.ndarray:
    """The table's splits with its training and validation folds named as such."""
    splits = cohort["split"].astype(str).to_numpy().astype(object)
    splits[train] = "training folds"
    splits[val] = f"validation fold {fold}"
    return splits


def _select_rows(cohort: pd.DataFrame, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: the cohort's split, or patient-level CV folds."""
    if config.fold is not None:
        pool = cohort.index[cohort["split"].isin([TRAIN, VALIDATION])].to_numpy()
        folds = assign_folds(cohort.loc[pool].reset_index(drop=True), config.folds, config.seed)
        return pool[folds != config.fold], pool[folds == config.fold]
    train = cohort.index[cohort["split"] == TRAIN].to_numpy()
    val = cohort.index[cohort["split"] == VALIDATION].to_numpy()
    if len(train) == 0 or len(val) == 0:
        raise DLUMError("the cohort needs rows with split 'train' and 'validation' (or use --fold)")
    return train, val


def _build(config: TrainConfig) -> torch.nn.Module:
    from dlum.networks import DLUM, SingleBranch

    arch = Arch(config.arch)
    if arch is Arch.DLUM:
        return DLUM(pretrained=config.pretrained, share_backbone=config.share_backbone)
    (modality,) = arch.modalities
    return SingleBranch(modality, pretrained=config.pretrained)


def _forward(model, arch: str, us: torch.Tensor, mg: torch.Tensor, keep: torch.Tensor | None = None):
    if arch == Arch.DLUM:
        return model(us, mg) if keep is None else model(us, mg, keep)
    return model(us if arch == Arch.DLU else mg)


def loss_and_optimizer(model: torch.nn.Module, config: TrainConfig):
    """The paper's objective (focal loss on the fused output + deep supervision + consistency) and
    its Adam optimiser, as configured."""
    from dlum.losses import DLUMLoss

    criterion = DLUMLoss(
        alpha=config.focal_alpha,
        gamma=config.focal_gamma,
        fused_weight=config.fused_weight,
        supervision_weights=config.supervision_weights,
        consistency_weight=config.consistency_weight,
    )
    optimizer = torch.optim.Adam(
        model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2),
        weight_decay=config.weight_decay,
    )
    return criterion, optimizer


def modality_keep(batch: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, 2) multipliers of the US and MG features for modality dropout: with chance ``p``
    a pair loses one of the two (which one at random), never both; the rest keep both."""
    keep = torch.ones(batch, 2)
    r = torch.rand(batch, generator=generator)
    which = torch.randint(2, (batch,), generator=generator)
    dropped = torch.nonzero(r < p).squeeze(1)
    keep[dropped, which[dropped]] = 0.0
    return keep


def train_step(model, arch: str, criterion, optimizer, us: torch.Tensor, mg: torch.Tensor,
               y: torch.Tensor, *, device: torch.device, dtype: torch.dtype, channels_last: bool = True,
               modality_dropout: float = 0.0):
    """One optimisation step (forward under autocast, DLUMLoss, backward, Adam); returns the loss parts.

    ``fit`` and ``benchmarks/bench_training.py`` both run exactly this. ``modality_dropout``
    (DL-UM only): see :func:`modality_keep`.
    """
    keep = modality_keep(len(y), modality_dropout).to(device) if modality_dropout else None
    us, mg, y = (t.to(device, non_blocking=True) for t in (us, mg, y))
    if channels_last:
        us = us.contiguous(memory_format=torch.channels_last) if us.numel() else us
        mg = mg.contiguous(memory_format=torch.channels_last) if mg.numel() else mg
    with autocast(device, dtype):
        output = _forward(model, arch, us, mg, keep)
    parts = criterion(output, y)
    optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    optimizer.step()
    return parts


def _final_logit(output) -> torch.Tensor:
    return output.fused if hasattr(output, "fused") else output.final


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        commit = out.stdout.strip()
        return commit if re.fullmatch(r"[0-9a-f]{40}", commit) else None
    except (OSError, subprocess.SubprocessError):
        return None


def _save_state(path: Path, model, optimizer, epoch: int, best: dict) -> None:
    """Resume state: weights + Adam moments as safetensors, counters as JSON (no pickles)."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous().reshape(value.shape)
    meta = {"epoch": str(epoch), "best": json.dumps(best)}
    tmp = path.with_suffix(".tmp")
    dedup, aliases = dedup_shared(tensors)
    meta["aliases"] = json.dumps(aliases)
    save_file(dedup, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _load_state(path: Path, model, optimizer) -> tuple[int, dict]:
    from safetensors import safe_open

    tensors = load_state(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    damaged = (f"{path}: the resume state is damaged or from another run; delete it to start "
               "afresh, or pass --no-resume")
    try:
        epoch, best = int(meta["epoch"]), json.loads(meta["best"])
        if epoch < 0 or not isinstance(best, dict):
            raise ValueError(epoch)
        _unwrap(model).load_state_dict(
            {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        opt = optimizer.state_dict()
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                opt["state"].setdefault(int(idx), {})[name] = value
        optimizer.load_state_dict(opt)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{damaged} ({type(err).__name__}: {err})"[:600]) from None
    return epoch, best


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


@torch.no_grad()
def predict_rows(model, arch, crops: CropSet, rows, *, imagenet, device, dtype, batch_size=32, size=224):
    """Probabilities for cohort rows from their crops (no augmentation): a dict of arrays."""
    if Arch(arch) is Arch.DLUM:
        return _predict_pairs(_unwrap(model), crops, rows, imagenet=imagenet, device=device,
                              dtype=dtype, batch_size=batch_size, size=size)
    ds = PairDataset(crops, rows, imagenet=imagenet, modalities=Arch(arch).modalities, size=size)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False)
    model.eval()
    out: dict[str, list] = {}
    for us, mg, _ in loader:
        us, mg = us.to(device), mg.to(device)
        with autocast(device, dtype):
            o = _forward(model, arch, us, mg)
        probs = _probabilities(o)
        for k, v in probs.items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def _branch_once_per_image(branch, crops: CropSet, modality: str, rows, *, imagenet, device,
                           dtype, batch_size, size) -> tuple[torch.Tensor, torch.Tensor]:
    """A branch's block-5 logit and pooled block-5 features for each row, computed once per
    distinct image: a pseudo-pair cohort reuses each mammography lesion in ~22 rows."""
    distinct, inverse = np.unique(crops.index[modality][np.asarray(rows)], return_inverse=True)
    logits, features = [], []
    for start in range(0, len(distinct), batch_size):
        x = torch.stack([to_network_input(crops.crops[modality][int(n)], size=size, imagenet=imagenet)
                         for n in distinct[start:start + batch_size]]).to(device)
        with autocast(device, dtype):
            block_logits, pooled = branch(x)
        logits.append(block_logits[-1].float())
        features.append(pooled)
    index = torch.as_tensor(inverse.reshape(-1), device=device)
    return torch.cat(logits)[index], torch.cat(features)[index]


def _predict_pairs(model, crops: CropSet, rows, *, imagenet, device, dtype, batch_size, size):
    """DL-UM's three outputs per row, each branch run once per distinct image; the same function
    as ``model(us, mg)`` row by row."""
    model.eval()
    kwargs = dict(imagenet=imagenet, device=device, dtype=dtype, batch_size=batch_size, size=size)
    us_logit, us_features = _branch_once_per_image(model.us_branch, crops, US, rows, **kwargs)
    mg_logit, mg_features = _branch_once_per_image(model.mg_branch, crops, MG, rows, **kwargs)
    with autocast(device, dtype):
        fused = model.fusion_head(torch.cat([us_features, mg_features], dim=1)).float()
    return {"p_dlum": torch.sigmoid(fused).cpu().numpy(),
            "p_us_head": torch.sigmoid(us_logit).cpu().numpy(),
            "p_mg_head": torch.sigmoid(mg_logit).cpu().numpy()}


def _probabilities(output) -> dict[str, np.ndarray]:
    if hasattr(output, "fused"):
        return {
            "p_dlum": torch.sigmoid(output.fused.float()).cpu().numpy(),
            "p_us_head": torch.sigmoid(output.us[-1].float()).cpu().numpy(),
            "p_mg_head": torch.sigmoid(output.mg[-1].float()).cpu().numpy(),
        }
    return {"p": torch.sigmoid(output.final.float()).cpu().numpy()}


# ------------------------------------------------------------------------------ one training run
@dataclass
class _Run:
    """What :func:`fit` sets up once and every later step reads."""

    config: TrainConfig
    out_dir: Path
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype  # autocast precision of training and validation
    train_rows: np.ndarray
    val_rows: np.ndarray
    model: torch.nn.Module  # the network itself
    train_model: torch.nn.Module  # the same, wrapped in DistributedDataParallel when world > 1
    init_source: str
    imagenet: bool
    criterion: Any
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader
    #: the commit checked out when training started (read then: a long run may end on another)
    code_commit: str | None = None

    @property
    def state_path(self) -> Path:
        """The resume state, kept only while the run is unfinished."""
        return self.out_dir / "last_state.safetensors"

    @property
    def best_path(self) -> Path:
        """Weights of the best epoch so far (full precision), until they are shipped."""
        return self.out_dir / "best.safetensors"

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _start_processes(config: TrainConfig) -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when ``torchrun`` started several."""
    rank, world, local_rank = distributed()
    device = resolve_device(config.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    return rank, world, device


def redraw_pools(cohort: pd.DataFrame, crops: CropSet, train_rows: np.ndarray) -> dict[int, np.ndarray]:
    """Per label, the MG crops of the training rows, to re-draw pseudo-pairs from
    (``TrainConfig.redraw_pairs``); refused where a training row is a real same-patient pair."""
    if "pairing" in cohort and (cohort["pairing"].iloc[train_rows] != "pseudo").any():
        raise DLUMError("--redraw-pairs re-pairs pseudo-pairs only; the training rows hold real "
                        "same-patient pairs (pairing column), whose US and MG must stay together")
    labels = crops.labels[train_rows].astype(int)
    mg = crops.index[MG][train_rows]
    return {label: np.unique(mg[labels == label]) for label in (0, 1)}


def _loaders(crops: CropSet, train_rows: np.ndarray, val_rows: np.ndarray, config: TrainConfig, *,
             imagenet: bool, device: torch.device, rank: int, world: int,
             redraw_mg: dict[int, np.ndarray] | None = None) -> tuple[DataLoader, DataLoader]:
    """Training pairs (augmented, shuffled, split across processes) and validation pairs."""
    modalities = Arch(config.arch).modalities
    augment = Augment(config) if config.augment else None
    train_ds = PairDataset(crops, train_rows, imagenet=imagenet, augment=augment,
                           modalities=modalities, seed=config.seed + rank, size=config.input_size,
                           redraw_mg=redraw_mg)
    val_ds = PairDataset(crops, val_rows, imagenet=imagenet, modalities=modalities,
                         size=config.input_size)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                 seed=config.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(config.seed)
    loader_kw = dict(num_workers=config.num_workers, pin_memory=device.type == "cuda",
                     persistent_workers=config.num_workers > 0)
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, shuffle=sampler is None,
                              sampler=sampler, drop_last=len(train_ds) > config.batch_size,
                              generator=generator, **loader_kw)
    val_loader = DataLoader(val_ds, batch_size=max(32, config.batch_size), shuffle=False, **loader_kw)
    return train_loader, val_loader


def _set_up(cohort: pd.DataFrame, crops: CropSet, out_dir: Path, config: TrainConfig) -> _Run:
    """Processes and device, seeds, rows, model, loss, optimiser and loaders, in that order (the
    order fixes what the seeds produce)."""
    from dlum.networks.pretrained import uses_imagenet_normalisation

    rank, world, device = _start_processes(config)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    train_rows, val_rows = _select_rows(cohort, config)
    pools = redraw_pools(cohort, crops, train_rows) if config.redraw_pairs else None
    model = _build(config).to(device)
    init_source = getattr(model, "init_source", "random")
    imagenet = uses_imagenet_normalisation(init_source)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    dtype = fast_dtype(device, config.precision)
    criterion, optimizer = loss_and_optimizer(model, config)
    train_model = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    train_loader, val_loader = _loaders(crops, train_rows, val_rows, config, imagenet=imagenet,
                                        device=device, rank=rank, world=world, redraw_mg=pools)
    return _Run(config, out_dir, rank, world, device, dtype, train_rows, val_rows, model,
                train_model, init_source, imagenet, criterion, optimizer, train_loader, val_loader,
                _git_commit())


def _resume(run: _Run, resume: bool) -> tuple[int, dict, list[dict]]:
    """``(first epoch to run, best epoch so far, log so far)``: from the resume state if asked for
    and present, else a fresh start."""
    if not (resume and run.state_path.is_file()):
        return 0, {"epoch": None, "val_loss": math.inf}, []
    start_epoch, best = _load_state(run.state_path, run.model, run.optimizer)
    log_path = run.out_dir / "log.json"
    try:
        log = json.loads(log_path.read_text())[:start_epoch] if log_path.is_file() else []
    except (ValueError, TypeError, OSError):
        raise CheckpointError(f"{log_path}: the training log of the interrupted run is damaged; "
                              "pass --no-resume to start afresh") from None
    return start_epoch, best, log


class EpochTraining(NamedTuple):
    """One pass over the training loader."""

    loss: float  # mean training loss per pair
    pairs_per_second: float
    seconds: float


class Validation(NamedTuple):
    loss: float  # mean validation loss per pair
    auc: float  # of the model's own output (NaN when the rows hold one class only)


def train_one_epoch(model, arch: str, criterion, optimizer, loader: DataLoader, *,
                    device: torch.device, dtype: torch.dtype, channels_last: bool = True,
                    epoch: int = 0, max_steps: int | None = None, progress: bool = False,
                    desc: str | None = None, modality_dropout: float = 0.0) -> EpochTraining:
    """One epoch of :func:`train_step` over ``loader`` (at most ``max_steps`` steps when given).

    ``epoch`` reshuffles a :class:`DistributedSampler` as ``set_epoch`` asks.
    """
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    model.train()
    t0 = time.perf_counter()
    running, seen = 0.0, 0
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False)
    for step, (us, mg, y) in enumerate(bar):
        if max_steps and step >= max_steps:
            break
        parts = train_step(model, arch, criterion, optimizer, us, mg, y, device=device, dtype=dtype,
                           channels_last=channels_last, modality_dropout=modality_dropout)
        running += parts.total.item() * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{running / seen:.4f}")
    seconds = time.perf_counter() - t0
    return EpochTraining(loss=running / max(seen, 1),
                         pairs_per_second=seen / seconds if seconds else float("nan"),
                         seconds=seconds)


@torch.no_grad()
def validate(model, arch: str, criterion, loader: DataLoader, *, device: torch.device,
             dtype: torch.dtype) -> Validation:
    """Mean loss and AUC of ``model``'s final output on ``loader`` (no augmentation)."""
    model.eval()
    total, n, probs, labels = 0.0, 0, [], []
    for us, mg, y in loader:
        us, mg, y = (t.to(device) for t in (us, mg, y))
        with autocast(device, dtype):
            output = _forward(model, arch, us, mg)
        total += criterion(output, y).total.item() * len(y)
        n += len(y)
        probs.append(torch.sigmoid(_final_logit(output).float()).cpu().numpy())
        labels.append(y.cpu().numpy())
    return Validation(loss=total / max(n, 1), auc=_auc(np.concatenate(labels), np.concatenate(probs)))


def _run_epoch(run: _Run, epoch: int, *, progress: bool) -> dict[str, Any]:
    """Train one epoch, validate it; its line of the log."""
    config = run.config
    trained = train_one_epoch(
        run.train_model, config.arch, run.criterion, run.optimizer, run.train_loader,
        device=run.device, dtype=run.dtype, channels_last=config.channels_last, epoch=epoch,
        max_steps=config.max_steps_per_epoch, progress=progress and run.rank == 0,
        desc=f"{config.arch} epoch {epoch + 1}/{config.epochs}",
        modality_dropout=config.modality_dropout,
    )
    checked = validate(run.model, config.arch, run.criterion, run.val_loader,
                       device=run.device, dtype=run.dtype)
    return {
        "epoch": epoch + 1,
        "train_loss": trained.loss,
        "val_loss": checked.loss,
        "val_auc": checked.auc,
        "train_seconds": trained.seconds,
        "pairs_per_second": trained.pairs_per_second,
    }


def _keep_best(run: _Run, log: list[dict], best: dict, *, progress: bool) -> dict:
    """After an epoch (``log[-1]``): keep its weights if its validation loss is the lowest so far,
    save the resume state and the log (rank 0); returns the best epoch so far."""
    entry = log[-1]
    if run.rank == 0:
        improved = entry["val_loss"] < best["val_loss"]
        if improved:
            best = {"epoch": entry["epoch"], "val_loss": entry["val_loss"], "val_auc": entry["val_auc"]}
            save_checkpoint(run.out_dir, run.model, {"model": _unwrap(run.model).config()},
                            weights_name=run.best_path.name)
        _save_state(run.state_path, run.model, run.optimizer, entry["epoch"], best)
        _write_log(run.out_dir, log)
        if progress:
            tqdm.write(
                f"{run.config.arch} epoch {entry['epoch']}: train loss {entry['train_loss']:.4f}, "
                f"val loss {entry['val_loss']:.4f}, val AUC {entry['val_auc']:.3f}"
                + ("  (best)" if improved else "")
            )
    run.barrier()
    return best


def _restore_kept_epoch(run: _Run) -> None:
    """Load the weights of the kept (best) epoch into the model."""
    if not run.best_path.is_file():
        raise CheckpointError(f"{run.out_dir}: no epoch was completed")
    _unwrap(run.model).load_state_dict(load_state(run.best_path))


def build_card(run: _Run, *, log: list[dict], best: dict, seconds: float,
               data_info: dict | None, split_overlap: dict | None = None) -> Card:
    """The checkpoint card (``card.json``, :mod:`dlum.card`) of a finished run; its operating
    points and held-out results come later, from ``python -m dlum report --held-out``.
    ``split_overlap``: what :func:`guard_split_overlap` found (``training.split_overlap``)."""
    config = run.config
    return Card.from_dict({
        "name": run.out_dir.name,
        "model": _unwrap(run.model).config(),
        "arch": config.arch,
        "initialisation": run.init_source,
        "input": {"size": config.input_size, "imagenet_normalisation": run.imagenet,
                  "roi_expansion": 0.30, "intensity": "min-max to [0, 1] per crop"},
        "training": {
            "recipe": "paper",
            "deviations_from_paper": [
                "ROI expansion 15% per side (the paper: 30% of the shortest side, unspecified)",
                "VGG19 initialised from ImageNet VGG16 deepened with identity convolutions "
                "when torchvision's VGG19 weights are not cached",
                *([f"modality dropout: with chance {config.modality_dropout} a training pair's "
                   "fusion head saw one modality's features zeroed"] if config.modality_dropout else []),
                *(["pseudo-pairs re-drawn at every use: each training US lesion's MG partner "
                   "drawn among the training MG lesions of its pathology"] if config.redraw_pairs else []),
            ],
            **config.to_dict(),
            "epochs_run": len(log),
            "epoch_kept": best["epoch"],
            "best_val_loss": best["val_loss"],
            "best_val_auc": best.get("val_auc"),
            "train_rows": int(len(run.train_rows)),
            "validation_rows": int(len(run.val_rows)),
            "world_size": run.world,
            "precision": str(run.dtype).replace("torch.", ""),
            "seconds": seconds,
            **({"split_overlap": split_overlap} if split_overlap is not None else {}),
        },
        "hardware": {"device": describe_device(run.device), "torch": torch.__version__,
                     "python": platform.python_version()},
        "data": data_info or {},
        "code_commit": run.code_commit,
    }, f"{run.out_dir}/card.json")


def _ship(run: _Run, card: Card, cohort: pd.DataFrame, crops: CropSet) -> None:
    """Save the kept epoch in its storage precision with its card, then predict the held-out rows
    with exactly what was shipped (reloaded as ``python -m dlum evaluate`` will load it); the
    best-epoch weights and the resume state go."""
    config = run.config
    save_checkpoint(run.out_dir, _unwrap(run.model), card, dtype=getattr(torch, config.weights_dtype))
    run.best_path.unlink()
    kept, _ = load_checkpoint(run.out_dir, run.device)
    _write_held_out_predictions(run.out_dir, cohort, crops, kept, config, run.imagenet,
                                run.train_rows, run.device)
    run.state_path.unlink(missing_ok=True)  # the resume state is only kept while unfinished


def fit(
    cohort: pd.DataFrame,
    crops: CropSet,
    out_dir: str | Path,
    config: TrainConfig,
    *,
    resume: bool = True,
    progress: bool = True,
    data_info: dict | None = None,
) -> Card | None:
    """Train one model; write ``model.safetensors`` (best epoch), ``card.json`` and logs.

    Returns the card (None on ranks other than 0). ``cohort`` must be the table ``crops``
    was built from (same row order).

    Raises:
        dlum.data.manifest.SplitOverlapError: a patient or an image in two splits (with
            ``config.fold``: in the training and validation folds), unless
            ``config.allow_split_overlap``; nothing is written then.
    """
    splits = None
    if config.fold is not None:
        train_rows, val_rows = _select_rows(cohort, config)
        splits = _fold_splits(cohort, train_rows, val_rows, config.fold)
    overlap = guard_split_overlap(cohort, crops, allow=config.allow_split_overlap, splits=splits)
    run = _set_up(cohort, crops, Path(out_dir), config)
    start_epoch, best, log = _resume(run, resume)
    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        log.append(_run_epoch(run, epoch, progress=progress))
        best = _keep_best(run, log, best, progress=progress)
    card: Card | None = None
    if run.rank == 0:
        _restore_kept_epoch(run)
        card = build_card(run, log=log, best=best, seconds=time.perf_counter() - t_start,
                          data_info=data_info, split_overlap=overlap)
        _ship(run, card, cohort, crops)
    run.barrier()
    return card


def _write_held_out_predictions(out_dir, cohort, crops, model, config, imagenet, train_rows, device):
    """Probabilities (fp32) for every row not used for training, one CSV per split."""
    held = np.setdiff1d(np.arange(len(cohort)), train_rows)
    if device.type == "cuda":  # full fp32 so that CPU re-evaluation agrees
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    probs = predict_rows(model, config.arch, crops, held, imagenet=imagenet, device=device,
                         dtype=torch.float32, size=config.input_size)
    frame = cohort.iloc[held][["case_id", "patient_id", "label", "split"]].copy()
    if "subgroup" in cohort:
        frame.insert(3, "subgroup", cohort.iloc[held]["subgroup"].to_numpy())
    if config.arch == Arch.DLUM:
        for k, v in probs.items():
            frame[k] = v
    else:
        frame[f"p_{config.arch}"] = probs["p"]
    with atomic_path(out_dir / "held_out_predictions.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.8f")


def _write_log(out_dir: Path, log: list[dict]) -> None:
    write_text_atomic(out_dir / "log.json", json.dumps(log, indent=1))
    with open(out_dir / "log.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log[0]))
        writer.writeheader()
        writer.writerows(log)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))
