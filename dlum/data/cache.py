"""A compact cache of pre-processed lesion crops, built by ``python -m dlum prepare``.

Each distinct lesion (each US lesion once, each MG lesion once however many pairs reuse it) is
cropped with its ROI expanded by 30% of the shortest side (Xu et al., Breast Cancer Research
2025; :func:`dlum.data.roi.crop_roi`), resized to ``size`` x ``size`` (default
:data:`CACHE_SIZE` = 240, a little larger than the network's 224 so that training can jitter;
bilinear with anti-aliasing, :func:`dlum.data.transforms.resize`), min-max scaled and stored as
``uint8``. Evaluation resizes a cached crop from 240 to 224; the result differs from
:func:`dlum.data.transforms.preprocess` on the original file only by that second resampling and
the 8-bit rounding.

Folder layout written by :func:`prepare`::

    cohort.csv             the pseudo-paired cohort (dlum.data.manifest schema)
    lesions.csv            one row per lesion and modality: split, box, kind, BI-RADS, crop index
    crops_us.png           all US crops stacked vertically: a (N_us * size) x size 8-bit PNG
    crops_mg.png           the same for MG
    prepare_summary.json   counts, reader notes, pairing rule, sizes, run time

PNG (lossless, per-row prediction + deflate) stores the crops in about half the space of raw
``uint8``; 2,127 US + 95 MG crops at 240 px take about 55 MiB, small enough to carry to a GPU
machine (< 60 MiB). No pickle is involved: reading is a PNG decode and two CSV reads.
"""
from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import MG, MODALITIES, ROI_EXPANSION, SPLITS, US
from dlum.errors import CohortError, InputError

__all__ = [
    "CACHE_SIZE",
    "COHORT_FILE",
    "CROP_FILES",
    "LESIONS_FILE",
    "SUMMARY_FILE",
    "build_crops",
    "format_summary",
    "load_crop_cache",
    "load_crops",
    "make_crop",
    "prepare",
    "save_crops",
]

#: Side of the cached crops: a little larger than the 224 network input, for jitter.
CACHE_SIZE = 240

COHORT_FILE = "cohort.csv"
LESIONS_FILE = "lesions.csv"
SUMMARY_FILE = "prepare_summary.json"
CROP_FILES = {US: "crops_us.png", MG: "crops_mg.png"}


def _box(values) -> tuple[int, int, int, int] | None:
    """A lesion box (x0, y0, x1, y1) rounded to ints, or None when any value is missing."""
    values = [float(v) for v in values]
    if any(math.isnan(v) for v in values):
        return None
    return tuple(int(round(v)) for v in values)  # type: ignore[return-value]


def _key(image: str, box) -> str:
    box_text = "" if box is None else ",".join(str(v) for v in box)
    return f"{os.path.abspath(str(image))}|{box_text}"


def make_crop(image: np.ndarray, box, size: int = CACHE_SIZE) -> np.ndarray:
    """One cached crop: expanded ROI -> ``size`` x ``size`` -> min-max -> ``uint8``.

    ``box=None`` uses the whole image (not expanded), as :func:`dlum.data.roi.crop_roi` does.
    """
    from dlum.data.roi import crop_roi
    from dlum.data.transforms import resize, to_unit_range

    patch = crop_roi(image, box, ROI_EXPANSION)
    unit = to_unit_range(resize(np.asarray(patch, dtype=np.float32), size))
    return np.rint(unit * 255.0).astype(np.uint8)


def build_crops(
    lesions: pd.DataFrame, size: int = CACHE_SIZE, *, progress: bool = True
) -> dict[str, np.ndarray]:
    """Crop every lesion of a lesion table; each image file is decoded once.

    Args:
        lesions: rows with ``modality, image, x0, y0, x1, y1`` (NaN box = whole image).
        size: side of the square crops.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        ``{modality: uint8 array (n_lesions_of_modality, size, size)}`` in the table's order.
    """
    from tqdm.auto import tqdm

    from dlum.data.io import read_image

    out = {m: np.zeros((int((lesions["modality"] == m).sum()), size, size), np.uint8) for m in MODALITIES}
    position = {m: 0 for m in MODALITIES}
    slots = []
    for modality, image, x0, y0, x1, y1 in lesions[["modality", "image", "x0", "y0", "x1", "y1"]].itertuples(index=False):
        slots.append((modality, position[modality], str(image), _box((x0, y0, x1, y1))))
        position[modality] += 1
    by_image: dict[str, list] = {}
    for slot in slots:
        by_image.setdefault(slot[2], []).append(slot)
    for image, group in tqdm(
        by_image.items(), desc="crops", unit="image", disable=not progress, mininterval=1.0
    ):
        decoded = read_image(image)
        for modality, index, _, box in group:
            out[modality][index] = make_crop(decoded, box, size)
    return out


def save_crops(crops: dict[str, np.ndarray], folder: str | os.PathLike) -> dict[str, Path]:
    """Write each modality's crops as one tall 8-bit PNG (crops stacked vertically)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for modality, array in crops.items():
        n, height, width = array.shape
        path = folder / CROP_FILES[modality]
        strip = array.reshape(n * height, width) if n else np.zeros((1, width), np.uint8)
        Image.fromarray(np.ascontiguousarray(strip), mode="L").save(path, format="PNG")
        paths[modality] = path
    return paths


def load_crops(folder: str | os.PathLike, counts: dict[str, int], size: int) -> dict[str, np.ndarray]:
    """Read the PNG strips written by :func:`save_crops` back into ``(n, size, size)`` arrays.

    Raises:
        InputError: a missing file or one whose size does not match ``counts`` x ``size``.
    """
    from PIL import Image

    folder = Path(folder)
    crops = {}
    for modality, n in counts.items():
        path = folder / CROP_FILES[modality]
        if not path.is_file():
            raise InputError("crop file not found (run `python -m dlum prepare`)", str(path))
        expected = (max(n, 1) * size if n else 1, size)
        limit = Image.MAX_IMAGE_PIXELS
        try:
            # Our own strip is legitimately larger than Pillow's bomb guard: allow exactly its size.
            Image.MAX_IMAGE_PIXELS = max(expected[0] * expected[1], limit or 0)
            with Image.open(path) as img:
                if img.mode != "L" or img.size != (expected[1], expected[0]):
                    raise InputError(
                        f"crop file is {img.size[0]}x{img.size[1]} {img.mode}, expected "
                        f"{expected[1]}x{expected[0]} L for {n} crops of {size} px",
                        str(path),
                    )
                array = np.asarray(img)
        except InputError:
            raise
        except Exception as err:
            raise InputError(f"crop file cannot be read ({err})", str(path)) from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        crops[modality] = array.reshape(n, size, size) if n else np.zeros((0, size, size), np.uint8)
    return crops


def load_crop_cache(folder: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The cohort and its cached crops, for training without the original images.

    Returns:
        ``(cohort, us, mg)``: the validated cohort (``dlum.data.manifest.read_cohort``, image
        files not required) with int columns ``us_crop`` and ``mg_crop`` indexing ``us``
        ``(N_us, S, S)`` and ``mg`` ``(N_mg, S, S)`` ``uint8`` arrays.

    Raises:
        InputError: missing or inconsistent cache files. CohortError: invalid cohort table, or
        cases whose crop is not in the cache.
    """
    from dlum.data.manifest import case_box, read_cohort

    folder = Path(os.path.abspath(folder))
    for name in (COHORT_FILE, LESIONS_FILE, SUMMARY_FILE):
        if not (folder / name).is_file():
            raise InputError(f"{name} not found: not a crop cache made by `dlum prepare`", str(folder))
    summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    size = int(summary["cache"]["size"])
    cohort = read_cohort(folder / COHORT_FILE, check_images=False)
    lesions = pd.read_csv(folder / LESIONS_FILE, keep_default_na=True)
    counts = {m: int((lesions["modality"] == m).sum()) for m in MODALITIES}
    crops = load_crops(folder, counts, size)
    problems = []
    for m in MODALITIES:
        rows = lesions[lesions["modality"] == m]
        lookup = {
            _key(_resolve(img, folder), _box(b)): int(c)
            for img, c, *b in rows[["image", "crop", "x0", "y0", "x1", "y1"]].itertuples(index=False)
        }
        index = []
        for r, row in enumerate(cohort.itertuples(index=False), start=1):
            key = _key(getattr(row, f"{m}_image"), case_box(row._asdict(), m))
            if key not in lookup:
                problems.append(f"case {row.case_id}: its {m.upper()} crop is not in the cache")
                index.append(-1)
            else:
                index.append(lookup[key])
        cohort[f"{m}_crop"] = np.asarray(index, dtype=np.int64)
    if problems:
        raise CohortError(problems, str(folder / COHORT_FILE))
    return cohort, crops[US], crops[MG]


def _resolve(path: str, folder: Path) -> str:
    p = Path(path)
    return os.path.abspath(p if p.is_absolute() else folder / p)


def _relative(path: str, folder: Path) -> str:
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return str(path)


# -------------------------------------------------------------------------------------- prepare
def _counts(df: pd.DataFrame, by: list[str]) -> list[dict]:
    table = df.groupby(by, observed=True).size().rename("n").reset_index()
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in table.to_dict("records")]


def prepare(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    size: int = CACHE_SIZE,
    crops: bool = True,
    progress: bool = True,
) -> dict:
    """Build the public pseudo-paired cohort and its crop cache (``python -m dlum prepare``).

    Writes ``cohort.csv``, ``lesions.csv``, the crop PNGs (unless ``crops=False``) and
    ``prepare_summary.json`` into ``out_dir`` (see the module docstring).

    Returns:
        The summary written to ``prepare_summary.json``.

    Raises:
        InputError: unreadable data. CohortError: a cohort that does not validate.
    """
    from dlum import __version__
    from dlum.data.manifest import read_cohort, write_cohort
    from dlum.data.pairing import PAIRING_RULE, SPLIT_FRACTIONS, build_public_cohort, public_lesions

    start = time.perf_counter()
    if size < 32:
        raise InputError(f"crop size must be at least 32 pixels, got {size}")
    data_dir = Path(os.path.abspath(data_dir))
    if not data_dir.is_dir():
        raise InputError("data folder not found", str(data_dir))
    out = Path(os.path.abspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)

    lesions = public_lesions(data_dir, seed)
    cohort = build_public_cohort(data_dir, seed, lesions=lesions)
    lesions = lesions.copy()
    lesions["crop"] = lesions.groupby("modality").cumcount()
    uses = pd.concat([cohort["us_lesion_id"], cohort["mg_lesion_id"]]).value_counts()
    lesions["pairs"] = lesions["lesion_id"].map(uses).fillna(0).astype(int)

    write_cohort(cohort, out / COHORT_FILE)
    table = lesions.copy()
    table["image"] = [_relative(p, out) for p in table["image"]]
    table.to_csv(out / LESIONS_FILE, index=False, lineterminator="\n")
    # The written table must pass the same validation as any hand-written one.
    checked = read_cohort(out / COHORT_FILE, check_images=True)

    cache_bytes = 0
    if crops:
        arrays = build_crops(lesions, size, progress=progress)
        for path in save_crops(arrays, out).values():
            cache_bytes += path.stat().st_size
    else:
        for path in CROP_FILES.values():
            (out / path).unlink(missing_ok=True)

    labelled = checked.assign(pathology=np.where(checked["label"] == 1, "malignant", "benign"))
    mg_uses = lesions.loc[lesions["modality"] == MG, "pairs"]
    images = {
        split: {
            m: int(checked.loc[checked["split"] == split, f"{m}_image"].nunique()) for m in MODALITIES
        }
        for split in SPLITS
    }
    notes = lesions.attrs
    summary = {
        "dlum_version": __version__,
        "seed": int(seed),
        "data_dir": data_dir.name,
        "pairing": "pseudo",
        "pairing_rule": PAIRING_RULE,
        "split_fractions": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        "cases": int(len(checked)),
        "cases_by_split_pathology_subgroup": _counts(labelled, ["split", "pathology", "subgroup"]),
        "lesions_by_modality_dataset_split": _counts(
            lesions.assign(pathology=np.where(lesions["label"] == 1, "malignant", "benign")),
            ["modality", "dataset", "split", "pathology"],
        ),
        "patients_by_modality_split": _counts(
            lesions.drop_duplicates(["modality", "patient_id"]), ["modality", "split"]
        ),
        "distinct_images_by_split": images,
        "mg_lesion_reuse": {"min": int(mg_uses.min()), "max": int(mg_uses.max()), "mean": float(mg_uses.mean())},
        "reader_notes": {
            "BrEaST-Lesions-USG normal images left out": notes.get("BrEaST-Lesions-USG", {}).get("dropped_normal"),
            "mini-MIAS lesions without coordinates left out": notes.get("mini-MIAS", {}).get("skipped_no_coordinates"),
            "mini-MIAS diffuse calcifications (whole film as ROI)": notes.get("mini-MIAS", {}).get("whole_image"),
            "mini-MIAS boxes widened to the minimum side": notes.get("mini-MIAS", {}).get("widened"),
            "mini-MIAS boxes clamped to the film": notes.get("mini-MIAS", {}).get("clamped"),
            "mini-MIAS annotation notes": {
                r.lesion_id: r.note
                for r in lesions[lesions["dataset"] == "mini-MIAS"].itertuples()
                if isinstance(r.note, str) and r.note and "diffuse" not in r.note
            },
        },
        "cache": {
            "size": int(size),
            "roi_expansion": ROI_EXPANSION,
            "format": "uint8 crops stacked vertically in one 8-bit PNG per modality",
            "files": dict(CROP_FILES) if crops else {},
            "counts": {m: int((lesions["modality"] == m).sum()) for m in MODALITIES},
            "bytes": int(cache_bytes),
            "mib": round(cache_bytes / 2**20, 2),
        },
        "seconds": round(time.perf_counter() - start, 1),
        "python": platform.python_version(),
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def format_summary(summary: dict) -> str:
    """The printed summary of :func:`prepare`: cases by split x pathology x subgroup, images."""
    cases = pd.DataFrame(summary["cases_by_split_pathology_subgroup"])
    table = cases.pivot_table(
        index=["split", "pathology"], columns="subgroup", values="n", aggfunc="sum", fill_value=0
    )
    table = table.reindex(
        pd.MultiIndex.from_product([SPLITS, ["benign", "malignant"]], names=["split", "pathology"]),
        fill_value=0,
    )
    table["total"] = table.sum(axis=1)
    images = pd.DataFrame(summary["distinct_images_by_split"]).T.reindex(list(SPLITS))
    images.columns = [f"distinct {c.upper()} images" for c in images.columns]
    reuse = summary["mg_lesion_reuse"]
    cache = summary["cache"]
    lines = [
        f"Pseudo-paired public cohort (seed {summary['seed']}): {summary['cases']} cases. "
        "NOT same-patient pairs.",
        "",
        "Cases by split x pathology x subgroup:",
        table.to_string(),
        "",
        images.to_string(),
        "",
        f"Each MG lesion is used in {reuse['min']}-{reuse['max']} pairs (mean {reuse['mean']:.1f}).",
    ]
    if cache["bytes"]:
        lines.append(
            f"Crop cache: {cache['counts']['us']} US + {cache['counts']['mg']} MG crops of "
            f"{cache['size']}x{cache['size']} uint8, {cache['mib']:.1f} MiB."
        )
    lines.append(f"Done in {summary['seconds']:.0f} s.")
    return "\n".join(lines)
