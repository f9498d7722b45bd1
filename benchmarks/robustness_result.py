"""What one robustness probe measured (benchmarks/robustness.py turns it into rows)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ProbeResult:
    inputs: int = 0
    crashes: int = 0
    silent_stops: int = 0
    lost: int | None = None  # None: the link has no transaction messages
    duplicated: int | None = None  # transaction messages that reached the peer more than once
    recover_s: list[float] = field(default_factory=list)
    baseline_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LinkProbe:
    name: str
    probe: Callable[[bool], ProbeResult | None]  # None: the link cannot be probed here (e.g. no broker running)
