"""Seeded fault injection per broker role: message delay, loss and payload corruption.

Every (role, topic, fault) has its own random stream, seeded from the scenario seed and a stable hash of the
role and topic names. Adding a topic, or changing the loss probability, never shifts the draws another topic
or another fault sees; the n-th message on a topic always gets the same delay for the same seed. Every
message draws from every active stream (even a lost one draws a delay), so streams stay aligned.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from .config import DelaySpec, FaultSpec
from .topics import matches


@dataclass(frozen=True, slots=True)
class FaultDraw:
    """What happens to one message: lost, delayed by ``delay_s`` simulated seconds, payload cut at ``cut``."""

    lost: bool = False
    delay_s: float = 0.0
    cut: int | None = None  # corrupted: the payload is truncated to this many bytes

    @property
    def corrupted(self) -> bool:
        return self.cut is not None


NO_FAULT = FaultDraw()


def stream_seed(seed: int, *names: str) -> int:
    """A 64-bit seed from the scenario seed and names; stable across processes and Python versions."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(seed)).encode())
    for name in names:
        h.update(b"\x1f" + name.encode("utf-8"))
    return int.from_bytes(h.digest(), "big")


def draw_delay(spec: DelaySpec, rng: random.Random) -> float:
    if spec.dist == "fixed":
        d = spec.s
    elif spec.dist == "uniform":
        d = rng.uniform(spec.low, spec.high)
    elif spec.dist == "exponential":
        d = rng.expovariate(1.0 / spec.mean)
    else:  # normal, truncated at 0
        d = max(0.0, rng.gauss(spec.mean, spec.std))
    if spec.max is not None:
        d = min(d, spec.max)
    return d


class FaultInjector:
    """Draws the faults of each message. ``specs`` maps a role key to its ``FaultSpec``."""

    def __init__(self, specs: dict[str, FaultSpec], seed: int) -> None:
        self.specs = {k: v for k, v in specs.items() if v.active}
        self.seed = int(seed)
        self._rngs: dict[tuple[str, str, str], random.Random] = {}

    def _rng(self, role: str, topic: str, fault: str) -> random.Random:
        key = (role, topic, fault)
        rng = self._rngs.get(key)
        if rng is None:
            rng = self._rngs[key] = random.Random(stream_seed(self.seed, role, topic, fault))
        return rng

    def draw(self, role: str, topic: str, payload_len: int, spec: FaultSpec | None = None) -> FaultDraw:
        """The faults of the next message on ``topic`` of base role ``role``.

        ``spec`` is the role key's fault spec (the bus resolves ``smx:<site>`` -> ``smx``); without it the
        spec registered under ``role`` is used. Streams are named by the base role, so giving a site its own
        SMX broker does not change the draws.
        """
        spec = spec if spec is not None else self.specs.get(role)
        if spec is None or not spec.active or not matches(spec.topic, topic):
            return NO_FAULT
        lost = False
        delay = 0.0
        cut = None
        if spec.loss > 0:
            lost = self._rng(role, topic, "loss").random() < spec.loss
        if not spec.delay.is_zero:
            delay = draw_delay(spec.delay, self._rng(role, topic, "delay"))
        if spec.corrupt > 0:
            rng = self._rng(role, topic, "corrupt")
            hit = rng.random() < spec.corrupt
            where = int(rng.random() * max(payload_len, 1))  # always drawn, one number per message
            if hit:
                cut = where
        return FaultDraw(lost=lost, delay_s=delay, cut=cut)
