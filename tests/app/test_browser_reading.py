"""A reading session in a real browser: ``streamlit run`` on a free port, driven by Debian's
chromium, on a study store in a temporary ``DLUM_STUDY_DIR``.

A reader signs in and reads three demo cases unaided; in the middle of session 1 the server is
killed with SIGKILL (as a crash or a power cut of the machine running the dashboard would), a new
server is started on the same store, and the reader signs in again and resumes at the next case.
Then the three aided reads (session 2, DL-UM's output shown), one with the explanation asked for,
each accepting or rejecting DL-UM. The store is checked at the end: six reads, as entered.

Skips like tests/app/test_browser.py when chromium or playwright is missing.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dlum import study_store as ss
from dlum.app.reading import demo_cases
from tests.app.conftest import REPO_ROOT
from tests.app.reading_pages import make_study
from tests.app.test_browser import (
    CHROMIUM_ARGS,
    STARTUP_S,
    _assert_clean,
    _chromium,
    _free_port,
    _is_local,
    _settle,
    stop_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME, CODE = "Dr Alvarez", "code-alvarez"
N_CASES = 3


def start_server(env: dict, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``streamlit run streamlit_app.py`` on a free local port; returns once it answers."""
    port = _free_port()
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
             "--server.headless", "true", "--server.address", "127.0.0.1",
             "--server.fileWatcherType", "none"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture()
def study(tmp_path):
    """A demo study of 3 cases (washout 0) and one reader, set up through the store's API."""
    store, admin = make_study(tmp_path / "study", demo_cases().head(N_CASES),
                              {NAME: ("us", CODE)})
    return store, admin


@pytest.fixture()
def page():
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; `make test` does it)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000})
        # as on an air-gapped machine: only the app's own host answers
        context.route("**/*", lambda r: r.continue_() if _is_local(r.request.url)
                      else r.abort("internetdisconnected"))
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        context.close()
        browser.close()


def widget(page, key: str):
    """The element of the widget with Streamlit key ``key`` (its container carries ``st-key-<key>``)."""
    return page.locator(f".st-key-{key}")


def sign_in(page, url: str) -> None:
    page.goto(f"{url}/Reading_Session")
    widget(page, "reader_name").locator("input").wait_for()
    _settle(page)
    for key, value in (("reader_name", NAME), ("reader_code", CODE)):
        widget(page, key).locator("input").fill(value)
        widget(page, key).locator("input").press("Enter")
        _settle(page)
    widget(page, "sign_in").locator("button").click()
    page.get_by_text(f"Signed in as {NAME}").wait_for()
    _settle(page)


def heading(page, session: str, n: int):
    title = "Session 2" if session == ss.AIDED else "Session 1"
    return page.get_by_role("heading", name=re.compile(rf"{title} .*case {n + 1} of {N_CASES}"))


def read_case(page, session: str, n: int, *, birads: str, call: str, to_end: str,
              accept: str | None = None, explain: bool = False) -> None:
    """Read the shown case through the widgets; ``to_end`` (Home/End) moves the confidence slider."""
    key = f"{session}_{n}"
    heading(page, session, n).wait_for()
    if explain:
        widget(page, f"explain_{key}").locator("button").click()
        _settle(page)
    # each change reruns the page with every widget's current value, so one wait at the end does
    if accept is not None:
        widget(page, f"accept_{key}").get_by_text(accept, exact=True).click()
    choose = widget(page, f"birads_{key}").get_by_role("combobox")
    choose.click()
    choose.press("ArrowDown")  # opens the list (a click alone does not always)
    page.get_by_role("option", name=birads, exact=True).click()
    widget(page, f"call_{key}").get_by_text(f"possibly {call}", exact=True).click()
    widget(page, f"confidence_{key}").get_by_role("slider").press(to_end)
    _settle(page)
    _assert_clean(page, f"{session} case {n + 1}")
    widget(page, f"submit_{key}").locator("button").click()
    _settle(page)


def test_a_reading_session_survives_a_killed_server(study, page, tmp_path):
    store, admin = study
    reader = store.sign_in(NAME, CODE)
    log = tmp_path / "server.log"
    (tmp_path / "no-checkpoint").mkdir()
    env = {**os.environ, "DLUM_STUDY_DIR": str(store.path.parent), "PYTHONUNBUFFERED": "1",
           "DLUM_CHECKPOINT": str(tmp_path / "no-checkpoint")}  # the demo needs no model
    entered = {}

    def read(session, n, **how):
        case = store.status(reader).case_id
        page.get_by_text(case).first.wait_for()  # the case the store says is the one shown
        read_case(page, session, n, **how)
        entered[(session, case)] = how

    proc, url = start_server(env, log)
    try:
        sign_in(page, url)
        read(ss.UNAIDED, 0, birads="3", call="benign", to_end="Home")
        heading(page, ss.UNAIDED, 1).wait_for()
        assert len(store.my_reads(reader)) == 1

        # the server dies in the middle of session 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc, url = start_server(env, log)
        sign_in(page, url)
        heading(page, ss.UNAIDED, 1).wait_for()  # resumed at the next unread case
        page.get_by_text(f"1 of {2 * N_CASES} reads").wait_for()
        assert store.status(reader).done == 1
        read(ss.UNAIDED, 1, birads="4b", call="malignant", to_end="End")
        read(ss.UNAIDED, 2, birads="2", call="benign", to_end="Home")

        # session 2 opens at once (washout 0): DL-UM's output, accept / reject, one explanation
        heading(page, ss.AIDED, 0).wait_for()
        assert page.get_by_text("P(malignant)").count() >= 1
        read(ss.AIDED, 0, birads="4a", call="malignant", to_end="End", accept="accept")
        read(ss.AIDED, 1, birads="3", call="benign", to_end="Home", accept="reject", explain=True)
        read(ss.AIDED, 2, birads="5", call="malignant", to_end="End", accept="accept")
        page.get_by_text("You have read every case in both sessions").wait_for()
        _assert_clean(page, "finished")
    except Exception:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"\nfailure screenshot: {tmp_path / 'failure.png'}; server log: {log}")
        raise
    finally:
        stop_server(proc)

    reads = store.reads_frame(admin)
    assert len(reads) == 2 * N_CASES
    assert reads.groupby("session")["position"].apply(sorted).to_dict() == {
        s: list(range(N_CASES)) for s in ss.SESSIONS}
    for row in reads.itertuples():
        how = entered[(row.session, row.case_id)]
        assert (row.birads, row.call) == (how["birads"], how["call"])
        assert row.confidence == (0 if how["to_end"] == "Home" else 100)
        if row.session == ss.AIDED:
            assert row.accepted_ai == ("true" if how["accept"] == "accept" else "false")
            assert row.requested_explanation == ("true" if how.get("explain") else "false")
        else:
            assert row.accepted_ai == "" and row.requested_explanation == ""
    assert (reads["requested_explanation"] == "true").sum() == 1
