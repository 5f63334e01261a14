"""From held-out predictions to a checkpoint's reported results (card metrics, README table).

The operating threshold is chosen on the VALIDATION split (never on the test split): the highest
threshold that still catches ``MIN_SENSITIVITY`` of the cancers, since a missed malignancy costs
more than an unnecessary biopsy. Test-split metrics follow the paper's evaluation (Xu et al. 2025):
AUC with DeLong 95% CI per subgroup, sensitivity and specificity with Wilson CIs, DeLong tests of
DL-UM against DL-U and DL-M.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlum.constants import ALL, SUBGROUPS, TEST, VALIDATION
from dlum.stats import binary_metrics, delong_test, roc_auc_ci, threshold_for_sensitivity

__all__ = [
    "MIN_SENSITIVITY",
    "MODEL_COLUMNS",
    "choose_threshold",
    "assemble_predictions",
    "test_metrics",
    "results_markdown",
    "update_readme",
    "precision_agreement",
    "format_p_value",
]

MIN_SENSITIVITY = 0.90
#: predictions.csv column → model name shown to users.
MODEL_COLUMNS = {"p_dlum": "DL-UM", "p_dlu": "DL-U", "p_dlm": "DL-M",
                 "p_us_head": "DL-UM US branch", "p_mg_head": "DL-UM MG branch"}
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def choose_threshold(y_true, scores, min_sensitivity: float = MIN_SENSITIVITY) -> float:
    """Highest threshold with sensitivity >= ``min_sensitivity`` (use validation data)."""
    return float(threshold_for_sensitivity(y_true, scores, min_sensitivity))


def assemble_predictions(dlum: pd.DataFrame, dlu: pd.DataFrame | None = None,
                         dlm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Join DL-UM's held-out predictions with DL-U's and DL-M's on ``case_id``."""
    out = dlum.copy()
    for frame, column in ((dlu, "p_dlu"), (dlm, "p_dlm")):
        if frame is not None:
            out = out.merge(frame[["case_id", column]], on="case_id", how="left", validate="1:1")
    return out


def _subsets(predictions: pd.DataFrame):
    for name in SUBGROUPS:
        rows = predictions if name == ALL else predictions[predictions["subgroup"] == name]
        yield name, rows


def test_metrics(predictions: pd.DataFrame, threshold: float | dict[str, float]) -> dict[str, Any]:
    """Metrics of every model column per subgroup (all / concordant / discordant).

    ``threshold`` is one value, or one per column (each model at its own operating point).
    """
    models = [c for c in MODEL_COLUMNS if c in predictions]
    thresholds = threshold if isinstance(threshold, dict) else {c: threshold for c in models}
    result: dict[str, Any] = {}
    for name, rows in _subsets(predictions):
        y = rows["label"].to_numpy().astype(int)
        entry: dict[str, Any] = {"n": int(len(rows)), "malignant": int(y.sum()),
                                 "benign": int(len(y) - y.sum())}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for column in models:
                if len(rows) == 0:
                    continue
                auc = roc_auc_ci(y, rows[column])
                calls = (rows[column].to_numpy() >= thresholds[column]).astype(int)
                bm = binary_metrics(y, calls)
                entry[column] = {
                    "auc": auc.auc, "auc_ci": [auc.ci_low, auc.ci_high],
                    "sensitivity": bm.sensitivity.estimate,
                    "sensitivity_ci": [bm.sensitivity.ci_low, bm.sensitivity.ci_high],
                    "specificity": bm.specificity.estimate,
                    "specificity_ci": [bm.specificity.ci_low, bm.specificity.ci_high],
                }
            for other in ("p_dlu", "p_dlm"):
                if other in rows and len(rows):
                    test = delong_test(y, rows["p_dlum"], rows[other])
                    entry[f"delong_p_dlum_vs_{other[2:]}"] = test.p_value
        result[name] = entry
    return result


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_p_value(p: float | None) -> str:
    """A p-value as the tables show it: "< 0.001", else three decimals; "n/a" when undefined."""
    if p is None or math.isnan(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def results_markdown(card: dict[str, Any]) -> str:
    """The README results table, from a checkpoint card's ``test_metrics``."""
    metrics = card["test_metrics"]
    op = card.get("operating_point", {})
    threshold = op.get("threshold", float("nan"))
    lines = [
        f"Test split of the pseudo-paired public cohort, checkpoint `{card.get('name', '')}`; "
        f"each model at its own threshold chosen on the validation split (highest with "
        f"sensitivity ≥ {op.get('min_sensitivity', MIN_SENSITIVITY):.2f}; DL-UM: {threshold:.3f}).",
        "",
        "| subgroup (n: malignant/benign) | model | AUC [95% CI] | sensitivity | specificity "
        "| DeLong p vs DL-UM |",
        "|---|---|---|---|---|---|",
    ]
    for subgroup in SUBGROUPS:
        entry = metrics.get(subgroup, {})
        label = f"{subgroup} ({entry.get('malignant', 0)}/{entry.get('benign', 0)})"
        for column in ("p_dlum", "p_dlu", "p_dlm", "p_us_head", "p_mg_head"):
            m = entry.get(column)
            if m is None:
                continue
            lo, hi = m["auc_ci"]
            p = "" if column == "p_dlum" or column.endswith("_head") else format_p_value(
                entry.get(f"delong_p_dlum_vs_{column[2:]}"))
            sens, spec = _fmt(m["sensitivity"]), _fmt(m["specificity"])
            lines.append(
                f"| {label} | {MODEL_COLUMNS[column]} | {_fmt(m['auc'])} [{_fmt(lo)}, {_fmt(hi)}] "
                f"| {sens} | {spec} | {p} |"
            )
            label = ""
    return "\n".join(lines)


def update_readme(readme: str | Path, markdown: str) -> bool:
    """Replace the text between the results markers of ``readme``; True when it changed."""
    path = Path(readme)
    text = path.read_text()
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no {README_START} … {README_END} markers")
    new = pattern.sub(lambda _: f"{README_START}\n{markdown}\n{README_END}", text)
    if new != text:
        path.write_text(new)
    return new != text


def finalise_card(card: dict[str, Any], held_out: pd.DataFrame,
                  min_sensitivity: float = MIN_SENSITIVITY) -> tuple[dict[str, Any], pd.DataFrame]:
    """Add the validation-chosen operating point and test metrics to a DL-UM card.

    ``held_out`` holds validation and test rows with ``p_dlum`` (and ``p_dlu``/``p_dlm`` when
    available). Returns the card and the test-split ``predictions.csv`` frame.
    """
    val = held_out[held_out["split"] == VALIDATION]
    test = held_out[held_out["split"] == TEST].reset_index(drop=True)
    thresholds = {c: choose_threshold(val["label"], val[c], min_sensitivity)
                  for c in MODEL_COLUMNS if c in held_out}
    threshold = thresholds["p_dlum"]
    metrics = test_metrics(test, thresholds)
    val_calls = (val["p_dlum"].to_numpy() >= threshold).astype(int)
    val_bm = binary_metrics(val["label"].to_numpy().astype(int), val_calls)
    card = dict(card)
    card["operating_point"] = {
        "threshold": threshold,
        "chosen_on": VALIDATION,
        "rule": f"highest threshold with validation sensitivity >= {min_sensitivity:.2f}",
        "min_sensitivity": min_sensitivity,
        "validation_sensitivity": val_bm.sensitivity.estimate,
        "validation_specificity": val_bm.specificity.estimate,
        "sensitivity": metrics[ALL]["p_dlum"]["sensitivity"],
        "specificity": metrics[ALL]["p_dlum"]["specificity"],
        "sensitivity_ci": metrics[ALL]["p_dlum"]["sensitivity_ci"],
        "specificity_ci": metrics[ALL]["p_dlum"]["specificity_ci"],
        "measured_on": TEST,
        "thresholds_per_model": thresholds,
    }
    card["test_metrics"] = metrics
    return card, test


def precision_agreement(reference: pd.DataFrame, other: pd.DataFrame, threshold: float,
                        column: str = "p_dlum") -> dict[str, Any]:
    """How far ``other``'s predictions (e.g. bf16) stray from ``reference``'s (fp32) on the same cases.

    Both are ``predictions.csv`` frames (``case_id``, ``label``, ``column``); they are joined on
    ``case_id`` and must hold the same cases. Returns the number of cases, the largest and median
    absolute difference in P(malignant), both AUCs with DeLong's paired test of their difference,
    how many decisions differ at ``threshold`` (biopsy when P >= threshold), and how close to the
    threshold the reference put those cases (``flipped_max_distance``).

    Raises InputError when the case sets differ or a column is missing.
    """
    from dlum.errors import InputError

    for name, frame in (("reference", reference), ("other", other)):
        missing = [c for c in ("case_id", "label", column) if c not in frame.columns]
        if missing:
            raise InputError(f"precision_agreement: {name} predictions lack {', '.join(missing)}")
    ref = reference[["case_id", "label", column]].astype({"case_id": str})
    new = other[["case_id", column]].astype({"case_id": str})
    if set(ref["case_id"]) != set(new["case_id"]) or len(ref) != len(new):
        raise InputError("precision_agreement: the two prediction sets are not of the same cases")
    both = ref.merge(new, on="case_id", suffixes=("_ref", "_new"), validate="1:1")
    a, b = both[f"{column}_ref"].to_numpy(float), both[f"{column}_new"].to_numpy(float)
    diff = np.abs(a - b)
    flipped = (a >= threshold) != (b >= threshold)
    test = delong_test(both["label"].astype(int), a, b)
    return {
        "n": int(len(both)),
        "column": column,
        "max_abs_diff": float(diff.max()),
        "median_abs_diff": float(np.median(diff)),
        "auc_reference": test.auc_a,
        "auc_other": test.auc_b,
        "delong_p": test.p_value,
        "threshold": float(threshold),
        "decisions_differ": int(flipped.sum()),
        "flipped_max_distance": float(np.abs(a[flipped] - threshold).max()) if flipped.any() else 0.0,
    }


def _nan_to_none(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
