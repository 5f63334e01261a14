"""Blinding and access on the Reading Session page: a signed-in reader never sees another
reader's name or progress, nor any case's pathology or subgroup, and a wrong code and an unknown
reader are refused with the same message (the blinded reads of Xu et al., Breast Cancer
Research 2025)."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dlum import study_store as ss
from dlum.app.reading import uploaded_cases
from dlum.errors import StudyError
from tests.app.reading_pages import (
    ADMIN_CODE,
    demo_subset,
    make_study,
    rendered_text,
    run,
    sign_in,
    submit_read,
)

READER_STUDY_PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "3_Reader_Study.py")
ME, OTHER = "Dr Alvarez", "Dr Okafor"
READERS = {ME: ("us", "code-alvarez"), OTHER: ("mg", "code-okafor")}
#: Words that give a case's truth away (subgroup values, the cohort's hidden columns).
TELLING = re.compile(r"concordant|discordant|subgroup|pathology", re.IGNORECASE)
HIDDEN_COLUMNS = {"label", "pathology", "subgroup"}


@pytest.fixture()
def study(tmp_path, monkeypatch):
    """4 demo cases; the other reader has finished session 1 and read one aided case."""
    monkeypatch.setenv("DLUM_STUDY_DIR", str(tmp_path))
    store, admin = make_study(tmp_path, demo_subset(), READERS)
    other = store.sign_in(OTHER, READERS[OTHER][1])
    status = store.status(other)
    while status.session == ss.UNAIDED:
        status = store.submit_read(other, status.case_id, birads="4b", call="malignant", confidence=93)
    store.request_explanation(other, status.case_id)
    store.submit_read(other, status.case_id, birads="5", call="malignant", confidence=97, accepted_ai=True)
    return store, admin


def assert_blind(at, what: str) -> str:
    """The whole rendered page shows no other reader, no truth, no hidden column."""
    text = rendered_text(at)
    assert OTHER not in text, f"{what}: another reader's name is shown"
    found = TELLING.findall(text)
    assert not found, f"{what}: the page shows {sorted(set(found))}"
    for frame in at.dataframe:
        assert not HIDDEN_COLUMNS & {str(c).lower() for c in frame.value.columns}, (
            f"{what}: a table shows {list(frame.value.columns)}")
    return text


def test_a_reader_sees_only_their_own_progress_and_no_truth(study):
    store, _ = study
    at = run()
    assert_blind(at, "sign-in")
    at = sign_in(ME, READERS[ME][1])
    me = store.sign_in(ME, READERS[ME][1])
    total = store.study()["cases"]
    others_done = total + 1  # the fixture's reads of the other reader
    for session in ss.SESSIONS:
        for n in range(total):
            status = store.status(me)
            text = assert_blind(at, f"{session} case {n + 1}")
            # the checks read the page: its reader, their case and their progress are there
            assert ME in text and status.case_id in text
            mine = n + (total if session == ss.AIDED else 0)
            assert f"{mine} of {2 * total} reads" in text
            if mine != others_done:
                assert f"{others_done} of {2 * total} reads" not in text, "another reader's progress"
            aided = session == ss.AIDED
            at = submit_read(at, session, n, birads="3", call="benign", confidence=20,
                             accept="reject" if aided else None, explain=aided and n == 0)
            if aided and n == 0:
                assert store.explanation_requested(me, status.case_id)
    assert store.status(me).finished
    assert f"{2 * total} of {2 * total} reads" in assert_blind(at, "finished")
    assert store.status(store.sign_in(OTHER, READERS[OTHER][1])).aided_done == 1  # theirs untouched


def test_an_uploaded_cohort_shows_readers_its_clinical_fields_only(tmp_path, monkeypatch):
    monkeypatch.setenv("DLUM_STUDY_DIR", str(tmp_path))
    csv = pd.DataFrame({
        "case_id": ["u1", "u2"], "label": [1, 0], "subgroup": ["discordant", "concordant"],
        "pathology": ["invasive ductal carcinoma", "fibroadenoma"], "patient_id": ["PID-77", "PID-78"],
        "source": ["SRC-MARKER", "SRC-MARKER"], "age": ["61", "34"]}).to_csv(index=False).encode()
    make_study(tmp_path, uploaded_cases(csv, "mine.csv"), READERS, cohort_ref="upload:mine.csv")
    at = sign_in(ME, READERS[ME][1])
    text = assert_blind(at, "uploaded cohort")
    for secret in ("carcinoma", "fibroadenoma", "PID-7", "SRC-MARKER"):
        assert secret not in text, f"the reader sees {secret!r}"
    fields = pd.concat([f.value for f in at.dataframe])
    assert "age" in set(fields["field"]), "the cohort's clinical field is not shown"


def test_an_uploaded_cohort_keeps_each_case_with_its_own_fields_and_images():
    csv = pd.DataFrame({"case_id": ["u1", "u2", "u3"], "label": [1, 0, 1],
                        "subgroup": ["concordant"] * 3, "age": ["61", "34", "47"],
                        "us_image": ["u1_us.png", "u2_us.png", "u3_us.png"]}).to_csv(index=False).encode()
    cases = uploaded_cases(csv, "mine.csv").set_index("case_id")
    assert [cases.loc[c, "info"].get("age") for c in ("u1", "u2", "u3")] == ["61", "34", "47"]
    assert [cases.loc[c, "us_image"] for c in ("u1", "u2", "u3")] == ["u1_us.png", "u2_us.png", "u3_us.png"]


def test_a_wrong_code_and_an_unknown_reader_get_the_same_message(study):
    store, _ = study
    attempts = {"wrong code": (ME, "not-the-code"), "another reader's code": (ME, READERS[OTHER][1]),
                "unknown reader": ("Dr Nobody", READERS[ME][1]), "empty": ("", "")}
    from_api = {}
    for what, (name, code) in attempts.items():
        with pytest.raises(StudyError) as caught:
            store.sign_in(name, code)
        from_api[what] = str(caught.value)
    assert len(set(from_api.values())) == 1, from_api
    from_page = {}
    for what, (name, code) in attempts.items():
        at = sign_in(name, code)
        from_page[what] = [e.value for e in at.error]
        assert not at.subheader, f"{what}: a case is shown"
        assert "reader" not in at.session_state, f"{what}: signed in"
    assert all(v == [from_api["wrong code"]] for v in from_page.values()), from_page


def test_the_reader_study_page_shows_the_store_only_with_the_admin_code(study):
    """Reader Study's "Study store" source: nothing of the study before the admin code is given."""
    at = run(AppTest.from_file(READER_STUDY_PAGE, default_timeout=60))
    at.radio(key="study_source").set_value("store")
    at = run(at)
    assert OTHER not in rendered_text(at), "the store's reads are shown without the admin code"
    at.text_input(key="store_admin_code").input("not-the-admin-code")
    at = run(at.button(key="store_sign_in").click())
    assert any("Wrong admin code" in e.value for e in at.error)
    assert OTHER not in rendered_text(at), "the store's reads are shown after a wrong admin code"
    at.text_input(key="store_admin_code").input(ADMIN_CODE)
    at = run(at.button(key="store_sign_in").click())
    assert OTHER in rendered_text(at), "the admin does not get the store's reads"  # the check can fail
