"""The dashboard works air-gapped: nothing in the pages or the config makes the browser leave the
machine. These checks need no browser; ``test_browser.py`` records the real requests."""
from __future__ import annotations

import ast
import tomllib

from PIL import Image

from dlum.app.layout import FAVICON
from tests.app.conftest import REPO_ROOT

APP_FILES = [REPO_ROOT / "streamlit_app.py", *sorted((REPO_ROOT / "pages").glob("[0-9]*_*.py"))]


def test_favicon_is_a_png_shipped_with_the_app():
    with Image.open(FAVICON) as icon:
        assert icon.format == "PNG" and min(icon.size) >= 32


def test_pages_set_the_local_favicon():
    """A ``":material/...:"`` page icon is fetched from Google's font server by the browser: every
    page goes through :func:`dlum.app.layout.page_config` instead of ``st.set_page_config``."""
    for path in APP_FILES:
        calls = [node.func for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Call)]
        names = {getattr(f, "attr", getattr(f, "id", None)) for f in calls}
        assert "set_page_config" not in names, f"{path.name}: use dlum.app.layout.page_config"
        assert "page_config" in names, f"{path.name}: no page_config() call"


def test_streamlit_config_sends_no_usage_statistics():
    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False
