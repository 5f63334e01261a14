"""Reading breast images (ultrasound PNG/JPEG, mammography DICOM) into grey float arrays.

Every image, whatever its format, becomes a 2-D ``float32`` array of grey levels in the image's
own intensity scale (not yet normalised): 8-bit files give 0..255, 16-bit PNG and DICOM keep their
full range. DICOM follows the DICOM display pipeline (PS3.4 N.2): modality LUT or rescale
slope/intercept, then VOI LUT or window, then MONOCHROME1 inverted so that dense tissue is bright.
Pre-processing for DL-UM (Xu et al., Breast Cancer Research 2025) starts from these arrays.

Any file that cannot be used raises :class:`dlum.errors.InputError`, whose message names the file
and the problem; no other exception type leaves :func:`read_image` or :func:`image_size`.

>>> import io, numpy as np
>>> from PIL import Image
>>> buf = io.BytesIO(); Image.fromarray(np.zeros((4, 6), np.uint8)).save(buf, "PNG")
>>> read_image(buf.getvalue()).shape
(4, 6)
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Union

import numpy as np

from dlum.errors import InputError
from dlum.settings import limits

__all__ = [
    "ImageSource",
    "PIL_FORMATS",
    "PIL_MODES",
    "read_image",
    "image_size",
    "is_dicom",
    "source_name",
    "to_display_uint8",
]

#: What :func:`read_image` accepts: a path, the file's bytes, or a binary file-like object
#: (a Streamlit ``UploadedFile`` is a ``BytesIO`` with a ``.name``).
ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

#: Pillow formats accepted besides DICOM ("PPM" covers PGM films, "MPO" is a phone JPEG).
PIL_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "BMP", "PPM")

#: Pillow modes accepted: grey (8-, 16-, 32-bit, float), grey+alpha, palette and colour.
#: Others (1-bit black-and-white, CMYK, YCbCr, LAB, HSV, ...) are refused: a 1-bit image is a
#: mask or a drawing, not a grey-level scan, and the colour spaces have no agreed grey.
PIL_MODES = ("L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F", "P", "PA", "RGB", "RGBA", "RGBX")

#: ITU-R BT.601 luma weights (the ones Pillow's ``convert("L")`` uses), applied in float so that
#: colour images are not rounded to 8 bits on the way to grey.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_NOT_AN_IMAGE = "not a recognised image (PNG, JPEG, TIFF, BMP, PGM or DICOM expected)"
_DICOM_MAGIC = b"DICM"
_EXIF_ORIENTATION = 0x0112
_EXIF_SWAPS_AXES = (5, 6, 7, 8)
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def source_name(source: object, name: str | None = None) -> str:
    """The name used for ``source`` in messages: ``name``, else the path, else ``.name``."""
    if name:
        return str(name)
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    attr = getattr(source, "name", None)
    if isinstance(attr, str) and attr:
        return attr
    return "uploaded file"


@contextlib.contextmanager
def _opened(source: object, label: str) -> Iterator[IO[bytes]]:
    """A seekable binary stream over ``source``, positioned at 0; file-likes are rewound after."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        # A pipe or a device would block or never end: only regular files are read (by type,
        # before anything is opened).
        if path.exists() and not path.is_dir() and not path.is_file():
            raise InputError("not a regular file (a pipe, socket or device?)", label)
        try:
            fp = open(path, "rb")
        except FileNotFoundError:
            raise InputError("file not found", label) from None
        except IsADirectoryError:
            raise InputError("is a folder, not an image file", label) from None
        except OSError as err:
            raise InputError(f"cannot be opened ({err.strerror or err})", label) from None
        with fp:
            _check_file_size(os.fstat(fp.fileno()).st_size, label)
            yield fp
        return
    if isinstance(source, (bytes, bytearray, memoryview)):
        _check_file_size(len(source), label)
        yield io.BytesIO(bytes(source))
        return
    if hasattr(source, "read"):
        try:
            position = source.tell()
            source.seek(0)
        except Exception:  # not seekable: take what is left of it
            position = None
        if position is None:
            bound = limits().max_image_bytes
            data = source.read(bound + 1)
            _check_file_size(len(data), label)
            yield io.BytesIO(data)
            return
        try:
            source.seek(0, io.SEEK_END)
            _check_file_size(source.tell(), label)
            source.seek(0)
            yield source  # type: ignore[misc]
        finally:
            with contextlib.suppress(Exception):
                source.seek(position)
        return
    raise InputError(
        f"cannot read an image from a {type(source).__name__} (a path, bytes or an open binary "
        "file is expected)",
        label,
    )


def _check_file_size(size: int, label: str) -> None:
    bound = limits().max_image_bytes
    if size > bound:
        raise InputError(f"the file is {size / 2**20:,.1f} MiB, over the image file limit of "
                         f"{bound // 2**20:,} MiB (DLUM_MAX_IMAGE_MB)", label)


def _head(fp: IO[bytes], label: str) -> bytes:
    """The first 132 bytes (enough for the DICOM preamble); refuses an empty file."""
    head = fp.read(132)
    fp.seek(0)
    if not head:
        raise InputError("the file is empty", label)
    return head


def is_dicom(head: bytes) -> bool:
    """True when ``head`` (the file's first bytes) carries the DICOM Part 10 'DICM' marker."""
    return head[128:132] == _DICOM_MAGIC


def _may_be_raw_dicom(head: bytes) -> bool:
    """A DICOM stream without preamble starts with group 0002 or 0008 (little endian).

    Forced reading in pydicom accepts almost any bytes, so it is only tried on such streams.
    """
    return head[:2] in (b"\x02\x00", b"\x08\x00")


def _check_pixels(height: int, width: int, max_pixels: int | None, label: str) -> None:
    if height <= 0 or width <= 0:
        raise InputError(f"the image has no pixels ({width}x{height})", label)
    if max_pixels is not None and height * width > max_pixels:
        raise InputError(
            f"the image is {width}x{height} = {height * width:,} pixels, over the pixel limit of "
            f"{max_pixels:,}",
            label,
        )


# ----------------------------------------------------------------------------------------- Pillow
def _open_pil(fp: IO[bytes], label: str):
    """Open with Pillow (header only); its decompression-bomb guard becomes an InputError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"the image is over the pixel limit ({err})", label) from None
    except UnidentifiedImageError:
        return None
    if img.format not in PIL_FORMATS:
        fmt = img.format
        img.close()
        raise InputError(
            f"unsupported image format {fmt} (PNG, JPEG, TIFF, BMP, PGM or DICOM expected)", label
        )
    return img


def _pil_size(img) -> tuple[int, int]:
    """(height, width) as displayed, i.e. after the EXIF orientation is applied."""
    from PIL import Image

    width, height = img.size
    with contextlib.suppress(Exception):
        if img.format == "PNG":
            # Pillow's PNG getexif() decodes every pixel to look for an eXIf chunk after the image
            # data; an eXIf chunk belongs before it (PNG 1.5 extensions), where open() has read it.
            exif = Image.Exif()
            if img.info.get("exif"):
                exif.load(img.info["exif"])
        else:
            exif = img.getexif()
        if exif.get(_EXIF_ORIENTATION) in _EXIF_SWAPS_AXES:
            width, height = height, width
    return height, width


def _pil_to_grey(img, label: str) -> np.ndarray:
    """Decode a Pillow image fully and turn it into a 2-D float32 grey array."""
    from PIL import ImageOps

    mode = img.mode
    if mode not in PIL_MODES:
        what = "1-bit black-and-white" if mode == "1" else f"mode {mode}"
        raise InputError(
            f"unsupported image mode: {what} (grey, palette or RGB images are expected)", label
        )
    try:
        img.load()  # force the full decode: a truncated file must fail here, not later
        img = ImageOps.exif_transpose(img)
    except Exception as err:
        raise InputError(f"the file is truncated or corrupt ({err})", label) from None
    if mode in ("P", "PA"):
        img = img.convert("RGB")  # the palette's colours; transparency is ignored
    array = np.asarray(img)
    if array.ndim == 3:
        if img.mode == "LA":
            array = array[..., 0]  # alpha is dropped: medical images are opaque
        else:
            return _luma(array)
    return np.asarray(array, dtype=np.float32)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 grey of an (H, W, >=3) array, one channel at a time: peak memory two float
    planes, not a float copy of every channel."""
    grey = rgb[..., 0].astype(np.float32)
    grey *= _LUMA[0]
    for channel in (1, 2):
        plane = rgb[..., channel].astype(np.float32)
        plane *= _LUMA[channel]
        grey += plane
    return grey


# ----------------------------------------------------------------------------------------- DICOM
def _check_inflated_size(fp: IO[bytes], label: str, *, preamble: bool) -> None:
    """A Deflated Explicit VR Little Endian data set is inflated whole by pydicom: measure its
    inflated size first, in bounded chunks, and refuse it over ``DLUM_MAX_IMAGE_MB`` (a 1 MB file
    may inflate to gigabytes). Other transfer syntaxes are left to pydicom and the pixel limit."""
    import pydicom
    import zlib
    from pydicom.filereader import _read_file_meta_info  # public read_file_meta_info wants a path

    start = fp.tell()
    try:
        if preamble:
            fp.seek(132)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta = _read_file_meta_info(fp)
        except Exception:
            return  # no readable file meta: pydicom's own reading reports it
        if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
            return
        bound = limits().max_image_bytes
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        total = 0
        chunk = 1 << 20
        try:
            while data := fp.read(chunk):
                while data:  # at most one chunk of inflated bytes held at a time
                    total += len(inflater.decompress(data, chunk))
                    if total > bound:
                        raise InputError(
                            f"the deflated DICOM data set inflates to over {bound // 2**20:,} "
                            "MiB, the image file limit (DLUM_MAX_IMAGE_MB): not read", label)
                    data = inflater.unconsumed_tail
        except zlib.error as err:
            raise InputError(f"the deflated DICOM data set is corrupt ({err})", label) from None
    finally:
        fp.seek(start)


def _read_dataset(fp: IO[bytes], label: str, *, force: bool, stop_before_pixels: bool):
    import pydicom

    _check_inflated_size(fp, label, preamble=not force)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about many harmless deviations
            ds = pydicom.dcmread(fp, force=force, stop_before_pixels=stop_before_pixels)
    except Exception as err:
        raise InputError(f"unreadable DICOM file ({type(err).__name__}: {err})", label) from None
    return ds


def _dicom_shape(ds, label: str, *, forced: bool) -> tuple[int, int]:
    try:
        rows, columns = ds.get("Rows"), ds.get("Columns")
    except Exception:
        rows = columns = None
    if rows is None or columns is None:
        if forced:
            raise InputError(_NOT_AN_IMAGE, label)
        raise InputError("the DICOM file holds no image (no Rows/Columns)", label)
    return int(rows), int(columns)


def _dicom_to_grey(ds, label: str) -> np.ndarray:
    """The first frame, through modality LUT/rescale, VOI LUT/window and MONOCHROME1 inversion."""
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # index=0: only the first frame is decoded (multi-frame files give their first frame)
            array = pixel_array(ds, index=0)
    except Exception as err:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax = f"; transfer syntax {syntax.name}" if syntax is not None else ""
        raise InputError(
            f"the DICOM pixel data cannot be decoded (truncated, corrupt or an unsupported "
            f"compression{syntax}): {type(err).__name__}: {err}",
            label,
        ) from None

    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        array = apply_modality_lut(array, ds)
        try:
            array = apply_voi_lut(array, ds, index=0)
        except Exception:  # an invalid window is ignored: the min-max scaling that follows suffices
            pass
        array = np.asarray(array, dtype=np.float32)
        if photometric == "MONOCHROME1":
            # MONOCHROME1: the lowest value is displayed white; flip within the image's own range
            array = array.max() + array.min() - array
    elif photometric == "PALETTE COLOR":
        array = _luma(apply_color_lut(array, ds))
    elif photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"):
        array = _luma(array)  # pixel_array already gives RGB
    else:
        raise InputError(f"unsupported DICOM photometric interpretation {photometric}", label)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2:
        raise InputError(f"the DICOM pixel data has an unexpected shape {array.shape}", label)
    return array


def _read_dicom(fp: IO[bytes], label: str, max_pixels: int | None, *, forced: bool) -> np.ndarray:
    ds = _read_dataset(fp, label, force=forced, stop_before_pixels=False)
    rows, columns = _dicom_shape(ds, label, forced=forced)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise InputError("the DICOM file holds no pixel data (it is not an image)", label)
    _check_pixels(rows, columns, max_pixels, label)  # before any pixel is decoded
    return _dicom_to_grey(ds, label)


# ---------------------------------------------------------------------------------------- public
_LIMIT = -1  # max_pixels default: DLUM_MAX_PIXELS, read at each call


def read_image(
    source: ImageSource, *, name: str | None = None, max_pixels: int | None = _LIMIT
) -> np.ndarray:
    """Decode a PNG/JPEG/TIFF/BMP/PGM or DICOM image into a 2-D float32 grey array.

    Colour images become grey by BT.601 luma (alpha dropped, palettes expanded); JPEG EXIF
    orientation is applied. DICOM: first frame, modality LUT or rescale slope/intercept, VOI LUT or
    window, MONOCHROME1 inverted, kept in float (16-bit data is never quantised to 8 bits).

    Args:
        source: a path, the file's bytes, or a binary file-like object (rewound, then restored).
        name: the file's name for messages; defaults to the path, ``source.name`` or
            "uploaded file".
        max_pixels: largest height x width accepted, checked from the header before decoding
            (default ``DLUM_MAX_PIXELS``, see :class:`dlum.settings.Limits`; ``None``: no limit
            besides Pillow's own decompression-bomb guard). Files over ``DLUM_MAX_IMAGE_MB``
            (and deflated DICOM inflating past it) are refused before they are read.

    Returns:
        ``(height, width)`` float32 array in the image's own intensity scale.

    Raises:
        InputError: empty, missing, truncated, unrecognised, unsupported or oversized files, DICOM
            without pixel data; the message names the file.
    """
    label = source_name(source, name)
    if max_pixels == _LIMIT:
        max_pixels = limits().max_pixels
    try:
        with _opened(source, label) as fp:
            head = _head(fp, label)
            if is_dicom(head):
                image = _read_dicom(fp, label, max_pixels, forced=False)
            else:
                img = _open_pil(fp, label)
                if img is None:
                    if not _may_be_raw_dicom(head):
                        raise InputError(_NOT_AN_IMAGE, label)
                    image = _read_dicom(fp, label, max_pixels, forced=True)
                else:
                    with img:
                        _check_pixels(*_pil_size(img), max_pixels, label)  # header only
                        image = _pil_to_grey(img, label)
    except InputError:
        raise
    except Exception as err:  # any other decoder failure still reaches the user as a message
        raise InputError(f"cannot be decoded ({type(err).__name__}: {err})", label) from None
    if not np.isfinite(image).all():
        raise InputError("the image holds NaN or infinite values", label)
    return image


def image_size(source: ImageSource, name: str | None = None) -> tuple[int, int]:
    """``(height, width)`` of an image from its header, without decoding the pixels.

    Raises:
        InputError: as :func:`read_image` for files that cannot be opened or recognised.
    """
    label = source_name(source, name)
    try:
        with _opened(source, label) as fp:
            head = _head(fp, label)
            forced = False
            if not is_dicom(head):
                img = _open_pil(fp, label)
                if img is not None:
                    with img:
                        return _pil_size(img)
                if not _may_be_raw_dicom(head):
                    raise InputError(_NOT_AN_IMAGE, label)
                forced = True
            ds = _read_dataset(fp, label, force=forced, stop_before_pixels=True)
            return _dicom_shape(ds, label, forced=forced)
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"cannot be read ({type(err).__name__}: {err})", label) from None


def to_display_uint8(image: np.ndarray) -> np.ndarray:
    """Min-max scale a grey image to ``uint8`` 0..255 for display (a constant image gives 0s).

    >>> to_display_uint8(np.array([[0.0, 512.0, 1024.0]])).tolist()
    [[0, 128, 255]]
    """
    array = np.asarray(image, dtype=np.float32)
    if array.size == 0:
        return np.zeros(array.shape, dtype=np.uint8)
    low, high = float(np.nanmin(array)), float(np.nanmax(array))
    if not high > low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = (array - low) * (255.0 / (high - low))
    return np.clip(np.rint(np.nan_to_num(scaled)), 0, 255).astype(np.uint8)
