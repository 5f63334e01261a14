"""dlum.study_analysis: acceptance of DL-UM's suggestion (Fig. 5 style) on small hand-built reads,
the MRMC summary and note, and the text report."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from dlum import study_analysis as sa
from dlum.errors import StudyError

# case -> (pathology, subgroup)
CASES = {"c1": (1, "concordant"), "c2": (0, "concordant"), "c3": (1, "discordant"),
         "c4": (0, "discordant"), "c5": (1, "concordant"), "c6": (0, "undetermined")}
# aided reads: (reader, case, call, accepted, DL-UM call, explanation requested)
AIDED = [
    ("R1", "c1", "malignant", True, "malignant", False),
    ("R1", "c2", "malignant", True, "malignant", True),
    ("R1", "c3", "benign", False, "malignant", False),
    ("R1", "c4", "benign", True, "benign", False),
    ("R1", "c5", "malignant", None, None, False),  # no AI output shown: no accept / reject
    ("R1", "c6", "benign", False, "malignant", True),
    ("R2", "c1", "malignant", True, "malignant", False),
    ("R2", "c2", "benign", False, "malignant", True),
    ("R2", "c3", "malignant", True, "malignant", False),
    ("R2", "c4", "malignant", False, "benign", False),
    ("R2", "c5", "benign", True, "benign", True),
    ("R2", "c6", "benign", True, None, False),  # accepted, but DL-UM's call not recorded
]
MODALITY = {"R1": "us", "R2": "mg"}


def joined_reads(with_ai_call: bool = True) -> pd.DataFrame:
    """The joined table as dlum.readers.join_reads gives it (aided reads, plus unaided ones that
    acceptance must ignore)."""
    rows = []
    for reader, case, call, accepted, ai, explained in AIDED:
        label, subgroup = CASES[case]
        rows.append({"case_id": case, "reader": reader, "modality": MODALITY[reader], "session": "aided",
                     "call": int(call == "malignant"), "accepted_ai": accepted, "requested_explanation": explained,
                     "ai_call": ai, "label": label, "subgroup": subgroup})
        rows.append({"case_id": case, "reader": reader, "modality": MODALITY[reader], "session": "unaided",
                     "call": 1, "accepted_ai": None, "requested_explanation": None, "ai_call": None,
                     "label": label, "subgroup": subgroup})
    frame = pd.DataFrame(rows)
    return frame if with_ai_call else frame.drop(columns="ai_call")


def expected(readers: set[str], subgroup: str) -> dict:
    """Counts straight from AIDED, by plain loops."""
    out = dict(reads=0, accepted=0, explanations=0, right=0, acc_right=0, wrong=0, acc_wrong=0,
               correct_acc=0, correct_rej=0)
    for reader, case, call, accepted, ai, explained in AIDED:
        label, group = CASES[case]
        if reader not in readers or accepted is None or (subgroup != "all" and group != subgroup):
            continue
        out["reads"] += 1
        out["accepted"] += accepted
        out["explanations"] += explained
        correct = (call == "malignant") == bool(label)
        out["correct_acc" if accepted else "correct_rej"] += correct
        if ai is not None:
            right = (ai == "malignant") == bool(label)
            out["right" if right else "wrong"] += 1
            out[("acc_right" if right else "acc_wrong")] += accepted
    return out


def test_acceptance_counts_rates_and_wilson_intervals():
    table = sa.acceptance(joined_reads())
    assert list(table.columns) == list(sa.ACCEPTANCE_COLUMNS)
    assert len(table) == 3 * 3  # All readers, R1, R2 x all / concordant / discordant
    assert table["reader"].iloc[0] == sa.ALL_READERS
    for row in table.itertuples(index=False):
        who = {"R1", "R2"} if row.reader == sa.ALL_READERS else {row.reader}
        e = expected(who, row.subgroup)
        assert (row.reads, row.accepted, row.rejected) == (e["reads"], e["accepted"], e["reads"] - e["accepted"])
        assert row.explanations == e["explanations"]
        assert (row.ai_right, row.accepted_when_right) == (e["right"], e["acc_right"])
        assert (row.ai_wrong, row.accepted_when_wrong) == (e["wrong"], e["acc_wrong"])
        assert row.correct_when_accepted == e["correct_acc"]
        assert row.correct_when_rejected == e["correct_rej"]
        assert row.accept_rate == pytest.approx(e["accepted"] / e["reads"])
        low, high = proportion_confint(e["accepted"], e["reads"], alpha=0.05, method="wilson")
        assert row.accept_rate_ci_low == pytest.approx(low, abs=1e-12)
        assert row.accept_rate_ci_high == pytest.approx(high, abs=1e-12)
        if e["right"]:
            assert row.accept_rate_when_right == pytest.approx(e["acc_right"] / e["right"])
    everyone = table.iloc[0]
    assert everyone["reads"] == sum(a[3] is not None for a in AIDED)  # unaided and undecided left out
    # R2's c6 was accepted without a recorded DL-UM call: outside the right / wrong split, said so
    r2 = table[(table["reader"] == "R2") & (table["subgroup"] == "all")].iloc[0]
    assert r2["ai_right"] + r2["ai_wrong"] == r2["reads"] - 1 and "without DL-UM's call" in r2["note"]


def test_without_ai_call_the_right_wrong_split_is_not_available():
    joined = joined_reads(with_ai_call=False)
    assert sa.acceptance_note(joined) is None
    assert "not available" in sa.ai_call_note(joined)
    table = sa.acceptance(joined)
    assert table["ai_right"].isna().all() and table["accept_rate_when_wrong"].isna().all()
    assert table.loc[0, "accepted"] == expected({"R1", "R2"}, "all")["accepted"]
    shown = sa.acceptance_display(table)
    assert not any("DL-UM right" in c for c in shown.columns)
    assert "Correct final call when accepting" in shown.columns
    with_ai = sa.acceptance_display(sa.acceptance(joined_reads()))
    assert "Accepted when DL-UM right" in with_ai.columns
    # an all-empty ai_call column is the same as none
    empty = joined_reads().assign(ai_call=None)
    assert sa.ai_call_note(empty) is not None and sa.acceptance(empty)["ai_right"].isna().all()


def test_an_empty_subgroup_gives_nan_rates_and_a_note():
    joined = joined_reads()
    joined = joined[joined["subgroup"] != "discordant"]
    table = sa.acceptance(joined)
    disc = table[table["subgroup"] == "discordant"]
    assert len(disc) == 3 and (disc["reads"] == 0).all()
    assert disc["accept_rate"].isna().all() and disc["accuracy_when_rejected"].isna().all()
    assert disc["note"].str.contains("no aided read").all()
    shown = sa.acceptance_display(table)
    assert shown.loc[disc.index, "Accepted"].str.contains("n/a").all()


def test_acceptance_note_says_why_nothing_can_be_shown():
    joined = joined_reads()
    unaided = joined[joined["session"] == "unaided"]
    assert sa.acceptance_note(unaided).startswith("No aided reads")
    assert sa.acceptance(unaided).empty
    undecided = joined.assign(accepted_ai=None)
    assert "accepted_ai" in sa.acceptance_note(undecided)
    assert sa.acceptance_note(joined.drop(columns="accepted_ai")) is not None
    assert sa.acceptance_note(joined) is None


def crossed_reads(n_cases: int = 12, seed: int = 1) -> pd.DataFrame:
    """Three US and one MG reader reading every case in both sessions with 0-100 confidence."""
    rng = np.random.default_rng(seed)
    label = np.array([0, 1] * (n_cases // 2))
    rows = []
    for reader, modality in (("U1", "us"), ("U2", "us"), ("U3", "us"), ("M1", "mg")):
        for session, gain in (("unaided", 20), ("aided", 35)):
            conf = np.clip(50 + gain * (2 * label - 1) + rng.normal(0, 25, n_cases), 0, 100).round()
            for i in range(n_cases):
                rows.append({"case_id": f"k{i}", "reader": reader, "modality": modality, "session": session,
                             "call": int(conf[i] >= 50), "confidence": conf[i], "label": int(label[i]),
                             "subgroup": "concordant", "accepted_ai": None, "requested_explanation": None})
    return pd.DataFrame(rows)


def test_mrmc_summary_row_note_and_display():
    joined = crossed_reads()
    assert sa.mrmc_note(joined) is None
    summary = sa.mrmc_summary(joined).set_index("group")
    row = summary.loc["All readers"]
    assert row["readers"] == 4 and row["cases"] == 12
    assert math.isfinite(row["auc_unaided"]) and math.isfinite(row["auc_aided"])
    assert row["difference"] == pytest.approx(row["auc_aided"] - row["auc_unaided"])
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert "at least 2 readers" in summary.loc["MG readers", "note"]
    shown = sa.mrmc_display(summary.reset_index())
    assert shown["Readers"].tolist() == ["All readers", "US readers", "MG readers"]
    assert shown.loc[0, "AUC aided"] == f"{row['auc_aided']:.3f}"
    assert "0-100 confidence" in sa.mrmc_note(joined.drop(columns="confidence"))
    assert sa.mrmc_note(joined.assign(confidence=np.nan)) is not None


def test_analysis_report_sections():
    joined = joined_reads()
    text = sa.analysis_report(joined)
    assert "Acceptance of DL-UM's suggestion (Fig. 5 style)\n=====" in text
    assert "MRMC" not in text  # no confidence ratings: the section is left out unless asked for
    asked = sa.analysis_report(joined, markdown=True, mrmc_section=True)
    assert "## MRMC: unaided vs aided" in asked and "`confidence`" in asked
    assert "| Reader | Subgroup | Accepted |" in asked
    everyone = sa.acceptance(joined).iloc[0]
    assert f"{everyone['accepted']}/{everyone['reads']}" in text
    plain = sa.analysis_report(crossed_reads())
    assert "No aided reads" not in plain and "No accept / reject recorded" in plain
    assert "MRMC: unaided vs aided" in plain and "All readers" in plain


def test_study_file_names():
    folder = sa.study_file("study", {"DLUM_STUDY_DIR": "studies"})
    assert folder.name == "study.sqlite" and folder.parent.name == "studies"
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(StudyError, match="not a path"):
            sa.study_file(bad, {"DLUM_STUDY_DIR": "studies"})
