"""Expanded-ROI crops of a cohort, kept once per distinct image and box.

Each crop is the lesion box expanded by 30% of its shortest side (``dlum.data.roi``) cut from the
decoded image at its own resolution. 8-bit sources are stored exactly, so that the network input
made from a stored crop (resize to 224, min–max) is identical to the one made from the original
file: training, evaluation on another machine and ``python -m dlum evaluate`` agree. A crop
from a source with more than 8 bits is min–max scaled to uint8 (flagged ``exact = False``).

Stored as one compressed ``.npz`` of plain numeric arrays (read with ``allow_pickle=False``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dlum.constants import MODALITIES
from dlum.errors import InputError

__all__ = ["CropSet", "extract_crops", "crop_key"]

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

    def crop(self, modality: str, row: int) -> np.ndarray:
        return self.crops[modality][int(self.index[modality][row])]

    def __len__(self) -> int:
        return len(self.labels)

    def nbytes(self) -> int:
        return sum(c.nbytes for m in self.crops for c in self.crops[m])

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
        path = Path(path)
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CropSet":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"not a crop cache ({exc})", str(path)) from None
        crops, index, exact = {}, {}, {}
        for m in MODALITIES:
            flat, shapes = data[f"{m}_data"], data[f"{m}_shapes"]
            ends = np.cumsum(shapes[:, 0].astype(np.int64) * shapes[:, 1])
            starts = np.concatenate([[0], ends[:-1]])
            crops[m] = [flat[s:e].reshape(h, w) for s, e, (h, w) in zip(starts, ends, shapes)]
            index[m] = data[f"{m}_index"].astype(np.int64)
            exact[m] = data[f"{m}_exact"]
        return cls(crops, index, data["labels"].astype(np.int64), exact)


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
    return CropSet(
        crops=crops,
        index=index,
        labels=labels,
        exact={m: np.array(exact[m], dtype=bool) for m in MODALITIES},
    )

