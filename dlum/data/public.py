"""Readers for the public single-modality breast-imaging datasets used to exercise DL-UM.

Each reader returns a tidy lesion table (one row per lesion, :data:`LESION_COLUMNS` first, then
dataset-specific extras) with absolute image paths and the lesion box as pixel corners
``(x0, y0, x1, y1)``, origin top-left, ``x1``/``y1`` exclusive (NaN = whole image):

* :func:`read_busbra`: BUS-BRA (Gómez-Flores et al., Med Phys 2023), 1,875 ultrasound images of
  1,064 patients; ``BBOX`` is ``[x, y, width, height]``; the patient is ``Case``.
* :func:`read_breast_lesions_usg`: BrEaST-Lesions-USG (Pawłowska et al., Sci Data 2024), 256
  ultrasound images, one per patient; the box is the bounding box of the tumour mask; the 4
  ``normal`` images (no lesion) are left out, giving 252 lesions; BI-RADS 4a/4b/4c read as 4.
* :func:`read_mias`: mini-MIAS (Suckling et al. 1994), 1024 x 1024 MLO films; the box is centre
  ± radius with y counted from the bottom (row = 1024 - y); patients are women (two films each).
* :func:`read_cbis_ddsm_labels`: CBIS-DDSM case descriptions (Lee et al., Sci Data 2017), used
  only for the relation between lesion kind, pathology and the radiologist's MG BI-RADS.

Lesion ``kind`` uses one vocabulary across datasets (:data:`KINDS`).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import MG, US
from dlum.data.manifest import REPORTED, parse_birads
from dlum.errors import InputError

__all__ = [
    "BREAST_LESIONS_USG",
    "BUSBRA",
    "CBIS_DDSM",
    "DATASET_DIRS",
    "KINDS",
    "LESION_COLUMNS",
    "MIAS",
    "MIAS_KINDS",
    "MIAS_MIN_BOX",
    "MIAS_NOTES",
    "cbis_kind",
    "default_data_dir",
    "read_breast_lesions_usg",
    "read_busbra",
    "read_cbis_ddsm_labels",
    "read_mias",
    "tumour_mask_path",
]

BUSBRA = "BUS-BRA"
BREAST_LESIONS_USG = "BrEaST-Lesions-USG"
MIAS = "mini-MIAS"
CBIS_DDSM = "CBIS-DDSM"

#: Where each dataset lives inside the data folder (laid out like ``../shared/data``).
DATASET_DIRS = {
    BUSBRA: Path("us", "busbra"),
    BREAST_LESIONS_USG: Path("us", "breast_lesions_usg"),
    MIAS: Path("mg", "mias"),
    CBIS_DDSM: Path("mg", "cbis_ddsm", "labels"),
}

#: Lesion kinds shared by the MG readers (MIAS abnormality classes, CBIS-DDSM shape/margins).
KINDS = (
    "circumscribed_mass",
    "spiculated_mass",
    "ill_defined_mass",
    "architectural_distortion",
    "asymmetry",
    "calcification",
)

#: mini-MIAS abnormality class -> lesion kind.
MIAS_KINDS = {
    "CIRC": "circumscribed_mass",
    "SPIC": "spiculated_mass",
    "MISC": "ill_defined_mass",
    "ARCH": "architectural_distortion",
    "ASYM": "asymmetry",
    "CALC": "calcification",
}

#: Smallest side (pixels, 200 µm each: 6.4 mm) of a mini-MIAS lesion box. A few calcification
#: clusters are given radii of 3-15 px; a box that small, once expanded by 30% and resized to
#: 224, is a blur with no context, so such boxes are widened around the same centre.
MIAS_MIN_BOX = 32

#: Known problems of published mini-MIAS annotations, kept as published and flagged in ``note``.
MIAS_NOTES = {
    "mdb212": "published centre (687, 882) lies in the film background, outside the breast",
}

#: The lesion table's leading columns.
LESION_COLUMNS = (
    "modality",
    "dataset",
    "lesion_id",
    "patient_id",
    "image",
    "x0",
    "y0",
    "x1",
    "y1",
    "label",
    "birads",
    "birads_source",
    "kind",
)


def default_data_dir() -> Path | None:
    """The public data folder: ``$DLUM_DATA_DIR``, else ``../shared/data`` beside the repository
    (:mod:`dlum.settings`)."""
    from dlum.settings import read_settings

    return read_settings().data_dir


def _dataset_dir(root: str | os.PathLike, dataset: str) -> Path:
    """``root`` itself when it is the dataset's folder, else ``root / DATASET_DIRS[dataset]``."""
    root = Path(os.path.abspath(root))
    nested = root / DATASET_DIRS[dataset]
    return nested if nested.is_dir() else root


def _read_csv(path: Path, dataset: str, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{dataset} table not found", str(path))
    try:
        table = pd.read_csv(path)
    except Exception as err:
        raise InputError(f"{dataset} table cannot be read ({err})", str(path)) from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InputError(f"{dataset} table lacks column(s) {', '.join(missing)}", str(path))
    return table


def _check_files(paths: list[str], dataset: str, folder: Path) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(os.path.basename(p) for p in missing[:5])
        raise InputError(
            f"{len(missing)} {dataset} image file(s) listed in its table are missing "
            f"(e.g. {shown})",
            str(folder),
        )


def _finish(rows: pd.DataFrame, modality: str, dataset: str) -> pd.DataFrame:
    rows.insert(0, "modality", modality)
    rows.insert(1, "dataset", dataset)
    for c in ("x0", "y0", "x1", "y1", "birads"):
        rows[c] = rows[c].astype(np.float64)
    rows["label"] = rows["label"].astype(np.int64)
    extras = [c for c in rows.columns if c not in LESION_COLUMNS]
    return rows[list(LESION_COLUMNS) + extras].reset_index(drop=True)


# ------------------------------------------------------------------------------------ ultrasound
def read_busbra(root: str | os.PathLike) -> pd.DataFrame:
    """BUS-BRA lesions: one row per image (1,875), patient = ``Case`` (Gómez-Flores et al. 2023).

    Args:
        root: the data folder (containing ``us/busbra``) or the BUS-BRA folder itself.

    Raises:
        InputError: missing table, columns or image files.
    """
    folder = _dataset_dir(root, BUSBRA)
    table = _read_csv(
        folder / "bus_data.csv",
        BUSBRA,
        ("ID", "Case", "Histology", "Pathology", "BIRADS", "Width", "Height", "BBOX"),
    )
    boxes = np.array([json.loads(b) for b in table["BBOX"]], dtype=np.float64)  # [x, y, w, h]
    rows = pd.DataFrame(
        {
            "lesion_id": table["ID"].astype(str),
            "patient_id": "busbra:" + table["Case"].astype(str),
            "image": [str(folder / "Images" / f"{i}.png") for i in table["ID"]],
            "x0": boxes[:, 0],
            "y0": boxes[:, 1],
            "x1": boxes[:, 0] + boxes[:, 2],
            "y1": boxes[:, 1] + boxes[:, 3],
            "label": (table["Pathology"].str.strip().str.lower() == "malignant").astype(int),
            "birads": [parse_birads(b) for b in table["BIRADS"]],
            "birads_source": REPORTED,
            "kind": "mass",
            "histology": table["Histology"].astype(str),
            "device": table.get("Device", pd.Series([""] * len(table))).astype(str),
            "width": table["Width"].astype(int),
            "height": table["Height"].astype(int),
        }
    )
    _check_files(list(rows["image"]), BUSBRA, folder)
    return _finish(rows, US, BUSBRA)


def _mask_box(path: Path) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of a binary mask's non-zero pixels.

    Read with Pillow directly: ``dlum.data.io.read_image`` refuses 1-bit images on purpose
    (they are masks, not scans), and a mask is exactly that.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            mask = np.asarray(img.convert("L")) > 0
    except Exception as err:
        raise InputError(f"tumour mask cannot be read ({err})", str(path)) from None
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def tumour_mask_path(dataset: str, image: str | os.PathLike) -> Path:
    """The lesion mask beside an ultrasound image of the public datasets: BUS-BRA
    ``Images/bus_X.png`` -> ``Masks/mask_X.png``; BrEaST-Lesions-USG ``images/caseNNN.png`` ->
    ``images/caseNNN_tumor.png`` (as its ``Mask_tumor_filename`` column names it). The file may
    not exist (BrEaST's normal images have none)."""
    image = Path(image)
    if dataset == BUSBRA:
        return image.parent.parent / "Masks" / image.name.replace("bus_", "mask_", 1)
    if dataset == BREAST_LESIONS_USG:
        return image.with_name(f"{image.stem}_tumor{image.suffix}")
    raise InputError(f"no lesion masks are known for the dataset {dataset!r}")


def read_breast_lesions_usg(root: str | os.PathLike) -> pd.DataFrame:
    """BrEaST-Lesions-USG lesions (Pawłowska et al. 2024): box = bounding box of the tumour mask.

    Images classified ``normal`` (no lesion) are left out; ``attrs["dropped_normal"]`` counts them.
    BI-RADS 4a/4b/4c are read as 4 (the original is kept in ``birads_reported``).

    Raises:
        InputError: missing table, columns, images or masks, or an empty tumour mask.
    """
    folder = _dataset_dir(root, BREAST_LESIONS_USG)
    table = _read_csv(
        folder / "clinical_data.csv",
        BREAST_LESIONS_USG,
        ("CaseID", "Image_filename", "Mask_tumor_filename", "BIRADS", "Classification"),
    )
    cls = table["Classification"].astype(str).str.strip().str.lower()
    normal = cls == "normal"
    table, cls = table[~normal].reset_index(drop=True), cls[~normal].reset_index(drop=True)
    unknown = sorted(set(cls) - {"benign", "malignant"})
    if unknown:
        raise InputError(
            f"{BREAST_LESIONS_USG}: unexpected Classification value(s) {unknown}",
            str(folder / "clinical_data.csv"),
        )
    images = [str(folder / "images" / f) for f in table["Image_filename"]]
    _check_files(images, BREAST_LESIONS_USG, folder)
    boxes = []
    for case, mask in zip(table["CaseID"], table["Mask_tumor_filename"]):
        if not isinstance(mask, str) or not mask.strip():
            raise InputError(f"{BREAST_LESIONS_USG} case {case}: no tumour mask", str(folder))
        box = _mask_box(folder / "images" / mask.strip())
        if box is None:
            raise InputError("the tumour mask is empty", str(folder / "images" / mask))
        boxes.append(box)
    boxes_arr = np.array(boxes, dtype=np.float64)
    keep = {
        "Shape": "shape",
        "Margin": "margin",
        "Echogenicity": "echogenicity",
        "Posterior_features": "posterior_features",
        "Verification": "verification",
        "Age": "age",
    }
    rows = pd.DataFrame(
        {
            "lesion_id": [Path(f).stem for f in table["Image_filename"]],
            "patient_id": "breast:" + table["CaseID"].astype(str),
            "image": images,
            "x0": boxes_arr[:, 0],
            "y0": boxes_arr[:, 1],
            "x1": boxes_arr[:, 2],
            "y1": boxes_arr[:, 3],
            "label": (cls == "malignant").astype(int),
            "birads": [parse_birads(b) for b in table["BIRADS"]],
            "birads_source": REPORTED,
            "kind": "mass",
            "birads_reported": table["BIRADS"].astype(str),
            **{new: table[old].astype(str) for old, new in keep.items() if old in table.columns},
        }
    )
    out = _finish(rows, US, BREAST_LESIONS_USG)
    out.attrs["dropped_normal"] = int(normal.sum())
    return out


# ----------------------------------------------------------------------------------- mammography
def read_mias(root: str | os.PathLike, *, min_box: int = MIAS_MIN_BOX) -> pd.DataFrame:
    """mini-MIAS lesions (Suckling et al. 1994); patient = ``woman``.

    Box = centre ± radius, the centre's y counted from the bottom edge (row = height - y);
    boxes narrower than ``min_box`` are widened around the same centre (:data:`MIAS_MIN_BOX`)
    and boxes crossing the film's border are clamped to it. Lesion ids are ``<film>-<k>``
    (k = 1, 2, … in table order on that film).

    ``attrs`` records what was not used as given: ``skipped_no_coordinates`` (rows without any
    coordinates, e.g. mdb059: left out), ``whole_image`` (calcifications "widely distributed
    throughout the image", MIAS note 4, given no centre: kept with the whole film as ROI),
    ``widened`` and ``clamped`` (lesion ids). Known annotation problems (:data:`MIAS_NOTES`) are
    kept as published and flagged in the ``note`` column.

    Raises:
        InputError: missing table, columns or image files.
    """
    from dlum.data.io import image_size

    folder = _dataset_dir(root, MIAS)
    table = _read_csv(
        folder / "lesions.csv",
        MIAS,
        ("refnum", "woman", "tissue", "abnormality", "severity", "x", "y_bottom_origin", "radius"),
    )
    x = pd.to_numeric(table["x"], errors="coerce")
    y = pd.to_numeric(table["y_bottom_origin"], errors="coerce")
    radius = pd.to_numeric(table["radius"], errors="coerce")
    note = table["x"].astype(str).str.contains("NOTE", case=False, na=False)
    located = x.notna() & y.notna() & radius.notna()
    skipped = table.loc[~located & ~note, "refnum"].astype(str).tolist()
    use = located | note
    if "image" in table.columns:
        images = [str(folder / p) for p in table["image"]]
    else:
        images = [str(folder / "images" / f"{r}.png") for r in table["refnum"]]
    table = table.assign(img_path=images, cx_=x, cy_=y, rad_=radius, diffuse_=note)[use]
    _check_files(sorted(set(table["img_path"])), MIAS, folder)

    sizes = {p: image_size(p) for p in sorted(set(table["img_path"]))}
    number: dict[str, int] = {}
    records, widened, clamped, whole = [], [], [], []
    for row in table.itertuples(index=False):
        film = str(row.refnum)
        number[film] = number.get(film, 0) + 1
        lesion_id = f"{film}-{number[film]}"
        height, width = sizes[row.img_path]
        if row.diffuse_:
            box = (math.nan,) * 4
            whole.append(lesion_id)
        else:
            half = float(row.rad_)
            if 2 * half < min_box:
                half = min_box / 2.0
                widened.append(lesion_id)
            cx, cy = float(row.cx_), height - float(row.cy_)
            raw = (cx - half, cy - half, cx + half, cy + half)
            box = (
                max(0.0, math.floor(raw[0])),
                max(0.0, math.floor(raw[1])),
                min(float(width), math.ceil(raw[2])),
                min(float(height), math.ceil(raw[3])),
            )
            if box != (math.floor(raw[0]), math.floor(raw[1]), math.ceil(raw[2]), math.ceil(raw[3])):
                clamped.append(lesion_id)
        abnormality = str(row.abnormality).strip().upper()
        if abnormality not in MIAS_KINDS:
            raise InputError(f"{MIAS} {film}: unknown abnormality class {abnormality!r}", str(folder))
        records.append(
            {
                "lesion_id": lesion_id,
                "patient_id": f"mias:{row.woman}",
                "image": row.img_path,
                "x0": box[0],
                "y0": box[1],
                "x1": box[2],
                "y1": box[3],
                "label": int(str(row.severity).strip().upper() == "M"),
                "birads": math.nan,
                "birads_source": "",
                "kind": MIAS_KINDS[abnormality],
                "film": film,
                "abnormality": abnormality,
                "tissue": str(row.tissue),
                "radius": float(row.rad_) if not row.diffuse_ else math.nan,
                "note": MIAS_NOTES.get(film, "diffuse calcifications: whole film" if row.diffuse_ else ""),
            }
        )
    out = _finish(pd.DataFrame.from_records(records), MG, MIAS)
    out.attrs.update(
        skipped_no_coordinates=skipped, whole_image=whole, widened=widened, clamped=clamped
    )
    return out


def cbis_kind(abnormality_type: object, mass_shape: object, mass_margins: object) -> str | None:
    """A CBIS-DDSM abnormality's lesion kind, in the mini-MIAS vocabulary (:data:`KINDS`).

    calcification -> ``calcification``; masses by shape first (architectural distortion,
    asymmetric breast tissue / focal asymmetric density -> ``asymmetry``), then margins
    (any spiculated -> ``spiculated_mass``; circumscribed, possibly partly obscured ->
    ``circumscribed_mass``; ill-defined, microlobulated, obscured or mixed -> ``ill_defined_mass``).
    ``None`` when a mass gives neither a telling shape nor margins.
    """
    kind = str(abnormality_type).strip().lower()
    if kind.startswith("calc"):
        return "calcification"
    shape = str(mass_shape).upper() if isinstance(mass_shape, str) else ""
    margins = str(mass_margins).upper() if isinstance(mass_margins, str) else ""
    if "ARCHITECTURAL_DISTORTION" in shape:
        return "architectural_distortion"
    if "ASYMMETRIC" in shape:
        return "asymmetry"
    tokens = {t for t in margins.split("-") if t and t != "N/A"}
    if not tokens:
        return None
    if "SPICULATED" in tokens:
        return "spiculated_mass"
    if "CIRCUMSCRIBED" in tokens and tokens <= {"CIRCUMSCRIBED", "OBSCURED"}:
        return "circumscribed_mass"
    return "ill_defined_mass"


def read_cbis_ddsm_labels(root: str | os.PathLike) -> pd.DataFrame:
    """CBIS-DDSM case descriptions (Lee et al. 2017): one row per abnormality and view.

    Columns: ``patient_id, side, view, abnormality_id, abnormality_type, kind (see cbis_kind),
    label (0/1), pathology (BENIGN | BENIGN_WITHOUT_CALLBACK | MALIGNANT), assessment (BI-RADS
    0-5), breast_density, subtlety, mass_shape, mass_margins, calc_type, calc_distribution, set``.
    BENIGN_WITHOUT_CALLBACK counts as benign.

    Raises:
        InputError: no case-description CSV in the folder, or one without the expected columns.
    """
    folder = _dataset_dir(root, CBIS_DDSM)
    files = sorted(folder.glob("*case_description*.csv")) or sorted(folder.glob("*.csv"))
    if not files:
        raise InputError(f"no {CBIS_DDSM} case-description CSV found", str(folder))
    frames = []
    for path in files:
        table = pd.read_csv(path)
        table.columns = [c.strip().lower().replace("_", " ") for c in table.columns]
        need = ("patient id", "abnormality type", "assessment", "pathology")
        missing = [c for c in need if c not in table.columns]
        if missing:
            raise InputError(f"{CBIS_DDSM} table lacks column(s) {', '.join(missing)}", str(path))
        table["set"] = "test" if "test" in path.name.lower() else "train"
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)

    def col(name: str) -> pd.Series:
        return table[name] if name in table.columns else pd.Series([None] * len(table))

    pathology = table["pathology"].astype(str).str.strip().str.upper()
    out = pd.DataFrame(
        {
            "patient_id": table["patient id"].astype(str),
            "side": col("left or right breast"),
            "view": col("image view"),
            "abnormality_id": col("abnormality id"),
            "abnormality_type": table["abnormality type"].astype(str).str.strip().str.lower(),
            "kind": [
                cbis_kind(t, s, m)
                for t, s, m in zip(table["abnormality type"], col("mass shape"), col("mass margins"))
            ],
            "label": (pathology == "MALIGNANT").astype(np.int64),
            "pathology": pathology,
            "assessment": pd.to_numeric(table["assessment"], errors="coerce").astype("Int64"),
            "breast_density": col("breast density"),
            "subtlety": col("subtlety"),
            "mass_shape": col("mass shape"),
            "mass_margins": col("mass margins"),
            "calc_type": col("calc type"),
            "calc_distribution": col("calc distribution"),
            "set": table["set"],
        }
    )
    return out
