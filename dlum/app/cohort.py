"""Cohort ROC analysis behind the dashboard's "Cohort ROC" page.

A predictions table (one row per lesion, written by ``python -m dlum evaluate`` as the checkpoint's
``predictions.csv``) is read and validated here, then every figure of the page is computed by
``dlum.stats``: ROC curves and AUCs with DeLong CIs, pairwise DeLong tests, sensitivity /
specificity / PPV / NPV with Wilson CIs at a threshold, biopsy figures (recommended, unnecessary,
missed) and calibration, for all cases and the concordant / discordant subgroups of Xu et al.
(Breast Cancer Research 2025, DL-UM). This module only selects rows and columns and formats; it
holds no statistics of its own.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.app._tables import (
    check_case_ids,
    count_pct_columns,
    parse_label_column,
    values_text,
    collect_notes,
    format_ci,
    format_pct_ci,
    read_text_table,
    source_name,
)
from dlum.constants import (
    ALL,
    CONCORDANT,
    DEFAULT_THRESHOLD,
    DISCORDANT,
    PAIRINGS,
    PSEUDO,
    SPLITS,
    SUBGROUPS,
    UNDETERMINED,
)
from dlum.errors import CohortError
from dlum.stats import (
    binary_metrics,
    calibration_table,
    roc_curve_points,
    subgroup_comparisons,
    subgroup_summary,
)

__all__ = [
    "PREDICTIONS_FILE",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "MODELS",
    "PSEUDO_PAIRING_NOTE",
    "read_predictions",
    "read_card_json",
    "checkpoint_predictions_path",
    "operating_threshold",
    "is_pseudo_paired",
    "models_in",
    "splits_in",
    "select_split",
    "subset",
    "subgroup_counts",
    "auc_table",
    "roc_curves",
    "legend_label",
    "delong_table",
    "operating_point_table",
    "confusion_matrix",
    "calibration_tables",
    "auc_display",
    "delong_display",
    "metrics_display",
    "biopsy_display",
    "paired_tests_display",
]

#: The predictions file inside a checkpoint folder.
PREDICTIONS_FILE = "predictions.csv"

#: Columns a predictions table must have, and those it may have.
REQUIRED_COLUMNS = ("case_id", "label", "subgroup", "p_dlum")
OPTIONAL_COLUMNS = ("p_us_head", "p_mg_head", "p_dlu", "p_dlm", "split", "patient_id", "pairing")

#: Display name -> probability column, in the order curves are drawn. DL-U and DL-M are the
#: single-modality models of the paper; the two heads are DL-UM's own block-5 branch outputs.
MODELS = {
    "DL-UM": "p_dlum",
    "DL-U": "p_dlu",
    "DL-M": "p_dlm",
    "DL-UM US branch": "p_us_head",
    "DL-UM MG branch": "p_mg_head",
}

#: Banner text for a pseudo-paired cohort (see ../shared/data README, "Pairing").
PSEUDO_PAIRING_NOTE = (
    "Pseudo-paired cohort: each case pairs an ultrasound lesion and a mammography lesion from "
    "**different women** with the same pathology, not same-patient pairs. These figures exercise "
    "the software; they are not the clinical performance of DL-UM."
)

_SUBGROUP_VALUES = (CONCORDANT, DISCORDANT, UNDETERMINED)


# --------------------------------------------------------------------------------------- reading
def read_predictions(source, *, name: str | None = None) -> pd.DataFrame:
    """Read and validate a predictions table (CSV path, bytes or upload buffer).

    Required columns: ``case_id, label, subgroup, p_dlum``; optional: ``p_us_head, p_mg_head,
    p_dlu, p_dlm, split, patient_id, pairing`` (others are kept, unchecked). ``label`` is
    benign/malignant or 0/1; ``subgroup`` concordant/discordant/undetermined (empty =
    undetermined); probabilities are numbers in [0, 1].

    Returns:
        The table with ``label`` as int 0/1, probabilities as float, ``subgroup`` lower case;
        the index holds the data-row numbers (1 = first row under the header).

    Raises:
        CohortError: every problem at once, each naming its rows.
    """
    label = name or source_name(source, "predictions table")
    table = read_text_table(source, label)
    problems: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        problems.append(
            f"missing required column(s) {', '.join(missing)}; a predictions table needs "
            f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)}); "
            f"found: {', '.join(table.columns) or 'no columns'}")
    if len(table) == 0:
        problems.append("the table has a header but no rows")
    out = table.copy()

    if "case_id" in table.columns:
        check_case_ids(table, problems)

    if "label" in table.columns:
        out["label"] = np.asarray(parse_label_column(table, problems), dtype=np.int64)

    if "subgroup" in table.columns:
        sub = table["subgroup"].str.lower().replace("", UNDETERMINED)
        bad = list(sub.index[~sub.isin(_SUBGROUP_VALUES)])
        if bad:
            problems.append(f"column 'subgroup' must be one of {', '.join(_SUBGROUP_VALUES)}; got "
                            + values_text(table["subgroup"], bad))
        out["subgroup"] = sub

    for column in MODELS.values():
        if column not in table.columns:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        not_number = list(values.index[values.isna()])
        if not_number:
            problems.append(f"column {column!r} needs a probability (a number in [0, 1]); missing or "
                            f"not a number at " + values_text(table[column], not_number))
        outside = list(values.index[(values < 0) | (values > 1)])
        if outside:
            problems.append(f"column {column!r} has probabilities outside [0, 1] at "
                            + values_text(table[column], outside))
        out[column] = values.astype(float)

    for column, allowed in (("split", SPLITS), ("pairing", PAIRINGS)):
        if column in table.columns:
            val = table[column].str.lower()
            bad = list(val.index[~val.isin(allowed) & (val != "")])
            if bad:
                problems.append(f"column {column!r} must be one of {', '.join(allowed)} (or empty); got "
                                + values_text(table[column], bad))
            out[column] = val

    if problems:
        raise CohortError(problems, label)
    out.attrs["source"] = label
    return out


# ------------------------------------------------------------------------------ checkpoint facts
def read_card_json(checkpoint_dir: str | os.PathLike | None) -> dict | None:
    """The checkpoint's ``card.json`` as a dict, or None when there is none or it is unreadable.

    Read as plain JSON here (``dlum.checkpoint.read_card`` would import torch, which this page
    does not otherwise need)."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / "card.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def checkpoint_predictions_path(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """``<checkpoint>/predictions.csv`` when it exists, else None."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / PREDICTIONS_FILE
    return path if path.is_file() else None


def operating_threshold(card: dict | None) -> float:
    """The card's operating threshold on P(malignant) (``operating_point.threshold``), else
    ``DEFAULT_THRESHOLD`` (0.5)."""
    try:
        value = float(((card or {}).get("operating_point") or {}).get("threshold"))
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLD
    return value if 0.0 <= value <= 1.0 else DEFAULT_THRESHOLD


def is_pseudo_paired(card: dict | None = None, frame: pd.DataFrame | None = None) -> bool:
    """True when the card's ``data.pairing`` is 'pseudo' or any row's ``pairing`` is 'pseudo'."""
    data = (card or {}).get("data") or {}
    if isinstance(data, dict) and str(data.get("pairing", "")).lower() == PSEUDO:
        return True
    if frame is not None and "pairing" in frame.columns:
        return bool((frame["pairing"].astype(str).str.lower() == PSEUDO).any())
    return False


# ------------------------------------------------------------------------------------ selection
def models_in(frame: pd.DataFrame) -> dict[str, str]:
    """The models of :data:`MODELS` whose probability column the table has."""
    return {name: col for name, col in MODELS.items() if col in frame.columns}


def splits_in(frame: pd.DataFrame) -> list[str]:
    """Splits present (in train / validation / test order); empty when there is no split column."""
    if "split" not in frame.columns:
        return []
    present = set(frame["split"].astype(str))
    return [s for s in SPLITS if s in present]


def select_split(frame: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """Rows of one split (None or a table without splits: all rows)."""
    if split is None or "split" not in frame.columns:
        return frame
    return frame[frame["split"] == split]


def subset(frame: pd.DataFrame, subgroup: str) -> pd.DataFrame:
    """Rows of a subgroup ('all' = every row, undetermined ones included)."""
    if subgroup == ALL:
        return frame
    return frame[frame["subgroup"] == subgroup]


def subgroup_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Cases, malignant and benign per subgroup (all / concordant / discordant)."""
    rows = []
    for g in SUBGROUPS:
        part = subset(frame, g)
        m = int((part["label"] == 1).sum())
        rows.append({"subgroup": g, "n": len(part), "n_malignant": m, "n_benign": len(part) - m})
    return pd.DataFrame(rows)


def _rater_map(models) -> dict[str, str]:
    return dict(models) if isinstance(models, dict) else {m: MODELS[m] for m in models}


# ------------------------------------------------------------------------------------- analyses
def auc_table(frame: pd.DataFrame, models, subgroups=SUBGROUPS, level: float = 0.95) -> pd.DataFrame:
    """AUC with DeLong SE and CI per model and subgroup (``dlum.stats.subgroup_summary``).

    A subgroup with one class gets NaN and a note (not an error)."""
    notes: list[str] = []
    with collect_notes(notes):
        table = subgroup_summary(frame, _rater_map(models), subgroups=list(subgroups), level=level)
    keep = ["rater", "subgroup", "n", "n_malignant", "n_benign", "auc", "auc_se", "auc_ci_low",
            "auc_ci_high", "note"]
    return table[keep].rename(columns={"rater": "model"})


def roc_curves(frame: pd.DataFrame, models, subgroup: str) -> dict[str, pd.DataFrame]:
    """ROC points per model for one subgroup (``dlum.stats.roc_curve_points``); a model whose
    subgroup has one class gets an empty table."""
    part = subset(frame, subgroup)
    curves = {}
    for name, col in _rater_map(models).items():
        with collect_notes([]):
            curves[name] = roc_curve_points(part["label"].to_numpy(), part[col].to_numpy())
    return curves


def legend_label(name: str, auc_row: pd.Series | dict | None) -> str:
    """'DL-UM: AUC 0.912 [0.861–0.963]', or 'DL-UM: AUC n/a (one class only: AUC undefined)'."""
    if auc_row is None or not np.isfinite(auc_row["auc"]):
        note = (auc_row["note"] if auc_row is not None else "") or "not computable"
        return f"{name}: AUC n/a ({note})"
    return f"{name}: AUC {format_ci(auc_row['auc'], auc_row['auc_ci_low'], auc_row['auc_ci_high'])}"


def delong_table(frame: pd.DataFrame, models, subgroup: str, threshold: float = DEFAULT_THRESHOLD,
                 level: float = 0.95) -> pd.DataFrame:
    """Every pair of models compared on the same cases (``dlum.stats.subgroup_comparisons``):
    DeLong's test of the AUCs, and McNemar / chi-square p-values for sensitivity and specificity at
    ``threshold``. Empty when fewer than two models."""
    rmap = _rater_map(models)
    if len(rmap) < 2:
        return pd.DataFrame()
    names = {col: name for name, col in rmap.items()}
    pairs = list(itertools.combinations(rmap.values(), 2))
    with collect_notes([]):
        table = subgroup_comparisons(frame, pairs, thresholds=threshold, subgroups=[subgroup], level=level)
    table["rater_a"] = table["rater_a"].map(names)
    table["rater_b"] = table["rater_b"].map(names)
    table.insert(3, "threshold", threshold)
    return table.rename(columns={"rater_a": "model_a", "rater_b": "model_b"})


def operating_point_table(frame: pd.DataFrame, models, subgroup: str, threshold: float,
                          ci: str = "wilson", level: float = 0.95) -> pd.DataFrame:
    """Sensitivity, specificity, PPV, NPV, accuracy (CIs) and biopsy figures at ``threshold`` (a
    case is called malignant, i.e. biopsy recommended, when ``p >= threshold``), per model, via
    ``dlum.stats.subgroup_summary``."""
    with collect_notes([]):
        table = subgroup_summary(frame, _rater_map(models), thresholds=threshold, subgroups=[subgroup],
                                 ci=ci, level=level)
    return table.rename(columns={"rater": "model"})


def confusion_matrix(frame: pd.DataFrame, model_column: str, subgroup: str, threshold: float
                     ) -> pd.DataFrame:
    """2x2 table of pathology (rows) against the call at ``threshold`` (columns), counts from
    ``dlum.stats.binary_metrics``."""
    part = subset(frame, subgroup)
    calls = (part[model_column].to_numpy() >= threshold).astype(np.int8)
    with collect_notes([]):
        bm = binary_metrics(part["label"].to_numpy(), calls)
    return pd.DataFrame(
        [[bm.tp, bm.fn], [bm.fp, bm.tn]],
        index=pd.Index(["Malignant", "Benign"], name="Pathology"),
        columns=pd.Index(["Called malignant", "Called benign"], name="Call at the threshold"),
    )


def calibration_tables(frame: pd.DataFrame, models, subgroup: str, bins: int = 10
                       ) -> dict[str, pd.DataFrame]:
    """Reliability table per model (``dlum.stats.calibration_table``)."""
    part = subset(frame, subgroup)
    out = {}
    for name, col in _rater_map(models).items():
        out[name] = calibration_table(part["label"].to_numpy(), part[col].to_numpy(), bins=bins)
    return out


# ------------------------------------------------------------------------------------- display
def _p(value) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def auc_display(table: pd.DataFrame) -> pd.DataFrame:
    """The AUC table as text, one row per model and one column per subgroup:
    'AUC [95% CI]' or 'n/a (<why>)'; the headers give the cases (malignant / benign)."""
    out = {"Model": list(dict.fromkeys(table["model"]))}
    for g in dict.fromkeys(table["subgroup"]):
        part = table[table["subgroup"] == g].set_index("model")
        first = part.iloc[0]
        header = f"{g}: {first['n']} cases ({first['n_malignant']} malignant / {first['n_benign']} benign)"
        out[header] = [format_ci(r["auc"], r["auc_ci_low"], r["auc_ci_high"]) if np.isfinite(r["auc"])
                       else f"n/a ({r['note'] or 'not computable'})" for _, r in part.loc[out["Model"]].iterrows()]
    return pd.DataFrame(out)


def delong_display(table: pd.DataFrame) -> pd.DataFrame:
    """DeLong tests as text: pair, both AUCs, difference [95% CI], z, p."""
    if table.empty:
        return table
    return pd.DataFrame({
        "Comparison": [f"{a} vs {b}" for a, b in zip(table["model_a"], table["model_b"])],
        "AUC A": [format_ci(v, None, None) for v in table["auc_a"]],
        "AUC B": [format_ci(v, None, None) for v in table["auc_b"]],
        "Difference [95% CI]": [format_ci(d, lo, hi) for d, lo, hi in
                                zip(table["auc_diff"], table["auc_diff_ci_low"], table["auc_diff_ci_high"])],
        "z": [f"{z:.2f}" if np.isfinite(z) else "n/a" for z in table["delong_z"]],
        "p (DeLong)": [_p(p) for p in table["delong_p"]],
        "Note": table["note"].fillna(""),
    })


def paired_tests_display(table: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity / specificity comparisons at the threshold: McNemar (paired) and chi-square."""
    if table.empty:
        return table
    pct = lambda v: f"{100 * v:.1f}%" if np.isfinite(v) else "n/a"  # noqa: E731
    return pd.DataFrame({
        "Comparison": [f"{a} vs {b}" for a, b in zip(table["model_a"], table["model_b"])],
        "Sensitivity A / B": [f"{pct(a)} / {pct(b)}" for a, b in
                              zip(table["sensitivity_a"], table["sensitivity_b"])],
        "p McNemar (sens.)": [_p(p) for p in table["mcnemar_sensitivity_p"]],
        "p chi-square (sens.)": [_p(p) for p in table["chi2_sensitivity_p"]],
        "Specificity A / B": [f"{pct(a)} / {pct(b)}" for a, b in
                              zip(table["specificity_a"], table["specificity_b"])],
        "p McNemar (spec.)": [_p(p) for p in table["mcnemar_specificity_p"]],
        "p chi-square (spec.)": [_p(p) for p in table["chi2_specificity_p"]],
    })


def metrics_display(table: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity, specificity, PPV, NPV, accuracy as 'x% [low–high]'."""
    out = {"Model": table["model"]}
    for col, title in (("sensitivity", "Sensitivity"), ("specificity", "Specificity"),
                       ("ppv", "PPV"), ("npv", "NPV"), ("accuracy", "Accuracy")):
        out[f"{title} [95% CI]"] = [format_pct_ci(e, lo, hi) for e, lo, hi in
                                    zip(table[col], table[f"{col}_ci_low"], table[f"{col}_ci_high"])]
    out["TP / FP / TN / FN"] = [f"{a} / {b} / {c} / {d}" for a, b, c, d in
                                zip(table["tp"], table["fp"], table["tn"], table["fn"])]
    return pd.DataFrame(out)


def biopsy_display(table: pd.DataFrame) -> pd.DataFrame:
    """Recommended biopsies (share of cases), unnecessary biopsies (share of recommended) and
    missed malignancies (share of malignant), counts with percentages and CIs."""
    return pd.DataFrame({"Model": table["model"], **count_pct_columns(table)})
