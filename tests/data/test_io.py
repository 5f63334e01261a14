"""dlum.data.io: decoding PNG/JPEG/DICOM to grey float arrays, and refusing bad files clearly."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dlum.data.io import image_size, read_image, to_display_uint8
from dlum.errors import InputError

MAMMOGRAPHY_SOP = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image Storage


# ----------------------------------------------------------------------------------------- makers
def noise(shape=(64, 80), dtype=np.uint8, high=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(dtype)


def save_pil(path: Path, img: Image.Image, fmt: str | None = None, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def png_with_header_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height but that holds only a tiny image's data."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def dicom_dataset(pixels: np.ndarray | None, photometric="MONOCHROME2", bits=16, **elements):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MAMMOGRAPHY_SOP
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = MAMMOGRAPHY_SOP
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "TEST"
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def save_dicom(path: Path, ds: Dataset, preamble: bool = True) -> Path:
    ds.save_as(path, enforce_file_format=preamble)
    return path


def grey16(shape=(40, 50)) -> np.ndarray:
    """A 16-bit gradient with far more than 256 levels."""
    return (np.arange(np.prod(shape)).reshape(shape) * 3 % 4096).astype(np.uint16)


# ------------------------------------------------------------------------------------ good images
def test_png_8bit_grey_exact(tmp_path):
    pixels = noise()
    path = save_pil(tmp_path / "grey.png", Image.fromarray(pixels))
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == pixels.shape
    np.testing.assert_array_equal(image, pixels)
    assert image_size(path) == pixels.shape
    assert image_size(str(path)) == pixels.shape


def test_png_16bit_keeps_more_than_256_levels(tmp_path):
    pixels = grey16()
    path = save_pil(tmp_path / "grey16.png", Image.fromarray(pixels))
    image = read_image(path)
    np.testing.assert_array_equal(image, pixels.astype(np.float32))
    assert len(np.unique(image)) > 256 and image.max() > 255


def test_jpeg_grey_and_rgb(tmp_path):
    pixels = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (64, 1))
    grey = save_pil(tmp_path / "grey.jpg", Image.fromarray(pixels), quality=95)
    assert np.abs(read_image(grey) - pixels).max() < 8  # lossy, but close
    rgb = save_pil(tmp_path / "rgb.jpg", Image.fromarray(np.stack([pixels] * 3, -1)), quality=95)
    image = read_image(rgb)
    assert image.ndim == 2 and np.abs(image - pixels).max() < 8


def test_rgb_uses_bt601_luma(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :2, 0] = 200  # red
    rgb[:, 2:4, 1] = 200  # green
    rgb[:, 4:, 2] = 200  # blue
    image = read_image(save_pil(tmp_path / "rgb.png", Image.fromarray(rgb)))
    np.testing.assert_allclose(image[0, [0, 2, 4]], [0.299 * 200, 0.587 * 200, 0.114 * 200], rtol=1e-5)


def test_rgba_drops_alpha(tmp_path):
    pixels = noise((30, 20))
    rgba = np.stack([pixels, pixels, pixels, noise((30, 20), seed=1)], -1)
    image = read_image(save_pil(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA")))
    assert image.shape == (30, 20)
    np.testing.assert_allclose(image, pixels, atol=1e-3)


def test_la_keeps_grey_channel(tmp_path):
    pixels = noise((30, 20))
    la = Image.fromarray(np.stack([pixels, noise((30, 20), seed=2)], -1), "LA")
    image = read_image(save_pil(tmp_path / "la.png", la))
    np.testing.assert_array_equal(image, pixels)


def test_palette_expands_to_grey(tmp_path):
    pixels = noise((30, 20), high=16)
    img = Image.fromarray(pixels, "L").convert("P")  # grey palette
    assert img.mode == "P"
    path = save_pil(tmp_path / "palette.png", img)
    assert Image.open(path).mode == "P"
    image = read_image(path)
    assert image.shape == (30, 20)
    np.testing.assert_allclose(image, pixels, atol=1e-3)


@pytest.mark.parametrize("name", ["phone.jpg", "phone.png"])
def test_exif_orientation_applied(tmp_path, name):
    img = Image.fromarray(noise((30, 50)))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = save_pil(tmp_path / name, img, exif=exif)
    assert read_image(path).shape == (50, 30)
    assert image_size(path) == (50, 30)  # PNG: read from the eXIf chunk, pixels not decoded


def test_bytes_and_file_like_sources(tmp_path):
    pixels = noise()
    path = save_pil(tmp_path / "grey.png", Image.fromarray(pixels))
    data = path.read_bytes()
    np.testing.assert_array_equal(read_image(data), pixels)
    np.testing.assert_array_equal(read_image(bytearray(data)), pixels)
    upload = io.BytesIO(data)
    upload.name = "lesion.png"  # as a Streamlit UploadedFile
    upload.seek(17)
    np.testing.assert_array_equal(read_image(upload), pixels)
    assert upload.tell() == 17  # the caller's position is restored
    upload.read()  # at the end: a second read still works
    np.testing.assert_array_equal(read_image(upload), pixels)
    assert image_size(upload) == pixels.shape
    with open(path, "rb") as fh:
        np.testing.assert_array_equal(read_image(fh), pixels)


def test_to_display_uint8():
    out = to_display_uint8(np.array([[100.0, 1100.0], [600.0, 100.0]], np.float32))
    assert out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255 and out[1, 0] == 128
    assert (to_display_uint8(np.full((3, 3), 7.0)) == 0).all()


# --------------------------------------------------------------------------------------- DICOM
def test_dicom_16bit_kept_in_float(tmp_path):
    pixels = grey16()
    path = save_dicom(tmp_path / "mg.dcm", dicom_dataset(pixels))
    image = read_image(path)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, pixels)
    assert image_size(path) == pixels.shape


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = grey16()
    mono2 = read_image(save_dicom(tmp_path / "m2.dcm", dicom_dataset(pixels, "MONOCHROME2")))
    mono1 = read_image(save_dicom(tmp_path / "m1.dcm", dicom_dataset(pixels, "MONOCHROME1")))
    # the lowest stored value is displayed brightest, and the range is kept
    assert mono1[np.unravel_index(pixels.argmin(), pixels.shape)] == mono1.max()
    assert mono1[np.unravel_index(pixels.argmax(), pixels.shape)] == mono1.min()
    np.testing.assert_allclose(mono1 + mono2, mono2.max() + mono2.min())


def test_dicom_rescale_slope_intercept(tmp_path):
    pixels = grey16()
    ds = dicom_dataset(pixels, RescaleSlope=2.5, RescaleIntercept=-1000)
    image = read_image(save_dicom(tmp_path / "rescaled.dcm", ds))
    np.testing.assert_allclose(image, pixels * 2.5 - 1000)


def test_dicom_window_applied_without_8bit_rounding(tmp_path):
    pixels = grey16()  # 0..4095
    ds = dicom_dataset(pixels, bits=12, WindowCenter=2000, WindowWidth=1000)
    image = read_image(save_dicom(tmp_path / "windowed.dcm", ds))
    below, above = pixels < 1400, pixels > 2600
    assert (image[below] == image.min()).all() and (image[above] == image.max()).all()
    inside = image[(pixels > 1600) & (pixels < 2400)]
    assert len(np.unique(inside)) > 256  # the window's output is not quantised to 8 bits
    # monotonic: windowing never reverses the order of grey levels
    order = np.argsort(pixels, axis=None, kind="stable")
    assert (np.diff(image.ravel()[order]) >= 0).all()


def test_dicom_multiframe_gives_first_frame(tmp_path):
    frames = np.stack([grey16(), grey16()[::-1], grey16()[:, ::-1]])
    image = read_image(save_dicom(tmp_path / "multi.dcm", dicom_dataset(frames)))
    np.testing.assert_array_equal(image, frames[0])


def test_dicom_rgb_becomes_grey(tmp_path):
    rgb = noise((20, 30, 3))
    image = read_image(save_dicom(tmp_path / "rgb.dcm", dicom_dataset(rgb, "RGB", bits=8)))
    assert image.shape == (20, 30)
    np.testing.assert_allclose(image, rgb.astype(np.float32) @ [0.299, 0.587, 0.114], rtol=1e-5)


def test_dicom_without_preamble(tmp_path):
    pixels = grey16()
    path = save_dicom(tmp_path / "raw.dcm", dicom_dataset(pixels), preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(path), pixels)
    assert image_size(path) == pixels.shape


def test_dicom_from_bytes(tmp_path):
    pixels = grey16()
    data = save_dicom(tmp_path / "mg.dcm", dicom_dataset(pixels)).read_bytes()
    np.testing.assert_array_equal(read_image(data, name="scan.dcm"), pixels)


# ---------------------------------------------------------------------------------- bad files
def truncated(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path, "empty"


def make_truncated_png(tmp_path):
    path = save_pil(tmp_path / "cut.png", Image.fromarray(noise((200, 200))))
    return truncated(path), "truncated"


def make_truncated_jpeg(tmp_path):
    path = save_pil(tmp_path / "cut.jpg", Image.fromarray(noise((200, 200))), quality=90)
    return truncated(path), "truncated"


def make_text_as_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("This is not an image, only text that was given a .png name.\n" * 5)
    return path, "not a recognised image"


def make_one_bit(tmp_path):
    path = save_pil(tmp_path / "mask.png", Image.fromarray(noise((20, 20)) > 127).convert("1"))
    assert Image.open(path).mode == "1"
    return path, "1-bit"


def make_cmyk(tmp_path):
    path = save_pil(tmp_path / "print.jpg", Image.new("CMYK", (20, 20), (10, 20, 30, 0)))
    return path, "mode CMYK"


def make_gif(tmp_path):
    path = save_pil(tmp_path / "anim.gif", Image.fromarray(noise((20, 20))))
    return path, "unsupported image format GIF"


def make_dicom_without_pixels(tmp_path):
    ds = dicom_dataset(None, Rows=10, Columns=10)
    return save_dicom(tmp_path / "nopixels.dcm", ds), "no pixel data"


def make_truncated_dicom(tmp_path):
    path = save_dicom(tmp_path / "cut.dcm", dicom_dataset(grey16((100, 100))))
    return truncated(path, 0.6), "truncated"


def make_dicom_garbage(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    return path, "DICOM"


def make_raw_dicom_lookalike(tmp_path):
    path = tmp_path / "lookalike.dcm"
    path.write_bytes(b"\x08\x00" + bytes(range(256)) * 3)
    return path, "not a recognised image"


def make_missing(tmp_path):
    return tmp_path / "missing.png", "not found"


def make_folder(tmp_path):
    path = tmp_path / "folder.png"
    path.mkdir()
    return path, "folder"


BAD_FILES = [
    make_empty,
    make_truncated_png,
    make_truncated_jpeg,
    make_text_as_png,
    make_one_bit,
    make_cmyk,
    make_gif,
    make_dicom_without_pixels,
    make_truncated_dicom,
    make_dicom_garbage,
    make_raw_dicom_lookalike,
    make_missing,
    make_folder,
]


@pytest.mark.parametrize("make", BAD_FILES, ids=lambda f: f.__name__[5:])
def test_bad_file_raises_input_error_naming_file(tmp_path, make):
    path, problem = make(tmp_path)
    with pytest.raises(InputError) as err:
        read_image(path)
    message = str(err.value)
    assert path.name in message
    assert problem.lower() in message.lower()


@pytest.mark.parametrize("make", [make_empty, make_text_as_png, make_missing], ids=str)
def test_image_size_bad_file_raises_input_error(tmp_path, make):
    path, problem = make(tmp_path)
    with pytest.raises(InputError, match=problem):
        image_size(path)


@pytest.mark.parametrize("make", [make_truncated_png, make_text_as_png, make_empty], ids=str)
def test_bad_bytes_and_uploads_named(tmp_path, make):
    path, _ = make(tmp_path)
    data = path.read_bytes()
    with pytest.raises(InputError, match="uploaded file"):
        read_image(data)
    with pytest.raises(InputError, match="lesion_07.png"):
        read_image(data, name="lesion_07.png")
    upload = io.BytesIO(data)
    upload.name = "from_browser.png"
    with pytest.raises(InputError, match="from_browser.png"):
        read_image(upload)


def test_wrong_source_type():
    with pytest.raises(InputError, match="int"):
        read_image(42)  # type: ignore[arg-type]


def test_over_pixel_limit(tmp_path):
    path = save_pil(tmp_path / "big.png", Image.fromarray(noise((20, 30))))
    with pytest.raises(InputError, match="pixel limit") as err:
        read_image(path, max_pixels=500)
    assert "big.png" in str(err.value)
    assert read_image(path, max_pixels=600).shape == (20, 30)


def test_pixel_limit_checked_from_header_before_decoding(tmp_path):
    # The header claims 9000 x 9000 = 81 Mpx (over MAX_PIXELS, under Pillow's own guard), but no
    # such data follows: decoding would report a corrupt file, the header check reports the size.
    path = png_with_header_size(tmp_path / "claims_huge.png", 9000, 9000)
    assert image_size(path) == (9000, 9000)
    with pytest.raises(InputError, match="pixel limit"):
        read_image(path)


def test_pillow_decompression_bomb_becomes_input_error(tmp_path):
    path = png_with_header_size(tmp_path / "bomb.png", 12_000, 12_000)  # 144 Mpx: Pillow warns
    with pytest.raises(InputError, match="pixel limit"):
        read_image(path, max_pixels=None)
    path = png_with_header_size(tmp_path / "bomb2.png", 30_000, 30_000)  # 900 Mpx: Pillow errors
    with pytest.raises(InputError, match="pixel limit"):
        read_image(path, max_pixels=None)


def test_dicom_over_pixel_limit_before_decoding(tmp_path):
    ds = dicom_dataset(grey16((40, 50)))
    path = save_dicom(tmp_path / "big.dcm", ds)
    with pytest.raises(InputError, match="pixel limit"):
        read_image(path, max_pixels=1999)
    # Rows x Columns claiming far more than the stored bytes: refused on the header's size
    ds.Rows, ds.Columns = 20_000, 20_000
    path = save_dicom(tmp_path / "claims_huge.dcm", ds)
    with pytest.raises(InputError, match="pixel limit"):
        read_image(path)


# ------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def cbis_mammograms(shared_data):
    paths = sorted((shared_data / "mg" / "cbis_ddsm" / "dicom").glob("*.dcm"))
    if not paths:
        pytest.skip("no CBIS-DDSM DICOM in the public data folder")
    return {path.name: read_image(path) for path in paths}


def test_real_mammograms_decode_with_plausible_contrast(cbis_mammograms):
    assert len(cbis_mammograms) == 2
    for name, image in cbis_mammograms.items():
        height, width = image.shape
        assert image.dtype == np.float32 and np.isfinite(image).all(), name
        assert 4000 < height < 5200 and 2300 < width < 3200, (name, image.shape)  # portrait film
        assert len(np.unique(image)) > 1000, name  # 16-bit depth kept, not 8-bit
        unit = (image - image.min()) / (image.max() - image.min())
        background = unit < 0.05
        # dark (not inverted) background around the breast: a large part, but not all
        assert 0.3 < background.mean() < 0.9, (name, background.mean())
        tissue = unit[~background]
        assert tissue.mean() > 0.2 and len(np.unique(tissue)) > 1000, name
        # the breast lies against one side (chest wall): one half is much brighter than the other
        left, right = unit[:, : width // 2].mean(), unit[:, width // 2 :].mean()
        assert max(left, right) > 3 * min(left, right), (name, left, right)


def test_real_mammogram_size_from_header(shared_data, cbis_mammograms):
    for name, image in cbis_mammograms.items():
        assert image_size(shared_data / "mg" / "cbis_ddsm" / "dicom" / name) == image.shape


def test_real_busbra_png_decodes(shared_data):
    paths = sorted((shared_data / "us" / "busbra" / "Images").glob("*.png"))[:2]
    if not paths:
        pytest.skip("no BUS-BRA images in the public data folder")
    for path in paths:
        image = read_image(path)
        assert image.ndim == 2 and image.shape == image_size(path)
        assert 0 <= image.min() and image.max() <= 255 and image.max() > image.min()
        assert 200 <= image.shape[1] <= 700  # BUS-BRA widths are 240-579 px


def test_float_tiff_decodes_and_nan_is_refused(tmp_path):
    pixels = np.linspace(-1.5, 2.5, 600, dtype=np.float32).reshape(20, 30)
    path = save_pil(tmp_path / "float.tif", Image.fromarray(pixels))
    np.testing.assert_array_equal(read_image(path), pixels)
    pixels[3, 4] = np.nan
    path = save_pil(tmp_path / "nan.tif", Image.fromarray(pixels))
    with pytest.raises(InputError, match="NaN") as err:
        read_image(path)
    assert "nan.tif" in str(err.value)


def test_unexpected_decoder_failure_becomes_input_error(tmp_path, monkeypatch):
    path = save_dicom(tmp_path / "odd.dcm", dicom_dataset(grey16()))

    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(pydicom.pixels, "apply_modality_lut", broken)
    with pytest.raises(InputError, match="odd.dcm.*decoder exploded"):
        read_image(path)


class _Pipe:
    """A binary stream that cannot seek (like a socket or a pipe)."""

    def __init__(self, data: bytes, name: str):
        self._buf, self.name = io.BytesIO(data), name

    def read(self, n: int = -1) -> bytes:
        return self._buf.read(n)

    def tell(self) -> int:
        raise OSError("not seekable")

    def seek(self, *args) -> int:
        raise OSError("not seekable")


def test_non_seekable_stream(tmp_path):
    pixels = noise()
    data = save_pil(tmp_path / "grey.png", Image.fromarray(pixels)).read_bytes()
    np.testing.assert_array_equal(read_image(_Pipe(data, "stream.png")), pixels)
    with pytest.raises(InputError, match="stream.png: the file is empty"):
        read_image(_Pipe(b"", "stream.png"))


def test_a_pipe_or_device_is_refused_by_type_without_blocking(tmp_path):
    import os

    from dlum.data.io import read_image
    from dlum.errors import InputError

    fifo = tmp_path / "us.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_image(fifo)  # opening a FIFO for reading would block for ever
    with pytest.raises(InputError, match="not a regular file"):
        read_image("/dev/zero")
