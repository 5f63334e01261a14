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
* ``split``: ``train``, ``validation`` or ``test``.
* ``source``: free text naming where the case comes from; ``synthetic-phantom`` marks generated
  phantoms (:mod:`dlum.data.synthetic`), which may not share a table with real cases.

Required columns are ``case_id, patient_id, us_image, mg_image, label``. The others may be left
out of a hand-written table; they then take :data:`DEFAULTS` (no ROI = whole image, no BI-RADS,
``pairing = same_patient``, ``split = test``: a table without splits is an evaluation set).

``subgroup`` (concordant / discordant / undetermined) is derived from the two BI-RADS, never
typed in: discordant when one modality says 4-5 (biopsy) and the other 2-3 (follow-up).

:func:`read_cohort` checks the whole table and raises one :class:`~dlum.errors.CohortError`
listing every problem, each with its data row (1 = the first row under the header) and column.
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Union

import numpy as np
import pandas as pd

from dlum.constants import (
    BIRADS_LEVELS,
    BIRADS_SUSPICIOUS,
    CONCORDANT,
    DISCORDANT,
    MODALITIES,
    PAIRINGS,
    SAME_PATIENT,
    SPLITS,
    SYNTHETIC_SOURCE,
    TEST,
    TRAIN,
    UNDETERMINED,
    VALIDATION,
)
from dlum.errors import CohortError, InputError

__all__ = [
    "BOX_COLUMNS",
    "COLUMNS",
    "DEFAULTS",
    "EXCLUDED_BIRADS",
    "REPORTED",
    "REQUIRED_COLUMNS",
    "case_box",
    "cohort_summary",
    "derive_subgroup",
    "parse_birads",
    "parse_label",
    "read_cohort",
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

_SPLIT_ALIASES = {
    TRAIN: TRAIN, "training": TRAIN,
    VALIDATION: VALIDATION, "val": VALIDATION, "valid": VALIDATION, "dev": VALIDATION,
    TEST: TEST, "testing": TEST,
}
_PAIRING_ALIASES = {p: p for p in PAIRINGS} | {"same-patient": SAME_PATIENT, "same patient": SAME_PATIENT}
_LABELS = {"benign": 0, "0": 0, "malignant": 1, "1": 1}
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
    """``benign``/``malignant``/``0``/``1`` (any case) as 0/1; ``ValueError`` otherwise."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer, float, np.floating)) and not _blank(value):
        if float(value) in (0.0, 1.0):
            return int(value)
        raise ValueError(f"{value!r} is not benign/malignant/0/1")
    text = "" if _blank(value) else str(value).strip().lower()
    if text in ("0.0", "1.0"):
        text = text[0]
    if text not in _LABELS:
        raise ValueError(f"{value!r} is not benign/malignant/0/1")
    return _LABELS[text]


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
def _read_table(source: TableSource, label: str) -> pd.DataFrame:
    try:
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(bytes(source))
        table = pd.read_csv(
            source,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
        )
    except FileNotFoundError:
        raise CohortError(["the table file was not found"], label) from None
    except IsADirectoryError:
        raise CohortError(["is a folder, not a CSV table"], label) from None
    except pd.errors.EmptyDataError:
        raise CohortError(["the table is empty (no header, no rows)"], label) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise CohortError([f"not a readable CSV table ({err})"], label) from None
    return table


def _normalise_header(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


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
    """Read and validate a cohort table (see the module docstring for the schema).

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
        CohortError: every problem found, each with its data row (1 = first row under the header)
            and column.

    >>> df = read_cohort(io.StringIO("case_id,patient_id,us_image,mg_image,label\\n"
    ...                              "c1,p1,us.png,mg.png,malignant\\n"), check_images=False)
    >>> int(df.loc[0, "label"]), df.loc[0, "subgroup"], df.loc[0, "split"]
    (1, 'undetermined', 'test')
    """
    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        base = Path(base_dir) if base_dir is not None else Path(os.path.abspath(source)).parent
    else:
        label = name or getattr(source, "name", None) or "cohort table"
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    table = _read_table(source, label)

    problems: list[str] = []
    header = [_normalise_header(c) for c in table.columns]
    seen: dict[str, int] = {}
    for h in header:
        seen[h] = seen.get(h, 0) + 1
    for h, count in seen.items():
        if count > 1:
            problems.append(f"column {h!r} appears {count} times in the header")
    table.columns = header
    table = table.loc[:, ~pd.Index(header).duplicated()]

    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    for c in missing:
        problems.append(f"column {c!r} is missing (required: {', '.join(REQUIRED_COLUMNS)})")
    for m, cols in BOX_COLUMNS.items():
        present = [c for c in cols if c in table.columns]
        if present and len(present) < 4:
            absent = [c for c in cols if c not in table.columns]
            problems.append(
                f"ROI columns come in fours: {', '.join(present)} given but "
                f"{', '.join(absent)} missing"
            )
    if "subgroup" in table.columns:
        warnings.warn(
            f"{label}: the 'subgroup' column is ignored; it is derived from us_birads and mg_birads",
            stacklevel=2,
        )
        table = table.drop(columns="subgroup")
    if len(table) == 0:
        problems.append("the table has a header but no rows")
        raise CohortError(problems, label)

    def cells(column: str) -> list[str]:
        return list(table[column]) if column in table.columns else [""] * len(table)

    n = len(table)
    rows = range(1, n + 1)  # data-row numbers: 1 = first row under the header
    out = pd.DataFrame(index=range(n))
    excluded: set[int] = set()

    # identifiers
    for column in ("case_id", "patient_id"):
        values = [str(v).strip() for v in cells(column)]
        if column in table.columns:
            for r, v in zip(rows, values):
                if not v:
                    problems.append(f"{_row(r)}, column {column!r}: empty")
        out[column] = values
    if "case_id" in table.columns:
        ids = pd.Series(out["case_id"])
        for value, group in ids[(ids != "") & ids.duplicated(keep=False)].groupby(ids):
            where = ", ".join(str(i + 1) for i in group.index)
            problems.append(f"column 'case_id': {value!r} appears on data rows {where}")

    # label
    labels = []
    for r, v in zip(rows, cells("label")):
        try:
            labels.append(parse_label(v))
        except ValueError:
            labels.append(-1)
            if "label" in table.columns:
                problems.append(
                    f"{_row(r)}, column 'label': {v!r} is not benign/malignant/0/1"
                )
    out["label"] = np.asarray(labels, dtype=np.int64)

    # BI-RADS and their sources
    for m in MODALITIES:
        column = f"{m}_birads"
        levels: list[float] = []
        for r, v in zip(rows, cells(column)):
            try:
                level = parse_birads(v)
            except ValueError as err:
                problems.append(f"{_row(r)}, column {column!r}: {err}")
                level = None
            if level in EXCLUDED_BIRADS:
                excluded.add(r)
            levels.append(np.nan if level is None else float(level))
        out[column] = np.asarray(levels, dtype=np.float64)
        src_col = f"{m}_birads_source"
        out[src_col] = [
            str(s).strip() if not _blank(s) else (REPORTED if not math.isnan(b) else "")
            for s, b in zip(cells(src_col), levels)
        ]

    # categorical columns
    for column, allowed in (("pairing", _PAIRING_ALIASES), ("split", _SPLIT_ALIASES)):
        values = []
        for r, v in zip(rows, cells(column)):
            text = "" if _blank(v) else str(v).strip().lower()
            if not text:
                values.append(DEFAULTS[column])
            elif text in allowed:
                values.append(allowed[text])
            else:
                choices = PAIRINGS if column == "pairing" else SPLITS
                problems.append(
                    f"{_row(r)}, column {column!r}: {v!r} is not one of {', '.join(choices)}"
                )
                values.append("")
        out[column] = values
    out["source"] = [("" if _blank(v) else str(v).strip()) for v in cells("source")]
    synthetic = [s.lower() == SYNTHETIC_SOURCE for s in out["source"]]
    if any(synthetic) and not all(synthetic):
        problems.append(
            f"column 'source': {sum(synthetic)} synthetic phantom row(s) ({SYNTHETIC_SOURCE!r}) "
            f"mixed with {len(synthetic) - sum(synthetic)} real case(s); phantoms never share a "
            "table (or a metric) with real cases: keep them in separate tables"
        )

    # images and ROI boxes
    sizes: dict[str, tuple[int, int] | str] = {}
    for m in MODALITIES:
        img_col = f"{m}_image"
        paths = []
        for r, v in zip(rows, cells(img_col)):
            if _blank(v):
                if img_col in table.columns:
                    problems.append(f"{_row(r)}, column {img_col!r}: empty")
                paths.append("")
            else:
                paths.append(_resolve(str(v), base))
        out[img_col] = paths
        box_values = {c: cells(c) for c in BOX_COLUMNS[m]}
        numbers = {c: np.full(n, np.nan) for c in BOX_COLUMNS[m]}
        for i, r in enumerate(rows):
            raw = [box_values[c][i] for c in BOX_COLUMNS[m]]
            blank = [_blank(v) for v in raw]
            if all(blank):
                box = None
            elif any(blank):
                empty = [c for c, b in zip(BOX_COLUMNS[m], blank) if b]
                problems.append(
                    f"{_row(r)}, columns {', '.join(empty)}: empty while the rest of the "
                    f"{m.upper()} ROI is given (leave all four empty for the whole image)"
                )
                box = None
            else:
                box, bad = [], []
                for c, v in zip(BOX_COLUMNS[m], raw):
                    try:
                        number = float(str(v).strip())
                        if not math.isfinite(number):
                            raise ValueError
                        box.append(number)
                    except ValueError:
                        bad.append(f"{c}={v!r}")
                if bad:
                    problems.append(f"{_row(r)}: ROI value not a number: {', '.join(bad)}")
                    box = None
                else:
                    x0, y0, x1, y1 = box
                    if x1 <= x0 or y1 <= y0 or x0 < 0 or y0 < 0:
                        problems.append(
                            f"{_row(r)}, columns {', '.join(BOX_COLUMNS[m])}: the "
                            f"{m.upper()} ROI ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is empty, inverted "
                            "or negative (x0 < x1, y0 < y1, both >= 0 expected)"
                        )
                        box = None
                    else:
                        for c, value in zip(BOX_COLUMNS[m], box):
                            numbers[c][i] = value
            path = paths[i]
            if not check_images or not path or r in excluded:
                continue
            if path not in sizes:
                if not os.path.isfile(path):
                    sizes[path] = "file not found" if not os.path.exists(path) else "not a file"
                else:
                    try:
                        sizes[path] = _image_size(path)
                    except InputError as err:
                        sizes[path] = err.problem
            size = sizes[path]
            if isinstance(size, str):
                problems.append(f"{_row(r)}, column {img_col!r}: {size}: {path}")
            elif box is not None:
                height, width = size
                x0, y0, x1, y1 = box
                if x1 > width or y1 > height:
                    problems.append(
                        f"{_row(r)}, columns {', '.join(BOX_COLUMNS[m])}: the {m.upper()} ROI "
                        f"({x0:g}, {y0:g}, {x1:g}, {y1:g}) runs outside the image "
                        f"({width} wide, {height} high): {os.path.basename(path)}"
                    )
        for c in BOX_COLUMNS[m]:
            out[c] = numbers[c]

    if problems:
        raise CohortError(_by_row(problems), label)

    extra = [c for c in table.columns if c not in COLUMNS]
    for c in extra:
        out[c] = list(table[c])
    out = out[list(COLUMNS) + extra]
    out["subgroup"] = derive_subgroup(out["us_birads"], out["mg_birads"])
    keep = [r not in excluded for r in rows]
    out = out.loc[keep].reset_index(drop=True)
    if excluded:
        warnings.warn(
            f"{label}: {len(excluded)} row(s) with BI-RADS 0, 1 or 6 left out of the cohort "
            f"(data rows {', '.join(str(r) for r in sorted(excluded)[:20])}"
            f"{' …' if len(excluded) > 20 else ''})",
            stacklevel=2,
        )
    if out.empty:
        raise CohortError(["no rows left once BI-RADS 0, 1 and 6 rows are excluded"], label)
    out.attrs["excluded"] = len(excluded)
    out.attrs["excluded_rows"] = sorted(excluded)
    out.attrs["source"] = label
    return out


def _row(r: int) -> str:
    """How a problem names its row: the data row (1 = first under the header) and file line."""
    return f"data row {r} (file line {r + 1})"


def _by_row(problems: list[str]) -> list[str]:
    """Table-wide problems first, then by data row (stable within a row)."""

    def row(problem: str) -> int:
        match = re.match(r"data row (\d+)", problem)
        return int(match.group(1)) if match else 0

    return sorted(problems, key=row)


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) from the image header (``dlum.data.io.image_size``)."""
    from dlum.data.io import image_size

    return image_size(path)


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
    table.to_csv(path, index=False, lineterminator="\n")
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
