"""Reading Session: run your own DL-UM reader study (set-up, unaided and aided reading, analysis).

Layout only; the widgets are in dlum.app.reading and the study in dlum.study_store.
"""
from __future__ import annotations

from dlum.app.layout import page_config

page_config("Reading Session · DL-UM")

from dlum.app.reading import main  # noqa: E402  (page_config must be the first Streamlit command)

main()
