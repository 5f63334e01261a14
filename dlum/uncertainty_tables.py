"""Certain and uncertain cases of a cohort: the table of TTA intervals and what they separate.

``uncertainty.csv`` (``scripts/tta_cohort.py``, beside a checkpoint's ``predictions.csv``) holds
DL-UM's test-time augmentation interval of each case (:mod:`dlum.uncertainty`: by default, level 1,
the range of P(malignant) over the plain view and the augmented views; else the central ``level``
share of them). A case is *uncertain* when its interval straddles the operating threshold ``t`` (``low < t <= high``; P >= t is a biopsy call). :func:`certainty_table`
asks whether DL-UM does worse on the cases it is unsure of: its AUC (DeLong 95% CI, DeLong et
al., Biometrics 1988) and sensitivity and specificity at ``t`` (Wilson 95% CIs) in the certain and
the uncertain cases of the test split. Torch-free: pages import it freely.

>>> import pandas as pd
>>> frame = pd.DataFrame({"case_id": list("abcd"), "label": [0, 1, 0, 1], "split": "test",
...                       "p_dlum": [0.1, 0.9, 0.45, 0.55]})
>>> intervals = pd.DataFrame({"case_id": list("abcd"), "low": [0.05, 0.8, 0.3, 0.4],
...                           "high": [0.2, 0.95, 0.6, 0.7]})
>>> certainty_table(frame, intervals, {"p_dlum": 0.5})[["cases", "n"]].values.tolist()
[['certain', 2], ['uncertain', 2], ['all', 4]]
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlum.constants import SPLITS, TEST
from dlum.errors import CohortError, DLUMError
from dlum.files import atomic_path
from dlum.formatting import format_ci, format_pct_ci
from dlum.stats import binary_metrics, collect_notes, roc_auc_ci
from dlum.tables import (Column, Problems, Schema, choice, escape_formulas, parse_flag,
                         parse_probability, read_table)

__all__ = [
    "UNCERTAINTY_FILE",
    "UNCERTAINTY_COLUMNS",
    "SCHEMA",
    "read_uncertainty",
    "write_uncertainty",
    "uncertain_cases",
    "certainty_table",
    "certainty_caption",
    "certainty_display",
]

#: The file beside a checkpoint's ``predictions.csv``.
UNCERTAINTY_FILE = "uncertainty.csv"
#: Its columns, in order (the TTA settings repeat on each row, so that one row is self-contained).
UNCERTAINTY_COLUMNS = ["case_id", "split", "estimate", "low", "high", "uncertain", "level",
                       "views", "seed", "precision"]


def _parse_count(text: Any) -> int:
    value = float(str(text).strip())
    if not (math.isfinite(value) and value >= 0 and value == int(value)):
        raise ValueError("not a whole number 0 or more")
    return int(value)


def _parse_level(text: Any) -> float:
    value = float(str(text).strip())
    if not (math.isfinite(value) and 0 < value <= 1):
        raise ValueError("not a share in (0, 1]")
    return value


SCHEMA = Schema(
    "uncertainty table",
    (
        Column("case_id", required=True, needed=True, unique=True, doc="the case, as in predictions.csv"),
        Column("split", choice(SPLITS), default="", doc="train / validation / test / external"),
        Column("estimate", parse_probability, needed=True, doc="DL-UM's P(malignant), un-augmented"),
        Column("low", parse_probability, required=True, needed=True, doc="lower end of the TTA interval"),
        Column("high", parse_probability, required=True, needed=True, doc="upper end of the TTA interval"),
        Column("uncertain", parse_flag, doc="the interval straddles the card's threshold"),
        Column("level", _parse_level, doc="share of the views' probabilities the interval spans"),
        Column("views", _parse_count, doc="augmented views per case"),
        Column("seed", _parse_count, doc="seed of the views"),
        Column("precision", doc="float32 or bfloat16"),
    ),
)


def read_uncertainty(source: Any, *, name: str | None = None) -> pd.DataFrame:
    """Read and check an uncertainty table (path, bytes or buffer).

    Raises:
        CohortError: every problem (missing columns, values outside [0, 1], ``low > high``).
    """
    problems = Problems()
    frame = read_table(source, SCHEMA, name=name, problems=problems)
    if not problems and {"low", "high"} <= set(frame.columns):
        for row in frame.index[frame["low"] > frame["high"]]:
            problems.add("low is above high", row, "low", frame.loc[row, "low"])
    problems.raise_if_any(name or frame.attrs.get("source"))
    return frame


def write_uncertainty(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write an uncertainty table atomically (probabilities to 6 decimals)."""
    path = Path(path)
    missing = [c for c in ("case_id", "low", "high") if c not in frame.columns]
    if missing:
        raise DLUMError(f"an uncertainty table needs the columns {', '.join(missing)}")
    out = escape_formulas(frame[[c for c in UNCERTAINTY_COLUMNS if c in frame.columns]])
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.6f")
    return path


def uncertain_cases(low, high, threshold: float) -> np.ndarray:
    """Whether each interval straddles ``threshold``: ``low < t <= high`` (P >= t positive)."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return (low < threshold) & (threshold <= high)


def _threshold(thresholds: Mapping[str, Any], output: str) -> float:
    value = thresholds.get(output) if thresholds is not None else None
    value = getattr(value, "value", value)  # a dlum.predictions.Threshold, or a number
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and 0 <= number <= 1):
        raise DLUMError(f"no usable operating threshold for {output} (got {value!r})")
    return number


def certainty_table(frame: pd.DataFrame, uncertainty: pd.DataFrame,
                    thresholds: Mapping[str, Any], *, output: str = "p_dlum",
                    split: str | None = TEST, level: float = 0.95) -> pd.DataFrame:
    """DL-UM in the certain and the uncertain cases of one split.

    Args:
        frame: a predictions table (``case_id``, ``label``, ``split``, ``output``).
        uncertainty: the cases' TTA intervals (``case_id``, ``low``, ``high``), e.g.
            :func:`read_uncertainty` of ``uncertainty.csv``.
        thresholds: output → operating threshold (a number or a
            :class:`dlum.predictions.Threshold`); a case is uncertain when its interval straddles
            it, and called malignant when ``output >= threshold``.
        split: the split to use (None: every row).

    Returns:
        rows ``certain``, ``uncertain`` and ``all``: ``n``, ``n_malignant``, ``n_benign``,
        ``share`` (of the cases with an interval), ``auc`` with DeLong ``auc_ci_low`` /
        ``auc_ci_high``, ``sensitivity`` and ``specificity`` with Wilson CIs, and ``note``. A
        group with one class (or none) has NaN where the figure is undefined, and a note.
        ``attrs["missing"]`` counts the split's cases that have no interval (left out).

    Raises:
        DLUMError: no threshold for ``output``, or no case of the split has an interval.
    """
    t = _threshold(thresholds, output)
    for name, table, needed in (("predictions", frame, ("case_id", "label", output)),
                                ("uncertainty", uncertainty, ("case_id", "low", "high"))):
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise CohortError([f"the {name} table has no column(s) {', '.join(missing)}"])
    part = frame if split is None or "split" not in frame.columns else frame[frame["split"] == split]
    intervals = uncertainty[["case_id", "low", "high"]].astype({"case_id": str})
    merged = part.astype({"case_id": str}).merge(intervals, on="case_id", how="inner")
    if merged.empty:
        where = f"the {split} split" if split else "the predictions"
        raise DLUMError(f"no case of {where} has a TTA interval: is the uncertainty table that "
                        "of these predictions?")
    flags = uncertain_cases(merged["low"], merged["high"], t)
    rows = []
    for name, keep in (("certain", ~flags), ("uncertain", flags), ("all", np.ones(len(merged), bool))):
        group = merged[keep]
        y = group["label"].to_numpy(dtype=int)
        p = group[output].to_numpy(dtype=float)
        m, n = int((y == 1).sum()), int((y == 0).sum())
        notes: list[str] = []
        nan = math.nan
        auc = low = high = nan
        if m and n:
            with collect_notes(notes):
                r = roc_auc_ci(y, p, level=level)
            auc, low, high = r.auc, r.ci_low, r.ci_high
        else:
            notes.append("no cases" if m + n == 0 else
                         f"only {'malignant' if n == 0 else 'benign'} cases: AUC undefined")
        sens = spec = None
        if m + n:
            bm = binary_metrics(y, (p >= t).astype(int), level=level)
            sens, spec = bm.sensitivity, bm.specificity
        if m == 0 and m + n:
            notes.append("no malignant cases: sensitivity undefined")
        if n == 0 and m + n:
            notes.append("no benign cases: specificity undefined")
        rows.append({
            "cases": name, "n": m + n, "n_malignant": m, "n_benign": n,
            "share": (m + n) / len(merged),
            "auc": auc, "auc_ci_low": low, "auc_ci_high": high,
            "sensitivity": nan if sens is None else sens.estimate,
            "sensitivity_ci_low": nan if sens is None else sens.ci_low,
            "sensitivity_ci_high": nan if sens is None else sens.ci_high,
            "specificity": nan if spec is None else spec.estimate,
            "specificity_ci_low": nan if spec is None else spec.ci_low,
            "specificity_ci_high": nan if spec is None else spec.ci_high,
            "threshold": t,
            "note": "; ".join(dict.fromkeys(notes)),
        })
    table = pd.DataFrame(rows)
    table.attrs["missing"] = int(len(part) - len(merged))
    return table


def certainty_caption(table: pd.DataFrame, uncertainty: pd.DataFrame, checkpoint: str) -> str:
    """How :func:`certainty_table` was computed, for under the table: the split, the TTA
    settings recorded in ``uncertainty`` and the threshold."""
    first = uncertainty.iloc[0] if len(uncertainty) else {}

    def setting(name, fmt="{}"):
        value = first.get(name) if hasattr(first, "get") else None
        return None if value is None or (isinstance(value, float) and math.isnan(value)) \
            else fmt.format(value)

    level = setting("level", "{:.6g}")
    if level is None:
        spread = "test-time-augmentation interval (of P over the un-augmented patches and"
    elif float(level) >= 1.0:  # the default: the views' range
        spread = ("test-time-augmentation range (the lowest to the highest P over the "
                  "un-augmented patches and")
    else:
        share = f"{float(level):.0%}"
        spread = (f"{share} test-time-augmentation interval (the central {share} of P over the "
                  "un-augmented patches and")
    how = ", ".join(x for x in (setting("views", "{} augmented views"), setting("seed", "seed {}"),
                                setting("precision")) if x)
    missing = int(table.attrs.get("missing", 0))
    left_out = (f" {missing} test case(s) without an interval are left out." if missing else "")
    return (f"DL-UM on the **test split only** of the checkpoint `{checkpoint}`, whatever split is "
            f"chosen above. A case is uncertain when its {spread} their flipped, shifted, "
            f"scaled and gamma/contrast-changed views{'; ' + how if how else ''}; "
            f"`scripts/tta_cohort.py`, stored in `{UNCERTAINTY_FILE}`) straddles DL-UM's operating "
            f"threshold {float(table['threshold'].iloc[0]):.3f}. AUC with DeLong 95% CI, "
            "sensitivity and specificity at that threshold with Wilson 95% CIs, from the "
            f"checkpoint's predictions.{left_out}")


def certainty_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`certainty_table` as text: cases (share), AUC [95% CI], sensitivity and specificity
    [95% CI], note."""
    return pd.DataFrame({
        "Cases": [f"{c} ({n}, {s:.0%})" for c, n, s in zip(table["cases"], table["n"], table["share"])],
        "Malignant / benign": [f"{m} / {b}" for m, b in zip(table["n_malignant"], table["n_benign"])],
        "AUC [95% CI]": [format_ci(a, lo, hi) for a, lo, hi in
                         zip(table["auc"], table["auc_ci_low"], table["auc_ci_high"])],
        "Sensitivity [95% CI]": [format_pct_ci(v, lo, hi) if np.isfinite(v) else "n/a" for v, lo, hi in
                                 zip(table["sensitivity"], table["sensitivity_ci_low"],
                                     table["sensitivity_ci_high"])],
        "Specificity [95% CI]": [format_pct_ci(v, lo, hi) if np.isfinite(v) else "n/a" for v, lo, hi in
                                 zip(table["specificity"], table["specificity_ci_low"],
                                     table["specificity_ci_high"])],
        "Note": table["note"],
    })
