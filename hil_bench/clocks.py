"""``clock: steps``: the bench keeps its virtual devices' time itself, so their behaviour does not depend on scheduling.

With ``clock: wall`` (the default) a hosted virtual device advances its model by the wall clock, as hardware
does, and a separately served one (``s4g device serve``) by its own wall clock: what a device has done by the
time it is read then depends on how promptly two threads or processes got the CPU. With ``clock: steps`` the
bench advances every hosted virtual device, and every served one that follows its clock link (``bench.
device_clocks``, ``s4g device serve fronius --clock-port``), to the end of the step after the step's writes
and before its reads -- the offline semantics -- with the inputs the grid simulation fed it. Pacing, driver
timeouts and the watchdogs stay on the wall clock; real devices are untouched (they keep their own time).

A follower that does not answer its clock link is logged in the device I/O log (``op`` ``clock``) and left
behind; its protocol driver decides whether the device is faulted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

from devices.base import DeviceError
from devices.clock_link import ClockClient
from hil_bench.hosting import Hosting
from hil_bench.records import IoLog

#: how long the bench waits for a follower to confirm a step: not a cycle's fraction like a driver's timeout --
#: waiting is what makes its behaviour independent of scheduling; one that is gone is refused at once anyway
CLOCK_LINK_TIMEOUT_S = 30.0


class SteppedClocks:
    """Advances hosted virtual devices and clock-link followers to the end of each step (on the bench loop)."""

    def __init__(self, hosting: Hosting, followers: Mapping[str, ClockClient], step_s: int, iolog: IoLog) -> None:
        self.hosting = hosting
        self.followers = dict(followers)
        self.step_s = step_s  # model step of the followers, as of the hosted devices (virtual_step_s)
        self.iolog = iolog

    async def advance(self, device_ids: Iterable[str], t_s: int, t_end: int,
                      env_by_id: Mapping[str, Mapping[str, float]]) -> None:
        """Advance the devices among ``device_ids`` this bench clocks to ``t_end`` (the step at ``t_s``)."""
        ids = list(device_ids)
        for dev in ids:
            if dev in self.hosting.devices:
                await self.hosting.advance_to(dev, t_end)
        await asyncio.gather(*(self._follow(dev, t_s, t_end, env_by_id.get(dev, {}))
                               for dev in ids if dev in self.followers))

    async def _follow(self, dev: str, t_s: int, t_end: int, env: Mapping[str, float]) -> None:
        started = time.perf_counter()
        try:
            await self.followers[dev].advance_to(t_end, self.step_s, env)
        except DeviceError as exc:
            self.iolog.add(dev, t_s, started, "clock", "error", "bench", {"t_s": float(t_end)},
                           time.perf_counter() - started, str(exc))
            return
        self.iolog.add(dev, t_s, started, "clock", "ok", "bench", {"t_s": float(t_end)},
                       time.perf_counter() - started)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.followers.values()), return_exceptions=True)
