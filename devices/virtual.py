"""A virtual device: a family's model behind the device's REAL protocol on a socket, plus a clock.

Offline, the co-simulation advances the model (``advance``) each step; on the bench a wall clock does.
The protocol path is identical in both: the driver cannot tell a virtual device from hardware.
Every method runs on the I/O loop (see :mod:`devices.io_loop`), so the model is only touched from one
thread.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Mapping
from ssl import SSLContext
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from devices.family import DeviceContext, Family, ModelBank


class VirtualDevice(abc.ABC):
    """Serves one device's model (a bank of one) over one protocol.

    ``context`` is the device's build context from the world (scenario start, step, id, connection point);
    stand-alone, ``device_id`` names a context whose start is now. ``t_s`` is the model's clock in s since
    that start (the end of the last ``advance``).
    """

    scheme: str = ""
    config_type: ClassVar[type[BaseModel]] = BaseModel  # the family's config model this device serves
    #: its protocol has TLS: :meth:`start_secure` serves it (with client certificates)
    serves_tls: ClassVar[bool] = False

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 context: DeviceContext | None = None) -> None:
        if not isinstance(config, self.config_type):
            raise TypeError(f"{type(self).__name__} needs a {self.config_type.__name__}, got {type(config).__name__}")
        self.family = family
        self.config = config
        self.context = context or DeviceContext.standalone(device_id)
        self.bank: ModelBank = family.bank([config], [self.context])
        self.device_id = self.context.device_id
        self.t_s: float = 0

    @abc.abstractmethod
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; return the address (with the bound port) a driver should use."""

    async def start_secure(self, ssl: SSLContext, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving with TLS (``ssl``: a server context from devices.tls), where ``serves_tls``."""
        raise NotImplementedError(f"{type(self).__name__}: its protocol has no TLS here")

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop serving and release the socket; safe to call twice."""

    def sync(self) -> None:  # noqa: B027 - an optional hook: most devices serve straight from the model
        """Refresh what the protocol serves (registers, frames) from the model; called after each advance."""

    async def advance(self, t_s: float, dt_s: float, env: Mapping[str, float]) -> None:
        """Step the model over [t_s, t_s + dt_s) with exogenous inputs, then refresh the served state."""
        self.bank.step(t_s, dt_s, {k: np.array([v], dtype=float) for k, v in env.items()})
        self.t_s = t_s + dt_s
        self.sync()


async def advance_to(device: VirtualDevice, t_s: int, step_s: int, env: Mapping[str, float]) -> None:
    """Advance ``device`` from its own ``t_s`` to ``t_s`` in model steps of at most ``step_s`` simulated seconds
    (a clock that someone else drives: the bench, or a served device following it). Never backwards."""
    while device.t_s < t_s:
        await device.advance(device.t_s, min(step_s, t_s - device.t_s), env)


async def run_wall_clock(device: VirtualDevice, dt_s: float, env: Mapping[str, float] | None = None,
                         stop: asyncio.Event | None = None) -> None:
    """Advance ``device`` in wall time every ``dt_s`` seconds until ``stop`` is set (bench / stand-alone)."""
    stop = stop or asyncio.Event()
    start = time.monotonic()
    k = 0
    while not stop.is_set():
        await device.advance(round(k * dt_s), max(1, round(dt_s)), env or {})
        k += 1
        delay = start + k * dt_s - time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(delay, 0.0))
        except TimeoutError:
            pass
