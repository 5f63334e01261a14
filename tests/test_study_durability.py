"""The reading-session store under failure and load: a reader process killed with SIGKILL in the
middle of reading loses no acknowledged read and leaves nothing half-written, and 8 readers
submitting at once from 8 processes lose or duplicate nothing (:mod:`dlum.study_store`, WAL +
one ``BEGIN IMMEDIATE`` transaction per read)."""
from __future__ import annotations

import inspect
import multiprocessing
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest

from dlum import study_store as ss

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 11
WAIT_S = 120


def planned_read(case_id: str, session: str) -> dict:
    """The read a test reader gives a case: fixed by the case and the session, so that every
    stored row can be checked field by field."""
    h = zlib.crc32(f"{case_id}/{session}".encode())
    return {"birads": ("2", "3", "4", "4a", "4b", "4c", "5")[h % 7],
            "call": ("benign", "malignant")[(h >> 3) % 2], "confidence": (h >> 5) % 101,
            "accepted_ai": None if session == "unaided" else bool((h >> 12) % 2)}


#: A reader process: signs in, then submits every read it can as fast as it can, printing
#: ``ack <session> <position> <case>`` once each ``submit_read`` has returned.
READER_SCRIPT = "import sys, zlib\n" + inspect.getsource(planned_read) + '''
from dlum.study_store import StudyStore

path, name, code = sys.argv[1:4]
store = StudyStore(path)
reader = store.sign_in(name, code)
status = store.status(reader)
while status.session is not None:
    session, position, case = status.session, status.done, status.case_id
    status = store.submit_read(reader, case, **planned_read(case, session))
    print("ack", session, position, case, flush=True)
print("done", flush=True)
'''


def start_reader(path: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", READER_SCRIPT, str(path), name, f"code-{name}"],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def acks(lines) -> list[tuple[str, int, str]]:
    out = []
    for line in lines:
        if line.startswith("ack "):
            _, session, position, case = line.split()
            out.append((session, int(position), case))
    return out


def make_store(path: Path, n_cases: int, readers: list[str]) -> ss.StudyStore:
    store = ss.StudyStore(path)
    admin = store.set_admin_code("admin-code")
    cases = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n_cases)], "label": [i % 2 for i in range(n_cases)],
                          "subgroup": ["concordant"] * n_cases})
    store.create_study(admin, cases, cohort_ref="test", washout_days=0, seed=SEED)
    for name in readers:
        store.add_reader(admin, name, "us", "junior", f"code-{name}")
    return store


def check_store(store: ss.StudyStore, readers: list[str], acknowledged: dict[str, set]) -> pd.DataFrame:
    """The file is intact, every acknowledged read is there, each reader's reads are complete
    rows in their own order, positions 0..n-1 with no gap, and their status is the next case."""
    con = sqlite3.connect(store.path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
        rows = pd.read_sql_query(
            "SELECT r.name AS reader, x.* FROM reads x JOIN readers r ON r.id = x.reader_id", con)
        ids = [c for (c,) in con.execute("SELECT case_id FROM cases ORDER BY position")]
    finally:
        con.close()
    assert not rows.duplicated(["reader", "session", "case_id"]).any()
    assert not rows.duplicated(["reader", "session", "position"]).any()
    for name in readers:
        mine = rows[rows["reader"] == name]
        got = set(zip(mine["session"], mine["position"], mine["case_id"]))
        assert acknowledged.get(name, set()) <= got, f"{name}: acknowledged reads lost"
        counts = {}
        for session in ss.SESSIONS:
            part = mine[mine["session"] == session].sort_values("position")
            counts[session] = len(part)
            assert part["position"].tolist() == list(range(len(part))), f"{name} {session}: a gap"
            order = ss.case_order(SEED, name, session, ids)
            assert part["case_id"].tolist() == order[:len(part)], f"{name} {session}: out of order"
            for row in part.itertuples():
                want = planned_read(row.case_id, session)
                assert (row.birads, row.call, row.confidence) == (
                    want["birads"], want["call"], want["confidence"]), f"{name}: a half-written read"
                want_ai = None if want["accepted_ai"] is None else int(want["accepted_ai"])
                assert (None if pd.isna(row.accepted_ai) else int(row.accepted_ai)) == want_ai
                assert row.requested_explanation == 0 and pd.Timestamp(row.submitted_at).tzinfo
        if counts[ss.AIDED]:
            assert counts[ss.UNAIDED] == len(ids), f"{name}: aided reads before session 1 ended"
        status = store.status(store.sign_in(name, f"code-{name}"))
        session = ss.UNAIDED if counts[ss.UNAIDED] < len(ids) else ss.AIDED
        if counts[ss.AIDED] == len(ids):
            assert status.finished
        else:
            assert (status.session, status.done) == (session, counts[session])
            assert status.case_id == ss.case_order(SEED, name, session, ids)[counts[session]]
    return rows


@pytest.mark.slow
def test_a_reader_killed_mid_session_loses_no_acknowledged_read(tmp_path):
    n_cases, name = 60, "R1"
    store = make_store(tmp_path / ss.STORE_FILE, n_cases, [name])
    acked: set = set()
    for kill_after in (4, 9):  # kill, resume, kill again further on
        proc = start_reader(store.path, name)
        seen = []
        try:
            for line in proc.stdout:
                seen.append(line)
                if len(acks(seen)) == kill_after:
                    proc.send_signal(signal.SIGKILL)  # at any point of the loop, even mid-commit
                    break
        finally:
            proc.wait(timeout=WAIT_S)
        seen += proc.stdout.readlines()  # acks printed between our reading and the kill count too
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
        assert "done" not in "".join(seen), "the reader finished before the kill: use more cases"
        acked |= set(acks(seen))
        rows = check_store(store, [name], {name: acked})
        assert len(rows) < 2 * n_cases
    # and reading on to the end from where the store says
    proc = start_reader(store.path, name)
    out, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err
    acked |= set(acks(out.splitlines()))
    rows = check_store(store, [name], {name: acked})
    assert len(rows) == 2 * n_cases == len(acked)


def _read_everything(path: str, name: str, barrier, results) -> None:
    """One reader process of the concurrency test: sign in, wait for the others, read every case."""
    try:
        store = ss.StudyStore(path)
        reader = store.sign_in(name, f"code-{name}")
        status = store.status(reader)
        barrier.wait(timeout=WAIT_S)
        done = []
        while status.session is not None:
            session, position, case = status.session, status.done, status.case_id
            status = store.submit_read(reader, case, **planned_read(case, session))
            done.append((session, position, case))
        results.put((name, done, ""))
    except BaseException as exc:  # reported to the test, which fails naming it
        results.put((name, [], repr(exc)))


def test_eight_readers_submitting_at_once_lose_and_duplicate_nothing(tmp_path):
    n_cases = 12
    readers = [f"R{i}" for i in range(1, 9)]
    store = make_store(tmp_path / ss.STORE_FILE, n_cases, readers)
    mp = multiprocessing.get_context("fork")  # forked: the 8 start at once without re-importing
    barrier, results = mp.Barrier(len(readers) + 1), mp.Queue()
    procs = [mp.Process(target=_read_everything, args=(str(store.path), name, barrier, results))
             for name in readers]
    try:
        for proc in procs:
            proc.start()
        barrier.wait(timeout=WAIT_S)  # every reader signed in: go
        t0 = time.perf_counter()
        got = [results.get(timeout=WAIT_S) for _ in readers]
        elapsed = time.perf_counter() - t0
        for proc in procs:
            proc.join(timeout=WAIT_S)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = {name: err for name, _, err in got if err}
    assert not errors, errors
    assert all(proc.exitcode == 0 for proc in procs)
    acknowledged = {name: set(done) for name, done, _ in got}
    assert sorted(acknowledged) == readers
    assert all(len(a) == 2 * n_cases for a in acknowledged.values()), {n: len(a) for n, a in acknowledged.items()}
    rows = check_store(store, readers, acknowledged)
    assert len(rows) == len(readers) * n_cases * 2
    # the readers really wrote at the same time: another's reads fall between some reader's first and last
    commits = rows.sort_values("id").reset_index(drop=True).groupby("reader").groups
    assert any(idx.max() - idx.min() + 1 > len(idx) for idx in commits.values())
    print(f"{len(rows)} reads from {len(readers)} processes in {elapsed:.2f} s")


def _open_store(path: str, barrier, results) -> None:
    barrier.wait(timeout=WAIT_S)
    try:
        ss.StudyStore(path).study()
        results.put("")
    except BaseException as exc:  # reported to the test
        results.put(repr(exc))


def test_processes_opening_an_older_file_at_once_all_get_the_upgraded_file(tmp_path):
    path = tmp_path / ss.STORE_FILE
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")  # as the store writes it
    con.executescript("".join(ss.MIGRATIONS[:-1]) + f"\nPRAGMA user_version = {ss.SCHEMA_VERSION - 1};")
    con.execute("INSERT INTO study VALUES (1, 'old', 0, 1, '2024-01-01T00:00:00+00:00')")
    con.close()  # no connection open across the fork
    mp = multiprocessing.get_context("fork")
    barrier, results = mp.Barrier(5), mp.Queue()
    procs = [mp.Process(target=_open_store, args=(str(path), barrier, results)) for _ in range(4)]
    for proc in procs:
        proc.start()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # another writer (a reader submitting) holds the lock a moment
    try:
        barrier.wait(timeout=WAIT_S)
        time.sleep(1.0)
    finally:
        con.execute("ROLLBACK")
        con.close()
    errors = [results.get(timeout=WAIT_S) for _ in procs]
    for proc in procs:
        proc.join(timeout=WAIT_S)
    assert not any(errors), errors
    assert ss.StudyStore(path).schema_version() == ss.SCHEMA_VERSION
