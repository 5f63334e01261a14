"""The Reading Session page: an admin sets up a demo study, a reader signs in, reads, resumes."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

import pytest
from streamlit.testing.v1 import AppTest

from dlum import study_store as ss
from tests.app.reading_pages import run



@pytest.fixture()
def study_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DLUM_STUDY_DIR", str(tmp_path))
    return tmp_path


def setup_demo_study(study_dir: Path) -> None:
    at = run()
    assert not (study_dir / ss.STORE_FILE).exists()  # nothing written before the admin acts
    at.text_input(key="admin_new_code").input("admin-pass")
    at.text_input(key="admin_new_code2").input("admin-pass")
    run(at.button(key="admin_set").click())
    at.radio(key="cohort_source").set_value("demo")
    at.number_input(key="washout").set_value(0)
    run(at.button(key="create_study").click())
    for name, modality, code in (("R1", "us", "code-r1"), ("R2", "mg", "code-r2")):
        at.text_input(key="new_reader_name").input(name)
        at.selectbox(key="new_reader_modality").set_value(modality)
        at.text_input(key="new_reader_code").input(code)
        run(at.button(key="add_reader").click())
    assert at.dataframe, "readers table missing"


def sign_in(name: str, code: str) -> AppTest:
    at = run()
    at.text_input(key="reader_name").input(name)
    at.text_input(key="reader_code").input(code)
    return run(at.button(key="sign_in").click())


def test_admin_sets_up_and_a_reader_reads_and_resumes(study_dir):
    setup_demo_study(study_dir)
    store = ss.StudyStore(study_dir / ss.STORE_FILE)
    study = store.study()
    assert study["cases"] == 157 and study["readers"] == 2 and study["washout_days"] == 0

    at = sign_in("R1", "code-r1")
    assert any("case 1 of 157" in s.value for s in at.subheader)
    for position in range(2):
        key = f"unaided_{position}"
        at.selectbox(key=f"birads_{key}").set_value("4a")
        at.radio(key=f"call_{key}").set_value("malignant")
        at.slider(key=f"confidence_{key}").set_value(70)
        run(at.button(key=f"submit_{key}").click())
    assert any("case 3 of 157" in s.value for s in at.subheader)

    reader = store.sign_in("R1", "code-r1")
    mine = store.my_reads(reader)
    order = ss.case_order(study["order_seed"], "R1", "unaided", list(store.cohort_frame(
        store.admin_sign_in("admin-pass"))["case_id"]))
    assert mine["case_id"].tolist() == order[:2] and mine["confidence"].tolist() == [70, 70]

    again = sign_in("R1", "code-r1")  # a fresh browser session: resumes at the third case
    assert any("case 3 of 157" in s.value for s in again.subheader)
    assert any(order[2] in c.value for c in again.caption)
    assert not any("R2" in m.value for m in again.markdown)  # no other reader's progress


def test_a_wrong_code_gives_a_message(study_dir):
    setup_demo_study(study_dir)
    at = sign_in("R1", "wrong-code")
    assert any("wrong code" in e.value for e in at.error)
    assert not at.subheader


def test_a_wrong_admin_code_gives_a_message(study_dir):
    setup_demo_study(study_dir)
    at = run()
    at.text_input(key="admin_code").input("nope-nope")
    at = run(at.button(key="admin_sign_in").click())
    assert any("Wrong admin code" in e.value for e in at.error)


def test_aided_session_shows_dlum_logs_the_explanation_and_the_acceptance(study_dir):
    setup_demo_study(study_dir)
    store = ss.StudyStore(study_dir / ss.STORE_FILE)
    reader = store.sign_in("R2", "code-r2")
    status = store.status(reader)
    while status.session == "unaided":
        status = store.submit_read(reader, status.case_id, birads="3", call="benign", confidence=30)
    at = sign_in("R2", "code-r2")
    assert any("Session 2" in s.value for s in at.subheader) and len(at.metric) == 2
    at = run(at.button(key="explain_aided_0").click())
    assert any("Explanation request logged" in c.value for c in at.caption)
    at.radio(key="accept_aided_0").set_value("reject")
    at.selectbox(key="birads_aided_0").set_value("4c")
    at.radio(key="call_aided_0").set_value("malignant")
    run(at.button(key="submit_aided_0").click())
    read = store.my_reads(reader).query("session == 'aided'").iloc[0]
    assert read["accepted_ai"] == 0 and read["requested_explanation"] == 1 and read["birads"] == "4c"


def test_an_image_cohort_is_read_live_and_explain_shows_heatmaps(study_dir, use_checkpoint, shared_data):
    """Without a predictions table for the cohort, DL-UM reads the case's images live; "explain"
    shows a Grad-CAM heatmap per image, and what DL-UM showed is recorded with the read."""
    data = shared_data
    us, mg = data / "us" / "busbra" / "Images" / "bus_0001-l.png", data / "mg" / "mias" / "images" / "mdb001.png"
    store = ss.StudyStore(study_dir / ss.STORE_FILE)
    admin = store.set_admin_code("admin-pass")
    cases = pd.DataFrame({"case_id": ["k1"], "label": [1], "subgroup": ["concordant"], "us_image": [str(us)],
                          "mg_image": [str(mg)], "us_box": [(40, 40, 200, 180)], "mg_box": [(330, 400, 740, 800)],
                          "info": [{}]})
    store.create_study(admin, cases, cohort_ref="upload:images.csv", washout_days=0)
    store.add_reader(admin, "R1", "us", "senior", "code-r1")
    reader = store.sign_in("R1", "code-r1")
    store.submit_read(reader, "k1", birads="4a", call="malignant", confidence=70)

    at = sign_in("R1", "code-r1")
    assert len(at.metric) == 2, "DL-UM's live output is shown"
    shown = float(at.metric[0].value)
    assert len(at.get("image")) == 2, "the two images"
    at = run(at.button(key="explain_aided_0").click())
    captions = [c for img in at.get("image") for c in img.captions]
    assert len(at.get("image")) == 4 and sum("Grad-CAM" in c for c in captions) == 2, captions
    at.radio(key="accept_aided_0").set_value("accept")
    at.selectbox(key="birads_aided_0").set_value("4b")
    at.radio(key="call_aided_0").set_value("malignant")
    run(at.button(key="submit_aided_0").click())
    read = store.reads_frame(admin).query("session == 'aided'").iloc[0]
    assert read["ai_probability"] == pytest.approx(shown, abs=5e-4)
    assert read["ai_call"] in {"benign", "malignant"} and read["requested_explanation"] == "true"
    assert (read["ai_call"] == "malignant") == (read["ai_probability"] >= read["ai_threshold"])
