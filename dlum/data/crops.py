"""Expanded-ROI crops of a cohort, kept once per distinct image and box.

Each crop is the lesion box expanded by 30% of its shortest side (``dlum.data.roi``) cut from the
decoded image at its own resolution. 8-bit sources are stored exactly, so that the network input
made from a stored crop (resize to 224, min–max) is identical to the one made from the original
file: training, evaluation on another machine and ``python -m dlum evaluate`` agree. A crop
from a source with more than 8 bits is min–max scaled to uint8 (flagged ``exact = False``).

Stored as one compressed ``.npz`` of plain numeric arrays (read with ``allow_pickle=False``);
``python -m dlum prepare`` writes the public cohort's as ``crops.npz`` beside ``cohort.csv``.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dlum.constants import MODALITIES
from dlum.errors import InputError

__all__ = ["CropSet", "extract_crops", "crop_key", "row_keys"]

_BOX = {m: [f"{m}_x0", f"{m}_y0", f"{m}_x1", f"{m}_y1"] for m in MODALITIES}


def crop_key(row: pd.Series, modality: str) -> tuple:
    """Identity of one crop: the image file and its box (None = whole image)."""
    box = row_box(row, modality)
    return (str(row[f"{modality}_image"]), box)


def row_box(row: pd.Series, modality: str) -> tuple[int, int, int, int] | None:
    """The ROI box of a cohort row, or None when the row leaves it empty (= whole image)."""
    values = [row.get(c) for c in _BOX[modality]]
    if any(v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in values):
        return None
    return tuple(int(round(float(v))) for v in values)


@dataclass
class CropSet:
    """Crops per modality plus, per cohort row, which crop it uses and its label."""

    crops: dict[str, list[np.ndarray]]
    index: dict[str, np.ndarray]  # row -> crop number, per modality
    labels: np.ndarray
    exact: dict[str, np.ndarray]
    #: per modality and row, "image file name|box" (what the crop was cut from); None in sets
    #: saved before keys were stored
    keys: dict[str, np.ndarray] | None = None

    def crop(self, modality: str, row: int) -> np.ndarray:
        return self.crops[modality][int(self.index[modality][row])]

    def __len__(self) -> int:
        return len(self.labels)

    def nbytes(self) -> int:
        return sum(c.nbytes for m in self.crops for c in self.crops[m])

    def mismatch(self, cohort: pd.DataFrame) -> str | None:
        """Why these crops cannot be those of ``cohort`` (row count, labels), or None."""
        if len(self) != len(cohort):
            return f"it holds {len(self)} rows but the table has {len(cohort)}"
        table = cohort["label"].to_numpy().astype(np.int64)
        differ = np.flatnonzero(self.labels != table)
        if len(differ):
            return (f"its labels differ from the table's on {len(differ)} of {len(self)} rows "
                    f"(first: data row {differ[0] + 1})")
        if self.keys is not None:
            for m in MODALITIES:
                wanted = row_keys(cohort, m)
                differ = np.flatnonzero(self.keys[m] != wanted)
                if len(differ):
                    return (f"its {m.upper()} crops were cut from other images or boxes on "
                            f"{len(differ)} rows (first: data row {differ[0] + 1})")
        return None

    def subset(self, rows) -> "CropSet":
        """The same crops for some rows only (``rows``: positions in this set, in order)."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = None if self.keys is None else {m: self.keys[m][rows] for m in self.keys}
        return CropSet(self.crops, {m: self.index[m][rows] for m in self.index},
                       self.labels[rows], self.exact, keys)

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {"labels": self.labels.astype(np.int8)}
        for m in MODALITIES:
            crops = self.crops[m]
            shapes = np.array([c.shape for c in crops], dtype=np.int32).reshape(-1, 2)
            arrays[f"{m}_data"] = (
                np.concatenate([c.ravel() for c in crops]) if crops else np.zeros(0, np.uint8)
            )
            arrays[f"{m}_shapes"] = shapes
            arrays[f"{m}_index"] = self.index[m].astype(np.int32)
            arrays[f"{m}_exact"] = self.exact[m].astype(bool)
            if self.keys is not None:
                arrays[f"{m}_keys"] = np.asarray(self.keys[m], dtype=str)  # fixed-width text
        path = Path(path)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CropSet":
        """Read a set written by :meth:`save`.

        Raises:
            InputError: a missing file, or one that is not such a set.
        """
        if not Path(path).is_file():
            raise InputError("crop file not found", str(path))
        with open(path, "rb") as f:
            if f.read(4) != b"PK\x03\x04":
                raise InputError("not a crop cache (not an .npz file)", str(path))
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
            crops, index, exact = {}, {}, {}
            for m in MODALITIES:
                flat, shapes = data[f"{m}_data"], data[f"{m}_shapes"]
                ends = np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1])
                starts = np.concatenate([[0], ends[:-1]])
                if len(ends) and ends[-1] != flat.size:
                    raise ValueError(f"{m.upper()} crop sizes do not add up to the stored pixels")
                crops[m] = [flat[s:e].reshape(h, w) for s, e, (h, w) in zip(starts, ends, shapes)]
                index[m] = data[f"{m}_index"].astype(np.int64)
                exact[m] = data[f"{m}_exact"]
            labels = data["labels"].astype(np.int64)
            keys = ({m: data[f"{m}_keys"].astype(str) for m in MODALITIES}
                    if all(f"{m}_keys" in data for m in MODALITIES) else None)
        except KeyError as exc:
            raise InputError(f"not a crop cache (no array {exc})", str(path)) from None
        except (OSError, ValueError, EOFError, IndexError, zipfile.BadZipFile) as exc:
            raise InputError(f"not a crop cache ({exc})", str(path)) from None
        return cls(crops, index, labels, exact, keys)


def row_keys(cohort: pd.DataFrame, modality: str) -> np.ndarray:
    """Per row, "image file name|x0,y0,x1,y1" of a modality (empty box = whole image): what a
    stored crop must have been cut from. File names, not paths, so a set moves between machines."""
    out = []
    for _, row in cohort.iterrows():
        image, box = crop_key(row, modality)
        out.append(f"{Path(image).name}|{'' if box is None else ','.join(map(str, box))}")
    return np.asarray(out, dtype=str)


def _to_uint8(crop: np.ndarray) -> tuple[np.ndarray, bool]:
    if crop.size and np.all(crop == np.round(crop)) and crop.min() >= 0 and crop.max() <= 255:
        return crop.astype(np.uint8), True
    lo, hi = float(crop.min()), float(crop.max())
    scaled = (crop - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(crop)
    return np.round(scaled).astype(np.uint8), False


def extract_crops(
    cohort: pd.DataFrame,
    *,
    modalities: tuple[str, ...] = MODALITIES,
    progress: bool = True,
    quantise: bool = True,
) -> CropSet:
    """Decode each distinct image once and cut its expanded ROI for every row of ``cohort``.

    ``cohort`` is a validated table (``dlum.data.manifest.read_cohort``) with absolute paths.
    ``quantise=False`` keeps float crops as decoded (for inference on sources over 8 bits).
    """
    from dlum.data.io import read_image
    from dlum.data.roi import crop_roi

    crops: dict[str, list[np.ndarray]] = {m: [] for m in MODALITIES}
    exact: dict[str, list[bool]] = {m: [] for m in MODALITIES}
    index = {m: np.full(len(cohort), -1, dtype=np.int64) for m in MODALITIES}
    for m in modalities:
        number: dict[tuple, int] = {}
        decoded: dict[str, np.ndarray] = {}
        rows = list(cohort.reset_index(drop=True).iterrows())
        for i, row in tqdm(rows, desc=f"{m.upper()} crops", disable=not progress, leave=False):
            key = crop_key(row, m)
            if key not in number:
                path = key[0]
                if path not in decoded:
                    decoded.clear()  # images of one file are usually adjacent; keep memory low
                    decoded[path] = read_image(path)
                crop = crop_roi(decoded[path], key[1])
                crop, is_exact = _to_uint8(crop) if quantise else (crop, True)
                number[key] = len(crops[m])
                crops[m].append(crop)
                exact[m].append(is_exact)
            index[m][i] = number[key]
    labels = cohort["label"].to_numpy().astype(np.int64)
    table = cohort.reset_index(drop=True)
    return CropSet(
        crops=crops,
        index=index,
        labels=labels,
        exact={m: np.array(exact[m], dtype=bool) for m in MODALITIES},
        keys={m: row_keys(table, m) for m in MODALITIES},
    )

