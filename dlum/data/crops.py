"""Expanded-ROI crops of a cohort, kept once per distinct image and box.

Each crop is the lesion box expanded by 30% of its shortest side (``dlum.data.roi``) cut from the
decoded image at its own resolution. 8-bit sources are stored exactly, so that the network input
made from a stored crop (resize to 224, min–max) is identical to the one made from the original
file: training, evaluation on another machine and ``python -m dlum evaluate`` agree. A crop
from a source with more than 8 bits is min–max scaled to uint8 (flagged ``exact = False``).

Stored as one compressed ``.npz`` of plain numeric arrays (read with ``allow_pickle=False``);
``python -m dlum prepare`` writes the public cohort's as ``crops.npz`` beside ``cohort.csv``.

Each crop is keyed by what it was cut from: the image file's name, the SHA-256 of its bytes
(:func:`file_digest`) and the box. :meth:`CropSet.mismatch` refuses a set whose crops were cut
from other bytes than the image files now on disk (a file replaced under the same name), so a
stale crop is never used; when the images are absent (crops carried without them) the stored
crops are used as they are.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dlum.constants import MODALITIES
from dlum.errors import InputError

__all__ = ["CropSet", "extract_crops", "crop_key", "row_keys", "file_digest"]

_BOX = {m: [f"{m}_x0", f"{m}_y0", f"{m}_x1", f"{m}_y1"] for m in MODALITIES}

#: Bytes read at a time when hashing an image file.
_CHUNK = 1 << 20
#: SHA-256 of files hashed in this process, keyed by path and what ``stat`` says of the file
#: (size, modification and change times, inode), so that each image is read once per run and a
#: file replaced meanwhile is hashed again.
_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes as 64 hex digits, read in chunks; remembered for this process
    while the file is unchanged (same size, times and inode).

    Raises:
        OSError: the file cannot be read.
    """
    path = os.path.abspath(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = _DIGESTS[key] = h.hexdigest()
    return digest


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
    #: per modality and crop, the SHA-256 (hex) of the image file's bytes it was cut from; None
    #: in sets saved before hashes were stored
    digests: dict[str, list[str]] | None = None

    def crop(self, modality: str, row: int) -> np.ndarray:
        return self.crops[modality][int(self.index[modality][row])]

    def __len__(self) -> int:
        return len(self.labels)

    def nbytes(self) -> int:
        return sum(c.nbytes for m in self.crops for c in self.crops[m])

    def row_digests(self, modality: str) -> np.ndarray | None:
        """Per row, the SHA-256 of the ``modality`` image its crop was cut from ("" for a row
        without a crop of that modality); None when the set holds no hashes."""
        if self.digests is None:
            return None
        table = np.asarray(list(self.digests[modality]) + [""], dtype=object)
        return table[self.index[modality]]  # -1 (no crop) picks the trailing ""

    def check_matches(self, cohort: pd.DataFrame) -> None:
        """Raise InputError when these crops are not those of ``cohort`` (:meth:`mismatch`)."""
        problem = self.mismatch(cohort)
        if problem:
            raise InputError(f"the crops are not those of the cohort table: {problem}")

    def mismatch(self, cohort: pd.DataFrame) -> str | None:
        """Why these crops cannot be those of ``cohort``, or None.

        Checks the row count, the labels, the image file names and boxes (when stored) and, for
        every image of the table present on disk, that its bytes are those the crop was cut from
        (SHA-256). A set without hashes (saved by an older dlum) cannot be checked against the
        images: it does not match a table whose images are present. Absent images are not
        checked: crops carried without their images are used as stored.
        """
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
        return self._changed_images(cohort)

    def _changed_images(self, cohort: pd.DataFrame) -> str | None:
        """Why the image files present on disk are not those the crops were cut from, or None."""
        for m in MODALITIES:
            column = f"{m}_image"
            if column not in cohort.columns:
                continue
            paths = [str(p) for p in cohort[column]]
            present = {p: os.path.isfile(p) for p in set(paths) if p}
            shown = [i for i, p in enumerate(paths) if present.get(p)]
            if not shown:
                continue
            first = shown[0]
            if self.digests is None:
                return (f"it holds no hashes of the image files (saved by an older dlum), so its "
                        f"crops cannot be checked against the {m.upper()} images present (first: "
                        f"data row {first + 1}, {Path(paths[first]).name}); one made again "
                        "(python -m dlum prepare) holds them")
            stored = self.row_digests(m)
            changed: list[int] = []
            for i in shown:
                if int(self.index[m][i]) < 0:
                    continue  # no crop of this modality for the row
                try:
                    digest = file_digest(paths[i])
                except OSError as exc:
                    return (f"the {m.upper()} image of data row {i + 1} cannot be read to check "
                            f"its crop ({exc.strerror or exc}): {paths[i]}")
                if digest != stored[i]:
                    changed.append(i)
            if changed:
                i = changed[0]
                return (f"its {m.upper()} crops were cut from other image bytes than the files "
                        f"now present on {len(changed)} rows (first: data row {i + 1}, "
                        f"{Path(paths[i]).name}): the image files changed since the crops were "
                        "saved")
        return None

    def subset(self, rows) -> "CropSet":
        """The same crops for some rows only (``rows``: positions in this set, in order)."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = None if self.keys is None else {m: self.keys[m][rows] for m in self.keys}
        return CropSet(self.crops, {m: self.index[m][rows] for m in self.index},
                       self.labels[rows], self.exact, keys, self.digests)

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
            if self.digests is not None:  # one SHA-256 (32 bytes) per crop
                arrays[f"{m}_sha256"] = np.frombuffer(
                    b"".join(bytes.fromhex(d) for d in self.digests[m]), dtype=np.uint8
                ).reshape(-1, 32)
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
            digests = None
            if all(f"{m}_sha256" in data for m in MODALITIES):
                digests = {}
                for m in MODALITIES:
                    table = data[f"{m}_sha256"]
                    if table.dtype != np.uint8 or table.shape != (len(crops[m]), 32):
                        raise ValueError(f"{m.upper()} hashes: {table.shape} {table.dtype}, not "
                                         f"one 32-byte SHA-256 per crop ({len(crops[m])})")
                    digests[m] = [bytes(d).hex() for d in table]
        except KeyError as exc:
            raise InputError(f"not a crop cache (no array {exc})", str(path)) from None
        except (OSError, ValueError, EOFError, IndexError, zipfile.BadZipFile) as exc:
            raise InputError(f"not a crop cache ({exc})", str(path)) from None
        return cls(crops, index, labels, exact, keys, digests)


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
    digests: dict[str, list[str]] = {m: [] for m in MODALITIES}
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
                    decoded[path] = (read_image(path), _digest_of(path))
                image, digest = decoded[path]
                crop = crop_roi(image, key[1])
                crop, is_exact = _to_uint8(crop) if quantise else (crop, True)
                number[key] = len(crops[m])
                crops[m].append(crop)
                exact[m].append(is_exact)
                digests[m].append(digest)
            index[m][i] = number[key]
    labels = cohort["label"].to_numpy().astype(np.int64)
    table = cohort.reset_index(drop=True)
    return CropSet(
        crops=crops,
        index=index,
        labels=labels,
        exact={m: np.array(exact[m], dtype=bool) for m in MODALITIES},
        keys={m: row_keys(table, m) for m in MODALITIES},
        digests=digests,
    )


def _digest_of(path: str) -> str:
    """:func:`file_digest` of an image just decoded (an unreadable one failed to decode first)."""
    try:
        return file_digest(path)
    except OSError as exc:
        raise InputError(f"cannot read the file to hash it ({exc.strerror or exc})", path) from None

