"""Helpers of the Reading Session page tests: a small demo study made through the store's API,
and a reader signing in and reading through the page's widgets (``streamlit.testing`` AppTest)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Dataframe

from dlum import study_store as ss

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "4_Reading_Session.py")
ADMIN_CODE = "admin-pass"


def run(at: AppTest | None = None) -> AppTest:
    """Run (or rerun) the page; fail on any exception it shows."""
    at = (AppTest.from_file(PAGE, default_timeout=60) if at is None else at).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def demo_subset(per_group: int = 1) -> pd.DataFrame:
    """``per_group`` demo cases of each (label, subgroup) pair: both truths, both subgroups."""
    from dlum.app.reading import demo_cases

    cases = demo_cases()
    return cases.groupby(["label", "subgroup"], sort=True).head(per_group).reset_index(drop=True)


def make_study(folder: Path, cases: pd.DataFrame, readers: dict[str, tuple[str, str]], *,
               cohort_ref: str = "demo", seed: int = 3) -> tuple[ss.StudyStore, ss.Admin]:
    """A study in ``folder/study.sqlite`` (washout 0) with ``readers`` ``{name: (modality, code)}``."""
    store = ss.StudyStore(folder / ss.STORE_FILE)
    admin = store.set_admin_code(ADMIN_CODE)
    store.create_study(admin, cases, cohort_ref=cohort_ref, washout_days=0, seed=seed)
    for name, (modality, code) in readers.items():
        store.add_reader(admin, name, modality, "junior", code)
    return store, admin


def sign_in(name: str, code: str) -> AppTest:
    """A fresh browser session on the page, signed in (or refused) through the sign-in widgets."""
    at = run()
    at.text_input(key="reader_name").input(name)
    at.text_input(key="reader_code").input(code)
    return run(at.button(key="sign_in").click())


def submit_read(at: AppTest, session: str, n: int, *, birads: str, call: str, confidence: int,
                accept: str | None = None, explain: bool = False) -> AppTest:
    """Read the ``n``-th case of ``session`` through the widgets: optionally ask for the
    explanation, accept or reject DL-UM (aided), BI-RADS, call, confidence, submit."""
    key = f"{session}_{n}"
    if explain:
        at = run(at.button(key=f"explain_{key}").click())
    if accept is not None:
        at.radio(key=f"accept_{key}").set_value(accept)
    at.selectbox(key=f"birads_{key}").set_value(birads)
    at.radio(key=f"call_{key}").set_value(call)
    at.slider(key=f"confidence_{key}").set_value(confidence)
    return run(at.button(key=f"submit_{key}").click())


def rendered_text(at: AppTest) -> str:
    """Everything the page sent to the browser, as text: every element's and block's message
    (labels, bodies, help, options, values) and every dataframe's columns and cells."""
    parts = []
    for node in at._tree:  # the whole tree (main, sidebar, tabs, columns, containers)
        proto = getattr(node, "proto", None)
        if proto is not None:
            parts.append(str(proto))
        if isinstance(node, Dataframe):
            frame = node.value
            parts.append(" ".join(map(str, frame.columns)))
            parts.append(frame.astype(str).to_csv(index=False))
    return "\n".join(parts)
