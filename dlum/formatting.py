"""How numbers are written for people: p-values, estimates with CIs, percentages, counts.

One module, used by the command line, the README table, the reports and every dashboard page, so
that "0.912 [0.861–0.963]" and "< 0.001" look the same wherever they appear.

>>> format_p_value(0.0004), format_p_value(0.0123), format_p_value(float("nan"))
('< 0.001', '0.012', 'n/a')
>>> format_ci(0.9123, 0.861, 0.963), format_pct_ci(0.897, 0.81, 0.947)
('0.912 [0.861–0.963]', '89.7% [81.0–94.7]')
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "finite",
    "format_number",
    "format_p_value",
    "format_ci",
    "format_pct_ci",
    "format_count_pct",
    "format_interval",
    "BIOPSY_COUNTS",
    "count_pct_columns",
    "flat_rows",
]


def finite(*values: Any) -> bool:
    """True when every value is a real, finite number (not None, NaN or infinite)."""
    for v in values:
        try:
            if v is None or not math.isfinite(float(v)):
                return False
        except (TypeError, ValueError):
            return False
    return True


def format_number(value: Any, digits: int = 3) -> str:
    """``value`` to ``digits`` decimals; "n/a" when it is not a finite number."""
    return f"{float(value):.{digits}f}" if finite(value) else "n/a"


def format_p_value(p: Any) -> str:
    """A p-value as the tables show it: "< 0.001", else three decimals; "n/a" when undefined."""
    if not finite(p):
        return "n/a"
    return "< 0.001" if float(p) < 0.001 else f"{float(p):.3f}"


def format_ci(estimate: Any, low: Any = None, high: Any = None, digits: int = 3, *,
              scale: float = 1.0, unit: str = "") -> str:
    """'0.912 [0.861–0.963]'; 'n/a' for an undefined estimate, no bracket for an undefined CI."""
    if not finite(estimate):
        return "n/a"
    text = f"{scale * float(estimate):.{digits}f}{unit}"
    if finite(low, high):
        text += f" [{scale * float(low):.{digits}f}–{scale * float(high):.{digits}f}]"
    return text


def format_pct_ci(estimate: Any, low: Any = None, high: Any = None, digits: int = 1) -> str:
    """Proportions as percentages: '89.7% [81.0–94.7]'."""
    return format_ci(estimate, low, high, digits, scale=100.0, unit="%")


def format_count_pct(count: Any, estimate: Any, low: Any = None, high: Any = None) -> str:
    """'12 (34.3% [19.1–52.2])', or just the count where the proportion is undefined."""
    return f"{count} ({format_pct_ci(estimate, low, high)})" if finite(estimate) else f"{count}"


def format_interval(values: Sequence[Any] | None, digits: int = 3, *, pct: bool = False) -> str:
    """An estimate's CI given as a pair ``[low, high]`` (as a card stores it)."""
    if not values or len(values) != 2 or not finite(*values):
        return ""
    scale, unit = (100.0, "%") if pct else (1.0, "")
    return f"[{scale * values[0]:.{digits}f}–{scale * values[1]:.{digits}f}{unit}]"


#: Biopsy counts shown as "count (percentage [95% CI])": header, count column, rate column prefix.
BIOPSY_COUNTS = (
    ("Recommended biopsies (of cases)", "recommended_biopsies", "biopsy_rate"),
    ("Unnecessary biopsies (of recommended)", "unnecessary_biopsies", "unnecessary_rate"),
    ("Missed malignancies (of malignant)", "missed_malignancies", "missed_rate"),
)


def count_pct_columns(table, columns=BIOPSY_COUNTS) -> dict[str, list[str]]:
    """Display columns '12 (34.3% [19.1–52.2])' from count, rate and ``_ci_low``/``_ci_high``
    columns of a biopsy-metrics table (just the count where the rate is undefined)."""
    return {
        header: [format_count_pct(*v) for v in zip(table[count], table[rate],
                                                    table[f"{rate}_ci_low"],
                                                    table[f"{rate}_ci_high"])]
        for header, count, rate in columns
    }


def flat_rows(section: Any) -> list[dict[str, str]]:
    """Rows ``{"item", "value"}`` of a nested mapping, nested keys joined with " · " (a card
    section shown as a two-column table)."""
    rows: list[dict[str, str]] = []

    def text(value: Any) -> str:
        if isinstance(value, bool) or value is None:
            return str(value)
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (list, tuple)):
            inner = ", ".join(text(v) for v in value)
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            return f"[{inner}]" if numeric else inner
        return str(value)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix} · {key}" if prefix else str(key), sub)
        else:
            rows.append({"item": prefix.replace("_", " "), "value": text(value)})

    walk("", section)
    return rows
