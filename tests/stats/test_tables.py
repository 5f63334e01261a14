"""dlum.stats.tables: the article's Tables 2-4 transcribed, and Tables 2-3 recomputed from their counts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dlum.errors import InputError
from dlum.stats import (
    binary_metrics,
    chi2_test,
    load_paper_tables,
    proportion_ci,
    published_table2,
    published_table3,
    published_table4,
    recompute_table2,
    recompute_table3,
    reconstructed_calls,
    table2,
    table3,
    table4,
)
from dlum.stats import tables as tables_module

SPLITS = {"all": (78, 79), "concordant": (49, 31), "discordant": (29, 48)}


def test_table2_recomputed_within_one_unit_of_the_printed_digit():
    r = recompute_table2()
    assert len(r) == 24 * 5
    assert set(r["quantity"]) == {"recommended_pct", "unnecessary_pct", "sensitivity_pct", "specificity_pct", "auc"}
    bad = r[~r["within_one_unit"]]
    assert bad.empty, bad.to_string()
    unit = 10.0 ** -r["decimals"]
    assert (r["difference"].abs() <= unit + 1e-9).all()
    # the counts add up to each subgroup's malignant / benign split
    for g, (mal, ben) in SPLITS.items():
        sub = r[r["subgroup"] == g]
        assert ((sub["tp"] + sub["fn"]) == mal).all() and ((sub["tn"] + sub["fp"]) == ben).all()
        assert (sub[["tp", "fp", "tn", "fn"]] >= 0).all().all()


def test_table2_example_row_from_the_paper():
    """R7 (US junior), all cases: 104/157 recommended, 34/104 unnecessary, 89.7%, 57.0%, AUC 0.734;
    with DL-UM 86/157, 12/86, 94.9%, 84.8%, 0.898 (PAPER_SPEC)."""
    t = table2().set_index(["subgroup", "reader", "assisted"])
    alone, aided = t.loc[("all", "R7", False)], t.loc[("all", "R7", True)]
    assert (alone["recommended_biopsies"], alone["n"], alone["unnecessary_biopsies"]) == (104, 157, 34)
    assert (alone["sensitivity_pct"], alone["specificity_pct"], alone["auc"]) == (89.7, 57.0, 0.734)
    assert (aided["recommended_biopsies"], aided["unnecessary_biopsies"]) == (86, 12)
    assert (aided["sensitivity_pct"], aided["specificity_pct"], aided["auc"]) == (94.9, 84.8, 0.898)
    r = recompute_table2().set_index(["subgroup", "reader", "assisted", "quantity"])
    assert r.loc[("all", "R10", False, "specificity_pct"), "recomputed"] == pytest.approx(100 * 60 / 79)


def test_table2_intervals_are_wald_with_the_subgroup_size():
    """The note in paper_tables.json: sensitivity/specificity CIs use sqrt(p(1-p)/N), N = subgroup size."""
    t = table2()
    matches = 0
    for q in ("sensitivity", "specificity"):
        p = t[f"{q}_pct"] / 100
        half = 100 * 1.959964 * np.sqrt(p * (1 - p) / t["n"])
        ok = ((100 * p - half - t[f"{q}_ci_low"]).abs() <= 0.1 + 1e-9) & \
             ((100 * p + half - t[f"{q}_ci_high"]).abs() <= 0.1 + 1e-9)
        matches += int(ok.sum())
        if q == "sensitivity":
            off = t.loc[~ok, ["subgroup", "reader", "assisted"]].itertuples(index=False)
            assert list(off) == [("all", "R8", False)]
    assert matches == 47


def test_table3_recomputed_within_one_unit():
    r = recompute_table3()
    assert len(r) == 9 * 7
    assert r["within_one_unit"].all(), r[~r["within_one_unit"]].to_string()
    t = table3()
    assert len(t) == 9 and set(t["readers"]) == {"all_readers", "junior", "senior"}
    senior = t.set_index(["subgroup", "readers"]).loc[("discordant", "senior")]
    assert (senior["unnecessary_with"], senior["unnecessary_with_n"], senior["unnecessary_with_pct"]) == (0, 68, 0.0)


def test_table4_kappas():
    t = table4()
    assert len(t) == 18 and set(t["comparison"]) == {"us_vs_mg", "us_r7_vs_r9", "mg_r8_vs_r10"}
    assert ((t["ci_low"] <= t["kappa"]) & (t["kappa"] <= t["ci_high"])).all()
    row = t.set_index(["subgroup", "comparison", "assisted"]).loc[("discordant", "us_vs_mg", False)]
    assert (row["kappa"], row["ci_low"], row["ci_high"]) == (0.048, -0.108, 0.205)  # negative bound parsed
    # the headline of the text: US vs MG readers, discordant, 0.048 -> 0.713 with DL-UM
    assert t.set_index(["subgroup", "comparison", "assisted"]).loc[("discordant", "us_vs_mg", True), "kappa"] == 0.713


def test_data_file_is_package_data_and_loader_returns_a_copy():
    assert tables_module.PAPER_TABLES_PATH.is_file()
    assert tables_module.PAPER_TABLES_PATH.parent.parent.name == "stats"
    doc = load_paper_tables()
    doc["table2"]["rows"].clear()
    assert len(load_paper_tables()["table2"]["rows"]) == 24
    json.loads(tables_module.PAPER_TABLES_PATH.read_text(encoding="utf-8"))


def test_malformed_cell_is_a_clear_error():
    with pytest.raises(InputError, match="percent"):
        tables_module._parse_count("66.2 [104 of 157]")
    with pytest.raises(InputError, match="low"):
        tables_module._parse_interval("0.734")


# ------------------------------------------------------------------- printed beside recomputed
def test_reconstructed_calls_have_the_counts():
    y, call = reconstructed_calls(70, 34, 45, 8)
    m = binary_metrics(y, call)
    assert (m.tp, m.fp, m.tn, m.fn) == (70, 34, 45, 8)
    assert reconstructed_calls(0, 0, 0, 0)[0].size == 0


def test_published_table2_recomputed_by_stats():
    t2 = published_table2()
    assert len(t2) == len(table2()) == 3 * 4 * 2  # subgroups x readers x (alone, with DL-UM)
    assert t2["all_within_one_unit"].all()
    assert list(t2["subgroup"].unique()) == ["all", "concordant", "discordant"]
    assert t2[["reader", "assisted"]].head(4).values.tolist() == [["R7", False], ["R7", True],
                                                                  ["R8", False], ["R8", True]]
    first = t2.iloc[0]
    assert first["sensitivity_pct_recomputed"] == pytest.approx(100 * first["tp"] / (first["tp"] + first["fn"]))
    low, high = proportion_ci(first["tp"], first["tp"] + first["fn"])
    assert (first["sensitivity_wilson_low"], first["sensitivity_wilson_high"]) == pytest.approx(
        (100 * low, 100 * high))
    assert first["auc_from_stats"] == pytest.approx(first["auc_recomputed"])
    assert first["auc_ci_printed"] == "0.654–0.814"  # R7, all cases: 0.734 (0.654–0.814)
    assert len(recompute_table2()) == 5 * len(t2)


def test_published_table3_recomputed():
    t3 = published_table3()
    assert len(t3) == 9 and t3["all_within_one_unit"].all()
    for _, row in t3.iterrows():
        assert row["unnecessary_chi2_p"] == pytest.approx(
            chi2_test(row["unnecessary_without"], row["unnecessary_without_n"], row["unnecessary_with"],
                      row["unnecessary_with_n"]).p_value)
        assert row["missed_chi2_p"] == pytest.approx(
            chi2_test(row["missed_without"], row["missed_without_n"], row["missed_with"],
                      row["missed_with_n"]).p_value)


def test_published_table4_wording():
    t4 = published_table4()
    assert len(t4) == len(table4()) == 18
    words = dict(zip(t4["kappa"], t4["agreement"]))
    assert words[0.048] == "slight" and words[0.945] == "almost perfect" and words[0.332] == "fair"
    assert words[0.564] == "moderate" and words[0.713] == "substantial"
