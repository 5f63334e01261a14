"""Reader-study sections shared by the Reader Study and Reading Session pages: the acceptance of
DL-UM's suggestion (Fig. 5 of Xu et al., Breast Cancer Research 2025) and the unaided vs aided
MRMC comparison. Widgets only; the numbers come from :mod:`dlum.study_analysis`.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from dlum import study_analysis as sa
from dlum.app import figures
from dlum.app.layout import table_with_download

__all__ = ["acceptance_section", "mrmc_section"]


def acceptance_section(joined: pd.DataFrame, key: str) -> None:
    """The acceptance table (per reader x subgroup) and its stacked bars, or why there are none."""
    note = sa.acceptance_note(joined)
    if note is not None:
        st.info(note, icon=":material/info:")
        return
    table = sa.acceptance(joined)
    split = sa.ai_call_note(joined)
    table_with_download(sa.acceptance_display(table), table, "acceptance.csv", key=f"{key}_acceptance",
                        caption=sa.ACCEPTANCE_CAPTION + (f" {split}" if split else ""))
    st.plotly_chart(figures.acceptance_bars(table), key=f"{key}_acceptance_bars")


def mrmc_section(joined: pd.DataFrame, key: str) -> None:
    """The MRMC table of :func:`dlum.study_analysis.mrmc_summary`, or why it cannot be computed."""
    note = sa.mrmc_note(joined)
    if note is not None:
        st.info(note, icon=":material/info:")
        return
    summary = sa.mrmc_summary(joined)
    table_with_download(sa.mrmc_display(summary), summary, "mrmc.csv", key=f"{key}_mrmc",
                        caption=sa.MRMC_CAPTION)
