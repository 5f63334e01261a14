"""DL-UM: fusion of an ultrasound branch and a mammography branch; DL-U / DL-M baselines.

Xu et al., "Optimizing breast lesions diagnosis and decision-making with a deep learning fusion
model integrating ultrasound and mammography", Breast Cancer Research 2025, Fig. 2C. Each
modality goes through a VGG19-style branch with five deep-supervision heads; the block-5 GAP
features of both branches (512 + 512) are concatenated and classified by a fusion head
(FC64 -> ReLU -> FC1). DL-U and DL-M are one branch alone, their block-5 head being the output.

All outputs are logits of P(malignant), float32 even under mixed-precision autocast.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlum.constants import MG, MODALITIES, US, VGG19_BLOCKS, VGG_FILTERS
from dlum.errors import CheckpointError
from dlum.networks.pretrained import (
    INIT_SOURCES,
    RANDOM,
    load_imagenet_weights,
    resolve_pretrained,
    uses_imagenet_normalisation,
)
from dlum.networks.vgg import HEAD_HIDDEN, ClassificationHead, VGGBranch

__all__ = [
    "ARCHITECTURES",
    "BranchOutput",
    "DLUM",
    "DLUMOutput",
    "SingleBranch",
    "build_model",
    "count_parameters",
]

#: Architecture names, as used by checkpoints and the command line.
ARCH_DLUM, ARCH_DLU, ARCH_DLM = "dlum", "dlu", "dlm"
ARCHITECTURES = (ARCH_DLUM, ARCH_DLU, ARCH_DLM)
_SINGLE_ARCH = {US: ARCH_DLU, MG: ARCH_DLM}


@dataclass
class BranchOutput:
    """Logits of one branch: ``logits[k]`` (B,) is the head of block k+1 (block 1 -> 5)."""

    logits: list[torch.Tensor]
    features: torch.Tensor | None = None  # block-5 GAP features (B, 512)

    @property
    def final(self) -> torch.Tensor:
        """The block-5 head: the DL-U / DL-M output."""
        return self.logits[-1]

    def probabilities(self) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """``{"final": P(malignant), "blocks": [P per block]}`` (sigmoid of the logits)."""
        return {"final": torch.sigmoid(self.final), "blocks": [torch.sigmoid(x) for x in self.logits]}


@dataclass
class DLUMOutput:
    """Logits of DL-UM: ``fused`` (B,), and five per-block heads (B,) for ``us`` and ``mg``."""

    fused: torch.Tensor
    us: list[torch.Tensor]
    mg: list[torch.Tensor]

    @property
    def us_final(self) -> torch.Tensor:
        return self.us[-1]

    @property
    def mg_final(self) -> torch.Tensor:
        return self.mg[-1]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Sigmoid probabilities: ``fused`` (DL-UM), ``us`` and ``mg`` (block-5 branch heads)."""
        return {
            "fused": torch.sigmoid(self.fused),
            US: torch.sigmoid(self.us_final),
            MG: torch.sigmoid(self.mg_final),
        }


def _check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def _check_input(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (B, 3, H, W) tensor, got {shape}")
    if min(x.shape[-2:]) < 16:  # four 2x2 poolings need at least 16 pixels
        raise ValueError(f"{name}: image {tuple(x.shape[-2:])} is too small (at least 16x16)")


def _branch_config(branch: VGGBranch) -> dict:
    return {
        "blocks": [len(block.convs) for block in branch.blocks],
        "filters": [block.bn.num_features for block in branch.blocks],
        "head_hidden": branch.heads[0][0].out_features,
        "init_source": branch.init_source,
        "imagenet_normalisation": uses_imagenet_normalisation(branch.init_source),
    }


def _new_branch(pretrained: bool | str) -> VGGBranch:
    branch = VGGBranch()
    source = resolve_pretrained(pretrained)
    if source != RANDOM:
        load_imagenet_weights(branch, source)
    return branch


class DLUM(nn.Module):
    """The DL-UM fusion network (Xu et al., Breast Cancer Research 2025).

    Args:
        pretrained: "auto" (ImageNet weights when available here, else random with a warning),
            True (ImageNet required), False (random), or a source name from
            ``dlum.networks.pretrained.INIT_SOURCES``.
        share_backbone: one VGG branch for both modalities (the paper uses two; our option).
        mg_pretrained: another ImageNet source for the MG branch (default: the US branch's);
            both branches must then start from ImageNet, so that they take the same inputs.

    ``us_branch`` and ``mg_branch`` are :class:`VGGBranch` modules (the same object when
    ``share_backbone``); ``fusion_head`` maps the concatenated block-5 features to the output.

    Example:
        >>> model = DLUM(pretrained=False).eval()
        >>> out = model(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
        >>> tuple(out.fused.shape), len(out.us), len(out.mg)
        ((1,), 5, 5)
    """

    arch = ARCH_DLUM
    modalities = MODALITIES

    def __init__(self, pretrained: bool | str = "auto", share_backbone: bool = False,
                 mg_pretrained: bool | str | None = None):
        super().__init__()
        self.share_backbone = bool(share_backbone)
        first = _new_branch(pretrained)
        if self.share_backbone:
            if mg_pretrained is not None:
                raise ValueError("a shared backbone has one start: give pretrained only")
            # Registered once, so the state dict holds each tensor once.
            self.add_module("backbone", first)
        elif mg_pretrained is not None and resolve_pretrained(mg_pretrained) != first.init_source:
            second = _new_branch(mg_pretrained)
            if RANDOM in (first.init_source, second.init_source):
                raise ValueError("branches with different starts must both start from ImageNet "
                                 f"(got {first.init_source!r} and {second.init_source!r})")
            self.add_module("us_branch", first)
            self.add_module("mg_branch", second)
        else:
            self.add_module("us_branch", first)
            second = VGGBranch()  # own random heads (and convolutions when not pretrained)
            if first.init_source != RANDOM:  # same ImageNet convolutions, read once
                second.blocks.load_state_dict(first.blocks.state_dict())
                second.init_source = first.init_source
            self.add_module("mg_branch", second)
        self.fusion_head = ClassificationHead(2 * first.feature_dim, HEAD_HIDDEN)

    # nn.Module keeps submodules in _modules; these properties name them in the clinic's words.
    def _registered(self, name: str) -> VGGBranch:
        module = self._modules.get("backbone" if self.share_backbone else name)
        if module is None:  # AttributeError keeps nn.Module.add_module's hasattr check working
            raise AttributeError(name)
        return module

    @property
    def us_branch(self) -> VGGBranch:
        return self._registered("us_branch")

    @property
    def mg_branch(self) -> VGGBranch:
        return self._registered("mg_branch")

    @property
    def init_source(self) -> str:
        return self.us_branch.init_source

    def branch_for(self, modality: str) -> VGGBranch:
        """The branch that reads ``modality`` ("us" or "mg")."""
        return self.us_branch if _check_modality(modality) == US else self.mg_branch

    def forward_branch(self, modality: str, x: torch.Tensor) -> BranchOutput:
        """Run one modality's branch alone (e.g. when only one image of the pair is given)."""
        _check_input(x, modality)
        logits, features = self.branch_for(modality)(x)
        return BranchOutput(logits=logits, features=features)

    def forward(self, us: torch.Tensor, mg: torch.Tensor, keep: torch.Tensor | None = None) -> DLUMOutput:
        """``keep``: optional (B, 2) multipliers of each pair's US and MG block-5 features as
        the fusion head reads them (0 drops a modality: modality dropout in training)."""
        _check_input(us, US)
        _check_input(mg, MG)
        if us.shape[0] != mg.shape[0]:
            raise ValueError(f"us and mg batches differ in size: {us.shape[0]} vs {mg.shape[0]}")
        us_logits, us_features = self.us_branch(us)
        mg_logits, mg_features = self.mg_branch(mg)
        if keep is not None:
            keep = keep.to(us_features.dtype)
            us_features, mg_features = us_features * keep[:, :1], mg_features * keep[:, 1:]
        fused = self.fusion_head(torch.cat([us_features, mg_features], dim=1)).float()
        return DLUMOutput(fused=fused, us=us_logits, mg=mg_logits)

    def config(self) -> dict:
        """What :func:`build_model` needs to rebuild this network (stored in checkpoint cards)."""
        config = {"arch": self.arch, "share_backbone": self.share_backbone,
                  **_branch_config(self.us_branch)}
        if self.mg_branch.init_source != self.us_branch.init_source:
            config["mg_init_source"] = self.mg_branch.init_source  # "init_source" is the US one
        return config


class SingleBranch(nn.Module):
    """DL-U (``modality="us"``) or DL-M (``modality="mg"``): one branch, block-5 head = output.

    Example:
        >>> model = SingleBranch("us", pretrained=False).eval()
        >>> tuple(model(torch.zeros(2, 3, 32, 32)).final.shape)
        (2,)
    """

    def __init__(self, modality: str = US, pretrained: bool | str = "auto"):
        super().__init__()
        self.modality = _check_modality(modality)
        self.branch = _new_branch(pretrained)

    @property
    def arch(self) -> str:
        return _SINGLE_ARCH[self.modality]

    @property
    def modalities(self) -> tuple[str, ...]:
        return (self.modality,)

    @property
    def init_source(self) -> str:
        return self.branch.init_source

    def branch_for(self, modality: str) -> VGGBranch:
        if _check_modality(modality) != self.modality:
            raise ValueError(f"this {self.arch.upper()} model reads {self.modality} only, not {modality}")
        return self.branch

    def forward(self, x: torch.Tensor) -> BranchOutput:
        _check_input(x, self.modality)
        logits, features = self.branch(x)
        return BranchOutput(logits=logits, features=features)

    def config(self) -> dict:
        return {"arch": self.arch, "modality": self.modality, **_branch_config(self.branch)}


def build_model(config: dict) -> nn.Module:
    """Rebuild an untrained network from ``model.config()`` (weights come from the checkpoint).

    No ImageNet weights are loaded, except for a ``frozen_backbone`` (the frozen-stacked recipe),
    whose convolutions are the ImageNet weights of ``init_source``; ``init_source`` is carried
    over so that inputs are normalised as in training.

    Raises:
        CheckpointError: the configuration names an unknown architecture or another layout.
    """
    if not isinstance(config, dict):
        raise CheckpointError(f"model config must be a mapping, got {type(config).__name__}")
    arch = config.get("arch")
    expected = {"blocks": list(VGG19_BLOCKS), "filters": list(VGG_FILTERS), "head_hidden": HEAD_HIDDEN}
    for key, want in expected.items():
        if key not in config:
            continue
        got = config[key]
        if isinstance(want, list) and isinstance(got, (list, tuple)):
            got = list(got)
        if got != want:
            raise CheckpointError(f"model config: {key}={config[key]!r}, this version builds {want!r}")
    init_source = config.get("init_source", RANDOM)
    mg_init_source = config.get("mg_init_source", init_source)
    for source in (init_source, mg_init_source):
        if source not in INIT_SOURCES:
            raise CheckpointError(f"model config: unknown init_source {source!r}")
    if mg_init_source != init_source and RANDOM in (init_source, mg_init_source):
        raise CheckpointError("model config: branches with different starts must both be ImageNet")
    frozen = bool(config.get("frozen_backbone", False))
    if frozen and arch != ARCH_DLUM:
        raise CheckpointError("model config: a frozen backbone is only stored for DL-UM")
    if frozen:
        # The convolutions were never trained: they are the ImageNet weights named in the card,
        # read from where they ship rather than stored again (dlum.frozen).
        try:
            model: nn.Module = DLUM(pretrained=init_source, mg_pretrained=mg_init_source)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"model config: the frozen backbone {init_source!r} cannot be "
                                  f"read here ({exc}); install it with `make install` as the README says"
                                  ) from None
        from dlum.frozen import identity_block

        for modality in config.get("identity_block5", []):
            if modality not in MODALITIES:
                raise CheckpointError(f"model config: identity_block5 names {modality!r}")
            identity_block(model.branch_for(modality).blocks[-1])
        tuned_convs = config.get("tuned_block5_convs", VGG19_BLOCKS[-1])
        if not isinstance(tuned_convs, int) or not 1 <= tuned_convs <= VGG19_BLOCKS[-1]:
            raise CheckpointError(f"model config: tuned_block5_convs must be 1 to {VGG19_BLOCKS[-1]} "
                                  f"(got {tuned_convs!r})")
        for modality in config.get("tuned_block5", []):  # stored with the heads (dlum.checkpoint)
            if modality not in MODALITIES or modality in config.get("identity_block5", []):
                raise CheckpointError(f"model config: tuned_block5 names {modality!r}")
            # tuned from the identity: the convolutions before the tuned ones stay identities
            # and are not stored
            identity_block(model.branch_for(modality).blocks[-1])
        return model
    if arch == ARCH_DLUM:
        model = DLUM(pretrained=False, share_backbone=bool(config.get("share_backbone", False)))
        branches = {id(model.us_branch): model.us_branch, id(model.mg_branch): model.mg_branch}.values()
    elif arch in (ARCH_DLU, ARCH_DLM):
        modality = config.get("modality", US if arch == ARCH_DLU else MG)
        if _SINGLE_ARCH.get(modality) != arch:
            raise CheckpointError(f"model config: arch {arch!r} with modality {modality!r}")
        model = SingleBranch(modality, pretrained=False)
        branches = [model.branch]
    else:
        raise CheckpointError(f"model config: unknown arch {arch!r}; known: {ARCHITECTURES}")
    for branch in branches:
        branch.init_source = init_source
    if arch == ARCH_DLUM and not model.share_backbone:
        model.mg_branch.init_source = mg_init_source
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
