"""Small Streamlit building blocks shared by the pages: the page setup, tables with a CSV download.

The dashboard must work air-gapped (hospital networks): the browser may only talk to the app's
own server. Hence the favicon is a PNG shipped in ``dlum/app/assets`` (served by the app), never a
``":material/...:"`` name, which Streamlit's frontend turns into a favicon fetched from Google's
font server. Material icons *inside* the page (buttons, alerts, navigation) are fine: they are
drawn with the icon font bundled in Streamlit's own static files.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dlum.tables import csv_bytes

__all__ = ["FAVICON", "page_config", "table_with_download"]

#: The dashboard's favicon, served by the app itself (see the module docstring).
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"


def page_config(title: str) -> None:
    """``st.set_page_config`` of every page: ``title`` in the browser tab, the local favicon,
    wide layout. The first Streamlit command of a page."""
    st.set_page_config(page_title=title, page_icon=str(FAVICON), layout="wide")


def table_with_download(display: pd.DataFrame, raw: pd.DataFrame | None, file_name: str, *, key: str,
                        caption: str | None = None, height: int | str = "auto") -> None:
    """Show ``display`` (formatted text) and offer ``raw`` (full-precision numbers; defaults to
    ``display``) as a CSV download that does not rerun the page."""
    st.dataframe(display, hide_index=True, width="stretch", height=height)
    cols = st.columns([3, 1])
    if caption:
        cols[0].caption(caption)
    cols[1].download_button(
        "Download CSV", csv_bytes(display if raw is None else raw), file_name=file_name,
        mime="text/csv", key=f"download_{key}", on_click="ignore", icon=":material/download:",
        width="stretch")
