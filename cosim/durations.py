"""The one duration grammar of the framework: scenario files, the messaging and bench sections, the command line.

A duration is a number of seconds (``90``, ``2.5``) or a number with one unit: ``ms``, ``s`` (or ``sec``),
``min`` (or ``m``), ``h``, ``d``, ``w`` -- ``250ms``, ``15min``, ``1.5h``, ``7d``. No sign, no exponent, no
sums (``1h30min`` is ``90min``). Every duration is finite and at most :data:`MAX_S` (ten years): a larger one
is a typo, and the simulation would allocate memory for each of its steps before noticing.

Each use says what else it needs: a scenario's ``duration`` and ``step`` are whole seconds > 0
(:func:`positive_whole_seconds`), a fault delay or a bench tolerance may be any seconds >= 0 (:func:`seconds`).
"""

from __future__ import annotations

import math
import re
from typing import Any

UNITS: dict[str, float] = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
                           "w": 604800.0}
MAX_S = 3650 * 86400
MAX_TEXT = "3650d (ten years)"
EXAMPLES = "such as 90 (seconds), '250ms', '15min', '2h' or '7d'"

# the sign is read only to say "must not be negative" instead of "not a duration"
_GRAMMAR = re.compile(r"^\s*([-+]?)([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([a-z]*)\s*$", re.ASCII)


def parse_seconds(value: Any) -> float:
    """A duration (see the module docstring) -> seconds as a float, finite, 0 .. MAX_S."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration {EXAMPLES}")
    if isinstance(value, str):
        m = _GRAMMAR.match(value.lower())
        if not m or m.group(3) not in ("", *UNITS):
            raise ValueError(f"expected a duration {EXAMPLES}; units: {', '.join(UNITS)}")
        if m.group(1) == "-" and float(m.group(2)) != 0:
            raise ValueError("expected a duration >= 0, not a negative one")
        seconds = float(m.group(2)) * UNITS.get(m.group(3), 1.0)
    else:
        seconds = float(value)
        if math.isnan(seconds):
            raise ValueError(f"expected a duration {EXAMPLES}, not NaN")
        if seconds < 0:
            raise ValueError("expected a duration >= 0, not a negative one")
    if seconds > MAX_S:  # also catches inf
        raise ValueError(f"a duration is at most {MAX_TEXT}")
    return seconds


def seconds(value: Any) -> float:
    """Any duration >= 0, in seconds (fault delays, bench tolerances and timeouts)."""
    return parse_seconds(value)


def whole_seconds(value: Any) -> int:
    """A duration >= 0 in whole simulated seconds (e.g. the time of a bench drill)."""
    s = parse_seconds(value)
    if s != int(s):
        raise ValueError("expected whole seconds (simulated time is integer seconds)")
    return int(s)


def positive_whole_seconds(value: Any) -> int:
    """A duration > 0 in whole seconds: a scenario's ``duration`` and ``step``, ``--until``, ``--step``."""
    s = whole_seconds(value)
    if s == 0:
        raise ValueError("expected a duration > 0")
    return s


__all__ = ["MAX_S", "UNITS", "parse_seconds", "positive_whole_seconds", "seconds", "whole_seconds"]
