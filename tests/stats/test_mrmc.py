"""dlum.stats.mrmc: the Obuchowski–Rockette / Hillis MRMC analysis.

1. Every number of MRMCaov 0.3.0 on VanDyke (../shared/reference/mrmc/vandyke_reference.json) is
   reproduced: the reference is walked generically, each block against a mirror dict built from one
   :class:`MRMCResult`; a numeric leaf without a counterpart fails, and so does a null that we fill.
2. Modified VanDyke data drive the truncations and edge cases the reference README names
   (cov2 < cov3, negative var_TR, cov2 < 0 within a treatment, a reader with AUC 1); there every
   statistic is recomputed here from the README's formulas, the covariance by brute-force jackknife.
3. Synthetic data (no shared files needed): cross-checks against DeLong's test and input validation.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2, f as f_dist, norm
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from dlum.errors import InputError
from dlum.stats import delong_test, mrmc
from dlum.stats.mrmc import MRMCResult

TOL = 1e-9
METRIC_NAMES = {"auc": "empirical_auc", "sensitivity": "binary_sens", "specificity": "binary_spec"}
SKIPPED = {"r_call", "cov_method", "label_format"}  # R call text and descriptions, not results
DESIGNS = {"random_readers_random_cases": ("random", "random"),
           "fixed_readers_random_cases": ("fixed", "random"),
           "random_readers_fixed_cases": ("random", "fixed")}


# --------------------------------------------------------------------------------------------------
# 1. MRMCaov reference
# --------------------------------------------------------------------------------------------------
def _mean_ci(m, res: MRMCResult) -> tuple[dict, dict]:
    fixed_readers = res.readers == "fixed"
    out = {"treatment": str(m.treatment), "estimate": m.estimate, "stderr": m.se, "df": m.df,
           "ci_lower": m.ci_low, "ci_upper": m.ci_high, "ci_lower_untruncated": m.ci_low_untruncated,
           "ci_upper_untruncated": m.ci_high_untruncated, "cov2": m.cov2}
    out["MS_R" if not fixed_readers else "var_E"] = m.ms_r if not fixed_readers else m.var_E
    summary = {"Estimate": m.estimate, "StdErr": m.se, "df": m.df, "CI.Lower": m.ci_low,
               "CI.Upper": m.ci_high, "Cov2": m.cov2}
    summary["MS(R)" if not fixed_readers else "Var(Error)"] = out.get("MS_R", out.get("var_E"))
    return out, summary


def _mirror(res: MRMCResult) -> dict:
    """The reference block's layout, filled from one result only."""
    s = str
    t_levels, r_levels = res.treatment_levels, res.reader_levels
    n_obs = {"auc": res.n_cases, "sensitivity": res.n_positive, "specificity": res.n_negative}[res.metric]
    an, comps = res.anova, res.components
    fixed_readers = res.readers == "fixed"
    out = {
        "warning": None, "metric": METRIC_NAMES[res.metric], "readers": res.readers, "cases": res.cases,
        "treatment_levels": [s(t) for t in t_levels], "reader_levels": [s(r) for r in r_levels],
        "reader_treatment_values": [
            {"treatment": s(t), "reader": s(r), "value": res.values[i][j], "n_obs": n_obs}
            for i, t in enumerate(t_levels) for j, r in enumerate(r_levels)],
        "treatment_means": {s(t): v for t, v in res.treatment_means.items()},
        "anova": {"terms": ["treatment", "reader", "treatment:reader"], "Df": [an.df_t, an.df_r, an.df_tr],
                  "SumSq": [an.ss_t, an.ss_r, an.ss_tr], "MeanSq": [an.ms_t, an.ms_r, an.ms_tr]},
        "covariance_matrix": None if res.covariance is None else {
            "labels": [f"{t}.{r}" for t, r in res.covariance_labels],
            "matrix": [list(row) for row in res.covariance]},
        "or_components": None if comps is None else comps.to_dict(),
    }
    gt = {"statistic": res.statistic_name, "MS_T": an.ms_t, "denominator": res.denominator,
          "p_value": res.p_value}
    eq = {"MS(T)": an.ms_t, "Denominator": res.denominator, "p-value": res.p_value}
    if comps is not None:
        gt.update(cov1=comps.cov1, cov2=comps.cov2, cov3=comps.cov3)
        eq.update(Cov1=comps.cov1, Cov2=comps.cov2, Cov3=comps.cov3)
    if fixed_readers:
        gt.update(X2=res.statistic, F_equivalent=res.statistic / res.df1, df=res.df1)
        eq.update(X2=res.statistic, df=res.df1)
    else:
        gt.update(MS_TR=an.ms_tr, F=res.statistic, df1=res.df1, df2=res.df2)
        eq.update({"MS(T:R)": an.ms_tr, "F": res.statistic, "df1": res.df1, "df2": res.df2})
        if comps is not None:
            gt["cov2_minus_cov3_clamped_to_zero"] = comps.cov2 - comps.cov3 < 0
    out["global_test"] = gt
    stat_key = "z" if fixed_readers else "t"
    diffs, test_diffs = [], []
    for d in res.differences:
        diffs.append({"comparison": d.comparison, "estimate": d.estimate, "stderr": d.se, "df": d.df,
                      "ci_lower": d.ci_low, "ci_upper": d.ci_high, stat_key: d.statistic,
                      "p_value": d.p_value})
        test_diffs.append({"Comparison": d.comparison, "Estimate": d.estimate, "StdErr": d.se, "df": d.df,
                           "CI.Lower": d.ci_low, "CI.Upper": d.ci_high, stat_key: d.statistic,
                           "p-value": d.p_value})
    out["treatment_differences"] = diffs
    means = [_mean_ci(m, res) for m in res.treatment_mean_cis]
    out["treatment_mean_cis"] = [m for m, _ in means]
    summary = {"test_equality": [eq], "test_diffs": test_diffs, "test_means": [m for _, m in means],
               "reader_test_diffs": None, "reader_means": None, "vcov_comps": None}
    if comps is not None:
        summary["vcov_comps"] = {
            "reader": {"Estimate": comps.var_R, "Correlation": None},
            "treatment:reader": {"Estimate": comps.var_TR, "Correlation": None},
            "Error": {"Estimate": comps.var_E, "Correlation": None},
            "Cov1": {"Estimate": comps.cov1, "Correlation": comps.corr1},
            "Cov2": {"Estimate": comps.cov2, "Correlation": comps.corr2},
            "Cov3": {"Estimate": comps.cov3, "Correlation": comps.corr3}}
    if fixed_readers:
        out["reader_specific_differences"] = [
            {"reader": s(d.reader), "comparison": d.comparison, "estimate": d.estimate, "stderr": d.se,
             "ci_lower": d.ci_low, "ci_upper": d.ci_high, "z": d.z, "p_value": d.p_value}
            for d in res.reader_differences]
        out["reader_treatment_cis"] = [
            {"treatment": s(c.treatment), "reader": s(c.reader), "estimate": c.estimate, "stderr": c.se,
             "ci_lower": c.ci_low, "ci_upper": c.ci_high, "ci_lower_untruncated": c.ci_low_untruncated,
             "ci_upper_untruncated": c.ci_high_untruncated} for c in res.reader_treatment_cis]
        summary["reader_test_diffs"] = [
            {"Reader": d["reader"], "Comparison": d["comparison"], "Estimate": d["estimate"],
             "StdErr": d["stderr"], "CI.Lower": d["ci_lower"], "CI.Upper": d["ci_upper"], "z": d["z"],
             "p-value": d["p_value"]} for d in out["reader_specific_differences"]]
        summary["reader_means"] = [
            {METRIC_NAMES[res.metric]: c["estimate"], "treatment": c["treatment"], "reader": c["reader"],
             "StdErr": c["stderr"], "CI.Lower": c["ci_lower"], "CI.Upper": c["ci_upper"]}
            for c in out["reader_treatment_cis"]]
    out["mrmcaov_summary"] = summary
    return out


def _compare(ref, ours, path: str, report: dict) -> None:
    """Walk ``ref``: numbers within TOL (absolute, or relative for large values), equal strings,
    booleans and nulls; every leaf of the reference needs a counterpart."""
    key = path.rsplit("/", 1)[-1]
    if key in SKIPPED:
        return
    if ref is None:
        report["checked"] += 1
        if ours is not None:
            report["failures"].append(f"{path}: dlum gives {ours!r} where MRMCaov gives null")
        return
    if isinstance(ref, dict):
        if not isinstance(ours, dict):
            report["unchecked"].append(path)
            return
        for k, v in ref.items():
            if k not in ours and k not in SKIPPED:
                report["unchecked"].append(f"{path}/{k}")
                continue
            _compare(v, ours.get(k), f"{path}/{k}", report)
        return
    if isinstance(ref, list):
        if not isinstance(ours, list) or len(ref) != len(ours):
            report["failures"].append(f"{path}: {ours!r} is not a list of {len(ref)}")
            return
        for i, (r, o) in enumerate(zip(ref, ours)):
            _compare(r, o, f"{path}/{i}", report)
        return
    report["checked"] += 1
    if isinstance(ref, (str, bool)):
        if ours != ref:
            report["failures"].append(f"{path}: dlum {ours!r} vs MRMCaov {ref!r}")
        return
    if ours is None or not math.isfinite(float(ours)) \
            or abs(float(ours) - ref) > TOL * max(1.0, abs(ref)):
        report["failures"].append(f"{path}: dlum {ours!r} vs MRMCaov {ref!r}")
    else:
        report["numbers"] += 1
        report["max_error"] = max(report["max_error"], abs(float(ours) - ref))


def _blocks(ref: dict):
    """(path, metric, cov, block) for every block of the reference JSON."""
    for cov_key, blocks in ref["auc"].items():
        for design, block in blocks.items():
            yield f"auc/{cov_key}/{design}", "auc", cov_key, design, block
    for name, metric in (("binary_sens", "sensitivity"), ("binary_spec", "specificity")):
        for cov_key, blocks in ref["binary"][name].items():
            for design, block in blocks.items():
                yield f"binary/{name}/{cov_key}/{design}", metric, cov_key, design, block


def _threshold(ref: dict) -> float:
    rule = ref["binary"]["threshold_rule"]
    assert rule == "rating >= 3 counts as positive", rule
    return 3.0


@pytest.fixture(scope="module")
def comparison(mrmc_reference):
    ref, frame = mrmc_reference["json"], mrmc_reference["frame"]
    report = {"checked": 0, "numbers": 0, "blocks": 0, "errors": 0, "unchecked": [], "failures": [],
              "max_error": 0.0}
    for path, metric, cov_key, design, block in _blocks(ref):
        readers, cases = DESIGNS[design]
        kwargs = dict(metric=metric, cov=cov_key.lower(), readers=readers, cases=cases,
                      threshold=None if metric == "auc" else _threshold(ref),
                      conf_level=ref["meta"]["conf_level"])
        if "error" in block:  # MRMCaov refuses DeLong for binary metrics: so must we
            with pytest.raises(InputError, match="DeLong"):
                mrmc(frame, **kwargs)
            report["errors"] += 1
            continue
        _compare(block, _mirror(mrmc(frame, **kwargs)), path, report)
        report["blocks"] += 1
    return report


def test_every_mrmcaov_quantity_matches(comparison):
    assert comparison["failures"] == [], "\n".join(comparison["failures"][:40])
    assert comparison["max_error"] < 1e-10


def test_no_mrmcaov_quantity_left_unchecked(comparison):
    assert comparison["unchecked"] == [], "\n".join(comparison["unchecked"][:40])


def test_every_block_was_compared(comparison):
    # AUC jackknife and DeLong, sensitivity and specificity jackknife: 4 x 3 designs; 2 DeLong refusals
    assert comparison["blocks"] == 12
    assert comparison["errors"] == 2
    assert comparison["numbers"] >= 2000, comparison["numbers"]


def test_headline_numbers(mrmc_reference):
    """The README's headline: AUC 0.897037 vs 0.940837, F = 4.45632 on (1, 15.2597), p = 0.051666."""
    res = mrmc(mrmc_reference["frame"])
    assert res.treatment_means == pytest.approx({1: 0.897037037037037, 2: 0.940837359098229}, abs=1e-12)
    assert (round(res.statistic, 5), res.df1, round(res.df2, 4), round(res.p_value, 6)) == \
        (4.45632, 1, 15.2597, 0.051666)
    d = res.difference
    assert (round(d.estimate, 6), round(d.ci_low, 6), round(d.ci_high, 6)) == (-0.0438, -0.087959, 0.000359)
    delong = mrmc(mrmc_reference["frame"], cov="delong")
    assert (round(delong.statistic, 5), round(delong.df2, 4), round(delong.p_value, 6)) == \
        (4.48485, 15.0661, 0.051233)


def test_treatment_order_and_subset(mrmc_reference):
    frame = mrmc_reference["frame"]
    fwd, back = mrmc(frame), mrmc(frame, treatments=[2, 1])
    assert back.difference.comparison == "2 - 1"
    assert back.difference.estimate == pytest.approx(-fwd.difference.estimate, abs=1e-15)
    assert (back.difference.ci_low, back.difference.ci_high) == \
        pytest.approx((-fwd.difference.ci_high, -fwd.difference.ci_low), abs=1e-12)
    assert (back.statistic, back.df2, back.p_value) == pytest.approx((fwd.statistic, fwd.df2, fwd.p_value),
                                                                    rel=1e-12)


def test_result_is_frozen_and_plain(mrmc_reference):
    res = mrmc(mrmc_reference["frame"], readers="fixed")
    with pytest.raises(AttributeError):
        res.statistic = 0.0  # type: ignore[misc]
    d = res.to_dict()
    assert d["difference"]["comparison"] == "1 - 2" and d["components"]["cov1"] == res.components.cov1
    assert res.values_frame().loc[2, 4] == pytest.approx(0.999355877616747, abs=1e-12)
    assert res.covariance_frame().shape == (10, 10)
    assert mrmc(mrmc_reference["frame"], cases="fixed").covariance_frame() is None


# --------------------------------------------------------------------------------------------------
# 2. Edge cases on modified VanDyke data, recomputed from the README's formulas
# --------------------------------------------------------------------------------------------------
def _brute_covariance(frame: pd.DataFrame, treatments, readers) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (scikit-learn) and their jackknife covariance by actually leaving out every case."""
    cells = list(itertools.product(treatments, readers))
    wide = frame.pivot(index="case", columns=["treatment", "reader"], values="rating")[cells]
    truth = frame.groupby("case")["truth"].first().reindex(wide.index).to_numpy()
    scores = wide.to_numpy(float)
    aucs = np.array([roc_auc_score(truth, scores[:, k]) for k in range(len(cells))])
    pseudo = np.array([[roc_auc_score(np.delete(truth, c), np.delete(scores[:, k], c))
                        for k in range(len(cells))] for c in range(len(truth))])
    n = len(truth)
    centred = pseudo - pseudo.mean(axis=0)
    return aucs, (n - 1) / n * centred.T @ centred


def _expected(values: np.ndarray, cmat: np.ndarray, level: float = 0.95) -> dict:
    """The README's formulas, written out again from the figures and their covariance."""
    t, r = values.shape
    grand, tm, rm = values.mean(), values.mean(axis=1), values.mean(axis=0)
    ms_t = r * ((tm - grand) ** 2).sum() / (t - 1)
    ms_r = t * ((rm - grand) ** 2).sum() / (r - 1)
    ms_tr = ((values - tm[:, None] - rm[None, :] + grand) ** 2).sum() / ((t - 1) * (r - 1))
    cells = list(itertools.product(range(t), range(r)))
    pairs = {"var": [], "cov1": [], "cov2": [], "cov3": []}
    for (a, (ta, ra)), (b, (tb, rb)) in itertools.product(enumerate(cells), repeat=2):
        kind = "var" if a == b else "cov1" if ra == rb else "cov2" if ta == tb else "cov3"
        pairs[kind].append(cmat[a, b])
    var_e, cov1, cov2, cov3 = (float(np.mean(pairs[k])) for k in ("var", "cov1", "cov2", "cov3"))
    out = {"ms_t": ms_t, "ms_r": ms_r, "ms_tr": ms_tr, "var_E": var_e, "cov1": cov1, "cov2": cov2,
           "cov3": cov3, "var_R": (ms_r - ms_tr) / t - cov1 + cov3,
           "var_TR": ms_tr - var_e + cov1 + (cov2 - cov3)}
    # random readers, random cases (Hillis 2008)
    den = ms_tr + r * max(cov2 - cov3, 0.0)
    df2 = den ** 2 / (ms_tr ** 2 / ((t - 1) * (r - 1)))
    out["rrrc"] = {"den": den, "F": ms_t / den, "df2": df2, "p": f_dist.sf(ms_t / den, t - 1, df2),
                   "se": math.sqrt(2 * den / r), "q": student_t.ppf((1 + level) / 2, df2)}
    means = []
    for i in range(t):
        block = cmat[i * r:(i + 1) * r, i * r:(i + 1) * r]
        c2 = block[~np.eye(r, dtype=bool)].mean()
        msr_i = values[i].var(ddof=1)
        se = math.sqrt(msr_i / r + max(c2, 0.0))
        df = (msr_i + r * max(c2, 0.0)) ** 2 / (msr_i ** 2 / (r - 1))
        q = student_t.ppf((1 + level) / 2, df)
        fixed_se = math.sqrt((np.diag(block).mean() + (r - 1) * max(c2, 0.0)) / r)
        means.append({"cov2": c2, "se": se, "df": df, "low": max(tm[i] - q * se, 0.0),
                      "high": min(tm[i] + q * se, 1.0), "fixed_se": fixed_se})
    out["means"] = means
    # fixed readers: no truncation of cov2 - cov3
    den_f = var_e - cov1 + (r - 1) * (cov2 - cov3)
    out["frrc"] = {"den": den_f, "X2": (t - 1) * ms_t / den_f, "p": chi2.sf((t - 1) * ms_t / den_f, t - 1),
                   "se": math.sqrt(2 * den_f / r)}
    return out


def _check_against_formulas(frame: pd.DataFrame, cov: str = "jackknife") -> dict:
    res = mrmc(frame, cov=cov)
    values = np.array(res.values)
    if cov == "jackknife":  # the covariance itself, independently
        aucs, brute = _brute_covariance(frame, res.treatment_levels, res.reader_levels)
        assert values.ravel() == pytest.approx(aucs, abs=1e-14)
        assert np.abs(np.array(res.covariance) - brute).max() < 1e-14
    exp = _expected(values, np.array(res.covariance))
    c = res.components
    for key in ("var_E", "cov1", "cov2", "cov3", "var_R", "var_TR"):
        assert getattr(c, key) == pytest.approx(exp[key], rel=1e-12, abs=1e-15), key
    e = exp["rrrc"]
    assert res.denominator == pytest.approx(e["den"], rel=1e-12)
    assert (res.statistic, res.df2, res.p_value) == pytest.approx((e["F"], e["df2"], e["p"]), rel=1e-10)
    d = res.difference
    assert d.se == pytest.approx(e["se"], rel=1e-12)
    assert (d.ci_low, d.ci_high) == pytest.approx((d.estimate - e["q"] * e["se"], d.estimate + e["q"] * e["se"]),
                                                  rel=1e-10)
    for m, em in zip(res.treatment_mean_cis, exp["means"]):
        assert (m.cov2, m.se, m.df, m.ci_low, m.ci_high) == \
            pytest.approx((em["cov2"], em["se"], em["df"], em["low"], em["high"]), rel=1e-10, abs=1e-15)
    fixed = mrmc(frame, cov=cov, readers="fixed")
    ef = exp["frrc"]
    assert (fixed.denominator, fixed.statistic, fixed.p_value, fixed.difference.se) == \
        pytest.approx((ef["den"], ef["X2"], ef["p"], ef["se"]), rel=1e-10)
    for m, em in zip(fixed.treatment_mean_cis, exp["means"]):
        assert m.se == pytest.approx(em["fixed_se"], rel=1e-12)
    for result in (res, fixed, mrmc(frame, cases="fixed")):
        _assert_finite(result)
    return {"result": res, "fixed": fixed, "expected": exp}


def _assert_finite(res: MRMCResult) -> None:
    def numbers(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from numbers(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from numbers(v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield value
    bad = [v for v in numbers(res.to_dict()) if not math.isfinite(v)]
    assert bad == [], bad


def _treatment(frame: pd.DataFrame, t) -> pd.DataFrame:
    return frame[frame["treatment"] == t].copy()


def _nudge(frame: pd.DataFrame, mask) -> pd.DataFrame:
    """Move the ratings of the chosen rows one step toward their truth (positives up, negatives down)."""
    out = frame.copy()
    out.loc[mask, "rating"] += np.where(out.loc[mask, "truth"] == 1, 1, -1)
    return out


def test_cov2_below_cov3_is_truncated(mrmc_reference):
    """Treatment 2 = treatment 1 read by the *next* reader (a derangement), a few cases nudged: the same
    ratings now meet across treatments and readers, so cov3 > cov2 and den = MS_TR, df2 = (t-1)(r-1)."""
    t1 = _treatment(mrmc_reference["frame"], 1)
    t2 = t1.assign(treatment=2, reader=(t1["reader"] - 2) % 5 + 1)
    t2 = _nudge(t2, (t2["case"] % 5 == 4).to_numpy())
    frame = pd.concat([t1, t2], ignore_index=True)
    out = _check_against_formulas(frame)
    res = out["result"]
    assert res.components.cov2 < res.components.cov3
    assert res.denominator == pytest.approx(res.anova.ms_tr, rel=1e-14)
    assert res.df2 == pytest.approx(4.0, rel=1e-12)
    assert 0.0 < res.statistic and 0.05 < res.p_value < 0.95
    # fixed readers use cov2 - cov3 untruncated: a smaller denominator than with the truncation
    fixed, c = out["fixed"], res.components
    assert fixed.denominator < c.var_E - c.cov1
    _check_against_formulas(frame, cov="delong")


def test_negative_var_tr(mrmc_reference):
    """Treatment 2 = treatment 1 with every 13th case nudged for every reader: the readers' AUC gains are
    nearly equal, so MS_TR is small and var_TR = MS_TR - var_E + cov1 + (cov2 - cov3) < 0."""
    t1 = _treatment(mrmc_reference["frame"], 1)
    t2 = _nudge(t1.assign(treatment=2), (t1["case"] % 13 == 5).to_numpy())
    frame = pd.concat([t1, t2], ignore_index=True)
    res = _check_against_formulas(frame)["result"]
    assert res.components.var_TR < 0
    assert res.statistic > 0 and 0 < res.p_value < 0.05


def test_negative_cov2_within_a_treatment_is_truncated(mrmc_reference):
    """Under treatment 2, readers 4 and 5 rate as the mirror image (6 - rating) of readers 1 and 2: their
    AUCs fall below 1/2 and, within treatment 2, the mean covariance between readers is negative, so
    that treatment's mean CI uses max(cov2, 0) = 0: SE = sqrt(MS_R / r), df = r - 1."""
    frame = mrmc_reference["frame"].copy()
    t2 = frame["treatment"] == 2
    for source, mirror in ((1, 4), (2, 5)):
        frame.loc[t2 & (frame["reader"] == mirror), "rating"] = \
            6 - frame.loc[t2 & (frame["reader"] == source), "rating"].to_numpy()
    out = _check_against_formulas(frame)
    mean2 = out["result"].treatment_mean_cis[1]
    assert mean2.cov2 < 0
    assert mean2.se == pytest.approx(math.sqrt(mean2.ms_r / 5), rel=1e-12)
    assert mean2.df == pytest.approx(4.0, rel=1e-12)


def test_reader_with_auc_one(mrmc_reference):
    """Reader 1 separates the classes perfectly under treatment 2: AUC 1 with zero jackknife and DeLong
    variance; everything stays finite and its CI is [1, 1]."""
    frame = mrmc_reference["frame"].copy()
    perfect = (frame["treatment"] == 2) & (frame["reader"] == 1)
    frame.loc[perfect, "rating"] = np.where(frame.loc[perfect, "truth"] == 1, 5, 1)
    for cov in ("jackknife", "delong"):
        out = _check_against_formulas(frame, cov=cov)
        res, fixed = out["result"], out["fixed"]
        assert res.values[1][0] == 1.0
        cmat = np.array(res.covariance)
        assert np.all(cmat[5] == 0.0) and np.all(cmat[:, 5] == 0.0)
        ci = fixed.reader_treatment_cis[5]
        assert (ci.reader, ci.treatment, ci.estimate, ci.se, ci.ci_low, ci.ci_high) == (1, 2, 1.0, 0.0, 1.0, 1.0)
        rd = fixed.reader_differences[0]
        assert rd.se == pytest.approx(math.sqrt(2 * np.mean([cmat[0, 0], 0.0])), rel=1e-12)


def test_truncated_mean_ci_keeps_the_raw_bounds(mrmc_reference):
    res = mrmc(mrmc_reference["frame"], readers="fixed")
    ci = res.reader_treatment_cis[3]  # treatment 1, reader 4: 0.973 + 1.96 * 0.0173 > 1
    assert ci.ci_high == 1.0 and ci.ci_high_untruncated > 1.0
    assert ci.ci_high_untruncated == pytest.approx(ci.estimate + norm.ppf(0.975) * ci.se, rel=1e-14)


# --------------------------------------------------------------------------------------------------
# 3. Synthetic data: cross-checks and validation
# --------------------------------------------------------------------------------------------------
def _synthetic(n_readers=4, treatments=("A", "B"), n_pos=12, n_neg=18, seed=7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    latent = truth * 1.2 + rng.normal(size=truth.size)
    rows = []
    for r in range(1, n_readers + 1):
        for k, t in enumerate(treatments):
            rating = np.round(latent + 0.3 * k * truth + rng.normal(scale=0.8, size=truth.size), 1)
            rows += [{"reader": f"R{r}", "treatment": t, "case": f"c{c:02d}", "truth": int(truth[c]),
                      "rating": float(rating[c])} for c in range(truth.size)]
    return pd.DataFrame(rows)


def test_one_fixed_reader_is_delongs_test():
    """With one fixed reader and DeLong covariance, X2 is the square of DeLong's paired z."""
    frame = _synthetic(n_readers=1)
    res = mrmc(frame, cov="delong", readers="fixed")
    a, b = (frame[frame["treatment"] == t].sort_values("case") for t in ("A", "B"))
    d = delong_test(a["truth"].to_numpy(), a["rating"].to_numpy(), b["rating"].to_numpy())
    assert res.statistic == pytest.approx(d.z ** 2, rel=1e-12)
    assert res.p_value == pytest.approx(d.p_value, rel=1e-10)
    assert (res.difference.estimate, res.difference.se) == pytest.approx((d.diff, d.se), rel=1e-12)
    assert (res.difference.ci_low, res.difference.ci_high) == pytest.approx((d.ci_low, d.ci_high), rel=1e-12)
    assert res.reader_differences[0].se == pytest.approx(d.se, rel=1e-12)


def test_synthetic_against_formulas():
    _check_against_formulas(_synthetic())
    _check_against_formulas(_synthetic(), cov="delong")


def test_binary_metrics_are_proportions():
    frame = _synthetic()
    sens = mrmc(frame, metric="sensitivity", threshold=1.0)
    spec = mrmc(frame, metric="specificity", threshold=1.0)
    for (t, r), s_val, p_val in zip(sens.covariance_labels, np.ravel(sens.values), np.ravel(spec.values)):
        cell = frame[(frame["treatment"] == t) & (frame["reader"] == r)]
        assert s_val == pytest.approx((cell.loc[cell["truth"] == 1, "rating"] >= 1.0).mean(), abs=1e-15)
        assert p_val == pytest.approx((cell.loc[cell["truth"] == 0, "rating"] < 1.0).mean(), abs=1e-15)
    assert sens.n_positive == 12 and spec.n_negative == 18


def test_three_treatments():
    """With three treatments the global test has df1 = 2 and the differences are the pairs in order,
    each with the same OR standard error."""
    frame = _synthetic(treatments=("A", "B", "C"))
    res = mrmc(frame)
    assert res.df1 == 2
    assert [d.comparison for d in res.differences] == ["A - B", "A - C", "B - C"]
    assert res.difference is res.differences[0]
    assert len({d.se for d in res.differences}) == 1
    values = np.array(res.values)
    exp = _expected(values, np.array(res.covariance))
    assert (res.statistic, res.df2, res.p_value) == \
        pytest.approx((exp["rrrc"]["F"], exp["rrrc"]["df2"], exp["rrrc"]["p"]), rel=1e-10)
    fixed = mrmc(frame, readers="fixed")
    assert fixed.statistic == pytest.approx(exp["frrc"]["X2"], rel=1e-10)
    assert len(fixed.reader_differences) == 4 * 3
    two = mrmc(frame, treatments=["C", "A"])
    assert two.treatment_levels == ("C", "A") and two.difference.comparison == "C - A"
    assert two.difference.estimate == pytest.approx(res.treatment_means["C"] - res.treatment_means["A"])


def test_fixed_cases_need_no_covariance():
    frame = _synthetic()
    res = mrmc(frame, cases="fixed")
    assert res.components is None and res.covariance is None and res.cov is None
    assert res.statistic == pytest.approx(res.anova.ms_t / res.anova.ms_tr, rel=1e-14)
    assert (res.df1, res.df2) == (1, 3)
    assert mrmc(frame, cases="fixed", cov="delong").to_dict() == {**res.to_dict()}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns="truth"), "lacks the column"),
    (lambda d: d[~((d["reader"] == "R2") & (d["treatment"] == "B"))], "reader R2 has no ratings under treatment B"),
    (lambda d: d.drop(index=d.index[(d["reader"] == "R3") & (d["case"] == "c05")][:1]),
     "reader R3 under treatment A lacks case"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "more than one rating"),
    (lambda d: d.assign(truth=np.where((d["case"] == "c01") & (d["reader"] == "R1"), 0, d["truth"])),
     "case\\(s\\) c01 have both"),
    (lambda d: d.assign(truth=1), "one class only"),
    (lambda d: d[(d["truth"] == 0) | (d["case"] == "c00")], "needs at least 2 positive and 2 negative"),
    (lambda d: d.assign(rating=np.where(d.index == 7, np.nan, d["rating"])), "rating has missing"),
    (lambda d: d.assign(truth="maybe"), "truth must be 0/1"),
    (lambda d: d[d["reader"] == "R1"], "at least 2 readers"),
    (lambda d: d[d["treatment"] == "A"], "at least 2 treatments"),
])
def test_invalid_reads(mutate, message):
    with pytest.raises(InputError, match=message):
        mrmc(mutate(_synthetic()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(metric="sensitivity", cov="delong", threshold=1), "DeLong covariance is defined for the AUC only"),
    (dict(metric="specificity"), "needs a threshold"),
    (dict(threshold=1.0), "threshold is used by sensitivity and specificity only"),
    (dict(metric="accuracy"), "metric must be one of"),
    (dict(cov="bootstrap"), "cov must be one of"),
    (dict(readers="mixed"), "readers must be one of"),
    (dict(readers="fixed", cases="fixed"), "only one of readers and cases"),
    (dict(treatments=["A", "Z"]), "treatment\\(s\\) Z have no reads"),
    (dict(treatments=["A", "A"]), "distinct"),
    (dict(conf_level=95), "level must be between 0 and 1"),
])
def test_invalid_options(kwargs, message):
    with pytest.raises(InputError, match=message):
        mrmc(_synthetic(), **kwargs)


def test_options_are_case_insensitive():
    frame = _synthetic()
    assert mrmc(frame, cov="DeLong").statistic == mrmc(frame, cov="delong").statistic
