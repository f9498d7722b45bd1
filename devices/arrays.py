"""Helpers for the model banks' per-step arithmetic on small arrays.

A bank of a few devices pays numpy's Python-level call overhead for every operation of every step; these give the
same results as the numpy functions they stand for, bit for bit, with less of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from numpy._core import umath
except ImportError:  # numpy < 2
    from numpy.core import umath  # type: ignore[no-redef]

#: ``np.clip(a, lo, hi)`` for a float array ``a`` and both bounds given: the very ufunc ``np.clip`` ends in,
#: without the dispatch in front of it (a few microseconds a call)
clip: Any = getattr(umath, "clip")  # noqa: B009 - not in numpy's type stubs


def as_row(value: Any, n: int) -> np.ndarray:
    """``np.broadcast_to(np.asarray(value, dtype=float), (n,))``, skipping the work for what already is one."""
    if type(value) is np.ndarray and value.dtype == np.float64 and value.shape == (n,):
        return value
    return np.broadcast_to(np.asarray(value, dtype=float), (n,))
