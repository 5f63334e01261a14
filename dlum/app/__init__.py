"""The dashboard's logic (Streamlit pages in ``streamlit_app.py`` and ``pages/`` stay thin).

* :mod:`dlum.app.resources`: the shared model (loaded once per process), checkpoint discovery,
  device description, error display, disclaimer, example cases.
* :mod:`dlum.app.case_review`: one case through DL-UM (Xu et al., Breast Cancer Research 2025):
  uploads decoded in memory, ROI, prediction, CAMs, concordance badge, decision, report.
* :mod:`dlum.app.cohort` and :mod:`dlum.app.reader_study`: the cohort ROC and reader-study pages.

Importing this package is light: torch is imported only when a model is loaded.
"""
from __future__ import annotations
