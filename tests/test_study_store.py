"""The reading-session store on a real SQLite file: schema, codes, no going back, washout,
case order, export and reader isolation."""
from __future__ import annotations

import datetime as dt
import io
import sqlite3

import pandas as pd
import pytest

from dlum import readers as rs
from dlum import study_store as ss
from dlum.errors import StudyError
from dlum.settings import SettingsError, read_settings
from dlum.study_analysis import mrmc_summary


class Clock:
    def __init__(self):
        self.now = dt.datetime(2025, 1, 1, 9, 0, tzinfo=dt.timezone.utc)

    def __call__(self):
        return self.now

    def advance(self, **kw):
        self.now += dt.timedelta(**kw)


CASES = pd.DataFrame({"case_id": [f"c{i:02d}" for i in range(8)], "label": [0, 1] * 4,
                      "subgroup": ["concordant"] * 4 + ["discordant"] * 4,
                      "info": [{"age": 40 + i} for i in range(8)]})


@pytest.fixture()
def setup(tmp_path):
    clock = Clock()
    store = ss.StudyStore(tmp_path / "study.sqlite", clock=clock)
    admin = store.set_admin_code("admin-code")
    store.create_study(admin, CASES, cohort_ref="test", washout_days=60, seed=7)
    store.add_reader(admin, "R1", "us", "junior", "code-r1")
    store.add_reader(admin, "R2", "mg", "senior", "code-r2")
    return store, admin, clock


def read_all(store, reader, accepted=None):
    status = store.status(reader)
    session = status.session
    while status.session == session and not status.finished:
        label = int(status.case_id[1:]) % 2
        status = store.submit_read(reader, status.case_id, birads="4b" if label else "3",
                                   call="malignant" if label else "benign",
                                   confidence=80 if label else 20 + int(status.case_id[1:]),
                                   accepted_ai=accepted)
    return status


def test_file_is_wal_and_at_the_current_schema(setup):
    store, _, _ = setup
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == ss.SCHEMA_VERSION == len(ss.MIGRATIONS)


def test_a_version_1_file_is_migrated_keeping_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(ss.MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
    con.execute("INSERT INTO study VALUES (1, 'old', 0, 1, '2024-01-01T00:00:00+00:00')")
    con.commit()
    con.close()
    store = ss.StudyStore(path)
    assert store.schema_version() == ss.SCHEMA_VERSION
    assert store.study()["cohort_ref"] == "old"
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(reads)")}
    assert "explanation_at" in columns


def test_a_newer_file_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {ss.SCHEMA_VERSION + 1}")
    with pytest.raises(StudyError, match="Update dlum"):
        ss.StudyStore(path).study()


def test_codes_are_hashed_and_a_wrong_code_fails(setup):
    store, _, _ = setup
    blob = b"".join(f.read_bytes() for f in store.path.parent.glob("study.sqlite*"))
    assert blob
    for code in (b"admin-code", b"code-r1", b"code-r2"):
        assert code not in blob
    assert store.sign_in("R1", "code-r1").name == "R1"
    with pytest.raises(StudyError, match="wrong code"):
        store.sign_in("R1", "code-r2")
    with pytest.raises(StudyError, match="wrong code"):
        store.sign_in("nobody", "code-r1")
    with pytest.raises(StudyError, match="Wrong admin code"):
        store.admin_sign_in("admin-cod")
    with pytest.raises(StudyError, match="already set"):
        store.set_admin_code("another")
    with pytest.raises(StudyError, match="at least"):
        store.add_reader(store.admin_sign_in("admin-code"), "R3", "us", "junior", "ab")
    assert ss.check_code("x1y2", ss.hash_code("x1y2")) and not ss.check_code("x1y3", ss.hash_code("x1y2"))
    assert ss.hash_code("same") != ss.hash_code("same")  # per-code salt


def test_admin_views_need_the_admin(setup):
    store, _, _ = setup
    with pytest.raises(StudyError, match="admin"):
        store.reads_frame(ss.Admin("forged"))


def test_a_submitted_read_cannot_be_changed(setup):
    store, _, _ = setup
    r1 = store.sign_in("R1", "code-r1")
    first = store.status(r1).case_id
    store.submit_read(r1, first, birads="4a", call="malignant", confidence=70)
    with pytest.raises(StudyError, match="not your current case"):
        store.submit_read(r1, first, birads="2", call="benign", confidence=10)
    con = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="cannot be changed"):
        con.execute("UPDATE reads SET call = 'benign'")
    with pytest.raises(sqlite3.DatabaseError, match="cannot be deleted"):
        con.execute("DELETE FROM reads")
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("INSERT INTO reads (reader_id, case_id, session, position, birads, call, confidence, "
                    "submitted_at) VALUES (?, ?, 'unaided', 5, '3', 'benign', 5, 'now')", (r1.id, first))
    assert store.my_reads(r1)["birads"].tolist() == ["4a"]  # stored as given


def test_bad_inputs_are_refused(setup):
    store, _, _ = setup
    r1 = store.sign_in("R1", "code-r1")
    case = store.status(r1).case_id
    for kwargs, message in (({"birads": "6", "call": "benign", "confidence": 5}, "BI-RADS"),
                            ({"birads": "3", "call": "maybe", "confidence": 5}, "call"),
                            ({"birads": "3", "call": "benign", "confidence": 101}, "0-100"),
                            ({"birads": "3", "call": "benign", "confidence": 5, "accepted_ai": True}, "unaided")):
        with pytest.raises(StudyError, match=message):
            store.submit_read(r1, case, **kwargs)
    with pytest.raises(StudyError, match="aided session"):
        store.request_explanation(r1, case)


def test_washout_is_enforced_and_zero_opens_session_2(setup):
    store, admin, clock = setup
    r1 = store.sign_in("R1", "code-r1")
    status = read_all(store, r1)
    assert status.waiting and status.opens_at == clock.now + dt.timedelta(days=60)
    with pytest.raises(StudyError, match="Session 2 opens"):
        store.submit_read(r1, "c00", birads="3", call="benign", confidence=5, accepted_ai=True)
    clock.advance(days=59)
    assert store.status(r1).waiting
    clock.advance(days=1)
    assert store.status(r1).session == ss.AIDED
    # a demo: washout 0 opens session 2 as soon as session 1 ends
    r2 = store.sign_in("R2", "code-r2")
    read_all(store, r2)
    clock.advance(days=1)
    assert store.status(r2).waiting
    store.set_washout(admin, 0)
    assert store.status(r2).session == ss.AIDED


def test_order_is_reproducible_from_the_seed_and_differs_between_readers(setup):
    store, _, _ = setup
    ids = list(CASES["case_id"])
    recorded = pd.read_sql_query("SELECT r.name, o.session, o.position, o.case_id FROM case_order o "
                                 "JOIN readers r ON r.id = o.reader_id ORDER BY r.name, o.session, o.position",
                                 sqlite3.connect(store.path))
    for (name, session), part in recorded.groupby(["name", "session"]):
        assert part["case_id"].tolist() == ss.case_order(7, name, session, ids)
    assert ss.case_order(7, "R1", "unaided", ids) != ss.case_order(7, "R2", "unaided", ids)
    assert ss.case_order(7, "R1", "unaided", ids) != ss.case_order(7, "R1", "aided", ids)
    assert ss.case_order(7, "R1", "unaided", ids) != ss.case_order(8, "R1", "unaided", ids)
    assert sorted(ss.case_order(7, "R1", "unaided", ids)) == ids
    r1 = store.sign_in("R1", "code-r1")
    assert store.status(r1).case_id == ss.case_order(7, "R1", "unaided", ids)[0]


def test_reader_isolation(setup):
    store, _, _ = setup
    r1, r2 = store.sign_in("R1", "code-r1"), store.sign_in("R2", "code-r2")
    store.submit_read(r1, store.status(r1).case_id, birads="3", call="benign", confidence=10)
    assert len(store.my_reads(r1)) == 1 and store.my_reads(r2).empty
    assert store.status(r2).done == 0
    other = store.status(r2).case_id
    if other != store.status(r1).case_id:
        with pytest.raises(StudyError, match="not your current case"):
            store.case(r1, other)


def test_export_is_read_by_dlum_readers_and_analysed(setup):
    store, admin, _ = setup
    store.set_washout(admin, 0)
    for name, code in (("R1", "code-r1"), ("R2", "code-r2")):
        reader = store.sign_in(name, code)
        read_all(store, reader)
        case = store.status(reader).case_id
        store.request_explanation(reader, case)
        read_all(store, reader, accepted=True)
    raw = store.reads_frame(admin)
    reads = rs.read_reads(io.BytesIO(raw.to_csv(index=False).encode()), name="export")
    assert len(reads) == 2 * 2 * len(CASES)
    assert set(reads["session"]) == {"unaided", "aided"}
    assert reads["requested_explanation"].eq(True).sum() == 2
    assert raw["explanation_at"].notna().sum() == 2
    joined = store.load_joined(admin)
    assert {"label", "subgroup", "confidence"} <= set(joined.columns)
    assert not rs.reader_performance(joined).empty
    assert not rs.agreement(joined).empty
    summary = mrmc_summary(joined).set_index("group")
    assert summary.loc["All readers", "readers"] == 2 and summary.loc["All readers", "cases"] == len(CASES)
    assert pd.notna(summary.loc["All readers", "auc_aided"])
    assert "at least 2 readers" in summary.loc["US readers", "note"]


def test_study_dir_setting(tmp_path):
    assert read_settings({"DLUM_STUDY_DIR": str(tmp_path)}).study_dir == tmp_path
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(SettingsError, match="DLUM_STUDY_DIR"):
        read_settings({"DLUM_STUDY_DIR": str(afile)})


def test_a_version_2_file_gains_boxes_and_ai_columns_keeping_its_reads(tmp_path):
    path = tmp_path / "v2.sqlite"
    con = sqlite3.connect(path)
    con.executescript(ss.MIGRATIONS[0] + ss.MIGRATIONS[1] + "\nPRAGMA user_version = 2;")
    con.execute("INSERT INTO study VALUES (1, 'old', 0, 1, '2024-01-01T00:00:00+00:00')")
    con.execute("INSERT INTO readers (name, modality, experience, code_hash, created_at) "
                "VALUES ('R1', 'us', 'junior', 'x', '2024-01-01T00:00:00+00:00')")
    con.execute("INSERT INTO cases (case_id, position, label, subgroup) VALUES ('c0', 0, 1, 'concordant')")
    con.execute("INSERT INTO reads (reader_id, case_id, session, position, birads, call, confidence, "
                "submitted_at) VALUES (1, 'c0', 'unaided', 0, '4a', 'malignant', 70, '2024-01-02T00:00:00+00:00')")
    con.commit()
    con.close()
    store = ss.StudyStore(path)
    assert store.schema_version() == 3
    con = sqlite3.connect(path)
    assert {"us_box", "mg_box"} <= {r[1] for r in con.execute("PRAGMA table_info(cases)")}
    assert {"ai_probability", "ai_threshold", "ai_call"} <= {r[1] for r in con.execute("PRAGMA table_info(reads)")}
    row = con.execute("SELECT birads, call, confidence, ai_call FROM reads").fetchone()
    assert row == ("4a", "malignant", 70, None)


def test_boxes_are_kept_and_given_with_the_case(tmp_path):
    store = ss.StudyStore(tmp_path / "s.sqlite")
    admin = store.set_admin_code("admin-code")
    cases = CASES.head(2).assign(us_image=["a.png", "b.png"], us_box=[(1, 2, 30, 40), None],
                                 mg_box=[None, [5.2, 6, 50, 60]])
    store.create_study(admin, cases, cohort_ref="test", washout_days=0)
    store.add_reader(admin, "R1", "us", "junior", "code-r1")
    reader = store.sign_in("R1", "code-r1")
    first = store.case(reader, store.status(reader).case_id)
    expected = {"c00": ((1, 2, 30, 40), None), "c01": (None, (5, 6, 50, 60))}
    assert (first.us_box, first.mg_box) == expected[first.case_id]
    with pytest.raises(StudyError, match="box"):
        ss.StudyStore(tmp_path / "t.sqlite").create_study(
            ss.StudyStore(tmp_path / "t.sqlite").set_admin_code("admin-code"),
            CASES.head(1).assign(us_box=[(10, 10, 5, 20)]), cohort_ref="test")


def test_what_dlum_showed_is_recorded_with_the_aided_read(setup):
    store, admin, _ = setup
    store.set_washout(admin, 0)
    reader = store.sign_in("R1", "code-r1")
    case = store.status(reader).case_id
    with pytest.raises(StudyError, match="unaided"):
        store.submit_read(reader, case, birads="3", call="benign", confidence=10,
                          ai=ss.AIOutput(0.2, 0.5, "benign"))
    read_all(store, reader)
    shown = {}
    status = store.status(reader)
    while not status.finished:
        p = (int(status.case_id[1:]) + 1) / 10
        shown[status.case_id] = p
        status = store.submit_read(reader, status.case_id, birads="4a", call="malignant", confidence=60,
                                   accepted_ai=p >= 0.5, ai=ss.AIOutput(p, 0.5, "malignant" if p >= 0.5 else "benign"))
    raw = store.reads_frame(admin)
    aided = raw[raw["session"] == "aided"].set_index("case_id")
    assert aided["ai_probability"].to_dict() == pytest.approx(shown)
    assert (aided["ai_call"] == ["malignant" if shown[c] >= 0.5 else "benign" for c in aided.index]).all()
    assert raw.loc[raw["session"] == "unaided", "ai_call"].isna().all()
    joined = store.load_joined(admin)
    assert joined.loc[joined["session"] == "aided", "ai_threshold"].eq(0.5).all()
    for bad in (dict(probability=1.5, threshold=0.5, call="benign"),
                dict(probability=0.5, threshold=float("nan"), call="benign"),
                dict(probability=0.5, threshold=0.5, call="maybe")):
        with pytest.raises(StudyError, match="DL-UM"):
            ss.AIOutput(**bad)
