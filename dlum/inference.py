"""Inference with a DL-UM checkpoint: one uploaded pair, or every row of a cohort table.

Pre-processing follows Xu et al. 2025: the lesion box expanded by 30% of its shortest side,
cropped, resized to 224×224 and min–max normalised (``dlum.data.transforms.preprocess``).
Probabilities are sigmoid(logit) = P(malignant).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dlum.checkpoint import load_checkpoint
from dlum.constants import MG, MODALITY_NAMES, US, Arch, Mode
from dlum.data.crops import CropSet, extract_crops
from dlum.errors import CheckpointError, CohortError, DLUMError, InputError
from dlum.runtime import autocast, describe_device, fast_dtype, resolve_device

log = logging.getLogger(__name__)

__all__ = ["Predictor", "PairPrediction", "PREDICTION_COLUMNS"]

#: Columns ``predict_cohort`` writes (``p_dlu`` / ``p_dlm`` follow when those models are given);
#: the table's contract is :mod:`dlum.predictions`.
PREDICTION_COLUMNS = [
    "case_id", "patient_id", "label", "subgroup", "split", "p_dlum", "p_us_head", "p_mg_head",
]


@dataclass
class PairPrediction:
    """What the model says about one case: probabilities only. The call (biopsy or follow-up)
    is :func:`dlum.decision.decide`'s, never this object's.

    ``p_dlum`` is None when only one image was given; ``whole_image`` names the modalities read
    without a lesion box (the whole image as ROI).
    """

    p_dlum: float | None
    p_us_head: float | None
    p_mg_head: float | None
    p_us_blocks: list[float] | None = None
    p_mg_blocks: list[float] | None = None
    mode: str = Mode.PAIR.value
    whole_image: tuple[str, ...] = ()
    seconds: float = 0.0
    device: str = ""
    precision: str = ""
    model_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, digits: int | None = None) -> dict[str, Any]:
        """The outputs (``p_dlum``, branch heads and their per-block values), rounded when asked."""
        def r(v):
            return v if v is None or digits is None else round(float(v), digits)

        return {
            "mode": self.mode,
            "p_dlum": r(self.p_dlum),
            "p_us_head": r(self.p_us_head),
            "p_mg_head": r(self.p_mg_head),
            "p_us_blocks": None if self.p_us_blocks is None else [r(v) for v in self.p_us_blocks],
            "p_mg_blocks": None if self.p_mg_blocks is None else [r(v) for v in self.p_mg_blocks],
        }


class Predictor:
    """A loaded checkpoint that turns images into probabilities.

    Args:
        checkpoint: folder with ``model.safetensors`` and ``card.json``.
        device: ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``.
        precision: ``"auto"`` (bf16 on GPUs and on CPUs with AMX or AVX512-BF16, else fp32; see
            :func:`dlum.runtime.fast_dtype`), ``"fp32"`` or ``"bf16"``. CAMs always run in fp32.
        dlu, dlm: optional DL-U / DL-M checkpoint folders for ``p_dlu`` / ``p_dlm`` columns.
        compile: also build a ``torch.compile``'d copy of the model (inductor, weights frozen as
            constants) for one pair at a time; see :meth:`compile_pair_path`.

    Weights and inputs are channels_last on every device: oneDNN's and cuDNN's fastest layout for
    these 3 × 3 convolutions (on this project's 2-core CPU: fp32 0.46 → 0.44 s per pair, bf16
    0.23 → 0.21 s; ``benchmarks/bench_inference.py``).

    >>> p = Predictor("checkpoints/dlum-public-v2")            # doctest: +SKIP
    >>> p.predict_pair(us="us.png", mg="mg.dcm").p_dlum        # doctest: +SKIP
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        dlu: str | Path | None = None,
        dlm: str | Path | None = None,
        compile: bool = False,
    ):
        self.device = resolve_device(device)
        self.model, self.card = load_checkpoint(checkpoint, self.device)
        if self.card.arch != Arch.DLUM:
            raise CheckpointError(f"{checkpoint}: expected a DL-UM checkpoint (arch dlum), got "
                                  f"{self.card.arch.value}; DL-U / DL-M checkpoints go to --dlu / --dlm")
        self.checkpoint = Path(checkpoint)
        self.dtype = fast_dtype(self.device, precision)
        self.baselines: dict[str, tuple[torch.nn.Module, dict]] = {}
        for name, path in (("dlu", dlu), ("dlm", dlm)):
            if path is not None:
                model, card = load_checkpoint(path, self.device)
                if card.arch.value != name:
                    raise CheckpointError(f"{path}: --{name} needs a {Arch(name).title} checkpoint, "
                                          f"this one is {card.arch.title}")
                self.baselines[name] = (model, card)
        self._prepare(self.model)
        for model, _ in self.baselines.values():
            self._prepare(model)
        self._lock = threading.Lock()
        self._compiled = None  # the compiled pair path, once built
        self._compile_thread: threading.Thread | None = None
        if compile:
            self.compile_pair_path()

    #: Layout of weights and inputs (benchmarks set ``torch.contiguous_format`` to compare).
    memory_format = torch.channels_last

    def _prepare(self, model: torch.nn.Module) -> None:
        model.to(memory_format=self.memory_format).eval().requires_grad_(False)

    def use_memory_format(self, memory_format: torch.memory_format) -> None:
        """Re-lay the weights (all models) and later inputs out in ``memory_format``."""
        self.memory_format = memory_format
        for model in [self.model, *(m for m, _ in self.baselines.values())]:
            self._prepare(model)

    def compile_pair_path(self) -> bool:
        """Compile the pair → probabilities path with ``torch.compile`` (inductor, ``freezing``:
        batch norm folded into the convolutions, weights pre-packed) and warm it up on one pair.

        Opt-in: on this project's 2-core CPUs it gained at most ~9% over eager channels_last
        (AVX2, fp32: none, ≈ 0.5 s per pair; AVX512-BF16, bf16: 0.21 → 0.19–0.22 s;
        ``benchmarks/bench_inference.py``), after a one-off compile of 10–30 s that needs a C++
        compiler. Returns False (and keeps the eager path) when compiling fails; predictions
        agree with eager to ~1e-5 in fp32, ~1e-4 in bf16.
        Safe to call from a background thread: ``forward`` uses the compiled path only once built.
        """
        if self._compiled is not None:
            return True
        try:
            compiled = torch.compile(_PairLogits(self.model), options={"freezing": True}, dynamic=False)
            x = torch.zeros(1, 3, self.input_size, self.input_size, device=self.device)
            x = x.contiguous(memory_format=self.memory_format)
            with torch.inference_mode(), autocast(self.device, self.dtype):  # as forward() runs it
                compiled(x, x)
        except Exception as exc:  # inductor raises many types (no compiler, unsupported op, ...)
            log.warning("torch.compile of the pair path failed (%s); keeping the eager model",
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return False
        self._compiled = compiled
        return True

    def compile_in_background(self) -> threading.Thread:
        """Start :meth:`compile_pair_path` in a daemon thread (the dashboard does with
        ``DLUM_COMPILE=1``, so pages show at once meanwhile); :meth:`wait_compiled` joins it."""
        if self._compile_thread is None:
            self._compile_thread = threading.Thread(target=self.compile_pair_path,
                                                    name="dlum-compile", daemon=True)
            self._compile_thread.start()
        return self._compile_thread

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Wait for a background compile (if one was started); returns :attr:`compiled`."""
        if self._compile_thread is not None:
            self._compile_thread.join(timeout)
        return self.compiled

    @property
    def compiled(self) -> bool:
        """Whether one-pair predictions use the compiled path."""
        return self._compiled is not None

    # -- facts -----------------------------------------------------------------------------
    @property
    def imagenet(self) -> bool:
        return self.card.input.imagenet_normalisation

    @property
    def input_size(self) -> int:
        return self.card.input.size

    @property
    def version(self) -> str:
        return self.card.name or self.checkpoint.name

    @property
    def device_name(self) -> str:
        return describe_device(self.device)

    # -- tensors ---------------------------------------------------------------------------
    def preprocess(self, image: np.ndarray, box=None) -> torch.Tensor:
        from dlum.data.transforms import preprocess

        return preprocess(image, box, size=self.input_size, imagenet=self.imagenet)

    def _run(self, fn):
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return fn(self.memory_format)

    def forward(self, us: torch.Tensor | None, mg: torch.Tensor | None) -> dict[str, np.ndarray]:
        """Probabilities for batches of network inputs (either may be None: one branch only)."""

        def to(x, memory):
            x = x.to(self.device, non_blocking=True)
            return x.contiguous(memory_format=memory) if memory is not None else x

        def go(memory):
            out: dict[str, np.ndarray] = {}
            if us is not None and mg is not None and self._compiled is not None and len(us) == 1:
                fused, us_logits, mg_logits = self._compiled(to(us, memory), to(mg, memory))
                out["p_dlum"] = _sigmoid(fused)
                out["us_blocks"] = _sigmoid(us_logits)
                out["mg_blocks"] = _sigmoid(mg_logits)
            elif us is not None and mg is not None:
                o = self.model(to(us, memory), to(mg, memory))
                out["p_dlum"] = _sigmoid(o.fused)
                out["us_blocks"] = np.stack([_sigmoid(t) for t in o.us], axis=1)
                out["mg_blocks"] = np.stack([_sigmoid(t) for t in o.mg], axis=1)
            else:
                for modality, x in ((US, us), (MG, mg)):
                    if x is not None:
                        logits = self.model.forward_branch(modality, to(x, memory)).logits
                        out[f"{modality}_blocks"] = np.stack([_sigmoid(t) for t in logits], axis=1)
            for name, (model, card) in self.baselines.items():
                x = us if name == "dlu" else mg
                if x is not None:
                    out[f"p_{name}"] = _sigmoid(model(to(x, memory)).final)
            return out

        return self._run(go)

    # -- one case --------------------------------------------------------------------------
    def predict_pair(self, us=None, mg=None, *, us_box=None, mg_box=None) -> PairPrediction:
        """Predict one case from image sources (path, bytes, file-like) or decoded arrays.

        Either image may be omitted: the prediction is then that branch's block-5 output,
        marked ``mode = "us-only"`` or ``"mg-only"``. A modality given without a box (or with a
        box covering the whole image) is listed in ``whole_image``.
        """
        from dlum.data.io import read_image

        if us is None and mg is None:
            raise InputError("give at least one image (ultrasound or mammography)")
        t0 = time.perf_counter()
        tensors = {}
        whole = []
        for modality, source, box in ((US, us, us_box), (MG, mg, mg_box)):
            if source is None:
                continue
            image = source if isinstance(source, np.ndarray) else read_image(source)
            if box is None or tuple(box) == (0, 0, image.shape[1], image.shape[0]):
                whole.append(modality)
            _refuse_constant(image, box, modality)
            tensors[modality] = self.preprocess(image, box)[None]
        out = self.forward(tensors.get(US), tensors.get(MG))
        us_blocks = out.get("us_blocks")
        mg_blocks = out.get("mg_blocks")
        mode = Mode.of(US in tensors, MG in tensors).value
        return PairPrediction(
            p_dlum=float(out["p_dlum"][0]) if "p_dlum" in out else None,
            p_us_head=float(us_blocks[0, -1]) if us_blocks is not None else None,
            p_mg_head=float(mg_blocks[0, -1]) if mg_blocks is not None else None,
            p_us_blocks=us_blocks[0].tolist() if us_blocks is not None else None,
            p_mg_blocks=mg_blocks[0].tolist() if mg_blocks is not None else None,
            mode=mode,
            whole_image=tuple(whole),
            seconds=time.perf_counter() - t0,
            device=self.device_name,
            precision=str(self.dtype).replace("torch.", ""),
            model_version=self.version,
        )

    # -- a cohort --------------------------------------------------------------------------
    def predict_cohort(
        self,
        cohort: pd.DataFrame,
        *,
        split: str | None = None,
        batch_size: int = 16,
        progress: bool = True,
        crops: CropSet | None = None,
    ) -> pd.DataFrame:
        """``predictions.csv`` rows for a validated cohort table (every row when split is None).

        ``crops``: the table's crops (:class:`dlum.data.crops.CropSet`, e.g. ``crops.npz`` from
        ``python -m dlum prepare``), used instead of cropping the image files; for 8-bit
        sources the predictions are the same.
        """
        from dlum.data.transforms import to_network_input

        if crops is not None:
            crops.check_matches(cohort)
        keep = np.ones(len(cohort), dtype=bool)
        if split is not None:
            keep = (cohort["split"] == split).to_numpy()
            cohort = cohort[keep]
            if cohort.empty:
                raise CohortError([f"no rows with split = {split!r}"])
        cohort = cohort.reset_index(drop=True)
        if crops is None:
            crops = extract_crops(cohort, progress=progress, quantise=False)
        else:
            crops = crops.subset(np.flatnonzero(keep))
        chunks: list[dict[str, np.ndarray]] = []
        starts = range(0, len(cohort), batch_size)
        for start in tqdm(starts, desc="predicting", disable=not progress, leave=False):
            rows = range(start, min(start + batch_size, len(cohort)))
            batch = {
                m: torch.stack([
                    to_network_input(crops.crop(m, r), size=self.input_size, imagenet=self.imagenet)
                    for r in rows
                ])
                for m in (US, MG)
            }
            chunks.append(self.forward(batch[US], batch[MG]))
        out = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        for key, values in out.items():
            bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
            if bad.any():
                raise DLUMError(f"the model gave a non-finite probability ({key}) for "
                                f"{int(bad.sum())} case(s): are the weights damaged?")
        frame = pd.DataFrame({
            "case_id": cohort["case_id"].astype(str),
            "patient_id": cohort["patient_id"].astype(str),
            "label": cohort["label"].astype(int),
            "subgroup": cohort["subgroup"],
            "split": cohort["split"],
            "p_dlum": out["p_dlum"],
            "p_us_head": out["us_blocks"][:, -1],
            "p_mg_head": out["mg_blocks"][:, -1],
        })
        for name in ("dlu", "dlm"):
            if f"p_{name}" in out:
                frame[f"p_{name}"] = out[f"p_{name}"]
        return frame


def _refuse_constant(image: np.ndarray, box, modality: str) -> None:
    """A blank image (or lesion box) has nothing to read: min–max scaling would turn it into
    zeros and the network would answer anyway. Refuse it with a message instead."""
    region = np.asarray(image)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        region = region[max(y0, 0):y1, max(x0, 0):x1]
    if region.size and float(region.max()) == float(region.min()):
        where = "inside the lesion box " if box is not None else ""
        raise InputError(f"the {MODALITY_NAMES.get(modality, modality).lower()} image {where}is "
                         f"constant (every pixel {float(region.min()):g}): there is nothing to read")


class _PairLogits(torch.nn.Module):
    """DL-UM's outputs as plain tensors (fused, US blocks, MG blocks), the form ``torch.compile``
    traces best; used only by the compiled pair path."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, us: torch.Tensor, mg: torch.Tensor):
        o = self.model(us, mg)
        return o.fused, torch.stack(list(o.us), dim=1), torch.stack(list(o.mg), dim=1)


def _sigmoid(t: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(t.float()).cpu().numpy().astype(np.float64)
