"""When a local agent stops following its upper layer: one policy for every local agent (LESSAg, LEVChAg).

A local agent executes what a planner above it sends (GESSCon's schedule, PROFEV's EV plan). Each step it asks
:func:`plan_status` whether the latest plan is usable; if not it runs its own safe schedule (self-consumption
for a battery, least-laxity-first within the site limit for wallboxes) and :class:`FallbackLog` records every
change once: ``events()`` gives ``{"t_s", "eid", "event": "fallback" | "resume", "reason"}`` and the numeric
``fallback`` output (0/1) is recorded per entity.

Reasons, in the order they are checked: ``missing`` (no plan, or one that cannot be decoded), ``expired`` (the
plan does not cover the current time), ``stale`` (issued more than ``max_age_s`` ago, or at an unknown time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

MISSING, EXPIRED, STALE = "missing", "expired", "stale"


def plan_status(have_plan: bool, covers_now: bool, age_s: float, max_age_s: float) -> str:
    """Why the plan cannot be used ("" if it can)."""
    if not have_plan:
        return MISSING
    if not covers_now:
        return EXPIRED
    if not (math.isfinite(age_s) and age_s <= max_age_s):
        return STALE
    return ""


def plan_age_s(time_s: int, issued_s: float) -> float:
    """Age of a plan issued at simulated ``issued_s`` (NaN when unknown or negative: never issued)."""
    return time_s - issued_s if math.isfinite(issued_s) and issued_s >= 0 else math.nan


class FallbackLog:
    """Per-entity fallback state; each change becomes one event (and a log line when falling back)."""

    def __init__(self, agent: str, safe_schedule: str) -> None:
        self.agent, self.safe_schedule = agent, safe_schedule
        self.fallback: dict[str, bool] = {}
        self._events: list[dict] = []

    def update(self, time_s: int, eids: Sequence[str], reasons: Sequence[str]) -> np.ndarray:
        """Record this step's state (reason "" = following the plan); returns the 0/1 fallback array."""
        out = np.zeros(len(eids))
        for i, (eid, reason) in enumerate(zip(eids, reasons)):
            fb = bool(reason)
            out[i] = float(fb)
            before = self.fallback.get(eid)
            if before is None and not fb:  # starts by following a plan: nothing to report
                self.fallback[eid] = False
                continue
            if before == fb:
                continue
            self.fallback[eid] = fb
            self._events.append({"t_s": int(time_s), "eid": eid, "event": "fallback" if fb else "resume",
                                 "reason": reason})
            if fb:
                log.info("%s %s at t=%s s: plan %s, falling back to %s", self.agent, eid, time_s, reason,
                         self.safe_schedule)
        return out

    def events(self) -> list[dict]:
        return list(self._events)


__all__ = ["EXPIRED", "MISSING", "STALE", "FallbackLog", "plan_age_s", "plan_status"]
