"""From a grey image and a lesion box to the network's input tensor (DL-UM pre-processing).

Xu et al. (Breast Cancer Research 2025): the lesion ROI, expanded by 30% of its shortest side, is
cropped, resized to 224 x 224 and min-max normalised; the grey patch is replicated to the three
channels that the ImageNet-pretrained VGG19 expects. Optionally the ImageNet mean/std are then
applied (``imagenet=True``), as torchvision's pretrained weights were trained with them.

Order of operations: crop -> resize -> min-max -> 3 channels -> (ImageNet mean/std). Min-max comes
after resizing so that every patch spans exactly [0, 1] whatever the interpolation did.
Resizing is bilinear with anti-aliasing (``torch.nn.functional.interpolate(mode="bilinear",
antialias=True)``): mammography ROIs are usually shrunk several times, and without anti-aliasing
fine calcifications would alias.

>>> import numpy as np
>>> preprocess(np.random.rand(300, 200), (50, 60, 150, 160), size=64).shape
torch.Size([3, 64, 64])
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dlum.constants import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE, ROI_EXPANSION
from dlum.data.roi import crop_roi
from dlum.errors import InputError

#: Relative spread below which an image is treated as constant (8 float32 ulps).
_FLAT_TOLERANCE = 8 * float(np.finfo(np.float32).eps)

__all__ = ["imagenet_normalize", "preprocess", "resize", "to_network_input", "to_unit_range"]


def to_unit_range(a: np.ndarray) -> np.ndarray:
    """Min-max scale to float32 [0, 1]; a constant (or empty) image gives zeros, never NaN.

    >>> to_unit_range(np.array([2.0, 4.0, 6.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    array = np.asarray(a, dtype=np.float32)
    if array.size == 0:
        return array.copy()
    low, high = float(array.min()), float(array.max())
    # Constant image (or NaN bounds): nothing to scale. A spread within float32 rounding of the
    # values (a few ulps, e.g. a constant patch after interpolation) counts as constant too,
    # otherwise min-max would blow rounding noise up to full contrast.
    if not high - low > _FLAT_TOLERANCE * max(abs(low), abs(high)):
        return np.zeros_like(array)
    scaled = (array - low) / np.float32(high - low)
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    height, width = (int(s) for s in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive, got {size}")
    return height, width


def resize(a: np.ndarray | torch.Tensor, size: int | Sequence[int]) -> np.ndarray | torch.Tensor:
    """Resize a ``(H, W)`` or ``(C, H, W)`` image to ``size`` (int or ``(height, width)``).

    Bilinear with anti-aliasing (``torch.nn.functional.interpolate``, ``align_corners=False``);
    returns the same kind as given (numpy float32 array or float tensor).
    """
    height, width = _size_hw(size)
    is_numpy = not isinstance(a, torch.Tensor)
    tensor = torch.as_tensor(np.asarray(a, dtype=np.float32)) if is_numpy else a.float()
    if tensor.ndim not in (2, 3) or tensor.numel() == 0:
        raise InputError(f"cannot resize an image of shape {tuple(tensor.shape)}")
    batch = tensor.reshape((1, -1) + tuple(tensor.shape[-2:]))
    if tuple(batch.shape[-2:]) != (height, width):
        batch = F.interpolate(
            batch, size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )
    out = batch.reshape(tuple(tensor.shape[:-2]) + (height, width))
    return out.numpy().astype(np.float32, copy=False) if is_numpy else out


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    """Subtract the ImageNet mean and divide by its std, per channel of a ``(..., 3, H, W)`` tensor."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def to_network_input(
    patch: np.ndarray, size: int = INPUT_SIZE, imagenet: bool = False
) -> torch.Tensor:
    """A grey lesion patch as the network's input: resize -> min-max -> 3 channels.

    Args:
        patch: 2-D grey patch (any intensity scale).
        size: output side in pixels (224 in DL-UM).
        imagenet: also apply the ImageNet mean/std (for ImageNet-pretrained weights).

    Returns:
        ``torch.float32`` tensor of shape ``(3, size, size)``; in [0, 1] unless ``imagenet``.

    Raises:
        InputError: the patch is not a non-empty 2-D array.
    """
    array = np.asarray(patch, dtype=np.float32)
    if array.ndim != 2 or array.size == 0:
        raise InputError(f"a non-empty 2-D grey patch is expected, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise InputError("the patch holds NaN or infinite values")
    unit = to_unit_range(resize(array, size))
    x = torch.from_numpy(np.ascontiguousarray(unit)).unsqueeze(0).expand(3, -1, -1).contiguous()
    return imagenet_normalize(x) if imagenet else x


def preprocess(
    image: np.ndarray,
    box: Sequence[float] | None = None,
    *,
    size: int = INPUT_SIZE,
    imagenet: bool = False,
    fraction: float = ROI_EXPANSION,
    source: str | None = None,
) -> torch.Tensor:
    """DL-UM pre-processing of one image: crop the expanded ROI, then :func:`to_network_input`.

    Args:
        image: 2-D grey image (from :func:`dlum.data.io.read_image`).
        box: lesion box ``(x0, y0, x1, y1)``; ``None`` uses the whole image, not expanded.
        size, imagenet: as :func:`to_network_input`.
        fraction: ROI expansion (0.30 of the shortest side in total in DL-UM).
        source: the file the image came from, named in messages.

    Returns:
        ``torch.float32`` tensor ``(3, size, size)``.

    Raises:
        InputError: invalid box (see :func:`dlum.data.roi.validate_box`) or image.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise InputError(f"a 2-D grey image is expected, got shape {image.shape}", source)
    return to_network_input(crop_roi(image, box, fraction, source), size=size, imagenet=imagenet)
