"""DL-UM networks (Xu et al., Breast Cancer Research 2025): the fusion model, its VGG19-style
branches with deep supervision, the DL-U / DL-M baselines, and ImageNet initialisation."""
from __future__ import annotations

from dlum.networks.dlum import (
    ARCHITECTURES,
    DLUM,
    BranchOutput,
    DLUMOutput,
    SingleBranch,
    build_model,
    count_parameters,
)
from dlum.networks.pretrained import (
    IMAGENET_SOURCES,
    INIT_SOURCES,
    load_imagenet_weights,
    uses_imagenet_normalisation,
)
from dlum.networks.vgg import ClassificationHead, VGGBlock, VGGBranch

__all__ = [
    "ARCHITECTURES",
    "DLUM",
    "IMAGENET_SOURCES",
    "INIT_SOURCES",
    "BranchOutput",
    "ClassificationHead",
    "DLUMOutput",
    "SingleBranch",
    "VGGBlock",
    "VGGBranch",
    "build_model",
    "count_parameters",
    "load_imagenet_weights",
    "uses_imagenet_normalisation",
]
