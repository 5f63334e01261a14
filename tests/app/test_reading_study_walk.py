"""A whole small reader study through the Reading Session page: 2 readers x 4 demo cases x 2
sessions read through the widgets, then the admin's analysis (Tables 2-4 and the MRMC table of
Xu et al., Breast Cancer Research 2025)."""
from __future__ import annotations

import pandas as pd
import pytest

from dlum import study_store as ss
from tests.app.reading_pages import ADMIN_CODE, demo_subset, make_study, run, sign_in, submit_read

READERS = {"Dr Alvarez": ("us", "code-alvarez"), "Dr Okafor": ("mg", "code-okafor")}


@pytest.fixture()
def study(tmp_path, monkeypatch):
    monkeypatch.setenv("DLUM_STUDY_DIR", str(tmp_path))
    cases = demo_subset()
    assert len(cases) == 4 and cases["label"].nunique() == 2 and cases["subgroup"].nunique() == 2
    store, admin = make_study(tmp_path, cases, READERS)
    return store, admin, dict(zip(cases["case_id"], cases["label"]))


def planned(reader: str, case_id: str, session: str, label: int) -> dict:
    """What a reader enters: right on every case but one of Dr Okafor's unaided reads, more
    confident when aided; DL-UM accepted when it agrees with the reader's call."""
    wrong = reader == "Dr Okafor" and session == "unaided" and case_id.endswith(("1", "5"))
    call = ("benign", "malignant")[label ^ wrong]
    confidence = (30 + 40 * (call == "malignant") + (10 if session == "aided" else 0)
                  + int(case_id[-2:]) % 7)
    return {"birads": "4c" if call == "malignant" else "3", "call": call, "confidence": confidence}


@pytest.mark.slow
def test_two_readers_read_four_cases_in_both_sessions_and_the_admin_analyses(study):
    store, admin, labels = study
    entered = {}
    explained = set()
    for name, (modality, code) in READERS.items():
        reader = store.sign_in(name, code)
        at = sign_in(name, code)
        for session in ss.SESSIONS:
            for n in range(len(labels)):
                status = store.status(reader)  # the case the page shows (the store decides)
                assert (status.session, status.done) == (session, n)
                assert any(status.case_id in c.value for c in at.caption), "current case not shown"
                read = planned(name, status.case_id, session, labels[status.case_id])
                accept = explain = None
                if session == ss.AIDED:
                    assert len(at.metric) == 2, "DL-UM's probability and suggestion are not shown"
                    accept = "accept" if n % 2 == 0 else "reject"
                    explain = n == 1
                    if explain:
                        explained.add((name, status.case_id))
                at = submit_read(at, session, n, accept=accept, explain=bool(explain), **read)
                entered[(name, session, status.case_id)] = {**read, "position": n,
                                                             "accepted_ai": accept}
        assert store.status(reader).finished
        assert any("every case in both sessions" in s.value for s in at.success)

    # the store: exactly 16 reads, each as entered, in each reader's order
    reads = store.reads_frame(admin)
    assert len(reads) == 16 == len(READERS) * len(labels) * 2
    assert not reads.duplicated(["reader", "session", "case_id"]).any()
    assert reads.groupby(["reader", "session"]).size().to_dict() == {
        (r, s): len(labels) for r in READERS for s in ss.SESSIONS}
    seed = store.study()["order_seed"]
    for row in reads.itertuples():
        want = entered[(row.reader, row.session, row.case_id)]
        assert (row.birads, row.call, row.confidence, row.position) == (
            want["birads"], want["call"], want["confidence"], want["position"])
        order = ss.case_order(seed, row.reader, row.session, list(labels))
        assert order[row.position] == row.case_id
        if row.session == ss.UNAIDED:
            assert row.accepted_ai == "" and row.requested_explanation == ""
        else:
            assert row.accepted_ai == ("true" if want["accepted_ai"] == "accept" else "false")
            assert row.requested_explanation == (
                "true" if (row.reader, row.case_id) in explained else "false")

    # the admin's analysis on the page
    at = run()
    at.text_input(key="admin_code").input(ADMIN_CODE)
    at = run(at.button(key="admin_sign_in").click())
    assert not at.error, [e.value for e in at.error]
    headings = " ".join(m.value for m in at.markdown)
    for section in ("Table 2 style", "Table 3 style", "Table 4 style", "MRMC"):
        assert section in headings, f"{section} section missing"
    frames = {tuple(d.value.columns): d.value for d in at.dataframe}
    progress = next(f for cols, f in frames.items() if "aided_reads" in cols)
    assert progress.set_index("reader")[["unaided_reads", "aided_reads"]].to_dict("index") == {
        r: {"unaided_reads": len(labels), "aided_reads": len(labels)} for r in READERS}
    mrmc = next(f for cols, f in frames.items() if "auc_aided" in cols)
    everyone = mrmc.set_index("group").loc["All readers"]
    assert everyone["readers"] == len(READERS) and everyone["cases"] == len(labels)
    assert pd.notna(everyone["auc_unaided"]) and pd.notna(everyone["auc_aided"])
    # the explanation table (Table 3 style) counts the requests made through the page
    explain = next(f for cols, f in frames.items() if "Explanation requested" in cols)
    row = explain[(explain["Readers"] == "All readers") & (explain["Subgroup"] == "all")].iloc[0]
    assert row["Explanation requested"].startswith(f"{len(explained)}/{len(READERS) * len(labels)} ")
