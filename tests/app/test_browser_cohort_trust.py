"""Cohort ROC's decision curves and branch-disagreement table in a real browser (chromium).

A short walk beside ``test_browser.py``'s, reusing its server, browser and helpers: the synthetic
example (it has DL-UM's branch outputs) is opened, and the decision-curve plot must be drawn by
plotly.js (lines, the 2% BI-RADS 3/4 marker) with the disagreement table below it.
"""
from __future__ import annotations

import pytest

from tests.app.test_browser import (  # noqa: F401  (fixtures are found by name)
    _assert_clean,
    _screenshot,
    _settle,
    app_url,
    browser_page,
    request_log,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_decision_curves_are_drawn_in_chromium(app_url, browser_page, request_log, tmp_path):
    page = browser_page
    page.goto(f"{app_url}/Cohort_ROC")
    page.locator('[data-testid="stMainBlockContainer"] h1').first.wait_for()
    _settle(page, timeout_s=240)
    page.get_by_test_id("stRadio").get_by_text("Synthetic example").click()
    heading = page.get_by_role("heading", name="Decision curves, all lesions")
    heading.wait_for()
    _settle(page, timeout_s=240)
    heading.scroll_into_view_if_needed()
    # plotly.js is loaded and draws the title after the script run is over: wait for the drawn
    # chart (a chart never drawn still fails here, after the timeout)
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Net benefit of biopsy")
    chart.first.wait_for(state="attached", timeout=120_000)
    assert chart.count() == 1
    chart.scroll_into_view_if_needed()
    chart.locator(".main-svg").first.wait_for()
    assert chart.is_visible()
    # plotly.js drew the curves: biopsy all, biopsy none and one line per model (3 by default)
    chart.locator(".scatterlayer .trace").nth(4).wait_for(state="attached", timeout=30_000)
    assert chart.locator(".scatterlayer .trace").count() >= 5
    chart.get_by_text("BI-RADS 3/4 (2%)").first.wait_for(timeout=30_000)
    assert chart.get_by_text("BI-RADS 3/4 (2%)").count() == 1
    assert page.get_by_role("heading", name="When the branches disagree, all lesions").count() == 1
    _assert_clean(page, "Cohort ROC decision curves")
    _screenshot(page, tmp_path, "cohort_roc_decision_curves")
    assert not request_log.external, request_log.external
