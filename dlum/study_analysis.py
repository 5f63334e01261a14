"""Analysis of a study logged by the reading session (:mod:`dlum.study_store`).

Tables 2-4 come from :mod:`dlum.readers` unchanged (the store's joined table is the one the
Reader Study page analyses). Added here: a multi-reader multi-case comparison of unaided vs aided
reading (:func:`mrmc_summary`), Obuchowski-Rockette with Hillis df (:func:`dlum.stats.mrmc`),
readers and cases random, figure of merit = the empirical AUC of each reader's 0-100 confidence
of malignancy.
"""
from __future__ import annotations

import warnings

import pandas as pd

from dlum.constants import MG, US
from dlum.errors import InputError
from dlum.stats.mrmc import mrmc

__all__ = ["MRMC_GROUPS", "mrmc_summary"]

UNAIDED, AIDED = "unaided", "aided"
#: Reader groups of the MRMC summary: title -> modality (None = every reader).
MRMC_GROUPS = {"All readers": None, "US readers": US, "MG readers": MG}


def _crossed(part: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The fully crossed part (cases every reader read in both sessions) and a note on what was left out."""
    readers = sorted(part["reader"].unique())
    counts = part.groupby("case_id")[["reader", "session"]].apply(
        lambda g: len(set(zip(g["reader"], g["session"]))))
    full = counts.index[counts == 2 * len(readers)]
    dropped = part["case_id"].nunique() - len(full)
    note = (f"{dropped} case(s) not yet read by every reader in both sessions left out"
            if dropped else "")
    return part[part["case_id"].isin(set(full))], note


def mrmc_summary(joined: pd.DataFrame, conf_level: float = 0.95) -> pd.DataFrame:
    """Unaided vs aided AUC (confidence ratings), readers and cases random, per reader group.

    ``joined`` needs ``case_id, reader, modality, session, label, confidence``. One row per group:
    ``group, readers, cases, auc_unaided, auc_aided, difference`` (aided - unaided), ``ci_low,
    ci_high, df, p_value`` and ``note`` (why a group could not be analysed: fewer than two
    readers, one class of truth, no case read by everyone in both sessions, ...).
    """
    rows = []
    nan = float("nan")
    for title, modality in MRMC_GROUPS.items():
        part = joined if modality is None else joined[joined["modality"] == modality]
        part = part.dropna(subset=["confidence"])
        readers = part["reader"].nunique()
        row = {"group": title, "readers": readers, "cases": 0, "auc_unaided": nan, "auc_aided": nan,
               "difference": nan, "ci_low": nan, "ci_high": nan, "df": nan, "p_value": nan, "note": ""}
        if readers == 0:
            continue
        crossed, left_out = _crossed(part)
        row["cases"] = crossed["case_id"].nunique()
        if readers < 2:
            row["note"] = ("MRMC with random readers needs at least 2 readers; this group has 1 "
                           "(see the per-reader tables).")
        elif crossed.empty:
            row["note"] = "No case has been read by every reader in both sessions yet."
        else:
            reads = pd.DataFrame({"reader": crossed["reader"], "treatment": crossed["session"],
                                  "case": crossed["case_id"], "truth": crossed["label"].astype(int),
                                  "rating": crossed["confidence"].astype(float)})
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    res = mrmc(reads, metric="auc", cov="jackknife", readers="random", cases="random",
                               treatments=[AIDED, UNAIDED], conf_level=conf_level)
                row["note"] = "; ".join(str(w.message) for w in caught)
            except InputError as exc:
                row["note"] = f"Design too small for MRMC: {exc}"
            else:
                d = res.difference
                row.update(auc_unaided=res.treatment_means[UNAIDED], auc_aided=res.treatment_means[AIDED],
                           difference=d.estimate, ci_low=d.ci_low, ci_high=d.ci_high, df=d.df,
                           p_value=d.p_value)
        row["note"] = "; ".join(n for n in (row["note"], left_out) if n)
        rows.append(row)
    return pd.DataFrame(rows)
