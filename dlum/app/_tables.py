"""Reading user tables for the dashboard: CSV as text cells, and problems named by data row.

Row numbers in messages count data rows from 1 (the first row under the header), as
``dlum.data.manifest.read_cohort`` does, so a user can find them in a spreadsheet.
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import pandas as pd

from dlum.errors import CohortError
from dlum.stats import DegenerateDataWarning

__all__ = [
    "read_text_table",
    "rows_text",
    "blank_mask",
    "bad_rows",
    "parse_flag",
    "collect_notes",
    "to_csv_bytes",
    "format_ci",
    "format_pct_ci",
    "BIOPSY_COUNTS",
    "count_pct_columns",
    "source_name",
]

#: How many rows a message lists before it says "and N more".
MAX_LISTED = 10

_TRUE = {"true", "yes", "y", "1", "1.0", "t"}
_FALSE = {"false", "no", "n", "0", "0.0", "f"}


def _normalise_header(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def read_text_table(source, name: str) -> pd.DataFrame:
    """A CSV (path, bytes, or text/binary buffer such as a Streamlit upload) as a table of text
    cells with normalised headers (stripped, lower case). Unreadable input: :class:`CohortError`."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(bytes(source))
    if hasattr(source, "seek"):
        try:
            source.seek(0)
        except (OSError, ValueError):
            pass
    try:
        table = pd.read_csv(source, dtype=str, keep_default_na=False, skipinitialspace=True,
                            encoding="utf-8-sig")
    except FileNotFoundError:
        raise CohortError(["the file was not found"], name) from None
    except IsADirectoryError:
        raise CohortError(["is a folder, not a CSV file"], name) from None
    except pd.errors.EmptyDataError:
        raise CohortError(["the file is empty (no header, no rows)"], name) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
        raise CohortError([f"not a readable CSV file ({err})"], name) from None
    headers = [_normalise_header(c) for c in table.columns]
    dup = sorted({h for h in headers if headers.count(h) > 1})
    if dup:
        raise CohortError([f"column {h!r} appears {headers.count(h)} times in the header" for h in dup], name)
    table.columns = headers
    table = table.map(lambda v: v.strip() if isinstance(v, str) else v)
    table.index = pd.RangeIndex(1, len(table) + 1)  # data-row numbers
    return table


def rows_text(rows: Iterable) -> str:
    """'rows 2, 5, 9' (at most :data:`MAX_LISTED`, then 'and N more')."""
    rows = list(rows)
    head = ", ".join(str(r) for r in rows[:MAX_LISTED])
    more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
    return f"row{'s' if len(rows) != 1 else ''} {head}{more}"


def blank_mask(column: pd.Series) -> pd.Series:
    return column.astype(str).str.strip() == ""


def bad_rows(column: pd.Series, ok: Callable[[str], bool]) -> list:
    """Data-row numbers whose text cell fails ``ok``."""
    return [i for i, v in column.items() if not ok(v)]


def parse_flag(value: object) -> bool | None:
    """'true/false/yes/no/1/0' as a bool, empty as None; ValueError otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text == "":
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not true/false")


@contextmanager
def collect_notes(notes: list[str]):
    """Collect the statistics layer's :class:`DegenerateDataWarning` messages into ``notes``
    (the page shows them as notes; they are answers, not errors)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateDataWarning)
        yield notes
    notes.extend(dict.fromkeys(str(w.message) for w in caught
                               if issubclass(w.category, DegenerateDataWarning)))


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """A table as UTF-8 CSV bytes for a download button."""
    return frame.to_csv(index=False).encode("utf-8")


def _finite(*values) -> bool:
    return all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)


def format_ci(estimate, low, high, digits: int = 3, *, scale: float = 1.0, unit: str = "") -> str:
    """'0.912 [0.861–0.963]'; 'n/a' for an undefined estimate, no bracket for an undefined CI."""
    if not _finite(estimate):
        return "n/a"
    text = f"{scale * estimate:.{digits}f}{unit}"
    if _finite(low, high):
        text += f" [{scale * low:.{digits}f}–{scale * high:.{digits}f}]"
    return text


def format_pct_ci(estimate, low, high, digits: int = 1) -> str:
    """Proportions as percentages: '89.7% [81.0–94.7]'."""
    return format_ci(estimate, low, high, digits, scale=100.0, unit="%")


#: Biopsy counts shown as "count (percentage [95% CI])": header, count column, rate column prefix.
BIOPSY_COUNTS = (
    ("Recommended biopsies (of cases)", "recommended_biopsies", "biopsy_rate"),
    ("Unnecessary biopsies (of recommended)", "unnecessary_biopsies", "unnecessary_rate"),
    ("Missed malignancies (of malignant)", "missed_malignancies", "missed_rate"),
)


def count_pct_columns(table, columns=BIOPSY_COUNTS) -> dict[str, list[str]]:
    """Display columns '12 (34.3% [19.1–52.2])' from count, rate and ``_ci_low``/``_ci_high``
    columns of a biopsy-metrics table (just the count where the rate is undefined)."""
    def cell(count, est, lo, hi):
        return f"{count} ({format_pct_ci(est, lo, hi)})" if _finite(est) else f"{count}"

    return {
        header: [cell(*v) for v in zip(table[count], table[rate], table[f"{rate}_ci_low"],
                                        table[f"{rate}_ci_high"])]
        for header, count, rate in columns
    }


def source_name(source, default: str) -> str:
    """How a table is named in messages: its path, its upload name, or ``default``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", None) or default)


def values_text(column: pd.Series, rows: list) -> str:
    """'rows 2 ('x'), 5 ('')', at most 10 listed."""
    shown = ", ".join(f"{r} ({column[r]!r})" for r in rows[:10])
    more = f" and {len(rows) - 10} more" if len(rows) > 10 else ""
    return f"row{'s' if len(rows) != 1 else ''} {shown}{more}"


def check_case_ids(table: pd.DataFrame, problems: list[str]) -> None:
    """Add a problem for each empty or repeated ``case_id``."""
    ids = table["case_id"]
    empty = list(ids.index[blank_mask(ids)])
    if empty:
        problems.append(f"column 'case_id' is empty at {rows_text(empty)}")
    dup = ids[ids.duplicated(keep=False) & ~blank_mask(ids)]
    for value, rows in dup.groupby(dup, sort=False).groups.items():
        problems.append(f"case_id {value!r} appears more than once: {rows_text(list(rows))}")


def parse_label_column(table: pd.DataFrame, problems: list[str]) -> list[int]:
    """``label`` as 0/1 (benign/malignant or 0/1); -1 and a problem for each bad value."""
    from dlum.data.manifest import parse_label

    labels, bad = [], []
    for row, value in table["label"].items():
        try:
            labels.append(parse_label(value))
        except ValueError:
            labels.append(-1)
            bad.append(row)
    if bad:
        problems.append("column 'label' must be benign/malignant or 0/1; got "
                        + values_text(table["label"], bad))
    return labels
