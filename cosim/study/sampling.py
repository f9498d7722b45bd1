"""Sampling plans over the axes of a study: full grid, Latin hypercube, random (both seeded).

An axis is either discrete (a list of values) or a range ``[low, high]`` (float or integer). The full grid takes
every combination (a range needs ``num`` points); Latin hypercube and random draw ``samples`` points in the unit
cube and map each coordinate onto its axis. A Latin hypercube puts exactly one sample in each of ``samples``
equal strata of every axis (McKay, Beckman & Conover 1979), so a few samples already cover every axis evenly.
Same seed, same plan: the generator is numpy's PCG64 seeded with the plan's seed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any
from collections.abc import Sequence

import numpy as np


@dataclass(frozen=True)
class Domain:
    """What one axis may take: ``values`` (discrete) or ``low``..``high`` (``integer`` rounds down to whole numbers)."""

    name: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    num: int | None = None
    integer: bool = False

    def grid(self) -> list[Any]:
        if self.values is not None:
            return list(self.values)
        if self.num is None:
            raise ValueError(f"axis {self.name!r}: a range needs 'num' points for a full grid")
        assert self.low is not None and self.high is not None  # a range axis (validated)
        pts = np.linspace(self.low, self.high, self.num)
        return [int(round(p)) for p in pts] if self.integer else [float(p) for p in pts]

    def at(self, u: float) -> Any:
        """The value at ``u`` in [0, 1): equal-width strata of the range or equal shares of the values."""
        if self.values is not None:
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        assert self.low is not None and self.high is not None  # a range axis (validated)
        if self.integer:
            span = int(self.high) - int(self.low) + 1
            return int(self.low) + min(int(u * span), span - 1)
        return float(self.low + u * (self.high - self.low))


def full_grid(domains: Sequence[Domain]) -> list[dict[str, Any]]:
    names = [d.name for d in domains]
    return [dict(zip(names, combo)) for combo in itertools.product(*(d.grid() for d in domains))]


def unit_lhs(n: int, dims: int, seed: int) -> np.ndarray:
    """(n, dims) points in [0, 1): column j holds one point in each stratum [k/n, (k+1)/n), in random order."""
    rng = np.random.Generator(np.random.PCG64(seed))
    u = np.empty((n, dims))
    for j in range(dims):
        u[:, j] = (rng.permutation(n) + rng.random(n)) / n
    return u


def unit_random(n: int, dims: int, seed: int) -> np.ndarray:
    return np.random.Generator(np.random.PCG64(seed)).random((n, dims))


def sample(domains: Sequence[Domain], plan: str, samples: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """The points of ``plan`` ("grid", "lhs" or "random") as ``{axis name: value}`` in a fixed order."""
    if plan == "grid":
        return full_grid(domains)
    if samples is None or samples < 1:
        raise ValueError(f"plan {plan!r} needs samples >= 1")
    u = unit_lhs(samples, len(domains), seed) if plan == "lhs" else unit_random(samples, len(domains), seed)
    return [{d.name: d.at(float(u[i, j])) for j, d in enumerate(domains)} for i in range(samples)]


def strata(values: Sequence[float], low: float, high: float, n: int) -> list[int]:
    """Which of ``n`` equal strata of [low, high] each value falls in (a test helper for the LHS property)."""
    width = (high - low) / n
    return [min(int(math.floor((v - low) / width)), n - 1) for v in values]


__all__ = ["Domain", "full_grid", "sample", "strata", "unit_lhs", "unit_random"]
