"""``python -m dlum prepare``: the public pseudo-paired cohort and its exact crops, in one folder.

Folder layout written by :func:`prepare`::

    cohort.csv             the pseudo-paired cohort (dlum.data.manifest schema)
    lesions.csv            one row per lesion and modality: split, box, kind, BI-RADS, number of
                           pairs, ``crop`` (its crop number in crops.npz; -1 = in no pair)
    crops.npz              every distinct crop of the cohort (dlum.data.crops.CropSet)
    prepare_summary.json   counts, reader notes, pairing rule, crop sizes, run time

Each crop is the lesion box expanded by 30% of its shortest side (Xu et al., Breast Cancer
Research 2025; :func:`dlum.data.roi.crop_roi`) cut at the image's own resolution and stored
exactly (all public sources are 8-bit), once per distinct image and box however many pairs reuse
it: 2,127 US + 95 MG crops. Training from them gives the same network inputs as training from the
image files, so ``python -m dlum train`` picks up a ``crops.npz`` lying beside its ``--cohort``
table, and predictions made from it on a GPU machine equal CPU ``python -m dlum evaluate``
output. The file (compressed ``.npz``, no pickle) is small enough to carry to a GPU machine
(< 60 MiB with the tables). It keeps the SHA-256 of each image file a crop was cut from, so that
a crop of a file replaced since is never used.

Before anything is written, the cohort is checked to put no US patient, MG woman or image
(compared by bytes) in two splits (:func:`dlum.data.manifest.check_split_overlap`; only
``test`` and ``external`` share the test split's MG lesions, by design): a failure there is a
bug in the splitting, raised as a :class:`~dlum.errors.CohortError`.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import DEVELOPMENT_SPLITS, MG, MODALITIES, ROI_EXPANSION, SPLITS
from dlum.errors import InputError
from dlum.files import atomic_path, write_text_atomic

__all__ = [
    "COHORT_FILE",
    "CROPS_FILE",
    "LESIONS_FILE",
    "SUMMARY_FILE",
    "crops_beside",
    "format_summary",
    "prepare",
]

COHORT_FILE = "cohort.csv"
LESIONS_FILE = "lesions.csv"
SUMMARY_FILE = "prepare_summary.json"
#: The exact crops of ``cohort.csv`` (:class:`dlum.data.crops.CropSet`); ``train`` looks for it.
CROPS_FILE = "crops.npz"

#: What ``prepare_summary.json`` says the crop file holds.
CROPS_FORMAT = "exact native-resolution expanded-ROI crops, uint8, compressed npz (dlum.data.crops.CropSet)"


def _relative(path: str, folder: Path) -> str:
    try:
        return Path(path).relative_to(folder).as_posix()
    except ValueError:
        return str(path)


def _crop_numbers(cohort: pd.DataFrame, lesions: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Each lesion's crop number in ``crops.npz`` (-1 = in no pair).

    ``table`` is the validated ``cohort.csv`` (absolute paths), row for row ``cohort`` (which
    carries the lesion ids). Distinct crops are numbered by first appearance, as
    :func:`dlum.data.crops.extract_crops` stores them.
    """
    from dlum.data.crops import crop_key

    numbers = np.full(len(lesions), -1, dtype=np.int64)
    position = {key: i for i, key in enumerate(zip(lesions["modality"], lesions["lesion_id"]))}
    for m in MODALITIES:
        seen: dict[tuple, int] = {}
        for (_, row), lesion in zip(table.iterrows(), cohort[f"{m}_lesion_id"]):
            number = seen.setdefault(crop_key(row, m), len(seen))
            numbers[position[(m, lesion)]] = number
    return numbers


def _counts(df: pd.DataFrame, by: list[str]) -> list[dict]:
    table = df.groupby(by, observed=True).size().rename("n").reset_index()
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in table.to_dict("records")]


def prepare(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    crops: bool = True,
    progress: bool = True,
) -> dict:
    """Build the public pseudo-paired cohort and its exact crops (``python -m dlum prepare``).

    Writes ``cohort.csv``, ``lesions.csv``, ``crops.npz`` (unless ``crops=False``, which also
    removes a stale one) and ``prepare_summary.json`` into ``out_dir`` (see the module docstring).

    Returns:
        The summary written to ``prepare_summary.json``.

    Raises:
        InputError: unreadable data. CohortError: a cohort that does not validate.
    """
    from dlum import __version__
    from dlum.data.crops import extract_crops
    from dlum.data.manifest import read_cohort, write_cohort
    from dlum.data.pairing import PAIRING_RULE, SPLIT_FRACTIONS, build_public_cohort, public_lesions

    start = time.perf_counter()
    data_dir = Path(os.path.abspath(data_dir))
    if not data_dir.is_dir():
        raise InputError("data folder not found", str(data_dir))
    out = Path(os.path.abspath(out_dir))
    out.mkdir(parents=True, exist_ok=True)

    lesions = public_lesions(data_dir, seed)
    cohort = build_public_cohort(data_dir, seed, lesions=lesions)
    lesions = lesions.copy()
    uses = pd.concat([cohort["us_lesion_id"], cohort["mg_lesion_id"]]).value_counts()
    lesions["pairs"] = lesions["lesion_id"].map(uses).fillna(0).astype(int)

    overlap = _check_splits(cohort)
    write_cohort(cohort, out / COHORT_FILE)
    # The written table must pass the same validation as any hand-written one.
    checked = read_cohort(out / COHORT_FILE, check_images=True)
    ids = cohort.set_index("case_id").loc[checked["case_id"]]
    lesions["crop"] = _crop_numbers(ids, lesions, checked)
    table = lesions.copy()
    table["image"] = [_relative(p, out) for p in table["image"]]
    with atomic_path(out / LESIONS_FILE) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")

    crops_path = out / CROPS_FILE
    cache = {"file": None, "format": CROPS_FORMAT, "roi_expansion": ROI_EXPANSION, "rows": 0,
             "counts": {m: 0 for m in MODALITIES}, "not_exact": {m: 0 for m in MODALITIES},
             "bytes": 0, "mib": 0.0, "uncompressed_mib": 0.0}
    if crops:
        cropset = extract_crops(checked, progress=progress)
        partial = out / f".{CROPS_FILE}.partial.npz"  # np.savez adds ".npz" to other names
        try:
            cropset.save(partial)
            os.replace(partial, crops_path)
        finally:
            partial.unlink(missing_ok=True)
        size = crops_path.stat().st_size
        cache.update(
            file=CROPS_FILE,
            rows=len(cropset),
            counts={m: len(cropset.crops[m]) for m in MODALITIES},
            not_exact={m: int((~cropset.exact[m]).sum()) for m in MODALITIES},
            bytes=int(size),
            mib=round(size / 2**20, 2),
            uncompressed_mib=round(cropset.nbytes() / 2**20, 2),
        )
    else:
        crops_path.unlink(missing_ok=True)

    labelled = checked.assign(pathology=np.where(checked["label"] == 1, "malignant", "benign"))
    mg_uses = lesions.loc[lesions["modality"] == MG, "pairs"]
    images = {
        split: {
            m: int(checked.loc[checked["split"] == split, f"{m}_image"].nunique()) for m in MODALITIES
        }
        for split in SPLITS if (checked["split"] == split).any()
    }
    notes = lesions.attrs
    summary = {
        "dlum_version": __version__,
        "seed": int(seed),
        "data_dir": data_dir.name,
        "pairing": "pseudo",
        "pairing_rule": PAIRING_RULE,
        "split_fractions": dict(zip(DEVELOPMENT_SPLITS, SPLIT_FRACTIONS)),
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
        "split_overlap": overlap,
        "cache": cache,
        "seconds": round(time.perf_counter() - start, 1),
        "python": platform.python_version(),
    }
    write_text_atomic(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def _check_splits(cohort: pd.DataFrame) -> dict:
    """Refuse a built cohort that puts a patient or an image in two splits (a splitting bug);
    images are compared by the SHA-256 of their bytes (hashed once: the crops reuse them)."""
    from dlum.data.crops import file_digest
    from dlum.data.manifest import SHARED_SPLITS, check_split_overlap

    try:
        digests = {m: np.array([file_digest(p) for p in cohort[f"{m}_image"]], dtype=object)
                   for m in MODALITIES}
    except OSError:
        digests = None  # an unreadable image: compared by path; read_cohort names the file
    check_split_overlap(cohort, digests=digests, source="the pseudo-paired public cohort")
    return {"found": 0, "compared": "bytes" if digests else "path",
            "may_share": sorted(SHARED_SPLITS)}


def crops_beside(table: str | Path, cohort: pd.DataFrame):
    """The ``crops.npz`` that :func:`prepare` left beside ``table``, if it holds ``cohort``'s crops.

    Returns ``(crops, None)`` when it matches (rows, labels, image names and boxes, and the
    bytes of the images present: :meth:`dlum.data.crops.CropSet.mismatch`), ``(None, why)`` when
    it is there but does not match or cannot be read, and ``(None, None)`` when there is none.
    """
    from dlum.data.crops import CropSet

    beside = Path(table).parent / CROPS_FILE
    if not beside.is_file():
        return None, None
    try:
        crops = CropSet.load(beside)
        problem = crops.mismatch(cohort)
    except InputError as err:
        problem = err.problem
    return (crops, None) if problem is None else (None, problem)


def format_summary(summary: dict) -> str:
    """The printed summary of :func:`prepare`: cases by split x pathology x subgroup, images."""
    cases = pd.DataFrame(summary["cases_by_split_pathology_subgroup"])
    table = cases.pivot_table(
        index=["split", "pathology"], columns="subgroup", values="n", aggfunc="sum", fill_value=0
    )
    present = [s for s in SPLITS if s in summary["distinct_images_by_split"]]
    table = table.reindex(
        pd.MultiIndex.from_product([present, ["benign", "malignant"]], names=["split", "pathology"]),
        fill_value=0,
    )
    table["total"] = table.sum(axis=1)
    images = pd.DataFrame(summary["distinct_images_by_split"]).T.reindex(present)
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
    if cache.get("file"):
        inexact = sum(cache["not_exact"].values())
        lines.append(
            f"Crops: {cache['counts']['us']} US + {cache['counts']['mg']} MG exact native-resolution "
            f"expanded-ROI crops (uint8) in {cache['file']}, {cache['mib']:.1f} MiB"
            + (f" ({inexact} from sources over 8 bits, scaled to uint8)." if inexact else ".")
        )
    lines.append(f"Done in {summary['seconds']:.0f} s.")
    return "\n".join(lines)
