"""Small Streamlit building blocks shared by the analysis pages (tables with a CSV download)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dlum.tables import csv_bytes

__all__ = ["table_with_download"]


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
