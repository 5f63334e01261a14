"""Class activation maps for every block of both DL-UM branches, with the grad-cam package.

DL-UM (Xu et al., Breast Cancer Research 2025) shows CAMs from the last convolutional layer of
each of the five blocks, for the US and the MG branch. grad-cam calls ``model(x)`` with one tensor,
so each branch is wrapped in a module that holds the other modality's block-5 features fixed.
One forward and one backward pass per branch give all five maps of that branch: we call
grad-cam's ``compute_cam_per_layer`` instead of its ``__call__``, which would average the layers.

CAMs are min–max scaled per image: they are *relative* and never comparable across cases.
Each call works on a private fp32 copy of the network, so hooks never touch a model that other
threads (other app sessions) are using.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dlum.constants import MG, N_BLOCKS, US, CamMethod
from dlum.errors import InputError

__all__ = ["CAM_METHODS", "CAM_TARGETS", "CAMResult", "compute_cams", "overlay"]


def _methods() -> dict[str, type]:
    from pytorch_grad_cam import (
        GradCAM,
        GradCAMPlusPlus,
        HiResCAM,
        LayerCAM,
        XGradCAM,
    )

    return {
        "Grad-CAM": GradCAM,
        "Grad-CAM++": GradCAMPlusPlus,
        "XGrad-CAM": XGradCAM,
        "HiResCAM": HiResCAM,
        "LayerCAM": LayerCAM,
    }


#: Methods offered (all need a single forward/backward; perturbation methods are too slow here).
CAM_METHODS = tuple(m.value for m in CamMethod)
#: What the maps explain: the fused DL-UM output, or each branch's own block-5 head.
CAM_TARGETS = ("fused", "branch")


class _BranchLogit(nn.Module):
    """One branch as a one-input, one-logit module (the other modality held fixed)."""

    def __init__(self, model: nn.Module, modality: str, other: torch.Tensor | None, target: str):
        super().__init__()
        self.model = model
        self.modality = modality
        self.other = other
        self.target = target
        self.branch = model.branch_for(modality) if hasattr(model, "branch_for") else model.branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, features = self.branch(x)
        if self.target == "fused" and self.other is not None:
            other = self.other.expand(x.shape[0], -1)
            pair = (features, other) if self.modality == US else (other, features)
            return self.model.fusion_head(torch.cat(pair, dim=1)).float()[:, None]
        return logits[-1].float()[:, None]


@dataclass
class CAMResult:
    """Maps per modality: arrays of shape (5, H, W) in [0, 1], block 1 → 5."""

    maps: dict[str, np.ndarray]
    method: str
    target: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def compute_cams(
    model: nn.Module,
    us: torch.Tensor | None = None,
    mg: torch.Tensor | None = None,
    *,
    method: str = "Grad-CAM",
    target: str = "fused",
) -> CAMResult:
    """CAMs of blocks 1–5 for each given modality (inputs: (1, 3, H, W) network tensors).

    ``target="fused"`` explains DL-UM's fused output (when both images are given), ``"branch"``
    each branch's own block-5 head. The maps explain the malignant direction of the logit.
    """
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    methods = _methods()
    if method not in methods:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    if target not in CAM_TARGETS:
        raise ValueError(f"unknown CAM target {target!r}; choose from {', '.join(CAM_TARGETS)}")
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    private = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    inputs = {m: x.float().to(device) for m, x in ((US, us), (MG, mg)) if x is not None}
    features: dict[str, torch.Tensor] = {}
    if target == "fused" and len(inputs) == 2:
        with torch.no_grad():
            for m, x in inputs.items():
                features[m] = private.branch_for(m)(x)[1]
    notes = [] if target == "fused" and len(inputs) == 2 else (
        ["one image only: maps explain that branch's own output"] if target == "fused" else []
    )
    maps: dict[str, np.ndarray] = {}
    for m, x in inputs.items():
        other = features.get(MG if m == US else US)
        wrapper = _BranchLogit(private, m, other, target if other is not None else "branch")
        layers = wrapper.branch.cam_layers()
        x = x.clone().requires_grad_(True)
        with methods[method](model=wrapper, target_layers=layers) as cam:
            outputs = cam.activations_and_grads(x)
            targets = [BinaryClassifierOutputTarget(1)] * x.shape[0]
            if cam.uses_gradients:
                wrapper.zero_grad()
                sum(t(o) for t, o in zip(targets, outputs)).backward()
            per_layer = cam.compute_cam_per_layer(x, targets, False)
        # As grad-cam does for a single layer: min–max again after the resize to the input size.
        maps[m] = np.stack([scale_cam_image(layer[:, 0])[0] for layer in per_layer]).astype(np.float32)
    return CAMResult(maps=maps, method=method, target=target, seconds=time.perf_counter() - t0,
                     notes=notes)


def overlay(image: np.ndarray, cam: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Heatmap of ``cam`` over a grey ``image`` in [0, 1] of the same size → RGB uint8."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=1 - opacity)


def cam_file_names(*, us: bool, mg: bool) -> list[str]:
    """The files :func:`write_cam_overlays` writes for the given modalities."""
    return [f"{m}_block{k}.png" for m, given in ((US, us), (MG, mg)) if given
            for k in range(1, N_BLOCKS + 1)]


def write_cam_overlays(predictor, out_dir, *, us=None, mg=None, us_box=None, mg_box=None,
                       method: str = "Grad-CAM", opacity: float = 0.5,
                       cams: CAMResult | None = None) -> list[str]:
    """CAM overlays of blocks 1–5 of each given image as PNGs in ``out_dir``; returns their paths.
    ``cams``: maps already computed for these images and boxes (else computed here).

    Raises:
        InputError: ``out_dir`` cannot be made or written (a file, a read-only place).
    """
    from pathlib import Path

    from PIL import Image

    from dlum.data.io import read_image

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot make the CAM folder ({err.strerror or err})", str(out)) from None
    tensors = {}
    for modality, source, box in ((US, us, us_box), (MG, mg, mg_box)):
        if source is not None:
            tensors[modality] = predictor.preprocess(read_image(source), box)[None]
    result = cams or compute_cams(predictor.model, tensors.get(US), tensors.get(MG), method=method)
    written = []
    for modality, maps in result.maps.items():
        x = tensors[modality][0, 0].numpy()
        grey = (x - x.min()) / (x.max() - x.min() + 1e-12)
        for k, cam in enumerate(maps, start=1):
            path = out / f"{modality}_block{k}.png"
            try:
                Image.fromarray(overlay(grey, cam, opacity)).save(path)
            except OSError as err:
                raise InputError(f"cannot write {path.name} ({err.strerror or err})",
                                 str(out)) from None
            written.append(str(path))
    return written
