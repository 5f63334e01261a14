"""Upload files for the dashboard tests: a PNG, and the malformed files the app must refuse."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

__all__ = ["dicom_without_pixels", "malformed_uploads", "png_bytes", "png_header_only"]


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that announces ``width x height`` pixels and holds none (a decompression bomb's head)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + chunk + end


def dicom_without_pixels() -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = 64, 64
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def malformed_uploads() -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, a phrase the message must contain)."""
    rng = np.random.default_rng(0)
    good = png_bytes(rng.integers(0, 255, (64, 64), dtype=np.uint8))
    return {
        "empty": ("empty.png", b"", "empty"),
        "text named png": ("notes.png", b"patient notes, not an image\n" * 4, "not a recognised image"),
        "truncated png": ("cut.png", good[: len(good) // 2], "truncated"),
        "dicom without pixels": ("header.dcm", dicom_without_pixels(), "no pixel data"),
        "oversized": ("huge.png", png_header_only(10_000, 9_000), "pixel limit"),
    }
