"""dlum.readers: reads validation, Tables 2-4 of a study, the published tables shown, the command."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

from dlum import readers as rs
from dlum.cli import main
from dlum.errors import CohortError
from dlum.stats import (
    binary_metrics,
    biopsy_metrics,
    chi2_test,
    mcnemar_test,
    proportion_ci,
    published_table2,
    published_table3,
    published_table4,
    weighted_kappa,
)


def csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def make_study(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cohort and reads of two US and two MG readers, each reading every case twice."""
    rng = np.random.default_rng(seed)
    y = np.array([1, 0] * (n // 2))
    us = np.where(y == 1, rng.choice([3, 4, 5], n), rng.choice([2, 3, 4], n))
    mg = np.where(y == 1, rng.choice([3, 4, 5], n), rng.choice([2, 3, 4], n))
    cohort = pd.DataFrame({"case_id": [f"k{i}" for i in range(n)],
                           "label": np.where(y == 1, "malignant", "benign"), "us_birads": us, "mg_birads": mg})
    rows = []
    for reader, modality, base in (("R1", "us", us), ("R2", "us", us), ("R3", "mg", mg), ("R4", "mg", mg)):
        noise = rng.random(n) < 0.2
        birads = np.clip(base + np.where(noise, rng.choice([-1, 1], n), 0), 2, 5)
        for i in range(n):
            unaided = int(birads[i] >= 4)
            aided = y[i] if rng.random() < 0.7 else unaided
            explain = bool(rng.random() < 0.3)
            rows.append((cohort.case_id[i], reader, modality, "unaided", ["benign", "malignant"][unaided],
                         birads[i], "", ""))
            rows.append((cohort.case_id[i], reader, modality, "aided", ["benign", "malignant"][aided],
                         birads[i] if aided == unaided else (4 if aided else 3),
                         str(aided == y[i]).lower(), str(explain).lower()))
    reads = pd.DataFrame(rows, columns=["case_id", "reader", "modality", "session", "call", "birads",
                                        "accepted_ai", "requested_explanation"])
    return cohort, reads


@pytest.fixture(scope="module")
def study() -> pd.DataFrame:
    cohort, reads = make_study()
    return rs.join_reads(rs.read_reads(csv(reads), name="reads.csv"),
                         rs.read_study_cohort(csv(cohort), name="cohort.csv"))


# ------------------------------------------------------------------------------------ validation
def test_read_reads_parses_values(study):
    assert set(study["call"]) == {0, 1}
    assert set(study["session"]) == {"unaided", "aided"}
    assert study["birads"].between(2, 5).all()
    assert set(study["requested_explanation"].dropna()) <= {True, False}
    assert rs.readers_in(study)["reader"].tolist() == ["R1", "R2", "R3", "R4"]


def test_read_reads_lists_every_problem():
    _, reads = make_study(6)
    reads = reads.astype(object)
    reads.loc[0, "modality"] = "ct"                 # row 1
    reads.loc[1, "session"] = "later"               # row 2
    reads.loc[2, "call"] = "unsure"                 # row 3
    reads.loc[3, "birads"] = "7"                    # row 4
    reads.loc[4, "requested_explanation"] = "perhaps"  # row 5
    reads.loc[6] = reads.loc[5]                     # row 7 repeats row 6: same case, reader, session
    reads.loc[20, "modality"] = "mg"                # row 21: R2 (rows 13-24) is a US reader
    with pytest.raises(CohortError) as info:
        rs.read_reads(csv(reads), name="reads.csv")
    assert len(info.value.problems) == 7, info.value.problems
    assert info.value.problems == [
        "data row 1 (file line 2), column 'modality', value 'ct': not one of us, mg",
        "data row 2 (file line 3), column 'session', value 'later': not one of unaided, aided",
        "data row 3 (file line 4), column 'call', value 'unsure': not benign or malignant (or 0/1)",
        "data row 4 (file line 5), column 'birads', value '7': not a BI-RADS category 2, 3, 4 (4a/4b/4c) or 5",
        "data row 5 (file line 6), column 'requested_explanation', value 'perhaps': not true/false (yes/no, 1/0)",
        "data row 7 (file line 8), column 'case_id', value 'k2': reader 'R1' already read this case in the "
        "aided session (data row 6)",
        "data row 21 (file line 22), column 'modality', value 'mg': reader 'R2' reads us at data rows 13, 14, "
        "15, 16, 17, 18, 19, 20, 22, 23 and 1 more and mg here; use one reader name per modality",
    ]
    assert info.value.source == "reads.csv"


def test_first_row_with_an_extra_cell_is_reported_as_such():
    text = ("case_id,reader,modality,session,call\n"
            "k1,R1,us,unaided,benign,4\n"
            "k2,R1,us,unaided,malignant\n").encode()
    with pytest.raises(CohortError) as info:
        rs.read_reads(text, name="reads.csv")
    assert info.value.problems == [
        "data row 1 (file line 2), value '4': has 6 cells but the header has 5 columns "
        "(is a comma missing from the header, or one too many here?)"]
    with pytest.raises(CohortError) as info:
        rs.read_study_cohort(b"case_id,label,subgroup\na,1,concordant,x\nb,0,discordant\n")
    assert len(info.value.problems) == 1 and "has 4 cells" in info.value.problems[0]
    assert "repeats" not in str(info.value) and "already read" not in str(info.value)


def test_read_reads_missing_columns():
    with pytest.raises(CohortError) as info:
        rs.read_reads(b"case_id,reader,call\nk1,R1,benign\n", name="reads.csv")
    assert len(info.value.problems) == 1
    assert "missing required column(s) 'modality', 'session'" in str(info.value)


def test_read_study_cohort_variants():
    by_birads = rs.read_study_cohort(b"case_id,label,us_birads,mg_birads\na,malignant,4,3\nb,0,2,3\nc,1,4b,5\n")
    assert by_birads["subgroup"].tolist() == ["discordant", "concordant", "concordant"]
    assert by_birads["label"].tolist() == [1, 0, 1]
    by_subgroup = rs.read_study_cohort(b"case_id,label,subgroup\na,benign,Discordant\nb,1,\n")
    assert by_subgroup["subgroup"].tolist() == ["discordant", "undetermined"]
    full = rs.read_study_cohort(b"case_id,patient_id,us_image,mg_image,label,us_birads,mg_birads\n"
                                b"a,p1,u.png,m.png,benign,3,3\n")
    assert full["subgroup"].tolist() == ["concordant"]
    with pytest.raises(CohortError) as info:
        rs.read_study_cohort(b"case_id,label,us_birads,mg_birads\na,maybe,9,3\na,1,4,4\n")
    assert info.value.problems == [
        "data row 1 (file line 2), column 'label', value 'maybe': not benign/malignant/0/1",
        "data row 1 (file line 2), column 'us_birads', value '9': not a BI-RADS category (2-5, 4a/4b/4c)",
        "data row 2 (file line 3), column 'case_id', value 'a': repeats data row 1",
    ]
    with pytest.raises(CohortError, match="us_birads"):
        rs.read_study_cohort(b"case_id,label\na,1\n")


def test_join_reads_names_unknown_cases():
    cohort, reads = make_study(6)
    reads.loc[len(reads)] = ["ghost", "R1", "us", "unaided", "benign", 3, "", ""]
    with pytest.raises(CohortError) as info:
        rs.join_reads(rs.read_reads(csv(reads)), rs.read_study_cohort(csv(cohort)))
    assert info.value.problems == [f"data row {len(reads)} (file line {len(reads) + 1}), column 'case_id', "
                                   "value 'ghost': not in the cohort table"]
    with pytest.raises(CohortError, match="value 'ghost': not in the cohort table cohort.csv"):
        rs.join_reads(rs.read_reads(csv(reads)), rs.read_study_cohort(csv(cohort), name="cohort.csv"))


# --------------------------------------------------------------------------------- Table 2 style
def test_reader_performance_matches_stats(study):
    perf = rs.reader_performance(study)
    assert len(perf) == 4 * 2 * 3
    for _, row in perf.sample(6, random_state=0).iterrows():
        part = study[(study["reader"] == row["reader"]) & (study["session"] == row["session"])]
        if row["subgroup"] != "all":
            part = part[part["subgroup"] == row["subgroup"]]
        bm, bio = binary_metrics(part["label"], part["call"]), biopsy_metrics(part["label"], part["call"])
        assert row["sensitivity"] == pytest.approx(bm.sensitivity.estimate)
        assert row["specificity_ci_low"] == pytest.approx(bm.specificity.ci_low)
        assert row["auc"] == pytest.approx((bm.sensitivity.estimate + bm.specificity.estimate) / 2)
        assert row["recommended_biopsies"] == bio.recommended_biopsies
        assert row["unnecessary_biopsies"] == bio.unnecessary_biopsies
        assert row["unnecessary_rate"] == pytest.approx(bio.unnecessary_rate.estimate)
    shown = rs.performance_display(perf)
    assert shown.iloc[0]["Reader"] == "R1 (US)"


def test_perfect_reader_and_one_class_subgroup():
    cohort = pd.DataFrame({"case_id": list("abcdef"), "label": [1, 1, 0, 0, 1, 1],
                           "subgroup": ["concordant"] * 4 + ["discordant"] * 2})
    reads = pd.DataFrame({"case_id": list("abcdef"), "reader": "R", "modality": "us", "session": "unaided",
                          "call": ["malignant", "malignant", "benign", "benign", "malignant", "benign"]})
    joined = rs.join_reads(rs.read_reads(csv(reads)), rs.read_study_cohort(csv(cohort)))
    perf = rs.reader_performance(joined).set_index("subgroup")
    assert perf.loc["concordant", "auc"] == 1.0
    assert perf.loc["concordant", "unnecessary_biopsies"] == 0
    assert math.isnan(perf.loc["discordant", "auc"])
    assert "one class" in perf.loc["discordant", "note"]
    assert perf.loc["discordant", "missed_malignancies"] == 1


def test_session_changes_match_tests(study):
    changes = rs.session_changes(study)
    row = changes[(changes["reader"] == "R3") & (changes["subgroup"] == "all")].iloc[0]
    mine = study[study["reader"] == "R3"]
    u, a = mine[mine["session"] == "unaided"], mine[mine["session"] == "aided"]
    mu, ma = binary_metrics(u["label"], u["call"]), binary_metrics(a["label"], a["call"])
    expected = chi2_test(mu.tp, mu.tp + mu.fn, ma.tp, ma.tp + ma.fn).p_value
    assert row["sensitivity_chi2_p"] == pytest.approx(expected, nan_ok=True)
    wide = mine.pivot_table(index="case_id", columns="session", values="call")
    labels = mine.drop_duplicates("case_id").set_index("case_id").loc[wide.index, "label"]
    expected = mcnemar_test(labels, wide["unaided"].astype(int), wide["aided"].astype(int), "specificity").p_value
    assert row["specificity_mcnemar_p"] == pytest.approx(expected)
    assert "→" in rs.changes_display(changes).iloc[0]["AUC unaided → aided"]


# --------------------------------------------------------------------------------- Table 3 style
def test_explanation_effects_counts():
    cohort = pd.DataFrame({"case_id": list("abcd"), "label": [0, 0, 1, 1], "subgroup": "concordant"})
    rows = []
    # case a: benign, called malignant unaided and aided, explanation requested -> unnecessary both times
    # case b: benign, called malignant unaided, benign aided after an explanation
    # case c: malignant, called benign unaided (missed), malignant aided after an explanation
    # case d: malignant, called malignant both times, no explanation
    for case, unaided, aided, explained in (("a", 1, 1, True), ("b", 1, 0, True), ("c", 0, 1, True),
                                            ("d", 1, 1, False)):
        rows.append((case, "R", "us", "unaided", unaided, ""))
        rows.append((case, "R", "us", "aided", aided, str(explained).lower()))
    reads = pd.DataFrame(rows, columns=["case_id", "reader", "modality", "session", "call",
                                        "requested_explanation"])
    joined = rs.join_reads(rs.read_reads(csv(reads)), rs.read_study_cohort(csv(cohort)))
    table = rs.explanation_effects(joined, subgroups=["all"], groups={"R": ["R"]})
    row = table.iloc[0]
    assert (row["explanation_requested"], row["aided_reads"]) == (3, 4)
    # unaided: recommended a, b, d = 3; unnecessary among requested: a, b = 2
    assert (row["unnecessary_without"], row["recommended_without"]) == (2, 3)
    # aided: recommended a, c, d = 3; unnecessary among requested: a = 1
    assert (row["unnecessary_with"], row["recommended_with"]) == (1, 3)
    # unaided benign calls: c = 1, missed among requested: c = 1; aided benign calls: b, none missed
    assert (row["missed_without"], row["benign_calls_without"]) == (1, 1)
    assert (row["missed_with"], row["benign_calls_with"]) == (0, 1)
    assert row["decreased_biopsies_pts"] == pytest.approx(100 * (2 / 3 - 1 / 3))
    low, high = proportion_ci(2, 3)
    assert (row["unnecessary_without_ci_low"], row["unnecessary_without_ci_high"]) == pytest.approx((low, high))
    assert row["unnecessary_chi2_p"] == pytest.approx(chi2_test(2, 3, 1, 3).p_value, nan_ok=True)
    assert "2/3" in rs.explanation_display(table).iloc[0]["Unnecessary biopsies without DL-UM"]


def test_explanation_effects_needs_the_column(study):
    assert rs.explanation_effects(study.drop(columns="requested_explanation")).empty
    assert "No explanation data" in rs.explanation_note(study.drop(columns="requested_explanation"))
    table = rs.explanation_effects(study)
    assert set(table["readers"]) == {"All readers", "US readers", "MG readers"}
    assert rs.explanation_note(study) is None


def test_reads_without_an_aided_session_are_no_problem():
    cohort, reads = make_study(8)
    unaided = reads[reads["session"] == "unaided"].drop(columns=["accepted_ai", "requested_explanation"])
    joined = rs.join_reads(rs.read_reads(csv(unaided)), rs.read_study_cohort(csv(cohort)))
    assert set(joined["session"]) == {"unaided"}
    assert rs.explanation_effects(joined).empty and rs.session_changes(joined).empty
    note = rs.explanation_note(joined)
    assert note.startswith("No aided reads") and "requested_explanation" not in note
    assert len(rs.reader_performance(joined)) == 4 * 3
    report = rs.study_report(joined)
    assert "No aided reads" in report and "No reader has both unaided and aided reads" in report


# --------------------------------------------------------------------------------- Table 4 style
def test_agreement_matches_weighted_kappa(study):
    table = rs.agreement(study, subgroups=["all", "discordant"], rating="birads", weights="linear")
    pair = table[(table["comparison"] == "US: R1 vs R2") & (table["subgroup"] == "discordant")
                 & (table["session"] == "aided")].iloc[0]
    part = study[(study["session"] == "aided") & (study["subgroup"] == "discordant")]
    a = part[part["reader"] == "R1"].set_index("case_id")["birads"]
    b = part[part["reader"] == "R2"].set_index("case_id")["birads"].loc[a.index]
    ref = weighted_kappa(a.astype(int), b.astype(int), "linear", levels=(2, 3, 4, 5))
    assert pair["kappa"] == pytest.approx(ref.kappa)
    assert pair["ci_low"] == pytest.approx(ref.ci_low)
    # pooled US vs MG: R1 with R3 and R2 with R4, stacked
    pooled = table[table["comparison"].str.startswith("US R1 + R2 vs MG R3 + R4")
                   & (table["subgroup"] == "all") & (table["session"] == "unaided")].iloc[0]
    u = study[study["session"] == "unaided"]
    ratings = {r: u[u["reader"] == r].set_index("case_id")["birads"].astype(int) for r in ("R1", "R2", "R3", "R4")}
    ref = weighted_kappa(pd.concat([ratings["R1"], ratings["R2"]]),
                         pd.concat([ratings["R3"].loc[ratings["R1"].index], ratings["R4"].loc[ratings["R2"].index]]),
                         "linear", levels=(2, 3, 4, 5))
    assert pooled["kappa"] == pytest.approx(ref.kappa)
    assert pooled["n_pairs"] == 2 * study["case_id"].nunique()
    shown = rs.agreement_display(table)
    assert list(shown.columns) == ["Subgroup", "Comparison", "Pairs (unaided / aided)", "Without AI (unaided)",
                                   "With AI (aided)"]


def test_identical_readers_agree_perfectly_and_matrix(study):
    twin = study[study["reader"] == "R1"].assign(reader="R1b")
    joined = pd.concat([study, twin], ignore_index=True)
    table = rs.agreement(joined, subgroups=["all"])
    assert table[table["comparison"] == "US: R1 vs R1b"]["kappa"].tolist() == pytest.approx([1.0, 1.0])
    matrix = rs.kappa_matrix(joined, "unaided")
    assert np.allclose(np.diag(matrix), 1.0)
    assert np.allclose(matrix.to_numpy(), matrix.to_numpy().T, equal_nan=True)
    row = table[(table["comparison"] == "MG: R3 vs R4") & (table["session"] == "unaided")].iloc[0]
    assert matrix.loc["R3", "R4"] == pytest.approx(row["kappa"])


def test_agreement_rejects_unknown_rating(study):
    with pytest.raises(ValueError):
        rs.agreement(study, rating="size")


# ------------------------------------------------------------------------------ published tables
def test_published_tables_displayed():
    t2, t3, t4 = published_table2(), published_table3(), published_table4()
    shown = rs.published_table2_display(t2)
    assert len(shown) == len(t2) == 24
    assert shown.iloc[0]["Reader"] == "R7 (US)" and (shown["Within one printed unit"] == "yes").all()
    assert shown.iloc[0]["AUC (printed | recomputed)"] == "0.734 | 0.7335"
    shown = rs.published_table3_display(t3)
    assert "|" in shown.iloc[0]["Unnecessary without %"]
    assert shown["p (chi-square)"].str.match(r"^(< 0\.001|\d\.\d{3})$").all()
    shown = rs.published_table4_display(t4)
    assert shown.iloc[0]["Comparison"].startswith("US R7 + R9")
    assert shown.iloc[0]["Without DL-UM"] == "0.332 [0.225–0.438] fair"
    assert rs.published_table2 is published_table2  # one implementation, in dlum.stats


# ------------------------------------------------------------------------------------------- demo
def test_demo_loads_and_is_complete():
    joined = rs.load_demo()
    assert set(joined["session"]) == {"unaided", "aided"}
    assert joined["label"].isin([0, 1]).all()
    assert len(rs.readers_in(joined)) == 4
    assert "DEMO" in rs.DEMO_NOTE


def test_buffers_are_accepted():
    cohort, reads = make_study(4)
    joined = rs.join_reads(rs.read_reads(io.BytesIO(csv(reads))), rs.read_study_cohort(io.StringIO(cohort.to_csv(index=False))))
    assert len(joined) == len(reads)


# ---------------------------------------------------------------------------------- the command
def test_command_prints_the_demo_tables(capsys):
    assert main(["reader-study", "--demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("DEMO data, not study data.")
    for heading in ("Table 2 style", "Change with AI", "Table 3 style", "Table 4 style"):
        assert heading in out
    assert "us_reader_1 (US)" in out
    assert "US us_reader_1 + us_reader_2 vs MG mg_reader_1 + mg_reader_2" in out


def test_command_on_files_and_markdown(tmp_path, capsys):
    cohort, reads = make_study(12)
    (tmp_path / "reads.csv").write_bytes(csv(reads))
    (tmp_path / "cohort.csv").write_bytes(csv(cohort))
    assert main(["reader-study", "--reads", str(tmp_path / "reads.csv"), "--cohort",
                 str(tmp_path / "cohort.csv"), "--markdown", "--rating", "birads"]) == 0
    out = capsys.readouterr().out
    assert "DEMO" not in out and "12 cases, 4 readers" in out
    assert "## Table 4 style: agreement between readers (linear kappa on the birads)" in out
    assert "| Reader | Session | Subgroup |" in out
    # without the cohort the reads are only checked
    assert main(["reader-study", "--reads", str(tmp_path / "reads.csv")]) == 0
    assert "add --cohort CSV" in capsys.readouterr().out
    assert main(["reader-study", "--published"]) == 0
    assert "0.048 [-0.108–0.205] slight" in capsys.readouterr().out


def test_command_malformed_reads_is_a_message(tmp_path, capsys):
    cohort, reads = make_study(4)
    reads = reads.astype(object)
    reads.loc[2, "call"] = "unsure"
    (tmp_path / "reads.csv").write_bytes(csv(reads))
    (tmp_path / "cohort.csv").write_bytes(csv(cohort))
    assert main(["reader-study", "--reads", str(tmp_path / "reads.csv"), "--cohort",
                 str(tmp_path / "cohort.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"dlum reader-study: error: {tmp_path / 'reads.csv'}: 1 problem(s)")
    assert "data row 3 (file line 4), column 'call', value 'unsure'" in captured.err
    assert "Traceback" not in captured.err
    assert main(["reader-study", "--demo", "--cohort", str(tmp_path / "cohort.csv")]) == 2
    assert "--cohort goes with --reads" in capsys.readouterr().err
