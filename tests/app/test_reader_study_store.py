"""The Reader Study page reading a Reading Session study from the store: admin sign-in through the
page, the acceptance (Fig. 5 style) and MRMC sections, and the messages for a wrong code, no study
and no reads."""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from dlum import study_analysis as sa
from dlum import study_store as ss
from dlum.formatting import format_number
from tests.app.conftest import REPO_ROOT, run_page as _run
from tests.study_reads import ADMIN_CODE, build_study

READER_STUDY = str(REPO_ROOT / "pages" / "3_Reader_Study.py")

pytestmark = pytest.mark.slow


@pytest.fixture()
def study_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DLUM_STUDY_DIR", str(tmp_path))
    return tmp_path


def _store_source(admin=None) -> AppTest:
    at = AppTest.from_file(READER_STUDY, default_timeout=120)
    if admin is not None:
        at.session_state["admin"] = admin  # signed in on the Reading Session page
    _run(at)
    at.radio(key="study_source").set_value("store")
    return _run(at)


def _sign_in(at: AppTest, code: str) -> AppTest:
    at.text_input(key="store_admin_code").input(code)
    at.button(key="store_sign_in").click()
    return _run(at)


def test_store_source_signs_in_and_shows_acceptance_and_mrmc(study_dir):
    store, admin = build_study(study_dir / ss.STORE_FILE)
    at = _store_source()
    assert not at.subheader or not any("Acceptance" in s.value for s in at.subheader)  # code first
    at = _sign_in(at, ADMIN_CODE)
    assert not at.error
    headings = [s.value for s in at.subheader]
    accept_at = headings.index("Acceptance of DL-UM's suggestion (Fig. 5 style)")
    assert headings.index("Explanation requests (Table 3 style)") < accept_at
    assert headings.index("Agreement between readers (Table 4 style)") < headings.index("MRMC: unaided vs aided")
    assert any("6 cases, 3 readers" in c.value for c in at.caption)
    joined = store.load_joined(admin)
    shown = {tuple(df.value.columns[:2]): df.value for df in at.dataframe}
    accept = shown[("Reader", "Subgroup")]
    assert "Accepted when DL-UM wrong" in accept.columns
    assert accept["Accepted"].tolist() == sa.acceptance_display(sa.acceptance(joined))["Accepted"].tolist()
    mrmc = shown[("Readers", "Number of readers")]
    expected = sa.mrmc_summary(joined).set_index("group")
    assert mrmc.set_index("Readers").loc["All readers", "AUC aided"] == format_number(
        expected.loc["All readers", "auc_aided"])
    bars = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if c.proto.id.endswith("-own_acceptance_bars")]
    assert len(bars) == 1 and {t["name"] for t in bars[0]["data"]} == {"accepted", "rejected"}
    # the sign-in is kept for the session: a rerun needs no code
    _run(at)
    assert "MRMC: unaided vs aided" in [s.value for s in at.subheader]


def test_an_admin_signed_in_on_the_reading_session_page_is_reused(study_dir):
    store, admin = build_study(study_dir / ss.STORE_FILE)
    at = _store_source(admin)
    assert not at.text_input and not at.error
    assert "Acceptance of DL-UM's suggestion (Fig. 5 style)" in [s.value for s in at.subheader]


def test_a_wrong_code_shows_the_stores_message(study_dir):
    build_study(study_dir / ss.STORE_FILE)
    at = _sign_in(_store_source(), "wrong-code")
    assert len(at.error) == 1 and "Wrong admin code" in at.error[0].value
    assert not any("Acceptance" in s.value for s in at.subheader)


def test_no_study_and_no_reads_are_info_messages(study_dir):
    at = _store_source()
    assert [i.value for i in at.info] == [sa.NO_STUDY_NOTE] and not at.error
    build_study(study_dir / ss.STORE_FILE, reads=False)
    at = _sign_in(_store_source(), ADMIN_CODE)
    assert sa.NO_READS_NOTE in [i.value for i in at.info] and not at.error


def test_the_reading_session_admin_view_shows_the_same_acceptance_table(study_dir):
    store, admin = build_study(study_dir / ss.STORE_FILE)
    at = AppTest.from_file(str(REPO_ROOT / "pages" / "4_Reading_Session.py"), default_timeout=120)
    at.session_state["admin"] = admin
    _run(at)
    assert not at.error
    assert any("Acceptance of DL-UM's suggestion (Fig. 5 style)" in m.value for m in at.markdown)
    accept = [d.value for d in at.dataframe if tuple(d.value.columns[:3]) == ("Reader", "Subgroup", "Accepted")]
    assert len(accept) == 1
    assert accept[0].equals(sa.acceptance_display(sa.acceptance(store.load_joined(admin))))
    assert any(c.proto.id.endswith("-study_acceptance_bars") for c in at.get("plotly_chart"))
