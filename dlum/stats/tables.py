"""The article's Tables 2-4 as data, and Table 2/3 recomputed from their own counts.

Xu et al., Breast Cancer Research 2025 (DL-UM): Table 2 (reader performance and biopsy figures with and
without DL-UM, all / concordant / discordant), Table 3 (heatmap explanations and their effect on
biopsies), Table 4 (weighted kappa between readers). The cells are kept in ``data/paper_tables.json``
exactly as printed; the loaders here parse them into tidy tables for the app.

``recompute_table2`` rebuilds each reader's confusion counts from the printed counts: TP + FP =
recommended biopsies, FP = unnecessary biopsies, then FN = malignant - TP and TN = benign - FP with the
subgroup's malignant/benign split (all 78/79, concordant 49/31, discordant 29/48), and recomputes the
percentages and AUC = (sensitivity + specificity) / 2 beside the printed values.

``published_table2`` / ``published_table3`` / ``published_table4`` put each printed table beside its
recomputation by ``dlum.stats`` (Wilson CIs of the reconstructed calls, chi-square tests of the printed
counts, Landis & Koch wording of the kappas): what the dashboard's Reader Study page and
``python -m dlum reader-study --published`` show.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from dlum.constants import SUBGROUPS
from dlum.errors import InputError
from dlum.stats.agreement import kappa_band
from dlum.stats.decisions import binary_metrics, chi2_test

__all__ = [
    "PAPER_TABLES_PATH",
    "load_paper_tables",
    "table2",
    "table3",
    "table4",
    "recompute_table2",
    "recompute_table3",
    "reconstructed_calls",
    "published_table2",
    "published_table3",
    "published_table4",
]

#: The transcribed tables (package data).
PAPER_TABLES_PATH = Path(__file__).resolve().parent / "data" / "paper_tables.json"

_NUM = r"(-?\d+(?:\.\d+)?)"
_COUNT = re.compile(rf"^\s*{_NUM}\s*\(\s*(\d+)\s*/\s*(\d+)\s*\)\s*$")
_INTERVAL = re.compile(rf"^\s*{_NUM}\s*\(\s*{_NUM}\s*[–-]\s*{_NUM}\s*\)\s*$")
_PLAIN = re.compile(rf"^\s*{_NUM}\s*$")


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _parse_count(cell: str) -> tuple[float, int, int, int]:
    """'66.2 (104/157)' -> (66.2, 104, 157, decimals=1)."""
    match = _COUNT.match(cell)
    if not match:
        raise InputError(f"cannot read {cell!r} as 'percent (x/n)'", str(PAPER_TABLES_PATH.name))
    return float(match[1]), int(match[2]), int(match[3]), _decimals(match[1])


def _parse_interval(cell: str) -> tuple[float, float, float, int]:
    """'0.048 (-0.108–0.205)' -> (0.048, -0.108, 0.205, decimals=3)."""
    match = _INTERVAL.match(cell)
    if not match:
        raise InputError(f"cannot read {cell!r} as 'estimate (low–high)'", str(PAPER_TABLES_PATH.name))
    return float(match[1]), float(match[2]), float(match[3]), _decimals(match[1])


def _parse_plain(cell: str) -> tuple[float, int]:
    match = _PLAIN.match(cell)
    if not match:
        raise InputError(f"cannot read {cell!r} as a number", str(PAPER_TABLES_PATH.name))
    return float(match[1]), _decimals(match[1])


@lru_cache(maxsize=1)
def _load(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_paper_tables() -> dict:
    """The transcription as a dict (a fresh copy: callers may modify it)."""
    return json.loads(_load(str(PAPER_TABLES_PATH)))


def table2() -> pd.DataFrame:
    """Table 2, one row per (subgroup, reader, assisted): biopsy counts and percentages, AUC,
    sensitivity and specificity (percent) with the printed 95% CIs."""
    doc = load_paper_tables()
    readers = doc["readers"]
    rows = []
    for r in doc["table2"]["rows"]:
        rec_pct, rec, n, _ = _parse_count(r["recommended"])
        unn_pct, unn, unn_n, _ = _parse_count(r["unnecessary"])
        auc, auc_lo, auc_hi, _ = _parse_interval(r["auc"])
        sens, sens_lo, sens_hi, _ = _parse_interval(r["sensitivity"])
        spec, spec_lo, spec_hi, _ = _parse_interval(r["specificity"])
        rows.append({
            "subgroup": r["subgroup"], "modality": r["modality"], "reader": r["reader"],
            "experience": readers[r["reader"]]["experience"], "assisted": bool(r["assisted"]),
            "n": n, "recommended_biopsies": rec, "recommended_pct": rec_pct,
            "unnecessary_biopsies": unn, "unnecessary_pct": unn_pct,
            "auc": auc, "auc_ci_low": auc_lo, "auc_ci_high": auc_hi,
            "sensitivity_pct": sens, "sensitivity_ci_low": sens_lo, "sensitivity_ci_high": sens_hi,
            "specificity_pct": spec, "specificity_ci_low": spec_lo, "specificity_ci_high": spec_hi,
        })
    return pd.DataFrame(rows)


def recompute_table2() -> pd.DataFrame:
    """Table 2's percentages and AUC recomputed from its counts, beside the printed values.

    Long format, one row per (subgroup, reader, assisted, quantity) with ``printed``, ``recomputed``,
    ``decimals`` (as printed), ``difference`` = recomputed - printed, ``within_one_unit`` (|difference| <=
    one unit of the printed last digit), the counts ``tp, fp, tn, fn`` and the ``formula`` with numbers.
    Quantities: recommended_pct, unnecessary_pct, sensitivity_pct, specificity_pct, auc.
    """
    doc = load_paper_tables()
    splits = doc["table2"]["subgroups"]
    rows = []
    for r in doc["table2"]["rows"]:
        split = splits[r["subgroup"]]
        rec_pct, rec, n, rec_dec = _parse_count(r["recommended"])
        unn_pct, fp, unn_n, unn_dec = _parse_count(r["unnecessary"])
        auc, _, _, auc_dec = _parse_interval(r["auc"])
        sens, _, _, sens_dec = _parse_interval(r["sensitivity"])
        spec, _, _, spec_dec = _parse_interval(r["specificity"])
        if n != split["n"] or unn_n != rec:
            raise InputError(f"Table 2 row {r['subgroup']}/{r['reader']}: counts disagree with the subgroup "
                             f"size or the recommended biopsies ({r['recommended']}, {r['unnecessary']})")
        tp = rec - fp
        fn = split["malignant"] - tp
        tn = split["benign"] - fp
        sens_r = 100.0 * tp / (tp + fn)
        spec_r = 100.0 * tn / (tn + fp)
        key = {"subgroup": r["subgroup"], "modality": r["modality"], "reader": r["reader"],
               "assisted": bool(r["assisted"]), "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        for quantity, printed, recomputed, dec, formula in (
            ("recommended_pct", rec_pct, 100.0 * rec / n, rec_dec, f"(TP+FP)/n = {rec}/{n}"),
            ("unnecessary_pct", unn_pct, 100.0 * fp / rec, unn_dec, f"FP/(TP+FP) = {fp}/{rec}"),
            ("sensitivity_pct", sens, sens_r, sens_dec, f"TP/(TP+FN) = {tp}/{tp + fn}"),
            ("specificity_pct", spec, spec_r, spec_dec, f"TN/(TN+FP) = {tn}/{tn + fp}"),
            ("auc", auc, (sens_r + spec_r) / 200.0, auc_dec, "(sensitivity + specificity) / 2"),
        ):
            rows.append({**key, "quantity": quantity, "printed": printed, "recomputed": recomputed,
                         "decimals": dec, "formula": formula})
    out = pd.DataFrame(rows)
    return _finish(out)


def _finish(out: pd.DataFrame) -> pd.DataFrame:
    out["difference"] = out["recomputed"] - out["printed"]
    unit = 10.0 ** (-out["decimals"].astype(float))
    out["within_one_unit"] = out["difference"].abs() <= unit * (1 + 1e-9)
    return out


def table3() -> pd.DataFrame:
    """Table 3, one row per (subgroup, reader group): explanation requests and unnecessary biopsies /
    missed malignancies without and with DL-UM (counts and percentages), and the printed reductions."""
    doc = load_paper_tables()
    groups = doc["table3"]["reader_groups"]
    rows = []
    for r in doc["table3"]["rows"]:
        row = {"subgroup": r["subgroup"], "readers": r["readers"], "readers_label": groups[r["readers"]]["label"]}
        for col in ("explanation_requested", "unnecessary_without", "unnecessary_with",
                    "missed_without", "missed_with"):
            pct, x, n, _ = _parse_count(r[col])
            row.update({f"{col}_pct": pct, col: x, f"{col}_n": n})
        for col in ("decreased_biopsies", "avoided_missed"):
            row[f"{col}_pct"] = _parse_plain(r[col])[0]
        rows.append(row)
    return pd.DataFrame(rows)


def recompute_table3() -> pd.DataFrame:
    """Table 3's percentages recomputed from its counts (x/n) and the two reductions recomputed as
    without - with (from the unrounded percentages), beside the printed values (long format)."""
    doc = load_paper_tables()
    rows = []
    for r in doc["table3"]["rows"]:
        key = {"subgroup": r["subgroup"], "readers": r["readers"]}
        exact = {}
        for col in ("explanation_requested", "unnecessary_without", "unnecessary_with",
                    "missed_without", "missed_with"):
            pct, x, n, dec = _parse_count(r[col])
            exact[col] = 100.0 * x / n
            rows.append({**key, "quantity": f"{col}_pct", "printed": pct, "recomputed": exact[col],
                         "decimals": dec, "formula": f"{x}/{n}"})
        for col, a, b in (("decreased_biopsies", "unnecessary_without", "unnecessary_with"),
                          ("avoided_missed", "missed_without", "missed_with")):
            value, dec = _parse_plain(r[col])
            rows.append({**key, "quantity": f"{col}_pct", "printed": value,
                         "recomputed": exact[a] - exact[b], "decimals": dec, "formula": f"{a} - {b}"})
    return _finish(pd.DataFrame(rows))


def table4() -> pd.DataFrame:
    """Table 4, one row per (subgroup, comparison, assisted): kappa with its printed 95% CI."""
    doc = load_paper_tables()
    comps = doc["table4"]["comparisons"]
    rows = []
    for r in doc["table4"]["rows"]:
        kappa, low, high, _ = _parse_interval(r["kappa"])
        rows.append({"subgroup": r["subgroup"], "comparison": r["comparison"],
                     "comparison_label": comps[r["comparison"]]["label"], "assisted": bool(r["assisted"]),
                     "kappa": kappa, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------ printed beside recomputed
def reconstructed_calls(tp: int, fp: int, tn: int, fn: int) -> tuple[np.ndarray, np.ndarray]:
    """Case-level labels and calls with these confusion counts (the order is irrelevant to every
    statistic computed on them).

    >>> y, call = reconstructed_calls(2, 1, 3, 1)
    >>> y.tolist(), call.tolist()
    ([1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 1, 0, 0, 0])
    """
    y = np.array([1] * (tp + fn) + [0] * (fp + tn))
    pred = np.array([1] * tp + [0] * fn + [1] * fp + [0] * tn)
    return y, pred


def published_table2() -> pd.DataFrame:
    """Table 2 (Xu et al. 2025) as printed beside its recomputation: :func:`recompute_table2`
    (percentages and AUC from the counts, ``<quantity>_printed`` / ``<quantity>_recomputed``) and,
    from :func:`reconstructed_calls`, Wilson CIs of sensitivity and specificity (``binary_metrics``).
    One row per (subgroup, reader, assisted), in the article's order."""
    long = recompute_table2()
    printed = table2().set_index(["subgroup", "reader", "assisted"])
    keys = ["subgroup", "modality", "reader", "assisted", "tp", "fp", "tn", "fn"]
    wide = long.pivot_table(index=keys, columns="quantity", values=["printed", "recomputed"],
                            aggfunc="first")
    wide.columns = [f"{q}_{kind}" for kind, q in wide.columns]
    ok = long.groupby(keys)["within_one_unit"].all().rename("all_within_one_unit")
    wide = wide.join(ok).reset_index()
    rows = []
    for _, r in wide.iterrows():
        y, pred = reconstructed_calls(r["tp"], r["fp"], r["tn"], r["fn"])
        bm = binary_metrics(y, pred)
        p = printed.loc[(r["subgroup"], r["reader"], r["assisted"])]
        rows.append({
            **r.to_dict(),
            "auc_ci_printed": f"{p['auc_ci_low']:.3f}–{p['auc_ci_high']:.3f}",
            "sensitivity_ci_printed": f"{p['sensitivity_ci_low']:.1f}–{p['sensitivity_ci_high']:.1f}",
            "specificity_ci_printed": f"{p['specificity_ci_low']:.1f}–{p['specificity_ci_high']:.1f}",
            "sensitivity_wilson_low": 100 * bm.sensitivity.ci_low,
            "sensitivity_wilson_high": 100 * bm.sensitivity.ci_high,
            "specificity_wilson_low": 100 * bm.specificity.ci_low,
            "specificity_wilson_high": 100 * bm.specificity.ci_high,
            "auc_from_stats": bm.auc,
        })
    out = pd.DataFrame(rows)
    order = {g: i for i, g in enumerate(SUBGROUPS)}
    readers = list(load_paper_tables()["readers"])
    out["_s"] = out["subgroup"].map(order)
    out["_r"] = out["reader"].map({r: i for i, r in enumerate(readers)})
    return (out.sort_values(["_s", "_r", "assisted"]).drop(columns=["_s", "_r"])
            .reset_index(drop=True))


def published_table3() -> pd.DataFrame:
    """Table 3 (Xu et al. 2025) as printed beside :func:`recompute_table3` (percentages from the
    counts, reductions as without - with) and chi-square tests of without vs with DL-UM on the
    printed counts (``unnecessary_chi2_p``, ``missed_chi2_p``)."""
    long = recompute_table3()
    printed = table3()
    wide = long.pivot_table(index=["subgroup", "readers"], columns="quantity",
                            values=["printed", "recomputed"], aggfunc="first")
    wide.columns = [f"{q}_{kind}" for kind, q in wide.columns]
    ok = long.groupby(["subgroup", "readers"])["within_one_unit"].all().rename("all_within_one_unit")
    out = printed.merge(wide.join(ok).reset_index(), on=["subgroup", "readers"])
    out["unnecessary_chi2_p"] = [
        chi2_test(r["unnecessary_without"], r["unnecessary_without_n"], r["unnecessary_with"],
                  r["unnecessary_with_n"]).p_value for _, r in out.iterrows()]
    out["missed_chi2_p"] = [
        chi2_test(r["missed_without"], r["missed_without_n"], r["missed_with"],
                  r["missed_with_n"]).p_value for _, r in out.iterrows()]
    return out


def published_table4() -> pd.DataFrame:
    """Table 4 (Xu et al. 2025) as printed (kappa with 95% CI) with its Landis & Koch wording
    (``agreement``, :func:`~dlum.stats.agreement.kappa_band`). Kappa cannot be recomputed from the
    article: it needs case-level reads."""
    t = table4().copy()
    t["agreement"] = [kappa_band(k) for k in t["kappa"]]
    return t
