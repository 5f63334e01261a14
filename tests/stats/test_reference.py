"""Every number in the R reference (../shared/reference/stats/reference.json) reproduced by dlum.stats.

The reference is walked generically: for each block we compute a mirror dict with the same keys using
only dlum.stats, then every numeric leaf of the reference must have a counterpart within 1e-9 (1e-6 for
p-values below 1e-6). A numeric leaf without a counterpart fails the test, unless it is an input
(threshold, levels) or a documented difference (psych's weighted-kappa variance, see the README).
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from dlum.stats import (
    biopsy_metrics,
    binary_metrics,
    chi2_test,
    delong_test,
    mcnemar_test,
    proportion_ci,
    roc_auc_ci,
    roc_curve_points,
    weighted_kappa,
)
from dlum.stats._base import z_for_level

TOL = 1e-9
P_TOL = 1e-6
P_KEYS = {"p_value", "p", "p_cc", "p_exact", "fisher_p"}
INPUT_KEYS = {"threshold", "levels"}
# psych 2.2.9 uses a non-textbook weighted-kappa variance (reference README); vcd/irr/FCE 1969 are matched.
KNOWN_DIFFERENCES = re.compile(
    r"kappa/reader1_vs_reader2_birads/(linear|quadratic)/psych_cohen_kappa/(var|ci95_lower|ci95_upper)$")
# reference key -> our proportion_ci method
CI_KEYS = {"clopper_pearson": "exact", "wilson": "wilson", "wilson_cc": "wilson_cc_r",
           "wilson_cc_newcombe": "wilson_cc"}


def _calls(frame, block):
    return (frame[block["column"]] >= block["threshold"]).astype(int)


def _proportion_block(x, n, estimate):
    out = {"x": x, "n": n, "estimate": estimate}
    for key, method in CI_KEYS.items():
        out[key] = list(proportion_ci(x, n, method=method))
    return out


def _auc(frame, ref):
    z = z_for_level(0.95)
    out = {}
    for col in ref:
        r = roc_auc_ci(frame["y"], frame[col])
        out[col] = {"auc": r.auc, "var_delong": r.variance, "se_delong": r.se, "ci95_lower": r.ci_low,
                    "ci95_upper": r.ci_high, "ci95_lower_unclipped": r.auc - z * r.se,
                    "ci95_upper_unclipped": r.auc + z * r.se}
    return out


def _paired(frame, ref):
    out = {}
    for name in ref:
        a, b = name.split("__vs__")
        t = delong_test(frame["y"], frame[a], frame[b])
        out[name] = {"auc1": t.auc_a, "auc2": t.auc_b, "auc_diff": t.diff, "z": t.z, "p_value": t.p_value,
                     "diff_ci95_lower": t.ci_low, "diff_ci95_upper": t.ci_high}
    return out


def _threshold_metrics(frame, ref):
    out = {}
    for name, block in ref.items():
        calls = _calls(frame, block)
        bm = binary_metrics(frame["y"], calls)
        entry = {"tp": bm.tp, "fn": bm.fn, "tn": bm.tn, "fp": bm.fp}
        for metric in ("sensitivity", "specificity", "ppv", "npv", "accuracy"):
            p = getattr(bm, metric)
            entry[metric] = _proportion_block(p.x, p.n, p.estimate)
            # the same interval through binary_metrics(ci=...)
            for key, method in CI_KEYS.items():
                q = getattr(binary_metrics(frame["y"], calls, ci=method), metric)
                assert [q.ci_low, q.ci_high] == pytest.approx(entry[metric][key], abs=1e-15)
        if "proc_coords" in block:
            curve = roc_curve_points(frame["y"], frame[block["column"]], drop_intermediate=False)
            at = curve[curve["threshold"] >= block["threshold"]].iloc[-1]
            sens, spec = float(at["sensitivity"]), float(at["specificity"])
            entry["proc_coords"] = {
                "sensitivity": sens, "specificity": spec,
                "agrees_with_ge_rule": bool(math.isclose(sens, bm.sensitivity.estimate, abs_tol=1e-12)
                                            and math.isclose(spec, bm.specificity.estimate, abs_tol=1e-12)),
            }
        out[name] = entry
    return out


def _mcnemar(frame, ref, raters):
    out = {}
    for name, block in ref.items():
        on = "sensitivity" if block["subset"].startswith("malignant") else "specificity"
        a, b = _calls(frame, raters[block["a"]]), _calls(frame, raters[block["b"]])
        cc = mcnemar_test(frame["y"], a, b, on=on, correction=True)
        plain = mcnemar_test(frame["y"], a, b, on=on, correction=False)
        exact = mcnemar_test(frame["y"], a, b, on=on, exact=True)
        out[name] = {"both_correct": cc.both_correct, "a_correct_b_wrong": cc.a_correct_b_wrong,
                     "a_wrong_b_correct": cc.a_wrong_b_correct, "both_wrong": cc.both_wrong,
                     "prop_a": cc.prop_a, "prop_b": cc.prop_b, "chi2_cc": cc.statistic, "p_cc": cc.p_value,
                     "chi2": plain.statistic, "p": plain.p_value, "p_exact": exact.p_value}
    return out


def _chisq(frame, ref, raters):
    out = {}
    for name, block in ref.items():
        what = block["what"]
        a, b = name[: -len(what) - 1].split("_vs_")
        counts = []
        for rater in (a, b):
            bm = binary_metrics(frame["y"], _calls(frame, raters[rater]))
            counts.append([bm.tp, bm.tp + bm.fn] if what == "sensitivity" else [bm.tn, bm.tn + bm.fp])
        cc = chi2_test(*counts[0], *counts[1], correction=True)
        plain = chi2_test(*counts[0], *counts[1], correction=False)
        out[name] = {"a": counts[0], "b": counts[1], "chi2_cc": cc.statistic, "p_cc": cc.p_value,
                     "chi2": plain.statistic, "p": plain.p_value, "fisher_p": cc.fisher_p_value}
    return out


def _biopsy(frame, ref):
    names = {"unnecessary_per_biopsy": "unnecessary_rate", "unnecessary_per_benign": "unnecessary_per_benign",
             "missed_per_malignant": "missed_rate", "missed_per_predicted_benign": "missed_per_predicted_benign",
             "biopsy_rate": "biopsy_rate"}
    out = {}
    for name, block in ref.items():
        calls = _calls(frame, block)
        bio = biopsy_metrics(frame["y"], calls)
        entry = {"recommended_biopsies": bio.recommended_biopsies, "unnecessary_biopsies": bio.unnecessary_biopsies,
                 "missed_malignancies": bio.missed_malignancies, "n_benign": bio.n_benign,
                 "n_malignant": bio.n_malignant, "n": bio.n}
        for ref_key, ours in names.items():
            p = getattr(bio, ours)
            entry[ref_key] = _proportion_block(p.x, p.n, p.estimate)
            for key, method in CI_KEYS.items():
                q = getattr(biopsy_metrics(frame["y"], calls, ci=method), ours)
                assert [q.ci_low, q.ci_high] == pytest.approx(entry[ref_key][key], abs=1e-15)
        out[name] = entry
    return out


def _kappa(frame, ref, raters):
    out = {}
    for name, block in ref.items():
        pair, kind = name.rsplit("_", 1)
        a, b = pair.split("_vs_")
        if kind == "birads":
            ra, rb = frame[a], frame[b]
        else:
            ra, rb = _calls(frame, raters[a]), _calls(frame, raters[b])
        entry = {}
        for weighting, arg in (("unweighted", None), ("linear", "linear"), ("quadratic", "quadratic")):
            k = weighted_kappa(ra, rb, weights=arg, levels=block["levels"])
            entry["table"] = [list(row) for row in k.table]
            entry[weighting] = {
                "kappa": k.kappa,
                "irr_kappa2": {"value": k.kappa, "z": k.z, "p_value": k.p_value},
                "fce1969": {"se": k.se, "se0": k.se0, "ci95_lower": k.ci_low, "ci95_upper": k.ci_high},
                "vcd_Kappa": {"value": k.kappa, "ase": k.se, "ci95_lower": k.ci_low, "ci95_upper": k.ci_high},
                "psych_cohen_kappa": {"value": k.kappa, "var": k.se**2, "ci95_lower": k.ci_low,
                                      "ci95_upper": k.ci_high},
            }
        out[name] = entry
    return out


def _mirror(ref_ds, frame):
    raters = ref_ds["threshold_metrics"]
    y = frame["y"]
    out = {"n": len(frame), "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum()),
           "auc": _auc(frame, ref_ds["auc"]), "paired_delong": _paired(frame, ref_ds["paired_delong"]),
           "threshold_metrics": _threshold_metrics(frame, raters),
           "mcnemar": _mcnemar(frame, ref_ds["mcnemar"], raters),
           "chisq": _chisq(frame, ref_ds["chisq"], raters),
           "biopsy": _biopsy(frame, ref_ds["biopsy"])}
    if "kappa" in ref_ds:
        out["kappa"] = _kappa(frame, ref_ds["kappa"], raters)
    return out


def _compare(ref, ours, path, report):
    """Walk ``ref``; every numeric leaf needs a close counterpart in ``ours``."""
    key = path.rsplit("/", 1)[-1]
    if isinstance(ref, str) or ref is None:
        return
    if key in INPUT_KEYS:
        report["inputs"] += 1
        return
    if isinstance(ref, dict):
        for k, v in ref.items():
            sub = ours.get(k) if isinstance(ours, dict) else None
            _compare(v, sub, f"{path}/{k}", report)
        return
    if ours is None:
        report["unchecked"].append(path)
        return
    if isinstance(ref, list):
        if len(ref) != len(ours):
            report["failures"].append(f"{path}: length {len(ours)} != {len(ref)}")
            return
        for i, (r, o) in enumerate(zip(ref, ours)):
            _compare(r, o, f"{path}/{i}", report)
        return
    if isinstance(ref, bool):
        report["checked"] += 1
        if bool(ours) != ref:
            report["failures"].append(f"{path}: {ours} != {ref}")
        return
    tol = P_TOL if (key in P_KEYS and abs(ref) < 1e-6) else TOL
    report["checked"] += 1
    if KNOWN_DIFFERENCES.search(path):
        report["known"].append((path, abs(float(ours) - ref)))
        report["checked"] -= 1
        return
    if not (np.isfinite(ours) and abs(float(ours) - ref) <= tol):
        report["failures"].append(f"{path}: dlum {ours!r} vs R {ref!r} (tol {tol})")


@pytest.fixture(scope="module")
def comparison(stats_reference):
    ref = stats_reference["json"]
    report = {"checked": 0, "inputs": 0, "unchecked": [], "failures": [], "known": []}
    for name, ds in ref["datasets"].items():
        ours = _mirror(ds, stats_reference["frames"][name])
        _compare(ds, ours, f"datasets/{name}", report)
    return report


def test_every_reference_quantity_matches(comparison):
    assert comparison["failures"] == [], "\n".join(comparison["failures"][:40])


def test_no_reference_quantity_left_unchecked(comparison):
    assert comparison["unchecked"] == [], "\n".join(comparison["unchecked"][:40])


def test_checked_count(comparison):
    # 1,000+ numeric leaves: AUCs, variances, CIs, paired tests, 4 interval kinds for every proportion,
    # McNemar/chi-square/Fisher, kappa tables and statistics, biopsy figures
    assert comparison["checked"] >= 1000, comparison["checked"]


def test_known_psych_differences_are_real(comparison):
    """The only skipped values are psych's weighted-kappa variance/CI, and they truly differ."""
    known = comparison["known"]
    assert len(known) == 6
    assert all(diff > 1e-4 for _, diff in known), known


def test_published_proc_manual_values(stats_reference):
    """pROC's manual prints Z = 1.3908, p = 0.1643 for s100b vs ndka on aSAH."""
    d = stats_reference["frames"]["asah"]
    t = delong_test(d["y"], d["score_a"], d["score_b"])
    assert round(t.z, 4) == 1.3908
    assert round(t.p_value, 4) == 0.1643
