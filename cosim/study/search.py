"""Bisection on one axis: the smallest (or largest) value that meets the targets, to within a tolerance.

One :class:`Bisection` per combination of the other axes. It asks for both ends first, then halves the bracket;
each answer is fed back with :meth:`feed`. The values it asks for depend only on the answers, so a resumed study
asks for the same values again and finds them among the finished variants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Bisection:
    combo: dict[str, Any]
    axis: str
    low: float
    high: float
    tolerance: float
    find: str = "min"  # "min": smallest value meeting the targets; "max": largest
    met: dict[float, bool | None] = field(default_factory=dict)
    lo: float | None = None  # the bracket once both ends are known
    hi: float | None = None
    answer: float | None = None
    done: bool = False
    reason: str = ""

    def first(self) -> list[float]:
        return [self.low, self.high]

    @property
    def max_probes(self) -> int:
        return 2 + max(0, math.ceil(math.log2((self.high - self.low) / self.tolerance)))

    def feed(self, value: float, met: bool | None) -> list[float]:
        """Record whether ``value`` met the targets (None: the variant failed); the next values to run."""
        if self.done:
            return []
        self.met[value] = met
        if met is None:
            self.done, self.reason = True, f"the variant at {self.axis}={value:g} failed"
            return []
        if self.lo is None:
            if self.low not in self.met or self.high not in self.met:
                return []
            far_end, near_end = (self.high, self.low) if self.find == "min" else (self.low, self.high)
            if self.met[near_end]:  # the end on the goal side (low for min) meets: the answer
                self.done, self.answer = True, near_end
                self.reason = ("the whole range meets the targets" if self.met[far_end] else
                               f"met at {near_end:g} but not at {far_end:g}: not monotone, look at the table")
                return []
            if not self.met[far_end]:
                self.done, self.reason = True, f"no value in [{self.low:g}, {self.high:g}] meets the targets"
                return []
            self.lo, self.hi = self.low, self.high
        else:
            inside_good = met
            if self.find == "min":
                self.hi, self.lo = (value, self.lo) if inside_good else (self.hi, value)
            else:
                self.lo, self.hi = (value, self.hi) if inside_good else (self.lo, value)
        assert self.lo is not None and self.hi is not None  # both ends are set above
        if self.hi - self.lo <= self.tolerance:
            self.done = True
            self.answer = self.hi if self.find == "min" else self.lo
            self.reason = f"bracket [{self.lo:g}, {self.hi:g}]"
            return []
        return [(self.lo + self.hi) / 2.0]


__all__ = ["Bisection"]
