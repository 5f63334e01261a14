"""Input checks shared by the statistics functions: one clear message per problem, never a traceback."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np

from dlum.constants import BENIGN, MALIGNANT
from dlum.errors import InputError

__all__ = ["DegenerateDataWarning", "collect_notes", "as_labels", "as_scores", "as_decisions", "same_length", "warn"]

#: How many offending rows a message lists before it says "and N more".
_MAX_LISTED = 10


class DegenerateDataWarning(UserWarning):
    """A statistic is undefined for these data (one class only, empty subgroup, ...): it is NaN."""


@contextmanager
def collect_notes(notes: list[str]):
    """Collect :class:`DegenerateDataWarning` messages raised inside the block into ``notes``
    (pages and commands show them as notes: they are answers, not errors)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateDataWarning)
        yield notes
    notes.extend(dict.fromkeys(str(w.message) for w in caught
                               if issubclass(w.category, DegenerateDataWarning)))


def warn(message: str) -> None:
    """Emit a :class:`DegenerateDataWarning` pointing at the caller's caller."""
    warnings.warn(message, DegenerateDataWarning, stacklevel=3)


def _row_names(values, mask: np.ndarray) -> str:
    """Names of the rows where ``mask`` is true: index labels of a pandas object, else 0-based positions."""
    import pandas as pd

    index = values.index if isinstance(values, (pd.Series, pd.DataFrame)) else None
    where = np.flatnonzero(mask)
    if index is not None and len(index) == len(mask):
        names = [str(index[i]) for i in where[:_MAX_LISTED]]
        kind = "rows"
    else:
        names = [str(i) for i in where[:_MAX_LISTED]]
        kind = "positions (0-based)"
    more = f" and {len(where) - _MAX_LISTED} more" if len(where) > _MAX_LISTED else ""
    return f"{kind} {', '.join(names)}{more}"


def _to_array(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name} could not be read as a 1-D array ({exc})") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def as_labels(values, name: str = "y_true") -> np.ndarray:
    """Pathology labels as int8 0/1 (1 = malignant). Accepts 0/1, booleans or 'benign'/'malignant'."""
    arr = _to_array(values, name)
    if arr.dtype.kind in "OUS" or str(arr.dtype) in ("str", "string"):
        text = np.array([str(v).strip().lower() for v in arr], dtype=object)
        out = np.full(len(arr), -1, dtype=np.int8)
        out[(text == MALIGNANT) | (text == "1") | (text == "1.0")] = 1
        out[(text == BENIGN) | (text == "0") | (text == "0.0")] = 0
        bad = out < 0
    else:
        num = arr.astype(np.float64)
        bad = ~np.isin(num, (0.0, 1.0))
        out = np.where(bad, -1, num).astype(np.int8)
    if bad.any():
        raise InputError(
            f"{name} must be 0/1 (1 = malignant) or benign/malignant; "
            f"other values (or missing) at {_row_names(values, bad)}"
        )
    return out


def _to_float(arr: np.ndarray) -> np.ndarray:
    """float64 values; missing (None, pd.NA) and non-numeric entries become NaN."""
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        import pandas as pd

        return pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(dtype=np.float64)


def as_scores(values, name: str = "scores") -> np.ndarray:
    """Scores as float64; missing (NaN) or non-numeric scores are an error naming the rows."""
    num = _to_float(_to_array(values, name))
    bad = np.isnan(num)
    if bad.any():
        raise InputError(f"{name} has missing (NaN) or non-numeric values at {_row_names(values, bad)}")
    return num


def as_decisions(values, name: str = "y_pred") -> np.ndarray:
    """Binary calls as int8 0/1 (1 = predicted malignant / biopsy recommended)."""
    num = _to_float(_to_array(values, name))
    bad = ~np.isin(num, (0.0, 1.0))
    if bad.any():
        raise InputError(
            f"{name} must be 0/1 calls (1 = predicted malignant; threshold scores first); "
            f"other values (or missing) at {_row_names(values, bad)}"
        )
    return num.astype(np.int8)


def same_length(**arrays: Sequence) -> None:
    """Raise InputError unless every named array has the same length."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        text = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise InputError(f"inputs must have one value per case: {text}")
