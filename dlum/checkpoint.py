"""Checkpoints: ``model.safetensors`` + ``card.json``. Never pickles (safetensors only)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dlum.card import CARD_FILE, Card, read_card, write_card
from dlum.constants import VGG19_BLOCKS
from dlum.errors import CheckpointError
from dlum.files import atomic_path

__all__ = ["WEIGHTS", "CARD", "save_checkpoint", "load_checkpoint", "load_state", "read_card", "write_card"]

WEIGHTS = "model.safetensors"
CARD = CARD_FILE


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    card: Card | dict[str, Any],
    *,
    dtype: torch.dtype | None = None,
    weights_name: str = WEIGHTS,
) -> Path:
    """Write the model's state (optionally cast, e.g. fp16 to halve the file) and, for the
    checkpoint's own weights, its card (validated by :mod:`dlum.card`)."""
    directory = Path(directory)
    model_config = card.model if isinstance(card, Card) else card["model"]
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if model_config.get("frozen_backbone"):  # the ImageNet convolutions are not stored again
        _check_untuned_identities(model, model_config)
        tuned = _tuned_prefixes(model_config)
        state = {k: v for k, v in state.items() if not _is_backbone(k) or k.startswith(tuned)}
    unique, aliases = dedup_shared(
        {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
         for k, v in state.items()},
        originals=state,
    )
    metadata = {"format": "dlum", "model": json.dumps(model_config), "aliases": json.dumps(aliases)}
    with atomic_path(directory / weights_name) as tmp:
        save_file(unique, str(tmp), metadata=metadata)
    if weights_name == WEIGHTS:
        write_card(directory, card)
    return directory


def _is_backbone(key: str) -> bool:
    """A state-dict key of a branch's convolution blocks (not of a head or the fusion)."""
    return ".blocks." in key


def _tuned_prefixes(model_config: dict) -> tuple[str, ...]:
    """State-dict prefixes of what a frozen-backbone model trained in its block 5 and therefore
    stores (``tuned_block5``: the branches whose block 5 was fine-tuned, :mod:`dlum.block5_tuning`):
    its last ``tuned_block5_convs`` convolutions (default all) and its BatchNorm. The convolutions
    before them are identities that :func:`dlum.networks.dlum.build_model` rebuilds, so a block
    tuned in its last convolution stores a quarter of the block."""
    blocks = model_config.get("blocks", list(VGG19_BLOCKS))
    last, n_convs = len(blocks) - 1, blocks[-1]
    k = int(model_config.get("tuned_block5_convs") or n_convs)
    prefixes = []
    for modality in model_config.get("tuned_block5", []):
        block = f"{modality}_branch.blocks.{last}."
        prefixes += [f"{block}convs.{i}." for i in range(n_convs - k, n_convs)] + [f"{block}bn."]
    return tuple(prefixes)


def _check_untuned_identities(model: torch.nn.Module, model_config: dict) -> None:
    """Refuse to drop a tuned block 5's leading convolutions unless they are identities, which
    is what loading rebuilds (:func:`dlum.block5_tuning.leading_identities`)."""
    from dlum.block5_tuning import leading_identities

    for modality in model_config.get("tuned_block5", []):
        block = model.branch_for(modality).blocks[-1]
        untuned = len(block.convs) - int(model_config.get("tuned_block5_convs") or len(block.convs))
        if leading_identities(block) < untuned:
            raise CheckpointError(f"{modality} block 5: its first {untuned} convolutions are not "
                                  "identities, so they cannot be left out (tuned_block5_convs)")


def dedup_shared(
    tensors: dict[str, torch.Tensor], originals: dict[str, torch.Tensor] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Keep one copy of tensors stored under several names (a shared backbone), as safetensors
    requires; returns the CPU tensors to save and ``{alias: kept name}``.

    ``originals`` (same keys) decides what is shared when ``tensors`` are already converted copies.
    """
    originals = originals if originals is not None else tensors
    first_key: dict[int, str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for key, value in tensors.items():
        ptr = originals[key].data_ptr()
        if originals[key].numel() and ptr in first_key:
            aliases[key] = first_key[ptr]
            continue
        first_key[ptr] = key
        unique[key] = value.detach().to("cpu").contiguous().clone()
    return unique, aliases


def load_state(weights: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors state dict as saved by :func:`save_checkpoint` (shared tensors restored)."""
    from safetensors import safe_open

    try:
        state = load_file(str(weights), device="cpu")
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        aliases = json.loads(meta.get("aliases", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({exc})") from None
    if not isinstance(aliases, dict):
        raise CheckpointError(f"{weights}: its 'aliases' metadata is not a name -> name mapping")
    for key, target in aliases.items():
        if not isinstance(target, str) or target not in state:
            raise CheckpointError(f"{weights}: the alias {key!r} points at {target!r}, a tensor "
                                  "the file does not hold (damaged or edited file)")
        state[key] = state[target]
    return state


def load_checkpoint(
    directory: str | Path,
    device: torch.device | str = "cpu",
    *,
    weights_name: str = WEIGHTS,
) -> tuple[torch.nn.Module, Card]:
    """Rebuild the network named in the card and load its weights (fp32, eval mode)."""
    from dlum.networks import build_model

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint folder not found")
    card = read_card(directory)
    weights = directory / weights_name
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {weights_name}")
    state = load_state(weights)
    try:
        model = build_model(card.model)
    except Exception as exc:
        raise CheckpointError(f"{directory}: cannot build the model the card describes ({exc})") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    frozen = bool(card.model.get("frozen_backbone"))
    try:
        result = model.load_state_dict(state, strict=not frozen)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not fit the model in the card ({exc})") from None
    if frozen:
        tuned = _tuned_prefixes(card.model)
        missing = [k for k in result.missing_keys if not _is_backbone(k) or k.startswith(tuned)]
        if result.unexpected_keys or missing:
            raise CheckpointError(f"{weights}: weights do not fit the model in the card (missing "
                                  f"{missing[:5]}, unexpected {result.unexpected_keys[:5]})")
    return model.to(device).eval(), card
