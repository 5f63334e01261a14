"""Per-subgroup summaries (all / concordant / discordant) of models and readers, as one tidy table.

Xu et al. (Breast Cancer Research 2025, DL-UM) report every figure for all cases, for lesions whose US
and MG BI-RADS agree (concordant) and for those where one modality says 4-5 and the other 2-3
(discordant). ``subgroup_summary`` gives one row per (rater, subgroup) with AUC (DeLong CI),
sensitivity, specificity, PPV, NPV, accuracy (CIs) and the biopsy figures; ``subgroup_comparisons``
gives the paired tests between two raters per subgroup (DeLong, McNemar, chi-square).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from dlum.constants import ALL, DEFAULT_THRESHOLD, SUBGROUPS
from dlum.errors import CohortError, InputError
from dlum.stats._validate import DegenerateDataWarning, as_labels, warn
from dlum.stats.decisions import binary_metrics, biopsy_metrics, chi2_test, mcnemar_test
from dlum.stats.roc import delong_test, roc_auc_ci

__all__ = ["subgroup_summary", "subgroup_comparisons", "SUMMARY_COLUMNS", "COMPARISON_COLUMNS"]

_PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv", "accuracy")
_BIOPSY_RATES = ("unnecessary_rate", "missed_rate", "biopsy_rate")

#: Columns of :func:`subgroup_summary`, in order.
SUMMARY_COLUMNS = (
    ["rater", "subgroup", "n", "n_malignant", "n_benign", "threshold",
     "auc", "auc_se", "auc_ci_low", "auc_ci_high", "tp", "fp", "tn", "fn"]
    + [f"{p}{s}" for p in _PROPORTIONS for s in ("", "_ci_low", "_ci_high")]
    + ["recommended_biopsies", "unnecessary_biopsies", "missed_malignancies"]
    + [f"{p}{s}" for p in _BIOPSY_RATES for s in ("", "_ci_low", "_ci_high")]
    + ["note"]
)

#: Columns of :func:`subgroup_comparisons`, in order.
COMPARISON_COLUMNS = [
    "rater_a", "rater_b", "subgroup", "n", "auc_a", "auc_b", "auc_diff", "auc_diff_ci_low",
    "auc_diff_ci_high", "delong_z", "delong_p", "sensitivity_a", "sensitivity_b", "mcnemar_sensitivity_p",
    "chi2_sensitivity_p", "specificity_a", "specificity_b", "mcnemar_specificity_p", "chi2_specificity_p",
    "note",
]


def _rater_map(raters) -> dict[str, str]:
    if isinstance(raters, str):
        return {raters: raters}
    if isinstance(raters, Mapping):
        return {str(k): str(v) for k, v in raters.items()}
    return {str(r): str(r) for r in raters}


def _threshold_for(thresholds, name: str, column: str) -> float:
    if thresholds is None:
        return DEFAULT_THRESHOLD
    if isinstance(thresholds, Mapping):
        for key in (name, column):
            if key in thresholds:
                return float(thresholds[key])
        return DEFAULT_THRESHOLD
    return float(thresholds)


def _has_threshold(thresholds, name: str) -> bool:
    if thresholds is None:
        return False
    return name in thresholds if isinstance(thresholds, Mapping) else True


def _check_frame(frame, columns: list[str], label: str, subgroup: str | None, subgroups,
                 thresholds=None) -> np.ndarray:
    """All problems with the table at once (CohortError); returns the labels as 0/1."""
    if not isinstance(frame, pd.DataFrame):
        raise CohortError([f"expected a pandas DataFrame, got {type(frame).__name__}"])
    problems = []
    if subgroup is None and set(subgroups) - {ALL}:
        problems.append(f"subgroups {list(subgroups)} requested but no subgroup column given (subgroup=None)")
    needed = [label] + columns + ([subgroup] if subgroup is not None and set(subgroups) - {ALL} else [])
    missing = [c for c in dict.fromkeys(needed) if c not in frame.columns]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)} (have: {', '.join(map(str, frame.columns))})")
    y = None
    if label in frame.columns:
        try:
            y = as_labels(frame[label], name=f"column '{label}'")
        except InputError as exc:
            problems.append(str(exc))
    for col in dict.fromkeys(columns):
        if col not in frame.columns:
            continue
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            rows = ", ".join(map(str, frame.index[bad][:10]))
            more = f" and {int(bad.sum()) - 10} more" if bad.sum() > 10 else ""
            problems.append(f"column '{col}' has missing or non-numeric values at rows {rows}{more}")
        elif not _has_threshold(thresholds, col) and ((values < 0) | (values > 1)).any():
            problems.append(f"column '{col}' is not a probability (values outside [0, 1]) and has no threshold; "
                            f"give one, e.g. thresholds={{'{col}': 4}} for BI-RADS")
    if problems:
        raise CohortError(problems)
    return y


def _subgroup_masks(frame, subgroup: str | None, subgroups) -> dict[str, np.ndarray]:
    masks = {}
    for g in subgroups:
        if g == ALL:
            masks[g] = np.ones(len(frame), dtype=bool)
        else:
            masks[g] = (frame[subgroup].astype(str).str.strip().str.lower() == str(g).lower()).to_numpy()
    return masks


def _capture(fn, *args, **kwargs):
    """Run ``fn`` collecting DegenerateDataWarnings (re-emitted by the caller with context)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateDataWarning)
        result = fn(*args, **kwargs)
    notes = [str(w.message) for w in caught if issubclass(w.category, DegenerateDataWarning)]
    for w in caught:  # anything else passes through unchanged
        if not issubclass(w.category, DegenerateDataWarning):
            warnings.warn(w.message, w.category, stacklevel=3)
    return result, notes


def subgroup_summary(
    frame: pd.DataFrame,
    raters: str | Sequence[str] | Mapping[str, str],
    *,
    label: str = "label",
    subgroup: str | None = "subgroup",
    thresholds: float | Mapping[str, float] | None = None,
    subgroups: Sequence[str] = SUBGROUPS,
    auc_from: str = "scores",
    ci: str = "wilson",
    level: float = 0.95,
) -> pd.DataFrame:
    """One tidy table of diagnostic and biopsy figures per rater (model or reader) and subgroup.

    Args:
        frame: one row per lesion with the pathology ``label`` (0/1 or benign/malignant), a
            ``subgroup`` column (concordant / discordant / ...) and one column per rater.
        raters: column name(s), or a mapping display name -> column.
        thresholds: called malignant when ``value >= threshold``: one number, or a mapping by rater
            name or column (default ``DEFAULT_THRESHOLD`` = 0.5; give 4 for BI-RADS columns, 0.5 for 0/1
            reader calls).
        subgroups: which rows to produce, in order ("all" needs no subgroup column).
        auc_from: "scores" (DeLong AUC of the column itself) or "decisions" (AUC of the 0/1 calls,
            i.e. (sensitivity + specificity) / 2, as the paper's Table 2 does for readers).
        ci: interval method for the proportions (see ``proportion_ci``).
        level: confidence level.

    Returns:
        DataFrame with :data:`SUMMARY_COLUMNS`. A subgroup with one class gets AUC NaN and a
        :class:`DegenerateDataWarning`; an empty subgroup gets a row with ``n = 0`` and NaNs. The
        ``note`` column says why a figure is missing.

    Raises:
        CohortError: missing columns, bad labels or missing scores (every problem listed).
    """
    if auc_from not in ("scores", "decisions"):
        raise InputError(f"auc_from must be 'scores' or 'decisions', got {auc_from!r}")
    rmap = _rater_map(raters)
    by_column = None if thresholds is None else (
        {col: _threshold_for(thresholds, name, col) for name, col in rmap.items()
         if not isinstance(thresholds, Mapping) or name in thresholds or col in thresholds})
    y_all = _check_frame(frame, list(rmap.values()), label, subgroup, subgroups, by_column)
    masks = _subgroup_masks(frame, subgroup, subgroups)
    rows = []
    for name, col in rmap.items():
        values = pd.to_numeric(frame[col]).to_numpy(dtype=float)
        thr = _threshold_for(thresholds, name, col)
        calls = (values >= thr).astype(np.int8)
        for g, mask in masks.items():
            y, v, c = y_all[mask], values[mask], calls[mask]
            row = {"rater": name, "subgroup": g, "n": int(mask.sum()), "threshold": thr}
            notes = []
            if row["n"] == 0:
                notes.append("empty subgroup")
                warn(f"subgroup_summary: subgroup '{g}' has no cases (rater '{name}'); its row is NaN")
            bm = binary_metrics(y, c, ci=ci, level=level)
            bio = biopsy_metrics(y, c, ci=ci, level=level)
            row.update(n_malignant=bio.n_malignant, n_benign=bio.n_benign,
                       tp=bm.tp, fp=bm.fp, tn=bm.tn, fn=bm.fn)
            if row["n"] and (bio.n_malignant == 0 or bio.n_benign == 0):
                notes.append("one class only: AUC undefined")
                warn(f"subgroup_summary: rater '{name}', subgroup '{g}' has only "
                     f"{'malignant' if bio.n_benign == 0 else 'benign'} cases; AUC is NaN")
                auc = None
            elif row["n"]:
                auc, more = _capture(roc_auc_ci, y, c if auc_from == "decisions" else v, level)
                notes += more
                for note in more:
                    warn(f"subgroup_summary: rater '{name}', subgroup '{g}': {note}")
            else:
                auc = None
            row.update(auc=auc.auc if auc else math.nan, auc_se=auc.se if auc else math.nan,
                       auc_ci_low=auc.ci_low if auc else math.nan,
                       auc_ci_high=auc.ci_high if auc else math.nan)
            for p in _PROPORTIONS:
                prop = getattr(bm, p)
                row.update({p: prop.estimate, f"{p}_ci_low": prop.ci_low, f"{p}_ci_high": prop.ci_high})
            row.update(recommended_biopsies=bio.recommended_biopsies,
                       unnecessary_biopsies=bio.unnecessary_biopsies,
                       missed_malignancies=bio.missed_malignancies)
            for p in _BIOPSY_RATES:
                prop = getattr(bio, p)
                row.update({p: prop.estimate, f"{p}_ci_low": prop.ci_low, f"{p}_ci_high": prop.ci_high})
            row["note"] = "; ".join(notes)
            rows.append(row)
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def subgroup_comparisons(
    frame: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    label: str = "label",
    subgroup: str | None = "subgroup",
    thresholds: float | Mapping[str, float] | None = None,
    subgroups: Sequence[str] = SUBGROUPS,
    level: float = 0.95,
) -> pd.DataFrame:
    """Paired comparisons of two raters per subgroup: DeLong test of the AUCs, McNemar (continuity
    corrected) and chi-square (Yates) p-values for sensitivity and specificity at the thresholds.

    ``pairs`` lists (column_a, column_b). Returns :data:`COMPARISON_COLUMNS`; undefined tests are NaN
    with a note (one class, empty subgroup).
    """
    pairs = [(str(a), str(b)) for a, b in pairs]
    columns = [c for pair in pairs for c in pair]
    y_all = _check_frame(frame, columns, label, subgroup, subgroups, thresholds)
    masks = _subgroup_masks(frame, subgroup, subgroups)
    nan = math.nan
    rows = []
    for a, b in pairs:
        va = pd.to_numeric(frame[a]).to_numpy(dtype=float)
        vb = pd.to_numeric(frame[b]).to_numpy(dtype=float)
        ca = (va >= _threshold_for(thresholds, a, a)).astype(np.int8)
        cb = (vb >= _threshold_for(thresholds, b, b)).astype(np.int8)
        for g, mask in masks.items():
            y = y_all[mask]
            row = {"rater_a": a, "rater_b": b, "subgroup": g, "n": int(mask.sum())}
            notes = []
            (dt, n1) = _capture(delong_test, y, va[mask], vb[mask], level)
            (ms, n2) = _capture(mcnemar_test, y, ca[mask], cb[mask], "sensitivity")
            (mp, n3) = _capture(mcnemar_test, y, ca[mask], cb[mask], "specificity")
            notes += n1 + n2 + n3
            n_mal, n_ben = int((y == 1).sum()), int((y == 0).sum())
            xs_a, xs_b = int(((y == 1) & (ca[mask] == 1)).sum()), int(((y == 1) & (cb[mask] == 1)).sum())
            xp_a, xp_b = int(((y == 0) & (ca[mask] == 0)).sum()), int(((y == 0) & (cb[mask] == 0)).sum())
            (c_sens, n4) = _capture(chi2_test, xs_a, n_mal, xs_b, n_mal) if n_mal else (None, [])
            (c_spec, n5) = _capture(chi2_test, xp_a, n_ben, xp_b, n_ben) if n_ben else (None, [])
            notes += n4 + n5
            row.update(
                auc_a=dt.auc_a, auc_b=dt.auc_b, auc_diff=dt.diff, auc_diff_ci_low=dt.ci_low,
                auc_diff_ci_high=dt.ci_high, delong_z=dt.z, delong_p=dt.p_value,
                sensitivity_a=ms.prop_a, sensitivity_b=ms.prop_b, mcnemar_sensitivity_p=ms.p_value,
                chi2_sensitivity_p=c_sens.p_value if c_sens else nan,
                specificity_a=mp.prop_a, specificity_b=mp.prop_b, mcnemar_specificity_p=mp.p_value,
                chi2_specificity_p=c_spec.p_value if c_spec else nan,
                note="; ".join(dict.fromkeys(notes)),
            )
            if notes:
                warn(f"subgroup_comparisons: {a} vs {b}, subgroup '{g}': {notes[0]}")
            rows.append(row)
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
