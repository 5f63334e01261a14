"""The dashboard's Streamlit glue: caching, widgets, display. No statistics, no table validation.

* :mod:`dlum.app.resources`: the shared model (``st.cache_resource``), checkpoint and example
  caching, device description, error display (first problems, then a download), disclaimer.
* :mod:`dlum.app.case_review`: one case on the Case Review page: uploads decoded in memory, the
  ROI figure, cached prediction and CAMs, the concordance badge and the report files. The call
  itself is :func:`dlum.decision.decide`'s.
* :mod:`dlum.app.figures` and :mod:`dlum.app.layout`: plotly figures and table blocks.

The analyses live in the package: :mod:`dlum.evaluation` (Cohort ROC), :mod:`dlum.readers`
(Reader Study), :mod:`dlum.stats`.

Importing this package is light: torch is imported only when a model is loaded.
"""
from __future__ import annotations
