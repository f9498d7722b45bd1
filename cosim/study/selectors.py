"""Which variants an ``outputs.runs`` / ``report.heatmaps`` / ``economics.reference`` selector picks:
``all``, ``none``, or a list of axis-value mappings (a variant matches one if every named axis has that value)."""

from __future__ import annotations

import math
from typing import Any, cast


def selected(selector: Any, v: Any) -> bool:
    if selector == "all":
        return True
    if selector in ("none", None):
        return False
    return any(all(_same(v.axes.get(k), val) for k, val in sel.items()) for sel in selector)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return cast(bool, a == b)


__all__ = ["selected"]
