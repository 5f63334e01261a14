"""Common base of the statistics result objects: frozen dataclasses with ``to_dict()``."""
from __future__ import annotations

import dataclasses
import math

__all__ = ["Result", "z_for_level"]


class Result:
    """Mixin for frozen result dataclasses: ``to_dict()`` gives plain Python values (nested results flattened
    into dicts, numpy scalars into floats/ints) ready for JSON or a table row."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _plain(value):
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return value.item()
    return value


def z_for_level(level: float) -> float:
    """Two-sided normal quantile for a confidence level, e.g. 1.959963984540054 for 0.95."""
    from scipy.stats import norm

    from dlum.errors import InputError

    if not (0.0 < level < 1.0) or math.isnan(level):
        raise InputError(f"level must be between 0 and 1 (e.g. 0.95), got {level!r}")
    return float(norm.ppf(1.0 - (1.0 - level) / 2.0))
