"""The cohort table: one row per lesion with its ultrasound (US) and mammography (MG) image.

DL-UM (Xu et al., Breast Cancer Research 2025) is trained and evaluated on lesions seen on both
modalities. A cohort table is a CSV with exactly these columns (:data:`COLUMNS`)::

    case_id, patient_id, us_image, mg_image, us_x0, us_y0, us_x1, us_y1,
    mg_x0, mg_y0, mg_x1, mg_y1, label, us_birads, mg_birads,
    us_birads_source, mg_birads_source, pairing, source, split

* ``us_image`` / ``mg_image``: absolute paths or paths relative to the table's folder.
* ROI boxes: pixel corners of the original image, origin top-left, ``x1``/``y1`` exclusive;
  all four cells empty (or the four columns absent) = the whole image.
* ``label``: ``benign``/``malignant`` or ``0``/``1``.
* BI-RADS: 2, 3, 4, 5 (``4a``/``4b``/``4c`` read as 4). Rows whose US or MG BI-RADS is 0, 1 or 6
  are left out of the study, as in the paper, and counted (``df.attrs["excluded"]``); an empty
  BI-RADS is allowed and makes the case's subgroup ``undetermined``.
* ``pairing``: ``same_patient`` (both images of one lesion of one woman) or ``pseudo``.
* ``split``: ``train``, ``validation``, ``test`` or ``external`` (a second centre, as the
  paper's external test set: held out like ``test``).
* ``source``: free text naming where the case comes from; ``synthetic-phantom`` marks generated
  phantoms (:mod:`dlum.data.synthetic`), which may not share a table with real cases.

Required columns are ``case_id, patient_id, us_image, mg_image, label``. The others may be left
out of a hand-written table; they then take :data:`DEFAULTS` (no ROI = whole image, no BI-RADS,
``pairing = same_patient``, ``split = test``: a table without splits is an evaluation set).

``subgroup`` (concordant / discordant / undetermined) is derived from the two BI-RADS, never
typed in: discordant when one modality says 4-5 (biopsy) and the other 2-3 (follow-up).

No patient and no image may be in two splits (:func:`check_split_overlap`): the same US patient,
MG woman (the two halves of a pseudo pair's ``patient_id``, ``<US patient>+<MG woman>``; the
patient herself for a same-patient pair) or image file (same path, or same bytes) in ``train``
and ``validation``, or in a training split and a held-out one, leaks what is evaluated into
what is trained. Only ``test`` and ``external`` may share (both are held out; the public
cohort pairs its external US lesions with the test split's MG lesions). ``read_cohort`` does not
refuse such a table (it may be read for other uses); training does, unless told otherwise.

The columns are declared once, as :data:`COHORT_SCHEMA` (a :class:`dlum.tables.Schema`;
:func:`cohort_schema_markdown` renders it for the documentation). :func:`read_cohort` reads the
table with :func:`dlum.tables.read_table`, adds the checks that span columns (an ROI's four
corners, phantoms beside real cases, image files) and raises one
:class:`~dlum.errors.CohortError` listing every problem, each with its data row (1 = the first
row under the header, with its file line), column and value.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Union

import numpy as np
import pandas as pd

from dlum import tables
from dlum.constants import (
    BIRADS_LEVELS,
    BIRADS_SUSPICIOUS,
    CONCORDANT,
    DISCORDANT,
    EXTERNAL,
    MODALITIES,
    PAIRINGS,
    PSEUDO,
    SAME_PATIENT,
    SPLITS,
    SYNTHETIC_SOURCE,
    TEST,
    TRAIN,
    UNDETERMINED,
    VALIDATION,
)
from dlum.errors import CohortError, InputError
from dlum.tables import Column, Problems, Schema, choice, read_table, source_name
from dlum.files import atomic_path

__all__ = [
    "BOX_COLUMNS",
    "COHORT_SCHEMA",
    "COLUMNS",
    "DEFAULTS",
    "EXCLUDED_BIRADS",
    "REPORTED",
    "REQUIRED_COLUMNS",
    "SHARED_SPLITS",
    "SplitOverlapError",
    "case_box",
    "check_split_overlap",
    "cohort_schema_markdown",
    "cohort_summary",
    "derive_subgroup",
    "parse_birads",
    "parse_label",
    "read_cohort",
    "row_people",
    "split_overlaps",
    "write_cohort",
]

#: ROI columns per modality, in order x0, y0, x1, y1.
BOX_COLUMNS = {m: (f"{m}_x0", f"{m}_y0", f"{m}_x1", f"{m}_y1") for m in MODALITIES}

#: The cohort table's columns, in order (ARCHITECTURE.md, "Contracts").
COLUMNS = (
    "case_id",
    "patient_id",
    "us_image",
    "mg_image",
    *BOX_COLUMNS["us"],
    *BOX_COLUMNS["mg"],
    "label",
    "us_birads",
    "mg_birads",
    "us_birads_source",
    "mg_birads_source",
    "pairing",
    "source",
    "split",
)

#: Columns a table must have; every other column of :data:`COLUMNS` has a default.
REQUIRED_COLUMNS = ("case_id", "patient_id", "us_image", "mg_image", "label")

#: BI-RADS source of an assessment taken from the clinical record.
REPORTED = "reported"

#: Values used for optional columns that are absent or left empty. ROI and BI-RADS cells default
#: to empty (whole image; no assessment); a BI-RADS source defaults to ``reported`` when the
#: BI-RADS is given.
DEFAULTS = {"pairing": SAME_PATIENT, "source": "", "split": TEST}

#: BI-RADS categories left out of the study (incomplete, negative, known cancer), with a count.
EXCLUDED_BIRADS = (0, 1, 6)

_SPLIT_ALIASES = {"training": TRAIN, "val": VALIDATION, "valid": VALIDATION, "dev": VALIDATION,
                  "testing": TEST}
_PAIRING_ALIASES = {"same-patient": SAME_PATIENT, "same patient": SAME_PATIENT}
_BIRADS_TEXT = re.compile(r"^(?:bi-?rads\s*)?([0-6])([abc])?$", re.IGNORECASE)

TableSource = Union[str, os.PathLike, IO[str], IO[bytes]]


# ------------------------------------------------------------------------------------- values
def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        if value is pd.NA:
            return True
    except Exception:  # pragma: no cover
        pass
    return isinstance(value, str) and value.strip() == ""


def parse_label(value: object) -> int:
    """``benign``/``malignant``/``0``/``1`` (any case) as 0/1; ``ValueError`` otherwise
    (:func:`dlum.tables.parse_label`, taking NumPy scalars too)."""
    try:
        return tables.parse_label(value.item() if isinstance(value, np.generic) else value)
    except ValueError:
        raise ValueError(f"{value!r} is not benign/malignant/0/1") from None


def parse_birads(value: object) -> int | None:
    """A BI-RADS cell as an int 0-6 (``4a``/``4b``/``4c`` -> 4), ``None`` when empty.

    Accepts ``4``, ``4.0``, ``"4B"``, ``"BI-RADS 4"``. Raises ``ValueError`` otherwise. Categories
    0, 1 and 6 are returned as such: the caller decides to exclude them.

    >>> parse_birads("4c"), parse_birads(5.0), parse_birads("")
    (4, 5, None)
    """
    if _blank(value):
        return None
    if isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool):
        number = float(value)
        if number.is_integer() and 0 <= number <= 6:
            return int(number)
        raise ValueError(f"{value!r} is not a BI-RADS category (2, 3, 4, 4a, 4b, 4c or 5)")
    text = str(value).strip()
    if re.fullmatch(r"[0-6]\.0+", text):
        text = text.split(".")[0]
    match = _BIRADS_TEXT.match(text)
    if not match or (match.group(2) and match.group(1) != "4"):
        raise ValueError(f"{value!r} is not a BI-RADS category (2, 3, 4, 4a, 4b, 4c or 5)")
    return int(match.group(1))


def _as_birads(value: object) -> int | None:
    """BI-RADS 2-5 as int, anything else (empty, 0/1/6, unreadable) as None."""
    try:
        level = parse_birads(value)
    except ValueError:
        return None
    return level if level in BIRADS_LEVELS else None


def _subgroup_one(us: object, mg: object) -> str:
    a, b = _as_birads(us), _as_birads(mg)
    if a is None or b is None:
        return UNDETERMINED
    if (a in BIRADS_SUSPICIOUS) != (b in BIRADS_SUSPICIOUS):
        return DISCORDANT
    return CONCORDANT


def derive_subgroup(us_birads, mg_birads):
    """The DL-UM subgroup of a case from its US and MG BI-RADS (Xu et al. 2025).

    ``discordant`` when one modality is 4-5 (biopsy) and the other 2-3 (follow-up), ``concordant``
    when both are on the same side, ``undetermined`` when either is missing or not 2-5.
    Works on scalars (returns a string) or on equal-length sequences / Series (returns an array,
    or a Series with the first argument's index).

    >>> derive_subgroup(4, 3), derive_subgroup("4a", 5), derive_subgroup(None, 2)
    ('discordant', 'concordant', 'undetermined')
    """
    scalar = np.ndim(us_birads) == 0 and np.ndim(mg_birads) == 0
    if scalar:
        return _subgroup_one(us_birads, mg_birads)
    us_list, mg_list = list(us_birads), list(mg_birads)
    if len(us_list) != len(mg_list):
        raise ValueError(f"{len(us_list)} US and {len(mg_list)} MG BI-RADS values: lengths differ")
    out = np.array([_subgroup_one(a, b) for a, b in zip(us_list, mg_list)], dtype=object)
    if isinstance(us_birads, pd.Series):
        return pd.Series(out, index=us_birads.index, name="subgroup", dtype="str")
    return out


def case_box(row, modality: str) -> tuple[int, int, int, int] | None:
    """The ROI box ``(x0, y0, x1, y1)`` of one cohort row for ``modality``; None = whole image."""
    values = [row[c] if c in row else None for c in BOX_COLUMNS[modality]]
    if any(_blank(v) for v in values):
        return None
    return tuple(int(round(float(v))) for v in values)  # type: ignore[return-value]


# -------------------------------------------------------------------------------------- reading
_NOT_BIRADS = "not a BI-RADS category (2, 3, 4, 4a, 4b, 4c or 5)"


def _birads_cell(text: str) -> float:
    """A non-empty BI-RADS cell as a float 0-6 (the exclusion of 0, 1, 6 comes later)."""
    try:
        return float(parse_birads(text))  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(_NOT_BIRADS) from None


def _coordinate(text: str) -> float:
    """A non-empty ROI cell: a finite number of pixels."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError("not a number (an ROI corner in pixels)") from None
    if not math.isfinite(number):
        raise ValueError("not a finite number (an ROI corner in pixels)")
    return number


_CORNERS = {"x0": "left edge", "y0": "top edge", "x1": "right edge (exclusive)",
            "y1": "bottom edge (exclusive)"}

#: The cohort table as a :class:`~dlum.tables.Schema` (``COHORT_SCHEMA.markdown()`` for docs).
COHORT_SCHEMA = Schema("cohort table", (
    Column("case_id", required=True, needed=True, unique=True,
           doc="one lesion; unique in the table"),
    Column("patient_id", required=True, needed=True, doc="the woman; several cases may share one"),
    Column("us_image", required=True, needed=True,
           doc="ultrasound image, absolute or relative to the table's folder"),
    Column("mg_image", required=True, needed=True,
           doc="mammography image, absolute or relative to the table's folder"),
    *(Column(c, parse=_coordinate,
             doc=f"{m.upper()} ROI {_CORNERS[c[-2:]]} in pixels; all four empty = whole image")
      for m in MODALITIES for c in BOX_COLUMNS[m]),
    Column("label", parse=tables.parse_label, required=True, needed=True,
           doc="pathology: `benign`/`malignant` or `0`/`1`"),
    *(Column(f"{m}_birads", parse=_birads_cell,
             doc=f"{m.upper()} BI-RADS 2-5 (`4a`/`4b`/`4c` = 4); 0, 1, 6: row left out; "
                 "empty: subgroup undetermined")
      for m in MODALITIES),
    *(Column(f"{m}_birads_source",
             doc=f"where the {m.upper()} BI-RADS comes from; empty = `{REPORTED}` when given")
      for m in MODALITIES),
    Column("pairing", parse=choice(PAIRINGS, _PAIRING_ALIASES), default=DEFAULTS["pairing"],
           doc="`same_patient` (one lesion of one woman) or `pseudo`"),
    Column("source", doc=f"where the case comes from; `{SYNTHETIC_SOURCE}` marks phantoms"),
    Column("split", parse=choice(SPLITS, _SPLIT_ALIASES), default=DEFAULTS["split"],
           doc="`train`, `validation`, `test` or `external` (a second centre)"),
), notes=(
    "An ROI's four cells are given together or left empty together; x0 < x1, y0 < y1, >= 0, "
    "inside the image.",
    "Rows whose US or MG BI-RADS is 0, 1 or 6 are left out of the study and counted.",
    f"Phantom rows (source `{SYNTHETIC_SOURCE}`) never share a table with real cases.",
    "A `subgroup` column is ignored: it is derived from the two BI-RADS.",
))


def cohort_schema_markdown() -> str:
    """The cohort table's columns and rules as Markdown, for the documentation."""
    return COHORT_SCHEMA.markdown() + "\n\n" + "\n".join(f"* {n}" for n in COHORT_SCHEMA.notes)


class _Found(Problems):
    """Problems that also remember every cell they name (past the listing bound too), so that a
    cross-column check does not report a cell the schema already did."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: set[tuple[int | None, str | None]] = set()

    def add(self, what: str, row: int | None = None, column: str | None = None,
            value: object = None) -> None:
        self.cells.add((row, column))
        super().add(what, row, column, value)


def _resolve(path_text: str, base: Path) -> str:
    path = Path(os.path.expanduser(path_text.strip()))
    if not path.is_absolute():
        path = base / path
    return os.path.abspath(path)


def read_cohort(
    source: TableSource,
    *,
    check_images: bool = True,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> pd.DataFrame:
    """Read and validate a cohort table (:data:`COHORT_SCHEMA`; see the module docstring).

    Args:
        source: path of a CSV file, or an open text/binary buffer holding one.
        check_images: also check that every image file exists and that each ROI lies inside its
            image (image headers only; cheap). Off for tables whose images live elsewhere.
        base_dir: folder that relative image paths start from; defaults to the table's folder
            (the working folder for a buffer).
        name: how the table is named in messages (defaults to its path).

    Returns:
        DataFrame with the :data:`COLUMNS` (plus any extra columns of the table) and ``subgroup``;
        image paths absolute, ``label`` int 0/1, BI-RADS and ROI float (NaN = empty), one row per
        kept case. ``attrs``: ``excluded`` (number of rows left out for BI-RADS 0, 1 or 6),
        ``excluded_rows`` (their data-row numbers), ``source``.

    Raises:
        CohortError: every problem found (up to :data:`dlum.tables.MAX_PROBLEMS`, then counted),
            each with its data row (1 = first row under the header), column and value.

    >>> import io
    >>> df = read_cohort(io.StringIO("case_id,patient_id,us_image,mg_image,label\\n"
    ...                              "c1,p1,us.png,mg.png,malignant\\n"), check_images=False)
    >>> int(df.loc[0, "label"]), df.loc[0, "subgroup"], df.loc[0, "split"]
    (1, 'undetermined', 'test')
    """
    label = name or source_name(source, COHORT_SCHEMA.title)
    if base_dir is not None:
        base = Path(base_dir)
    elif isinstance(source, (str, os.PathLike)):
        base = Path(os.path.abspath(source)).parent
    else:
        base = Path.cwd()
    problems = _Found()
    table = read_table(source, COHORT_SCHEMA, name=label, problems=problems)
    if "subgroup" in table.columns:
        warnings.warn(f"{label}: the 'subgroup' column is ignored; it is derived from us_birads "
                      "and mg_birads", stacklevel=2)
        table = table.drop(columns="subgroup")
    for m in MODALITIES:
        for c in (*BOX_COLUMNS[m], f"{m}_birads"):
            table[c] = table[c].astype(np.float64)
        table[f"{m}_birads_source"] = [
            s if not _blank(s) else "" if math.isnan(b) else REPORTED
            for s, b in zip(table[f"{m}_birads_source"], table[f"{m}_birads"])]
    table["source"] = ["" if _blank(v) else v for v in table["source"]]
    excluded = [int(r) for r in table.index[_excluded(table)]]
    boxes = {m: _check_boxes(table, m, problems) for m in MODALITIES}
    _check_phantoms(table, problems)
    if check_images:
        _check_images(table, base, boxes, set(excluded), problems)
    problems.raise_if_any(label)

    for m in MODALITIES:
        table[f"{m}_image"] = ["" if _blank(v) else _resolve(v, base) for v in table[f"{m}_image"]]
    table["label"] = table["label"].astype(np.int64)
    table["subgroup"] = derive_subgroup(table["us_birads"], table["mg_birads"])
    out = table.drop(index=excluded).reset_index(drop=True)
    if excluded:
        warnings.warn(
            f"{label}: {len(excluded)} row(s) with BI-RADS 0, 1 or 6 left out of the cohort "
            f"(data rows {', '.join(map(str, excluded[:20]))}{' …' if len(excluded) > 20 else ''})",
            stacklevel=2,
        )
    if out.empty:
        raise CohortError(["no rows left once BI-RADS 0, 1 and 6 rows are excluded"], label)
    out.attrs = {"excluded": len(excluded), "excluded_rows": excluded, "source": label}
    return out


def _excluded(table: pd.DataFrame) -> pd.Series:
    """Rows left out of the study: US or MG BI-RADS 0, 1 or 6."""
    return table["us_birads"].isin(EXCLUDED_BIRADS) | table["mg_birads"].isin(EXCLUDED_BIRADS)


def _check_boxes(table: pd.DataFrame, m: str, problems: _Found) -> dict[int, tuple]:
    """Each row's ``m`` ROI: four cells or none, non-empty, not inverted, not negative. Returns
    the valid boxes by data row (rows without one: whole image, or already reported)."""
    cols = BOX_COLUMNS[m]
    flagged = {column for _, column in problems.cells}
    unused = [c for c in cols if table[c].isna().all() and c not in flagged]
    if unused and len(unused) < 4:
        problems.add(f"ROI columns come in fours: {', '.join(c for c in cols if c not in unused)} "
                     f"given but {', '.join(unused)} absent or empty on every row (give all "
                     "four, or none for the whole image)")
        return {}
    boxes: dict[int, tuple] = {}
    for r, *box in table[list(cols)].itertuples():
        if any((r, c) in problems.cells for c in cols):
            continue  # a cell that is not a number: reported by the schema
        empty = [c for c, v in zip(cols, box) if math.isnan(v)]
        if len(empty) == 4:
            continue
        if empty:
            problems.add(f"{', '.join(empty)} empty while the rest of the {m.upper()} ROI is "
                         "given (leave all four empty for the whole image)", r)
            continue
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
            problems.add(f"the {m.upper()} ROI {', '.join(cols)} = ({x0:g}, {y0:g}, {x1:g}, "
                         f"{y1:g}) is empty, inverted or negative (x0 < x1, y0 < y1, both >= 0 "
                         "expected)", r)
            continue
        boxes[r] = (x0, y0, x1, y1)
    return boxes


def _check_phantoms(table: pd.DataFrame, problems: Problems) -> None:
    """Synthetic phantoms never share a table (or a metric) with real cases."""
    synthetic = sum(s.lower() == SYNTHETIC_SOURCE for s in table["source"])
    if 0 < synthetic < len(table):
        problems.add(f"{synthetic} synthetic phantom row(s) ({SYNTHETIC_SOURCE!r}) mixed with "
                     f"{len(table) - synthetic} real case(s); phantoms never share a table (or a "
                     "metric) with real cases: keep them in separate tables", column="source")


def _check_images(table: pd.DataFrame, base: Path, boxes: dict[str, dict[int, tuple]],
                  excluded: set[int], problems: Problems) -> None:
    """Every image of a kept row is a readable file (paths relative to ``base``), and its ROI
    lies inside it."""
    sizes: dict[str, tuple[int, int] | str] = {}
    for r, us, mg in table[["us_image", "mg_image"]].itertuples():
        if r in excluded:
            continue
        for m, text in zip(MODALITIES, (us, mg)):
            if _blank(text):
                continue  # empty cell: reported by the schema
            path = _resolve(text, base)
            if path not in sizes:
                sizes[path] = _image_size(path)
            size = sizes[path]
            if isinstance(size, str):
                problems.add(f"{size}: {path}", r, f"{m}_image", text)
            elif r in boxes[m]:
                (height, width), (x0, y0, x1, y1) = size, boxes[m][r]
                if x1 > width or y1 > height:
                    problems.add(f"the {m.upper()} ROI {', '.join(BOX_COLUMNS[m])} = ({x0:g}, "
                                 f"{y0:g}, {x1:g}, {y1:g}) runs outside the image ({width} wide, "
                                 f"{height} high): {os.path.basename(path)}", r)


def _image_size(path: str) -> tuple[int, int] | str:
    """(height, width) from the image header (``dlum.data.io.image_size``), or what is wrong."""
    from dlum.data.io import image_size

    if not os.path.isfile(path):
        return "file not found" if not os.path.exists(path) else "not a file"
    try:
        return image_size(path)
    except InputError as err:
        return err.problem


# ------------------------------------------------------------------------------- split overlap
#: Splits that may share a patient or an image: the two held-out splits, which no training or
#: selection step sees (the public cohort pairs its external US lesions with the test split's MG
#: lesions). Any other two splits sharing one is a leak.
SHARED_SPLITS = frozenset({TEST, EXTERNAL})

#: Overlaps listed before the rest are only counted.
MAX_OVERLAPS = 100


def row_people(cohort: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per row, who the US and the MG image show: ``{"us": ids, "mg": ids}``.

    A pseudo pair whose ``patient_id`` is ``<US patient>+<MG woman>`` (as ``prepare`` writes it)
    names two people; any other row names one, the patient of both images.
    """
    patient = cohort["patient_id"].astype(str).str.strip()
    pairing = cohort["pairing"] if "pairing" in cohort.columns else pd.Series(
        SAME_PATIENT, index=cohort.index)
    parts = patient.str.split("+")
    two = ((pairing.astype(str) == PSEUDO) & (parts.str.len() == 2)).to_numpy()
    us = np.where(two, parts.str[0].str.strip(), patient)
    mg = np.where(two, parts.str[-1].str.strip(), patient)
    return {"us": us.astype(object), "mg": mg.astype(object)}


def _split_order(split: str) -> tuple[int, str]:
    """train, validation, test, external; cross-validation folds beside the split they stand for."""
    for rank, name in enumerate(SPLITS):
        if split == name or split.startswith(name) or (name == TRAIN and split.startswith("training")):
            return rank, split
    return len(SPLITS), split


def _leaks(splits) -> bool:
    """Whether rows in these splits sharing a patient or an image is a leak."""
    found = set(splits)
    return len(found) > 1 and not found <= SHARED_SPLITS


def _where(by_split: dict[str, list[str]]) -> str:
    """"train (case_id a, b), validation (case_id c)": the splits of one overlap, named by case."""
    parts = []
    for split in sorted(by_split, key=_split_order):
        cases = by_split[split]
        shown = ", ".join(cases[:3]) + (f" and {len(cases) - 3} more" if len(cases) > 3 else "")
        parts.append(f"{split} ({len(cases)} row{'s' if len(cases) > 1 else ''}: case_id {shown})")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def split_overlaps(cohort: pd.DataFrame, *, splits=None, digests: dict | None = None,
                   limit: int = MAX_OVERLAPS) -> Problems:
    """The patients and images that ``cohort`` puts in two splits that may not share them.

    Args:
        cohort: a validated table (:func:`read_cohort`).
        splits: per row, the split to check (default: the ``split`` column), e.g. the training
            and validation folds of a cross-validation run.
        digests: per modality and row, the SHA-256 of the image file's bytes
            (:meth:`dlum.data.crops.CropSet.row_digests`), so that one image under two names or
            paths counts as one; without it images are compared by path.
        limit: overlaps listed; past it they are counted (``Problems.more``).

    Returns:
        :class:`dlum.tables.Problems`: one per US patient / MG woman / patient and per image,
        naming its splits and cases (``column``: ``patient_id`` or the image column; ``value``:
        the patient or the image file name). Only ``test`` and ``external`` may share
        (:data:`SHARED_SPLITS`).
    """
    split = np.asarray(cohort["split"] if splits is None else splits).astype(str)
    cases = cohort["case_id"].astype(str).to_numpy() if "case_id" in cohort.columns else \
        np.array([f"row {i + 1}" for i in range(len(cohort))], dtype=object)
    found = Problems(limit)
    if len(set(split)) < 2:
        return found

    def group(keys) -> dict:
        """key -> split -> case ids, for the keys whose splits leak."""
        where: dict = {}
        for key, s, case in zip(keys, split, cases):
            if key is None or key == "":
                continue
            where.setdefault(key, {}).setdefault(s, []).append(case)
        return {k: v for k, v in where.items() if _leaks(v)}

    people = row_people(cohort)
    by_side = {m: group(people[m]) for m in MODALITIES}
    for person in sorted(set(by_side["us"]) | set(by_side["mg"])):
        us, mg = by_side["us"].get(person), by_side["mg"].get(person)
        if us is not None and us == mg:  # the same rows: a same-patient pair's woman
            found.add(f"patient in {len(us)} splits: {_where(us)}", column="patient_id",
                      value=person)
            continue
        for side, where in (("US patient", us), ("MG woman", mg)):
            if where is not None:
                found.add(f"{side} in {len(where)} splits: {_where(where)}", column="patient_id",
                          value=person)

    names: dict = {}
    keys: list = []
    for m in MODALITIES:
        paths = cohort[f"{m}_image"].astype(str).to_numpy() if f"{m}_image" in cohort.columns \
            else np.full(len(cohort), "", dtype=object)
        known = None if digests is None else digests.get(m)
        for i, path in enumerate(paths):
            digest = None if known is None else known[i]
            key = ("bytes", digest) if digest else ("file", path) if path else None
            if key is not None:
                names.setdefault(key, {}).setdefault(os.path.basename(path), f"{m}_image")
            keys.append((key, split[i], cases[i]))
    where: dict = {}
    for key, s, case in keys:
        if key is not None:
            cases_of = where.setdefault(key, {}).setdefault(s, [])
            if case not in cases_of:
                cases_of.append(case)
    for key, by_split in sorted(where.items(), key=lambda kv: sorted(names[kv[0]])):
        if not _leaks(by_split):
            continue
        files = sorted(names[key])
        column = names[key][files[0]]
        what = "image" if len(files) == 1 else f"one image (same bytes) as {', '.join(files)}"
        found.add(f"{what} in {len(by_split)} splits: {_where(by_split)}", column=column,
                  value=files[0])
    return found


def check_split_overlap(cohort: pd.DataFrame, *, splits=None, digests: dict | None = None,
                        allow: bool = False, source: str | None = None) -> Problems:
    """Refuse a table that puts a patient or an image in two splits (:func:`split_overlaps`).

    Returns what was found (empty for a clean table, or when ``allow`` and some were found:
    the caller warns and records it).

    Raises:
        CohortError: some were found and ``allow`` is False; the message lists them and says how
            to proceed anyway.
    """
    found = split_overlaps(cohort, splits=splits, digests=digests)
    if found and not allow:
        raise SplitOverlapError(found.items, source or cohort.attrs.get("source"),
                                more=found.more)
    return found


class SplitOverlapError(CohortError):
    """A :class:`~dlum.errors.CohortError` listing patients or images in two splits, with what
    to do about it."""

    HINT = ("No patient or image may be in two splits (only test and external may share): "
            "that leaks what is evaluated into what is trained. Fix the splits, or pass "
            "--allow-split-overlap (allow_split_overlap=True) to train anyway; the checkpoint "
            "card then records the overlap.")

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.HINT}"


# -------------------------------------------------------------------------------------- writing
def _format_number(value: object) -> str:
    if _blank(value):
        return ""
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else repr(number)


def write_cohort(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a cohort table as CSV with exactly :data:`COLUMNS`.

    Image paths inside the table's folder are written relative to it (so the folder can be
    moved); others stay absolute. ``label`` is written as ``benign``/``malignant``; empty ROI and
    BI-RADS cells stay empty. Optional columns missing from ``df`` take :data:`DEFAULTS`.

    Raises:
        CohortError: a required column is missing from ``df``.
    """
    path = Path(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise CohortError([f"column {c!r} is missing" for c in missing], str(path))
    folder = Path(os.path.abspath(path.parent))
    table = pd.DataFrame(index=range(len(df)))
    for column in COLUMNS:
        values = list(df[column]) if column in df.columns else [None] * len(df)
        if column in ("us_image", "mg_image"):
            values = [_relative(str(v), folder) for v in values]
        elif column in BOX_COLUMNS["us"] + BOX_COLUMNS["mg"] or column.endswith("_birads"):
            values = [_format_number(v) for v in values]
        elif column == "label":
            values = ["malignant" if parse_label(v) == 1 else "benign" for v in values]
        elif column in DEFAULTS:
            values = [DEFAULTS[column] if _blank(v) else str(v) for v in values]
        else:
            values = ["" if _blank(v) else str(v) for v in values]
        table[column] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    return path


def _relative(path_text: str, folder: Path) -> str:
    path = Path(path_text)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return Path(os.path.abspath(path)).relative_to(folder).as_posix()
    except ValueError:
        return path.as_posix()


def cohort_summary(df: pd.DataFrame, by: Iterable[str] = ("split", "label", "subgroup")) -> pd.DataFrame:
    """Counts of cases per combination of ``by`` (pathology shown as benign/malignant)."""
    table = df.assign(pathology=np.where(df["label"] == 1, "malignant", "benign"))
    by = ["pathology" if b == "label" else b for b in by]
    return table.groupby(list(by), observed=True).size().rename("cases").reset_index()
