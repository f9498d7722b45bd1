"""ProfileError and the small input checks that raise it, shared by the calendar, sources and prices."""

from __future__ import annotations

import difflib
import math
import numbers

import numpy as np


class ProfileError(ValueError):
    """A profile, column, file or price table that was asked for does not exist or is malformed.

    The message names what was asked and what exists; the scenario layer shows it to the user.
    """


def positive_seconds(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0 or value != math.floor(value):
        raise ProfileError(f"{name} must be a positive whole number of seconds, got {value!r}")
    return int(math.floor(value))  # typeshed: Real.__floor__ is not an int


def finite_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ProfileError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_finite(label: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ProfileError(f"{label}: {bad.size} missing or non-finite values (first at row {bad[0]})")


def name_range(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]}, {len(names)} in all"


def did_you_mean(name: str, names: list[str]) -> str:
    close = [n for n in names if n.startswith(str(name))][:3] or difflib.get_close_matches(str(name), names, n=3)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
