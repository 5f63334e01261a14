"""Every dashboard script opens without an exception: the Home page and each ``pages/*.py``.

The pages are found by glob, so a new page is covered as soon as it exists. Each runs through
``streamlit.testing.v1.AppTest`` twice: with the small test checkpoint (``use_checkpoint``)
and with none (``no_checkpoint``), where a page must explain, not fail.
"""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import REPO_ROOT

TIMEOUT = 120
SCRIPTS = [REPO_ROOT / "streamlit_app.py", *sorted((REPO_ROOT / "pages").glob("*.py"))]

pytestmark = pytest.mark.slow


def test_the_glob_finds_the_home_page_and_pages():
    assert SCRIPTS[0].is_file()
    assert len(SCRIPTS) > 1, "no pages/*.py found"


@pytest.mark.parametrize("checkpoint", ["use_checkpoint", "no_checkpoint"],
                         ids=["checkpoint", "no-checkpoint"])
@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_script_runs_and_shows_content(script, checkpoint, request):
    request.getfixturevalue(checkpoint)
    at = AppTest.from_file(str(script), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    shown = [e.value for e in (*at.title, *at.header, *at.markdown) if str(e.value).strip()]
    assert shown, f"{script.name} shows no title, header or markdown"
