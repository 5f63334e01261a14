"""Decision curves: the net benefit of biopsying by a model across threshold probabilities.

Vickers AJ, Elkin EB. "Decision curve analysis: a novel method for evaluating prediction models."
Med Decis Making 26 (2006) 565-574. At a threshold probability ``pt`` (the risk of malignancy at
which a woman and her doctor would choose biopsy) a lesion is biopsied when ``P >= pt`` (as
everywhere in dlum) and

    net benefit = TP/n − FP/n · pt / (1 − pt)

counts true positives less false positives weighted by the odds of ``pt``. *Treat all* (biopsy
every lesion) has ``prevalence − (1 − prevalence) · pt / (1 − pt)``; *treat none* has 0. The net
biopsies avoided per 100 women (Vickers AJ et al., "Net benefit approaches to the evaluation of
prediction models, molecular markers, and diagnostic tests", BMJ 352 (2016) i6; dcurves'
``net_intervention_avoided`` with ``nper = 100``) is ``(NB_model − NB_all) / (pt / (1 − pt)) · 100``:
fewer biopsies than biopsying everyone, at no loss of cancers found.

BI-RADS 3 means a likelihood of malignancy of at most 2% (ACR BI-RADS Atlas, 5th ed., 2013) and
category 4 recommends biopsy above it: :data:`BIRADS_3_4_RISK` marks that boundary on the curves.

Written here (vectorised with numpy) rather than taken from ``dcurves``: dcurves loops over
thresholds in pandas and pulls in lifelines and statsmodels; it is the reference in the tests
(equal to 1e-12; it also counts ``P >= pt`` as biopsied).

>>> nb = net_benefit([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8], [0.3])
>>> nb[["net_benefit", "treat_all"]].round(3).values.tolist()  # 2/4 - 1/4 * 0.3/0.7; 1/2 - 1/2 * 0.3/0.7
[[0.393, 0.286]]
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dlum.constants import ALL
from dlum.errors import CohortError, InputError
from dlum.formatting import format_number
from dlum.stats._validate import as_labels, as_scores, same_length, warn

__all__ = [
    "BIRADS_3_4_RISK",
    "DECISION_THRESHOLDS",
    "NET_BENEFIT_COLUMNS",
    "net_benefit",
    "decision_curves",
    "net_benefit_at",
    "net_benefit_display",
]

#: The BI-RADS 3/4 boundary: category 3 is a risk of malignancy of at most 2%, 4 means biopsy.
BIRADS_3_4_RISK = 0.02

#: Threshold probabilities of the plotted curves: 0.005 to 0.990 in steps of 0.005 (2% included).
DECISION_THRESHOLDS = np.round(np.arange(1, 199) * 0.005, 3)

#: Columns of :func:`net_benefit`, in order.
NET_BENEFIT_COLUMNS = ["threshold", "net_benefit", "treat_all", "treat_none", "tp_rate", "fp_rate",
                       "biopsies_avoided_per_100"]


def _thresholds(values) -> np.ndarray:
    t = as_scores(np.atleast_1d(values), "thresholds")
    bad = ~np.isfinite(t) | (t <= 0.0) | (t >= 1.0)
    if bad.any():
        raise InputError(f"thresholds must be probabilities strictly between 0 and 1 "
                         f"(net benefit weighs false positives by pt / (1 − pt)); got "
                         f"{', '.join(map(str, t[bad][:5]))}")
    return t


def net_benefit(y_true, probabilities, thresholds) -> pd.DataFrame:
    """Net benefit of biopsying when ``P >= threshold``, of biopsying all and none, per threshold.

    Args:
        y_true: pathology, 1 = malignant (or "benign"/"malignant").
        probabilities: P(malignant), finite numbers in [0, 1].
        thresholds: threshold probabilities, each strictly between 0 and 1.

    Returns:
        DataFrame with :data:`NET_BENEFIT_COLUMNS`, one row per threshold in the order given:
        ``tp_rate`` = TP/n, ``fp_rate`` = FP/n (as dcurves), ``treat_none`` = 0 and
        ``biopsies_avoided_per_100`` = (NB − NB_all) / (pt / (1 − pt)) · 100.

    Raises:
        InputError: labels other than 0/1, missing or out-of-range probabilities, thresholds
            outside (0, 1), unequal lengths, no cases, or cases of one class only (the decision
            curve of a sample without cancers, or without benign lesions, says nothing).
    """
    y = as_labels(y_true)
    p = as_scores(probabilities, "probabilities")
    same_length(y_true=y, probabilities=p)
    bad = ~np.isfinite(p) | (p < 0.0) | (p > 1.0)
    if bad.any():
        raise InputError(f"probabilities must be finite numbers in [0, 1]; "
                         f"{int(bad.sum())} are not (e.g. {float(p[bad][0])})")
    t = _thresholds(thresholds)
    n = len(y)
    n_malignant = int(y.sum())
    if n == 0:
        raise InputError("net benefit needs cases; there are none")
    if n_malignant in (0, n):
        kind = "malignant" if n_malignant else "benign"
        raise InputError(f"net benefit needs malignant and benign cases; all {n} are {kind}")
    # counts of P >= t among malignant / benign cases, for every threshold at once
    malignant, benign = np.sort(p[y == 1]), np.sort(p[y == 0])
    tp = len(malignant) - np.searchsorted(malignant, t, side="left")
    fp = len(benign) - np.searchsorted(benign, t, side="left")
    odds = t / (1.0 - t)
    prevalence = n_malignant / n
    tp_rate, fp_rate = tp / n, fp / n
    nb = tp_rate - fp_rate * odds
    treat_all = prevalence - (1.0 - prevalence) * odds
    return pd.DataFrame({
        "threshold": t, "net_benefit": nb, "treat_all": treat_all, "treat_none": np.zeros_like(t),
        "tp_rate": tp_rate, "fp_rate": fp_rate,
        "biopsies_avoided_per_100": (nb - treat_all) / odds * 100.0,
    }, columns=NET_BENEFIT_COLUMNS)


# ---------------------------------------------------------------------- per model and subgroup
def _rows(frame: pd.DataFrame, subgroup: str, label: str, columns) -> pd.DataFrame:
    """The subgroup's rows ('all' = every row), with every needed column present."""
    missing = [c for c in [label, *columns, *([] if subgroup == ALL else ["subgroup"])]
               if c not in frame.columns]
    if missing:
        raise CohortError([f"missing column(s): {', '.join(missing)}"])
    if subgroup == ALL:
        return frame
    return frame[frame["subgroup"].astype(str).str.lower() == str(subgroup).lower()]


def _both_classes(y: np.ndarray, what: str) -> bool:
    m = int((np.asarray(y) == 1).sum())
    if len(y) == 0 or m in (0, len(y)):
        present = "no cases" if len(y) == 0 else f"only {'malignant' if m else 'benign'} cases"
        warn(f"{what}: {present}; no decision curve")
        return False
    return True


def decision_curves(frame: pd.DataFrame, models: Mapping[str, str], subgroup: str = ALL,
                    thresholds=DECISION_THRESHOLDS, label: str = "label") -> pd.DataFrame:
    """Decision curves of every model (``{display name: column}``) on one subgroup's rows.

    One row per model and threshold: ``model`` then :data:`NET_BENEFIT_COLUMNS` (treat-all and
    treat-none repeated per model). A subgroup with one class gives an empty table and a
    :class:`DegenerateDataWarning`, not an error.
    """
    part = _rows(frame, subgroup, label, models.values())
    y = part[label].to_numpy()
    if not _both_classes(y, f"decision curves, {subgroup} lesions"):
        return pd.DataFrame(columns=["model", *NET_BENEFIT_COLUMNS])
    tables = [net_benefit(y, part[column].to_numpy(dtype=float), thresholds).assign(model=name)
              for name, column in models.items()]
    out = pd.concat(tables, ignore_index=True)
    return out[["model", *NET_BENEFIT_COLUMNS]]


def net_benefit_at(frame: pd.DataFrame, models: Mapping[str, str], subgroup: str,
                   thresholds: Mapping[str, float], risk: float = BIRADS_3_4_RISK,
                   label: str = "label") -> pd.DataFrame:
    """Net benefit and net biopsies avoided per 100 women read off each model's curve at its own
    operating threshold (``thresholds``: column → value) and at ``risk`` (2%: BI-RADS 3/4).

    One row per model: ``model, n, n_malignant, threshold, net_benefit, treat_all,
    biopsies_avoided_per_100`` at the operating threshold, and ``net_benefit_at_risk,
    treat_all_at_risk, biopsies_avoided_per_100_at_risk`` at ``risk``. A subgroup with one class,
    or an operating threshold of 0 or 1 (no decision curve there), gives NaN figures and a
    :class:`DegenerateDataWarning`.
    """
    part = _rows(frame, subgroup, label, models.values())
    y = part[label].to_numpy()
    ok = _both_classes(y, f"net benefit, {subgroup} lesions")
    rows = []
    for name, column in models.items():
        row = {"model": name, "n": len(part), "n_malignant": int((y == 1).sum()),
               "threshold": float(thresholds[column]), "risk": float(risk)}
        own = fixed = dict.fromkeys(NET_BENEFIT_COLUMNS, np.nan)
        if ok:
            p = part[column].to_numpy(dtype=float)
            fixed = net_benefit(y, p, [risk]).iloc[0]
            if 0.0 < row["threshold"] < 1.0:
                own = net_benefit(y, p, [row["threshold"]]).iloc[0]
            else:
                warn(f"net benefit, {name}: its threshold {row['threshold']:g} is not strictly "
                     "between 0 and 1; no net benefit at it")
        row.update(net_benefit=own["net_benefit"], treat_all=own["treat_all"],
                   biopsies_avoided_per_100=own["biopsies_avoided_per_100"],
                   net_benefit_at_risk=fixed["net_benefit"], treat_all_at_risk=fixed["treat_all"],
                   biopsies_avoided_per_100_at_risk=fixed["biopsies_avoided_per_100"])
        rows.append(row)
    return pd.DataFrame(rows)


def net_benefit_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`net_benefit_at` as text: net benefit (model / treat all) and net biopsies avoided
    per 100 women, at each model's threshold and at the 2% (BI-RADS 3/4) risk."""
    pct = (f"{100 * table['risk'].iloc[0]:g}%" if len(table) else "2%")
    return pd.DataFrame({
        "Model": table["model"],
        "Threshold": [format_number(t) for t in table["threshold"]],
        "Net benefit at threshold (treat all)": [
            f"{format_number(a, 4)} ({format_number(b, 4)})"
            for a, b in zip(table["net_benefit"], table["treat_all"])],
        "Net biopsies avoided per 100 at threshold": [
            format_number(v, 1) for v in table["biopsies_avoided_per_100"]],
        f"Net benefit at {pct} (treat all)": [
            f"{format_number(a, 4)} ({format_number(b, 4)})"
            for a, b in zip(table["net_benefit_at_risk"], table["treat_all_at_risk"])],
        f"Net biopsies avoided per 100 at {pct}": [
            format_number(v, 1) for v in table["biopsies_avoided_per_100_at_risk"]],
    })
