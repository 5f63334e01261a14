"""One reader for the tables people give dlum: a declarative column schema and :func:`read_table`.

A cohort table, a predictions table and a reader-study reads table are each a :class:`Schema`: a
tuple of :class:`Column` s, each saying whether it must be present, whether a cell may be empty
(and what an empty cell means), and how a cell's text becomes a value. :func:`read_table` reads
the CSV as text, checks the header, parses every cell and reports every problem in one format,
:class:`Problem` (data row, column, value, what is wrong), raised together as one
:class:`~dlum.errors.CohortError`. Rows are counted as data rows from 1 (the first row under the
header) with the file line beside them, so a user can find them in a spreadsheet. Checks that
span columns (an ROI's four corners, image files) stay with the table's own reader, which adds
its :class:`Problem` s to the same list.

Problems are collected up to ``DLUM_MAX_PROBLEMS`` (:class:`dlum.settings.Limits`, 1,000 by
default); past that the reader only counts them, so a table with a million bad cells costs memory
for a thousand messages. A table over ``DLUM_MAX_TABLE_MB`` or ``DLUM_MAX_TABLE_ROWS`` is not read.

>>> schema = Schema("example table", (Column("case_id", required=True, unique=True),
...                                   Column("label", parse=parse_label, required=True)))
>>> read_table(b"case_id,label\\nc1,malignant\\nc2,0\\n", schema)["label"].tolist()
[1, 0]
>>> try:
...     read_table(b"case_id,label\\nc1,malignnat\\n", schema)
... except Exception as err:
...     print(err.problems[0])
data row 1 (file line 2), column 'label', value 'malignnat': not benign/malignant/0/1
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dlum.errors import CohortError
from dlum.settings import Limits, limits

__all__ = [
    "MAX_PROBLEMS",
    "Problem",
    "Problems",
    "Column",
    "Schema",
    "read_csv_text",
    "read_table",
    "problems_frame",
    "normalise_header",
    "source_name",
    "parse_label",
    "parse_probability",
    "parse_flag",
    "choice",
    "escape_cell",
    "escape_formulas",
    "csv_bytes",
]

#: Problems listed by default before the reader only counts the rest (``DLUM_MAX_PROBLEMS``).
MAX_PROBLEMS = Limits().max_problems


@dataclass(frozen=True)
class Problem:
    """What is wrong where: ``row`` is the data row (1 = first under the header; None = the whole
    table), ``column`` and ``value`` the cell (None when not about one)."""

    what: str
    row: int | None = None
    column: str | None = None
    value: str | None = None

    def where(self) -> str:
        parts = []
        if self.row is not None:
            parts.append(f"data row {self.row} (file line {self.row + 1})")
        if self.column is not None:
            parts.append(f"column {self.column!r}")
        if self.value is not None:
            parts.append(f"value {self.value!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        return f"{where}: {self.what}" if where else self.what

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "file_line": None if self.row is None else self.row + 1,
                "column": self.column, "value": self.value, "problem": self.what}


class Problems:
    """A bounded list of :class:`Problem` s (the first ``limit``, by default
    ``DLUM_MAX_PROBLEMS``, then a count)."""

    def __init__(self, limit: int | None = None):
        self.items: list[Problem] = []
        self.more = 0
        self.limit = limits().max_problems if limit is None else limit

    def add(self, what: str, row: int | None = None, column: str | None = None,
            value: Any = None) -> None:
        if len(self.items) >= self.limit:
            self.more += 1
            return
        self.items.append(Problem(what, row, column, None if value is None else str(value)))

    def __bool__(self) -> bool:
        return bool(self.items) or self.more > 0

    def __len__(self) -> int:
        return len(self.items) + self.more

    def raise_if_any(self, source: str | None) -> None:
        if self:
            ordered = sorted(self.items, key=lambda p: (p.row or 0))
            raise CohortError(ordered, source, more=self.more)


def problems_frame(error: CohortError) -> pd.DataFrame:
    """Every listed problem of ``error`` as a table (row, file_line, column, value, problem), for
    a download beside the first few shown on a page."""
    rows = [p.as_dict() if isinstance(p, Problem) else Problem(str(p)).as_dict()
            for p in error.records]
    return pd.DataFrame(rows, columns=["row", "file_line", "column", "value", "problem"])


# ------------------------------------------------------------------------------------ parsers
_LABELS = {"benign": 0, "0": 0, "0.0": 0, "malignant": 1, "1": 1, "1.0": 1}
_TRUE = {"true", "yes", "y", "1", "1.0", "t"}
_FALSE = {"false", "no", "n", "0", "0.0", "f"}


def parse_label(text: Any) -> int:
    """``benign``/``malignant``/``0``/``1`` (any case) as 0/1; ValueError otherwise (a typo such
    as "malignnat" is an error, never a benign case)."""
    if isinstance(text, bool):
        return int(text)
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if float(text) in (0.0, 1.0):
            return int(text)
        raise ValueError("not benign/malignant/0/1")
    key = str(text).strip().lower()
    if key not in _LABELS:
        raise ValueError("not benign/malignant/0/1")
    return _LABELS[key]


def parse_probability(text: Any) -> float:
    """A probability: a finite number in [0, 1]."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError("not a number (a probability in [0, 1] is expected)") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number (a probability in [0, 1] is expected)")
    if not 0.0 <= value <= 1.0:
        raise ValueError("outside [0, 1] (a probability is expected)")
    return value


def parse_flag(text: Any) -> bool | None:
    """'true/false/yes/no/1/0' as a bool, empty as None; ValueError otherwise."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    key = str(text).strip().lower()
    if key == "":
        return None
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise ValueError("not true/false (yes/no, 1/0)")


def choice(values: Iterable[str], aliases: dict[str, str] | None = None) -> Callable[[str], str]:
    """A parser that accepts one of ``values`` (any case) or an alias of one."""
    allowed = {str(v).lower(): str(v) for v in values}
    allowed |= {k.lower(): v for k, v in (aliases or {}).items()}
    names = ", ".join(str(v) for v in values)

    def parse(text: str) -> str:
        key = str(text).strip().lower()
        if key not in allowed:
            raise ValueError(f"not one of {names}")
        return allowed[key]

    parse.__doc__ = f"one of {names}"
    return parse


# ------------------------------------------------------------------------------------- schema
_MISSING = object()


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Args:
        name: the header (normalised: lower case, spaces and dashes as ``_``); with ``pattern``
            a regular expression that several headers may match (e.g. ``p_[a-z0-9_]+``).
        parse: text → value; raises ``ValueError(reason)`` for a bad cell. None keeps the text.
        required: the column must be in the header.
        needed: a cell may not be empty (else an empty cell, or an absent column, is ``default``).
        default: the value of an empty cell or an absent optional column.
        unique: no two rows may share a non-empty value.
        doc: one line for the documentation.
    """

    name: str
    parse: Callable[[str], Any] | None = None
    required: bool = False
    needed: bool = False
    default: Any = None
    unique: bool = False
    pattern: bool = False
    doc: str = ""

    def matches(self, header: str) -> bool:
        return bool(re.fullmatch(self.name, header)) if self.pattern else header == self.name


@dataclass(frozen=True)
class Schema:
    """A table's columns, in order. ``title`` names the table in messages ("cohort table");
    ``at_least_one`` names a pattern column of which the table needs one or more."""

    title: str
    columns: tuple[Column, ...]
    at_least_one: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def column(self, header: str) -> Column | None:
        for c in self.columns:
            if c.matches(header):
                return c
        return None

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required and not c.pattern]

    @property
    def optional(self) -> list[str]:
        return [c.name for c in self.columns if not c.required and not c.pattern]

    def markdown(self) -> str:
        """The schema as a Markdown table (column, required, empty cell means, meaning)."""
        lines = ["| column | required | empty cell | meaning |", "|---|---|---|---|"]
        for c in self.columns:
            name = f"`{c.name}`" if not c.pattern else f"`{c.name}` (any number)"
            empty = "not allowed" if c.needed else ("—" if c.default is None else f"`{c.default}`")
            lines.append(f"| {name} | {'yes' if c.required else 'no'} | {empty} | {c.doc} |")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------- read
def normalise_header(name: object) -> str:
    """Headers as dlum compares them: stripped, lower case, spaces and dashes as ``_``."""
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def source_name(source: Any, default: str) -> str:
    """How a table is named in messages: its path, its upload name, or ``default``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", None) or default)


def _too_big(size: int, bound: int, label: str) -> CohortError:
    return CohortError([Problem(f"is {size / 2**20:,.1f} MiB, over the table limit of "
                                f"{bound // 2**20:,} MiB (DLUM_MAX_TABLE_MB): not read")], label)


def _read_bytes(source: Any, label: str) -> bytes:
    bound = limits().max_table_bytes
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > bound:
            raise _too_big(len(data), bound, label)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            raise CohortError([Problem("is a folder, not a CSV file")], label)
        if not os.path.exists(path):
            raise CohortError([Problem("the file was not found")], label)
        if not os.path.isfile(path):
            raise CohortError([Problem("not a regular file (a device, pipe or socket?)")], label)
        if os.path.getsize(path) > bound:
            raise _too_big(os.path.getsize(path), bound, label)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise CohortError([Problem(f"cannot be read ({err.strerror or err})")], label) from None
    elif hasattr(source, "read"):
        try:
            source.seek(0)
        except (OSError, ValueError, AttributeError):
            pass
        data = source.read(bound + 1)
        if isinstance(data, str):
            data = data.encode("utf-8")
        if len(data) > bound:
            raise _too_big(len(data), bound, label)
    else:
        raise CohortError([Problem(f"not a table source ({type(source).__name__})")], label)
    return data


def read_csv_text(source: Any, name: str | None = None, *,
                  problems: Problems | None = None) -> pd.DataFrame:
    """A CSV (path, bytes, or text/binary buffer such as an upload) as a table of stripped text
    cells with normalised headers; the index holds data-row numbers (1 = first under the header).

    A row with more cells than the header is a problem (never silently shifted into an index),
    as is a repeated header. Unreadable input raises :class:`CohortError` at once; row problems
    are added to ``problems`` when given, else raised.
    """
    label = name or source_name(source, "table")
    own = problems is None
    problems = Problems() if own else problems
    data = _read_bytes(source, label)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CohortError([Problem(f"not UTF-8 text (byte {err.start}): is this a CSV file?")],
                          label) from None
    if "\x00" in text:
        raise CohortError([Problem("holds NUL bytes: a binary file, not a CSV table")], label)
    most = limits().max_table_rows
    rows: list[list[str]] = []
    try:
        for cells in csv.reader(io.StringIO(text, newline="")):
            rows.append(cells)
            # counted while read (blank lines too), so that a huge table stops here
            if len(rows) > most + 1 and any(c.strip() for c in cells):
                raise CohortError([Problem(f"has more than {most:,} data rows, the table limit "
                                           "(DLUM_MAX_TABLE_ROWS): not read")], label)
    except csv.Error as err:
        raise CohortError([Problem(f"not a readable CSV file ({err})")], label) from None
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise CohortError([Problem("the file is empty (no header, no rows)")], label)
    header = [normalise_header(c) for c in rows[0]]
    for h in sorted({h for h in header if header.count(h) > 1}):
        problems.add(f"appears {header.count(h)} times in the header", column=h)
    width = len(header)
    body: list[list[str]] = []
    for r, cells in enumerate(rows[1:], start=1):
        if not any(cell.strip() for cell in cells):
            cells = [""] * width  # a blank line inside the table: an empty row, checked as such
        if len(cells) > width:
            extra = [c for c in cells[width:] if c.strip()]
            if extra:
                problems.add(f"has {len(cells)} cells but the header has {width} columns "
                             f"(is a comma missing from the header, or one too many here?)",
                             row=r, value=",".join(extra)[:80])
            cells = cells[:width]
        body.append([c.strip() for c in cells] + [""] * (width - len(cells)))
    table = pd.DataFrame(body, columns=range(width), dtype=object)
    table.columns = header
    table = table.loc[:, ~pd.Index(header).duplicated()]
    table.index = pd.RangeIndex(1, len(table) + 1)
    if own:
        problems.raise_if_any(label)
    return table


def read_table(source: Any, schema: Schema, *, name: str | None = None,
               problems: Problems | None = None, keep_extra: bool = True,
               fill_absent: bool = True) -> pd.DataFrame:
    """Read and validate a table against ``schema``.

    Returns the parsed table (the file's columns in its order, other columns kept as text, then
    the schema's absent optional columns with their defaults unless ``fill_absent`` is False),
    its index the data-row numbers, ``attrs["source"]`` its name. Every problem is collected; they
    are raised together as one :class:`CohortError` unless ``problems`` is given, in which case
    the caller adds its own checks and raises (``problems.raise_if_any``).
    """
    label = name or source_name(source, schema.title)
    own = problems is None
    problems = Problems() if own else problems
    text = read_csv_text(source, label, problems=problems)
    present = list(text.columns)
    missing = [c for c in schema.required if c not in present]
    if missing:
        problems.add(f"missing required column(s) {', '.join(map(repr, missing))}; a "
                     f"{schema.title} needs {', '.join(schema.required)}"
                     + (f" (optional: {', '.join(schema.optional)})" if schema.optional else "")
                     + f"; found: {', '.join(present) or 'no columns'}")
    if schema.at_least_one and not any(re.fullmatch(schema.at_least_one, h) for h in present):
        problems.add(f"no column matching {schema.at_least_one!r}; found: "
                     f"{', '.join(present) or 'no columns'}")
    if len(text) == 0:
        problems.add("the table has a header but no rows")
    out: dict[str, Any] = {}
    for col in schema.columns:
        names = [h for h in present if col.matches(h)] if col.pattern else [col.name]
        for header in names:
            if header in out:
                continue
            if header not in present:
                if not col.pattern and fill_absent:
                    out[header] = [col.default] * len(text)
                continue
            out[header] = _parse_column(text[header], col, header, problems)
    order = [h for h in present if h in out or keep_extra]
    order += [h for h in out if h not in present]
    frame = pd.DataFrame({h: out[h] if h in out else list(text[h]) for h in order},
                         index=text.index)
    if own:
        problems.raise_if_any(label)
    frame.attrs["source"] = label
    return frame


def _parse_column(cells: pd.Series, col: Column, header: str, problems: Problems) -> list:
    values: list[Any] = []
    seen: dict[str, int] = {}
    for row, text in cells.items():
        text = "" if text is None else str(text)
        if text == "":
            if col.needed:
                problems.add("empty (a value is needed)", row, header)
            values.append(col.default)
            continue
        if col.unique:
            if text in seen:
                problems.add(f"repeats data row {seen[text]}", row, header, text)
            else:
                seen[text] = row
        if col.parse is None:
            values.append(text)
            continue
        try:
            values.append(col.parse(text))
        except ValueError as err:
            problems.add(str(err) or "not a valid value", row, header, text)
            values.append(col.default)
    return values


# ------------------------------------------------------------------------------------- write
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab,
    CR first) gets a leading apostrophe (OWASP, CSV injection); numbers are left alone.

    >>> escape_cell("=HYPERLINK(1)"), escape_cell("-0.5"), escape_cell(3)
    ("'=HYPERLINK(1)", '-0.5', 3)
    """
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
            return value  # a negative number written as text
        except ValueError:
            return "'" + value
    return value


def escape_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (and headers) are safe to open in a spreadsheet."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("str", "string"):
            out[column] = out[column].map(escape_cell)
    out.columns = [escape_cell(c) for c in out.columns]
    return out


def csv_bytes(frame: pd.DataFrame, **to_csv) -> bytes:
    """A table as UTF-8 CSV bytes for a download, formula cells escaped."""
    return escape_formulas(frame).to_csv(index=to_csv.pop("index", False), **to_csv).encode("utf-8")
