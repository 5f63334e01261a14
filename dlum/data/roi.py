"""Lesion regions of interest (ROI): boxes, their 30% expansion, and cropping.

DL-UM (Xu et al., Breast Cancer Research 2025) crops each lesion with its box enlarged by 30% of
the box's shortest side, i.e. 15% of that side added on every side, so that the network also sees
the lesion's margin and surroundings.

A :data:`Box` is ``(x0, y0, x1, y1)`` in pixels: corners, origin top-left, ``x1``/``y1``
exclusive, so the box covers ``image[y0:y1, x0:x1]``. Boxes given with fractional corners are
rounded outward (the lesion is never cut). Boxes are checked against the image:

* refused (:class:`~dlum.errors.InputError`): not four finite numbers, empty or inverted
  (``x1 <= x0`` or ``y1 <= y0``), or not overlapping the image at all;
* clamped to the image: a box that overlaps the image but runs past its border (however far),
  as happens for lesions drawn at the edge of a film or an expansion near the border.

>>> expand_box((100, 100, 200, 150), (400, 400))
(92, 92, 208, 158)
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from dlum.constants import ROI_EXPANSION
from dlum.errors import InputError

__all__ = ["Box", "box_from_centre", "box_from_xywh", "crop_roi", "expand_box", "parse_box", "validate_box"]

#: ``(x0, y0, x1, y1)``: pixel corners, origin top-left, ``x1``/``y1`` exclusive. Functions that
#: return a box give integers.
Box = tuple[float, float, float, float]


def _image_hw(shape: Sequence[int] | np.ndarray) -> tuple[int, int]:
    """(height, width) from an image shape ``(h, w, ...)`` or from the image itself."""
    if isinstance(shape, np.ndarray):
        shape = shape.shape
    if len(shape) < 2:
        raise ValueError(f"an image shape (height, width) is expected, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _checked(box: Sequence[float], shape, source: str | None) -> tuple[float, float, float, float]:
    """The box as four floats, after the checks that refuse it (see the module docstring)."""
    height, width = _image_hw(shape)
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise InputError(f"an ROI box must be 4 numbers x0,y0,x1,y1; got {box!r}", source) from None
    if len(values) != 4:
        raise InputError(f"an ROI box must be 4 numbers x0,y0,x1,y1; got {len(values)}", source)
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"the ROI box {tuple(box)} holds a non-finite number", source)
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        what = "empty" if (x1 == x0 or y1 == y0) else "inverted"
        raise InputError(
            f"the ROI box {tuple(box)} is {what}: x1 must exceed x0 and y1 must exceed y0", source
        )
    if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
        raise InputError(
            f"the ROI box {tuple(box)} lies outside the image ({width} wide, {height} high)", source
        )
    return x0, y0, x1, y1


def _round_clamp(x0: float, y0: float, x1: float, y1: float, height: int, width: int) -> Box:
    """Round outward to whole pixels and clamp to the image."""
    return (
        max(0, math.floor(x0)),
        max(0, math.floor(y0)),
        min(width, math.ceil(x1)),
        min(height, math.ceil(y1)),
    )


def validate_box(box: Sequence[float], shape, source: str | None = None) -> Box:
    """Check an ROI box against an image and return it as integers, clamped to the image.

    Args:
        box: ``(x0, y0, x1, y1)``, corners in pixels, ``x1``/``y1`` exclusive.
        shape: the image's shape ``(height, width, ...)`` or the image itself.
        source: the file the box belongs to, named in messages.

    Raises:
        InputError: the box is not four finite numbers, is empty or inverted, or does not overlap
            the image.
    """
    height, width = _image_hw(shape)
    return _round_clamp(*_checked(box, (height, width), source), height, width)


def expand_box(
    box: Sequence[float], shape, fraction: float = ROI_EXPANSION, source: str | None = None
) -> Box:
    """Enlarge an ROI box by ``fraction`` of its shortest side in total (half on each side).

    The DL-UM crop (Xu et al. 2025): with the default 0.30, 15% of the shortest side is added on
    each side. The margin is computed on the box as given, then the result is rounded outward and
    clamped to the image.

    Raises:
        InputError: as :func:`validate_box`.
    """
    if not (math.isfinite(fraction) and fraction >= 0):
        raise ValueError(f"fraction must be a finite number >= 0, got {fraction}")
    height, width = _image_hw(shape)
    x0, y0, x1, y1 = _checked(box, (height, width), source)
    margin = fraction * min(x1 - x0, y1 - y0) / 2.0
    return _round_clamp(x0 - margin, y0 - margin, x1 + margin, y1 + margin, height, width)


def crop_roi(
    image: np.ndarray,
    box: Sequence[float] | None = None,
    fraction: float = ROI_EXPANSION,
    source: str | None = None,
) -> np.ndarray:
    """The patch of ``image`` inside ``box`` expanded by ``fraction`` (a view, not a copy).

    ``box=None`` gives the whole image, not expanded (for images already cropped to the lesion).

    Raises:
        InputError: as :func:`validate_box`.
    """
    image = np.asarray(image)
    if box is None:
        return image
    x0, y0, x1, y1 = expand_box(box, image.shape, fraction, source)
    return image[y0:y1, x0:x1]


def box_from_xywh(x: float, y: float, width: float, height: float) -> Box:
    """A box from ``[x, y, width, height]`` (top-left corner and size, as in BUS-BRA's BBOX)."""
    return (x, y, x + width, y + height)


def box_from_centre(x: float, y: float, radius: float) -> Box:
    """A box from a lesion's centre and radius: ``centre ± radius`` (the mini-MIAS convention,
    with ``y`` counted from the top as everywhere in dlum). :func:`validate_box` then rounds it
    outward and clamps it to the image.

    >>> validate_box(box_from_centre(10, 30, 12.5), (100, 100))
    (0, 17, 23, 43)

    Raises:
        InputError: the radius is not a finite number above 0, or the centre not finite.
    """
    values = [float(v) for v in (x, y, radius)]
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"a lesion centre and radius must be finite numbers, got {x!r}, {y!r}, "
                         f"{radius!r}")
    x, y, radius = values
    if radius <= 0:
        raise InputError(f"a lesion radius must be above 0 pixels, got {radius:g}")
    return (x - radius, y - radius, x + radius, y + radius)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_box(text: str, source: str | None = None) -> Box:
    """Parse ``"x0,y0,x1,y1"`` (commas and/or spaces; brackets allowed) typed on a command line.

    >>> parse_box("10, 20, 110, 90")
    (10, 20, 110, 90)

    Raises:
        InputError: not four numbers, or an empty/inverted box.
    """
    fields = [f for f in re.split(r"[,\s;]+", str(text).strip().strip("()[]")) if f]
    if len(fields) != 4 or not all(_NUMBER.match(f) for f in fields):
        raise InputError(
            f"an ROI box must be 4 numbers 'x0,y0,x1,y1' (pixels, origin top-left); got {text!r}",
            source,
        )
    values = tuple(int(f) if re.fullmatch(r"[+-]?\d+", f) else float(f) for f in fields)
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise InputError(
            f"the ROI box {text!r} is empty or inverted: x1 must exceed x0 and y1 must exceed y0",
            source,
        )
    return values  # type: ignore[return-value]
