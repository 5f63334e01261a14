"""Whether a candidate checkpoint ships, judged on its validation rows only.

A candidate fit replaces the shipped checkpoint only when a rule written before it ran holds on
the validation split: DL-UM's validation AUC at least a set figure (the shipped fit's), and its
validation ECE (10 equal-count bins) at most 0.05, the bar for calling P(malignant) calibrated.
Test and external rows stay unread until the decision is made (``docs/training.md``): this
module drops them before computing anything, so what it prints cannot depend on them, and a test
checks that shuffling them changes nothing. ``python -m dlum report --held-out`` reads them
afterwards, for a candidate that ships.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dlum.errors import DLUMError
from dlum.formatting import format_number
from dlum.predictions import model_columns, model_name
from dlum.reporting import validation_rows
from dlum.stats import CALIBRATED_ECE, calibration_summary, roc_auc_ci

__all__ = ["Verdict", "validation_figures", "shipping_verdict", "verdict_text"]


@dataclass(frozen=True)
class Verdict:
    """The rule's outcome: each condition with its figure and whether it holds."""

    ships: bool
    pairs: int
    malignant: int
    figures: dict[str, dict[str, float]]  # column -> {"auc", "ece", "brier"}
    conditions: list[tuple[str, bool]]  # (what was required and found, holds)


def validation_figures(held_out: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """The validation rows and, per model column, AUC, ECE (10 equal-count bins) and Brier score.

    Raises:
        DLUMError: no ``split`` column, or no validation rows with both classes.
    """
    val = validation_rows(held_out, "to judge the candidate")
    figures = {}
    for column in model_columns(val).values():
        score = calibration_summary(val["label"], val[column])
        figures[column] = {"auc": roc_auc_ci(val["label"], val[column]).auc,
                           "ece": score.ece, "brier": score.brier}
    if "p_dlum" not in figures:
        raise DLUMError("the held-out predictions have no p_dlum column to judge")
    return val, figures


def shipping_verdict(held_out: pd.DataFrame, min_auc: float, max_ece: float = CALIBRATED_ECE
                     ) -> Verdict:
    """Judge DL-UM on the validation rows: AUC ≥ ``min_auc`` and ECE ≤ ``max_ece``."""
    val, figures = validation_figures(held_out)
    fused = figures["p_dlum"]
    conditions = [
        (f"validation DL-UM AUC {format_number(fused['auc'], 4)} ≥ {format_number(min_auc, 4)}",
         fused["auc"] >= min_auc),
        (f"validation DL-UM ECE {format_number(fused['ece'])} ≤ {max_ece:g}",
         fused["ece"] <= max_ece),
    ]
    return Verdict(all(ok for _, ok in conditions), len(val), int(val["label"].sum()), figures,
                   conditions)


def verdict_text(verdict: Verdict) -> str:
    """The verdict as a person reads it: validation figures, each condition, the decision."""
    lines = [f"Validation split: {verdict.pairs} pairs ({verdict.malignant} malignant); "
             "its test and external rows set aside unused.", "",
             "| model | AUC | ECE | Brier |", "|---|---|---|---|"]
    for column, f in verdict.figures.items():
        lines.append(f"| {model_name(column)} | {format_number(f['auc'])} | "
                     f"{format_number(f['ece'])} | {format_number(f['brier'])} |")
    lines.append("")
    lines += [f"- {what}: {'holds' if ok else 'FAILS'}" for what, ok in verdict.conditions]
    lines.append("")
    lines.append("Ships: read its test and external rows with python -m dlum report --held-out."
                 if verdict.ships else
                 "Does not ship: leave its test and external rows unread.")
    return "\n".join(lines)
