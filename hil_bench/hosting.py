"""The virtual devices the bench hosts (addresses without a host), clocked by the wall clock or by the bench's steps.

Offline, the device host advances a virtual device's model by a whole step when the co-simulation says so; on
the bench (``clock: wall``, the default) the model lives in wall time like hardware: from the first step on,
every ``virtual_step_s`` simulated seconds (``virtual_step_s * rt_factor`` wall seconds) it advances to
``(now - T0) / rt_factor``, with the exogenous inputs (PV irradiance, site load, ...) the grid simulation fed
it last. With ``clock: steps`` there is no clock task: the bench calls :meth:`Hosting.advance_to` once per step,
after the writes and before the reads (see :mod:`hil_bench.clocks`). The servers and the
clocks run on the bench's I/O loop, the same loop as the drivers, so a family whose driver and virtual device
share objects in-process (the OCPP CSMS) works as offline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from collections.abc import Mapping

from devices import registry
from devices.family import DeviceContext, Family
from devices.io_loop import IoLoop
from devices.virtual import VirtualDevice, advance_to

log = logging.getLogger(__name__)


@dataclass
class HostedDevice:
    device_id: str
    family: Family
    virtual: VirtualDevice
    address: str = ""
    env: Mapping[str, float] = field(default_factory=dict)
    t_model: float = 0.0  # the model's own clock (a float: virtual devices keep fractional seconds)
    task: asyncio.Task | None = None

    @property
    def can_be_silenced(self) -> bool:
        return hasattr(self.virtual, "set_silent") or hasattr(self.virtual, "silent")

    def set_silent(self, silent: bool) -> None:
        setter = getattr(self.virtual, "set_silent", None)
        if setter is not None:
            setter(silent)
        elif hasattr(self.virtual, "silent"):
            self.virtual.silent = silent  # type: ignore[attr-defined]
        else:
            raise ValueError(f"{self.device_id}: {type(self.virtual).__name__} cannot be made silent")


class Hosting:
    """Starts, clocks and stops the bench's own virtual devices."""

    def __init__(self, io: IoLoop, rt_factor: float, virtual_step_s: int) -> None:
        self.io = io
        self.rt_factor = rt_factor
        self.virtual_step_s = virtual_step_s
        self.devices: dict[str, HostedDevice] = {}
        self.t0: float | None = None

    def start(self, device_id: str, family: Family, config, scheme: str, context: DeviceContext | None = None) -> str:
        """Start the family's virtual device for ``scheme`` on a free loopback port; return its driver address.
        ``context``: its build context (the scenario's start: the device's clock); stand-alone without one."""
        spec = family.virtual.get(scheme)
        if spec is None:
            raise ValueError(f"{device_id}: family {family.name!r} has no virtual device for {scheme!r}")
        cls = registry.load_spec(spec)

        async def _start() -> HostedDevice:
            virtual = cls(family, config, device_id=device_id, context=context)
            hosted = HostedDevice(device_id, family, virtual, env=family.input_defaults)
            hosted.address = await virtual.start()
            return hosted

        hosted = self.io.run(_start(), timeout_s=15)
        self.devices[device_id] = hosted
        return hosted.address

    def set_env(self, device_id: str, env: Mapping[str, float]) -> None:
        hosted = self.devices[device_id]
        hosted.env = {**hosted.env, **env}  # a new dict: the clock thread sees either the old or the new one

    def start_clocks(self, t0: float) -> None:
        """Start every model's wall clock with simulated t = 0 at perf_counter ``t0`` (thread-safe)."""
        self.t0 = t0
        for hosted in self.devices.values():
            self.io.loop.call_soon_threadsafe(self._spawn, hosted, t0)

    def _spawn(self, hosted: HostedDevice, t0: float) -> None:
        hosted.task = asyncio.get_running_loop().create_task(self._clock(hosted, t0), name=f"clock {hosted.device_id}")

    async def _clock(self, hosted: HostedDevice, t0: float) -> None:
        rt, step = self.rt_factor, self.virtual_step_s
        while True:
            now = time.perf_counter()
            target = int((now - t0) / rt) // step * step
            if target > hosted.t_model:
                try:
                    await hosted.virtual.advance(hosted.t_model, target - hosted.t_model, hosted.env)
                except Exception:  # a broken model must not stop the others; the driver will see it
                    log.exception("%s: virtual device clock failed at t=%s", hosted.device_id, hosted.t_model)
                    raise
                hosted.t_model = target
            await asyncio.sleep(max(0.0, t0 + (hosted.t_model + step) * rt - time.perf_counter()))

    async def advance_to(self, device_id: str, t_s: int) -> None:
        """On the bench loop (``clock: steps``): advance one hosted model to ``t_s`` with its latest inputs."""
        hosted = self.devices[device_id]
        await advance_to(hosted.virtual, t_s, self.virtual_step_s, hosted.env)
        hosted.t_model = hosted.virtual.t_s

    def stop(self) -> None:
        async def _stop() -> None:
            for hosted in self.devices.values():
                if hosted.task is not None:
                    hosted.task.cancel()
            await asyncio.gather(*(h.task for h in self.devices.values() if h.task), return_exceptions=True)
            await asyncio.gather(*(h.virtual.stop() for h in self.devices.values()), return_exceptions=True)

        if self.devices and not self.io.loop.is_closed():
            self.io.run(_stop(), timeout_s=15)
