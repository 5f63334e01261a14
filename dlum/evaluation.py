"""Cohort evaluation of a predictions table: what the Cohort ROC page shows, computed here.

A predictions table (:mod:`dlum.predictions`; a checkpoint's ``predictions.csv`` or a user's own,
with any number of ``p_<model>`` columns) is analysed with ``dlum.stats``: ROC curves and AUCs
with DeLong CIs, pairwise DeLong tests, sensitivity / specificity / PPV / NPV with Wilson CIs at
**each model's own operating threshold**, biopsy figures (recommended, unnecessary, missed) and
calibration, for all cases and the concordant / discordant subgroups of Xu et al. (Breast Cancer
Research 2025, DL-UM). This module selects rows and columns, calls ``dlum.stats`` and formats.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import ALL, PSEUDO, SPLITS, SUBGROUPS
from dlum.formatting import (
    count_pct_columns,
    format_ci,
    format_number,
    format_p_value,
    format_pct_ci,
)
from dlum.predictions import PREDICTIONS_FILE, model_columns, read_predictions
from dlum.stats import (
    CALIBRATED_ECE,
    binary_metrics,
    calibration_summary,
    calibration_table,
    cluster_bootstrap_auc_ci,
    pair_clusters,
    collect_notes,
    roc_curve_points,
    subgroup_comparisons,
    subgroup_summary,
)

__all__ = [
    "PSEUDO_PAIRING_NOTE",
    "read_predictions",
    "checkpoint_predictions_path",
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
    "calibration_metrics",
    "calibration_display",
    "auc_display",
    "delong_display",
    "metrics_display",
    "biopsy_display",
    "paired_tests_display",
]

#: Banner text for a pseudo-paired cohort (see the public data README, "Pairing").
PSEUDO_PAIRING_NOTE = (
    "Pseudo-paired cohort: each case pairs an ultrasound lesion and a mammography lesion from "
    "**different women** with the same pathology, not same-patient pairs. These figures exercise "
    "the software; they are not the clinical performance of DL-UM."
)


def checkpoint_predictions_path(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """``<checkpoint>/predictions.csv`` when it exists, else None."""
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / PREDICTIONS_FILE
    return path if path.is_file() else None


def is_pseudo_paired(card=None, frame: pd.DataFrame | None = None) -> bool:
    """True when the card records pseudo-pairing or any row's ``pairing`` is 'pseudo'."""
    if card is not None and card.pseudo_paired:
        return True
    if frame is not None and "pairing" in frame.columns:
        return bool((frame["pairing"].astype(str).str.lower() == PSEUDO).any())
    return False


# ------------------------------------------------------------------------------------ selection
def models_in(frame: pd.DataFrame) -> dict[str, str]:
    """``{display name: column}`` of every model in the table (:func:`dlum.predictions.model_columns`)."""
    return model_columns(frame)


def splits_in(frame: pd.DataFrame) -> list[str]:
    """Splits present (train / validation / test / external order); empty without a split column."""
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
    return dict(models)


# ------------------------------------------------------------------------------------- analyses
def auc_table(frame: pd.DataFrame, models, subgroups=SUBGROUPS, level: float = 0.95,
              n_boot: int = 2000, cluster: bool = True) -> pd.DataFrame:
    """AUC with DeLong SE and CI per model and subgroup (``dlum.stats.subgroup_summary``), and,
    when ``cluster`` and the table has ``patient_id``, a cluster-bootstrap CI that resamples US
    patients and MG women (``dlum.stats.cluster_bootstrap_auc_ci``; pairs sharing a woman are not
    independent); NaN otherwise.

    A subgroup with one class gets NaN and a note (not an error)."""
    notes: list[str] = []
    with collect_notes(notes):
        table = subgroup_summary(frame, _rater_map(models), subgroups=list(subgroups), level=level)
    keep = ["rater", "subgroup", "n", "n_malignant", "n_benign", "auc", "auc_se", "auc_ci_low",
            "auc_ci_high", "note"]
    table = table[keep].rename(columns={"rater": "model"})
    low, high = np.full(len(table), np.nan), np.full(len(table), np.nan)
    if cluster and "patient_id" in frame.columns and (frame["patient_id"].astype(str) != "").all():
        rmap = _rater_map(models)
        for i, row in table.iterrows():
            part = subset(frame, row["subgroup"])
            if not np.isfinite(row["auc"]):
                continue
            with collect_notes([]):
                boot = cluster_bootstrap_auc_ci(part["label"].to_numpy(), part[rmap[row["model"]]],
                                                pair_clusters(part["patient_id"]), n_boot=n_boot,
                                                level=level, seed=0)
            low[i], high[i] = boot.ci_low, boot.ci_high
    table["auc_cluster_ci_low"], table["auc_cluster_ci_high"] = low, high
    return table


def calibration_metrics(frame: pd.DataFrame, models, subgroup: str, bins: int = 10) -> pd.DataFrame:
    """ECE (equal-count bins) and Brier score per model (``dlum.stats.calibration_summary``)."""
    part = subset(frame, subgroup)
    rows = []
    for name, col in _rater_map(models).items():
        with collect_notes([]):
            c = calibration_summary(part["label"].to_numpy(), part[col].to_numpy(), bins=bins)
        rows.append({"model": name, "ece": c.ece, "brier": c.brier, "mean_predicted": c.mean_predicted,
                     "observed": c.observed, "calibrated": bool(c.ece <= CALIBRATED_ECE)
                     if np.isfinite(c.ece) else False})
    return pd.DataFrame(rows)


def calibration_display(table: pd.DataFrame) -> pd.DataFrame:
    """ECE and Brier score as text, with whether each model's P reads as a risk."""
    return pd.DataFrame({
        "Model": table["model"],
        "ECE (10 equal-count bins)": [format_number(v) for v in table["ece"]],
        "Brier score": [format_number(v) for v in table["brier"]],
        "Mean P / observed rate": [f"{format_number(a)} / {format_number(b)}"
                                   for a, b in zip(table["mean_predicted"], table["observed"])],
        "Calibrated (ECE ≤ 0.05)": ["yes" if c else "no" for c in table["calibrated"]],
    })


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


def delong_table(frame: pd.DataFrame, models, subgroup: str, thresholds: dict[str, float],
                 level: float = 0.95) -> pd.DataFrame:
    """Every pair of models compared on the same cases (``dlum.stats.subgroup_comparisons``):
    DeLong's test of the AUCs, and McNemar / chi-square p-values for sensitivity and specificity,
    each model called at its own threshold (``thresholds``: column → value). Empty when fewer
    than two models."""
    rmap = _rater_map(models)
    if len(rmap) < 2:
        return pd.DataFrame()
    names = {col: name for name, col in rmap.items()}
    pairs = list(itertools.combinations(rmap.values(), 2))
    with collect_notes([]):
        table = subgroup_comparisons(frame, pairs, thresholds=thresholds, subgroups=[subgroup],
                                     level=level)
    table.insert(3, "threshold_a", table["rater_a"].map(thresholds))
    table.insert(4, "threshold_b", table["rater_b"].map(thresholds))
    table["rater_a"] = table["rater_a"].map(names)
    table["rater_b"] = table["rater_b"].map(names)
    return table.rename(columns={"rater_a": "model_a", "rater_b": "model_b"})


def operating_point_table(frame: pd.DataFrame, models, subgroup: str, thresholds: dict[str, float],
                          ci: str = "wilson", level: float = 0.95) -> pd.DataFrame:
    """Sensitivity, specificity, PPV, NPV, accuracy (CIs) and biopsy figures per model, each at its
    own threshold (``thresholds``: column → value; a case is called malignant, i.e. biopsy
    recommended, when ``p >= threshold``), via ``dlum.stats.subgroup_summary``."""
    rmap = _rater_map(models)
    with collect_notes([]):
        table = subgroup_summary(frame, rmap, thresholds=thresholds, subgroups=[subgroup],
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
def _auc_cell(r) -> str:
    if not np.isfinite(r["auc"]):
        return f"n/a ({r['note'] or 'not computable'})"
    text = format_ci(r["auc"], r["auc_ci_low"], r["auc_ci_high"])
    if np.isfinite(r.get("auc_cluster_ci_low", np.nan)):
        text += f" · clusters [{r['auc_cluster_ci_low']:.3f}–{r['auc_cluster_ci_high']:.3f}]"
    return text


def auc_display(table: pd.DataFrame) -> pd.DataFrame:
    """The AUC table as text, one row per model and one column per subgroup:
    'AUC [95% CI]' or 'n/a (<why>)'; the headers give the cases (malignant / benign)."""
    out = {"Model": list(dict.fromkeys(table["model"]))}
    for g in dict.fromkeys(table["subgroup"]):
        part = table[table["subgroup"] == g].set_index("model")
        first = part.iloc[0]
        header = f"{g}: {first['n']} cases ({first['n_malignant']} malignant / {first['n_benign']} benign)"
        out[header] = [_auc_cell(r) for _, r in part.loc[out["Model"]].iterrows()]
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
        "p (DeLong)": [format_p_value(p) for p in table["delong_p"]],
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
        "p McNemar (sens.)": [format_p_value(p) for p in table["mcnemar_sensitivity_p"]],
        "p chi-square (sens.)": [format_p_value(p) for p in table["chi2_sensitivity_p"]],
        "Specificity A / B": [f"{pct(a)} / {pct(b)}" for a, b in
                              zip(table["specificity_a"], table["specificity_b"])],
        "p McNemar (spec.)": [format_p_value(p) for p in table["mcnemar_specificity_p"]],
        "p chi-square (spec.)": [format_p_value(p) for p in table["chi2_specificity_p"]],
    })


def metrics_display(table: pd.DataFrame) -> pd.DataFrame:
    """Sensitivity, specificity, PPV, NPV, accuracy as 'x% [low–high]'."""
    out = {"Model": table["model"], "Threshold": [f"{t:.3f}" for t in table["threshold"]]}
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
