"""The predictions table: one row per lesion, one ``p_<model>`` column per model compared.

Written by ``python -m dlum evaluate`` (a checkpoint ships its held-out rows as
``predictions.csv``), read by ``report`` and the Cohort ROC page, and by anyone who adds their
own model: **any further ``p_<name>`` column is another model to compare**.

========== ========= ==========================================================================
column     required  meaning
========== ========= ==========================================================================
case_id    yes       unique per row
label      yes       pathology: benign/malignant or 0/1
p_<name>   one or    P(malignant) of a model, a number in [0, 1]. dlum writes ``p_dlum`` (fused
           more      DL-UM), ``p_us_head`` / ``p_mg_head`` (DL-UM's branch heads), ``p_dlu`` and
                     ``p_dlm`` (the single-modality models)
subgroup   no        concordant / discordant / undetermined (empty = undetermined)
split      no        train / validation / test / external
patient_id no        kept for cluster-aware statistics
pairing    no        same_patient / pseudo
========== ========= ==========================================================================

Each model is judged at its own threshold (:func:`thresholds_for`): the card's, else one chosen
on the table's validation rows by the card's rule, else one the user sets — and the result says
which.

>>> frame = read_predictions(b"case_id,label,p_dlum,p_mine\\nc1,malignant,0.9,0.7\\nc2,0,0.2,0.4\\n")
>>> model_columns(frame)
{'DL-UM': 'p_dlum', 'mine': 'p_mine'}
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlum.constants import PAIRINGS, SPLITS, UNDETERMINED, VALIDATION, CONCORDANT, DISCORDANT
from dlum.tables import (
    escape_formulas,
    Column,
    Schema,
    choice,
    parse_label,
    parse_probability,
    read_table,
)
from dlum.files import atomic_path

__all__ = [
    "PREDICTIONS_FILE",
    "HELD_OUT_FILE",
    "MODEL_NAMES",
    "MIN_SENSITIVITY",
    "SCHEMA",
    "PROBABILITY_PATTERN",
    "read_predictions",
    "write_predictions",
    "model_columns",
    "model_name",
    "Threshold",
    "thresholds_for",
]

#: The predictions files of a checkpoint folder: test rows, and validation + test rows.
PREDICTIONS_FILE = "predictions.csv"
HELD_OUT_FILE = "held_out_predictions.csv"

#: The models dlum writes, in the order they are shown, and their display names.
MODEL_NAMES = {
    "p_dlum": "DL-UM",
    "p_dlu": "DL-U",
    "p_dlm": "DL-M",
    "p_us_head": "DL-UM US branch",
    "p_mg_head": "DL-UM MG branch",
}

#: Operating thresholds are the highest with at least this validation sensitivity.
MIN_SENSITIVITY = 0.90

PROBABILITY_PATTERN = r"p_[a-z0-9_]+"

SCHEMA = Schema(
    "predictions table",
    (
        Column("case_id", required=True, needed=True, unique=True, doc="unique per row"),
        Column("label", parse_label, required=True, needed=True,
               doc="pathology: benign/malignant or 0/1"),
        Column(PROBABILITY_PATTERN, parse_probability, needed=True, pattern=True,
               doc="P(malignant) of one model, in [0, 1]"),
        Column("subgroup", choice((CONCORDANT, DISCORDANT, UNDETERMINED)), default=UNDETERMINED,
               doc="BI-RADS concordance of US and MG"),
        Column("split", choice(SPLITS), default="", doc="train / validation / test / external"),
        Column("patient_id", default="", doc="the woman (or pair of women) the case is from"),
        Column("pairing", choice(PAIRINGS), default="", doc="same_patient or pseudo"),
    ),
    at_least_one=PROBABILITY_PATTERN,
)


def model_name(column: str) -> str:
    """The display name of a probability column: dlum's own, else the name after ``p_``."""
    return MODEL_NAMES.get(column, column[2:] if column.startswith("p_") else column)


def model_columns(frame: pd.DataFrame) -> dict[str, str]:
    """``{display name: column}`` of every model in the table, dlum's first in their order."""
    import re

    columns = [c for c in MODEL_NAMES if c in frame.columns]
    columns += [c for c in frame.columns if re.fullmatch(PROBABILITY_PATTERN, str(c))
                and c not in MODEL_NAMES]
    return {model_name(c): c for c in columns}


def read_predictions(source: Any, *, name: str | None = None,
                     fill_absent: bool = True) -> pd.DataFrame:
    """Read and validate a predictions table (path, bytes or upload buffer).

    Returns the table with ``label`` as int 0/1, probabilities as float, ``subgroup`` lower case
    (empty = undetermined); the index holds the data-row numbers. Raises CohortError listing
    every problem (row, column, value, what is wrong). ``fill_absent=False`` leaves out the
    optional columns the file does not have (to write it back as it was).
    """
    frame = read_table(source, SCHEMA, name=name, fill_absent=fill_absent)
    frame["label"] = frame["label"].astype(np.int64)
    for column in model_columns(frame).values():
        frame[column] = frame[column].astype(float)
    return frame


# -------------------------------------------------------------------------------------- write
def write_predictions(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a predictions table (probabilities to 8 decimals) atomically: a temporary file in
    the same folder, then a rename, so a failure leaves any earlier file as it was."""
    path = Path(path)
    out = escape_formulas(frame)
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.8f")
    return path


# --------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Threshold:
    """A model's operating threshold and where it came from: ``card`` (the checkpoint's),
    ``validation`` (chosen on this table's validation rows by the card's rule), ``user`` (set by
    hand) or ``default`` (0.5: none of the others was possible)."""

    value: float
    source: str

    def describe(self) -> str:
        return {
            "card": "the checkpoint card's operating threshold",
            "validation": "chosen on this table's validation rows (highest threshold with "
                          f"sensitivity ≥ {MIN_SENSITIVITY:.2f})",
            "user": "set by you",
            "default": "0.5: no card threshold and no validation rows with both classes",
        }[self.source]


def thresholds_for(frame: pd.DataFrame, card=None, user: dict[str, float] | None = None,
                   min_sensitivity: float | None = None) -> dict[str, Threshold]:
    """Each model column's threshold: set by the user, else the card's, else chosen on the
    table's validation rows (``split == validation``, both classes present), else 0.5."""
    from dlum.constants import DEFAULT_THRESHOLD
    from dlum.stats import threshold_for_sensitivity

    if min_sensitivity is None:
        op = getattr(card, "operating_point", None)
        min_sensitivity = (op.min_sensitivity if op is not None and op.min_sensitivity is not None
                           else MIN_SENSITIVITY)
    user = user or {}
    validation = frame[frame["split"] == VALIDATION] if "split" in frame.columns else frame.iloc[:0]
    both = validation["label"].nunique() == 2 if len(validation) else False
    out: dict[str, Threshold] = {}
    for column in model_columns(frame).values():
        if column in user:
            out[column] = Threshold(float(user[column]), "user")
        elif card is not None and card.threshold_for(column) is not None:
            out[column] = Threshold(float(card.threshold_for(column)), "card")
        elif both:
            value = threshold_for_sensitivity(validation["label"].to_numpy(),
                                              validation[column].to_numpy(), min_sensitivity)
            out[column] = Threshold(float(value), "validation")
        else:
            out[column] = Threshold(DEFAULT_THRESHOLD, "default")
    return out
