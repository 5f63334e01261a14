"""dlum.formatting: one way to write p-values, CIs, percentages and counts."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from dlum.formatting import (
    count_pct_columns,
    finite,
    flat_rows,
    format_ci,
    format_count_pct,
    format_interval,
    format_number,
    format_p_value,
    format_pct_ci,
)


@pytest.mark.parametrize("p, text", [(0.0004, "< 0.001"), (0.001, "0.001"), (0.0456, "0.046"),
                                     (1.0, "1.000"), (math.nan, "n/a"), (None, "n/a"), ("x", "n/a")])
def test_p_values(p, text):
    assert format_p_value(p) == text


def test_estimates_with_and_without_intervals():
    assert format_ci(0.8123, 0.7, 0.9) == "0.812 [0.700–0.900]"
    assert format_ci(0.8123, None, 0.9) == "0.812" and format_ci(math.nan, 0, 1) == "n/a"
    assert format_pct_ci(0.875, 0.64, 0.97) == "87.5% [64.0–97.0]"
    assert format_count_pct(12, 0.343, 0.191, 0.522) == "12 (34.3% [19.1–52.2])"
    assert format_count_pct(0, math.nan) == "0"
    assert format_interval([0.1, 0.2]) == "[0.100–0.200]" and format_interval(None) == ""
    assert format_number(1 / 3) == "0.333" and format_number(math.inf) == "n/a"
    assert finite(1, 2.5) and not finite(1, None) and not finite(math.nan)


def test_biopsy_count_columns():
    table = pd.DataFrame({"recommended_biopsies": [3], "biopsy_rate": [0.3], "biopsy_rate_ci_low": [0.1],
                          "biopsy_rate_ci_high": [0.6], "unnecessary_biopsies": [0],
                          "unnecessary_rate": [math.nan], "unnecessary_rate_ci_low": [math.nan],
                          "unnecessary_rate_ci_high": [math.nan], "missed_malignancies": [1],
                          "missed_rate": [0.5], "missed_rate_ci_low": [0.1], "missed_rate_ci_high": [0.9]})
    cols = count_pct_columns(table)
    assert cols["Recommended biopsies (of cases)"] == ["3 (30.0% [10.0–60.0])"]
    assert cols["Unnecessary biopsies (of recommended)"] == ["0"]


def test_flat_rows():
    rows = flat_rows({"a": {"b": 1, "c": [0.5, 2]}, "d": True})
    assert rows == [{"item": "a · b", "value": "1"}, {"item": "a · c", "value": "[0.5, 2]"},
                    {"item": "d", "value": "True"}]
