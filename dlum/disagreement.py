"""When DL-UM's branches disagree: the model's analogue of discordant BI-RADS.

DL-UM (Xu et al., Breast Cancer Research 2025) has an ultrasound and a mammography branch head
besides its fused output. A case is flagged **branches disagree** when one branch's P(malignant)
is at or above its own operating threshold and the other's is below its own: as a discordant
BI-RADS pair (one modality 4-5, the other 2-3), the two views of the lesion point different ways.
In dlum P ≥ threshold is positive everywhere. Torch-free: pages and commands import it freely.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dlum.constants import ALL, CONCORDANT, DISCORDANT, UNDETERMINED
from dlum.errors import CohortError, InputError
from dlum.formatting import format_ci, format_pct_ci

__all__ = [
    "FUSED_COLUMN",
    "BRANCH_COLUMNS",
    "AGREE",
    "DISAGREE",
    "branches_disagree",
    "case_branches_disagree",
    "has_branches",
    "branch_agreement",
    "disagreement_table",
    "disagreement_crosstab",
    "disagreement_display",
    "crosstab_display",
]

#: DL-UM's fused output and its two branch heads (ultrasound, mammography) in a predictions table.
FUSED_COLUMN = "p_dlum"
BRANCH_COLUMNS = ("p_us_head", "p_mg_head")

#: How a case's branches are described.
AGREE, DISAGREE = "branches agree", "branches disagree"


def _probabilities(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers (P(malignant) in [0, 1])") from None
    if np.isnan(arr).any():
        raise InputError(f"{name} has missing (NaN) values")
    return arr


def branches_disagree(p_us, p_mg, us_threshold, mg_threshold):
    """True where exactly one of the US and MG branches calls the case malignant.

    Each branch is judged at its own threshold (P ≥ threshold = malignant). Scalars give a
    ``bool``; arrays (or a scalar with an array) give a boolean array of their broadcast shape.

    >>> branches_disagree(0.7, 0.2, 0.5, 0.5)
    True
    >>> branches_disagree([0.7, 0.7, 0.1], [0.6, 0.1, 0.1], 0.5, 0.5).tolist()
    [False, True, False]
    """
    us = _probabilities(p_us, "p_us")
    mg = _probabilities(p_mg, "p_mg")
    t_us = _probabilities(us_threshold, "us_threshold")
    t_mg = _probabilities(mg_threshold, "mg_threshold")
    try:
        out = (us >= t_us) != (mg >= t_mg)
    except ValueError:
        raise InputError(f"p_us and p_mg must have one value per case: shapes {us.shape} and "
                         f"{mg.shape}") from None
    return bool(out) if np.ndim(out) == 0 else out


def case_branches_disagree(prediction, card) -> bool | None:
    """:func:`branches_disagree` of one case's branch heads (``prediction.p_us_head`` and
    ``p_mg_head``) at the card's own thresholds for them; None with one image or when the card
    (a :class:`dlum.card.Card`) has no threshold for a head."""
    p_us, p_mg = prediction.p_us_head, prediction.p_mg_head
    if p_us is None or p_mg is None or card is None:
        return None
    t_us, t_mg = card.threshold_for("p_us_head"), card.threshold_for("p_mg_head")
    if t_us is None or t_mg is None:
        return None
    return bool(branches_disagree(p_us, p_mg, t_us, t_mg))


# ---------------------------------------------------------------------------- predictions table
def has_branches(frame: pd.DataFrame) -> bool:
    """True when the table has DL-UM's fused output and both branch heads."""
    return all(c in frame.columns for c in (FUSED_COLUMN, *BRANCH_COLUMNS))


def _value(thresholds: Mapping, column: str) -> float:
    """A column's threshold as a number (a plain float or a :class:`dlum.predictions.Threshold`)."""
    if column not in thresholds:
        raise CohortError([f"no operating threshold for '{column}' (have: "
                           f"{', '.join(map(str, thresholds)) or 'none'})"])
    value = thresholds[column]
    return float(getattr(value, "value", value))


def _subset(frame: pd.DataFrame, subgroup: str) -> pd.DataFrame:
    if not has_branches(frame):
        missing = [c for c in (FUSED_COLUMN, *BRANCH_COLUMNS) if c not in frame.columns]
        raise CohortError([f"branch disagreement needs DL-UM's columns {', '.join(missing)}"])
    if subgroup == ALL:
        return frame
    return frame[frame["subgroup"].astype(str).str.lower() == str(subgroup).lower()]


def branch_agreement(frame: pd.DataFrame, thresholds: Mapping) -> pd.Series:
    """:data:`AGREE` or :data:`DISAGREE` per row, each branch at its own threshold
    (``thresholds``: column → value or Threshold, as from ``dlum.predictions.thresholds_for``)."""
    us, mg = BRANCH_COLUMNS
    flags = branches_disagree(frame[us].to_numpy(dtype=float), frame[mg].to_numpy(dtype=float),
                              _value(thresholds, us), _value(thresholds, mg))
    return pd.Series(np.where(flags, DISAGREE, AGREE), index=frame.index, name="branches")


def disagreement_table(frame: pd.DataFrame, thresholds: Mapping, subgroup: str = ALL) -> pd.DataFrame:
    """DL-UM in cases whose branches agree vs disagree, within a BI-RADS subgroup.

    One row per group (:data:`AGREE`, :data:`DISAGREE`): ``n, n_malignant, n_benign``, DL-UM's
    AUC with DeLong 95% CI, and sensitivity / specificity (Wilson 95% CIs) at DL-UM's threshold,
    from ``dlum.stats.subgroup_summary``. A group with one class (or none) gets NaN and a note in
    ``note``, never an exception.
    """
    from dlum.stats import collect_notes, subgroup_summary

    part = _subset(frame, subgroup)
    work = part.assign(branches=branch_agreement(part, thresholds))
    with collect_notes([]):
        table = subgroup_summary(work, {"DL-UM": FUSED_COLUMN},
                                 thresholds={FUSED_COLUMN: _value(thresholds, FUSED_COLUMN)},
                                 subgroup="branches", subgroups=[AGREE, DISAGREE])
    keep = ["n", "n_malignant", "n_benign", "threshold", "auc", "auc_ci_low", "auc_ci_high",
            "sensitivity", "sensitivity_ci_low", "sensitivity_ci_high", "specificity",
            "specificity_ci_low", "specificity_ci_high", "tp", "fp", "tn", "fn", "note"]
    out = table[["subgroup", *keep]].rename(columns={"subgroup": "branches"})
    out.insert(1, "birads_subgroup", subgroup)
    return out.reset_index(drop=True)


def disagreement_crosstab(frame: pd.DataFrame, thresholds: Mapping, subgroup: str = ALL
                          ) -> pd.DataFrame:
    """Branch agreement against the BI-RADS subgroup: one row per (branches, BI-RADS subgroup)
    with the cases and malignant cases, every combination listed (zero counts included)."""
    part = _subset(frame, subgroup)
    birads = (part["subgroup"].astype(str).str.lower() if "subgroup" in part.columns
              else pd.Series(UNDETERMINED, index=part.index))
    work = pd.DataFrame({"branches": branch_agreement(part, thresholds), "birads": birads,
                         "malignant": part["label"].to_numpy() == 1})
    levels = [g for g in (CONCORDANT, DISCORDANT, UNDETERMINED)
              if g != UNDETERMINED or (work["birads"] == UNDETERMINED).any()]
    if subgroup != ALL:
        levels = [subgroup]
    grid = pd.MultiIndex.from_product([[AGREE, DISAGREE], levels], names=["branches", "birads"])
    counts = (work.groupby(["branches", "birads"])["malignant"].agg(n="size", n_malignant="sum")
              .reindex(grid, fill_value=0))
    return counts.astype(int).reset_index()


# ------------------------------------------------------------------------------------- display
def disagreement_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`disagreement_table` as text: cases, AUC [95% CI] (or n/a with the reason),
    sensitivity and specificity [95% CI]."""
    return pd.DataFrame({
        "DL-UM branches": table["branches"],
        "Cases (malignant / benign)": [f"{n} ({m} / {b})" for n, m, b in
                                       zip(table["n"], table["n_malignant"], table["n_benign"])],
        "AUC [95% CI]": [format_ci(a, lo, hi) if np.isfinite(a) else f"n/a ({note or 'no cases'})"
                         for a, lo, hi, note in zip(table["auc"], table["auc_ci_low"],
                                                    table["auc_ci_high"], table["note"])],
        "Sensitivity [95% CI]": [format_pct_ci(e, lo, hi) for e, lo, hi in
                                 zip(table["sensitivity"], table["sensitivity_ci_low"],
                                     table["sensitivity_ci_high"])],
        "Specificity [95% CI]": [format_pct_ci(e, lo, hi) for e, lo, hi in
                                 zip(table["specificity"], table["specificity_ci_low"],
                                     table["specificity_ci_high"])],
    })


def crosstab_display(crosstab: pd.DataFrame) -> pd.DataFrame:
    """:func:`disagreement_crosstab` as a two-way table of 'n (m malignant)', with totals."""
    def cell(part: pd.DataFrame) -> str:
        return f"{int(part['n'].sum())} ({int(part['n_malignant'].sum())} malignant)"

    levels = list(dict.fromkeys(crosstab["birads"]))
    rows = []
    for branches in (AGREE, DISAGREE, "total"):
        part = crosstab if branches == "total" else crosstab[crosstab["branches"] == branches]
        row = {"DL-UM branches": branches}
        row.update({f"BI-RADS {g}": cell(part[part["birads"] == g]) for g in levels})
        row["All"] = cell(part)
        rows.append(row)
    return pd.DataFrame(rows)
