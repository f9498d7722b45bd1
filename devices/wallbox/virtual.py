"""Virtual wallboxes for ``ocpp16://`` and ``ocpp201://`` virtual-device requests.

OCPP turns the usual roles around: the device is the websocket client. ``start`` therefore acquires our
CSMS on a loopback port (the process's shared default server when ``port`` is 0, see
:func:`devices.wallbox.csms.acquire`), starts the virtual charge point connecting to it, and returns the
driver address ``ocpp16://127.0.0.1:PORT/CP_ID``. The driver then admits CP_ID and waits for its boot.
``advance`` steps the model with the co-simulation clock: plugging the EV in or out there is what makes the
charge point send its StatusNotification and transaction messages.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, UTC
from collections.abc import Mapping
from urllib.parse import quote
from typing import Any

from pydantic import BaseModel

from devices.family import DeviceContext, Family
from devices.virtual import VirtualDevice
from devices.wallbox import csms
from devices.wallbox.chargepoint import VirtualChargePoint
from devices.wallbox.chargepoint16 import ChargePoint16
from devices.wallbox.chargepoint201 import ChargePoint201
from devices.wallbox.model import ENV_INPUTS, WallboxBank, WallboxConfig


CHARGE_POINTS: dict[str, type[VirtualChargePoint]] = {"1.6": ChargePoint16, "2.0.1": ChargePoint201}


class VirtualWallbox(VirtualDevice):
    config_type = WallboxConfig
    bank: WallboxBank  # the family's bank (checked in __init__)
    version = ""

    def __init__(self, family: Family, config: BaseModel, *, device_id: str = "device",
                 wall_clock: bool = False, context: DeviceContext | None = None) -> None:
        super().__init__(family, config, device_id=device_id, context=context)
        assert isinstance(config, WallboxConfig) and isinstance(self.bank, WallboxBank)
        self.cfg: WallboxConfig = config
        self.wall_clock = wall_clock
        self.cp: VirtualChargePoint | None = None
        self.server: csms.CsmsServer | None = None
        self.env_override: dict[str, float] | None = None
        self._starting: asyncio.Task[None] | None = None

    def clock_at(self, t_s: float) -> datetime:
        if self.wall_clock:
            return datetime.now(UTC)
        return self.context.at(t_s)  # protocol timestamps on the scenario calendar

    def now(self) -> datetime:
        return self.clock_at(self.bank.t_s)

    def make_charge_point(self, csms_url: str, **kw: Any) -> VirtualChargePoint:
        cls = CHARGE_POINTS[self.version]
        return cls(self.bank, self.cfg, cp_id=self.device_id, csms_url=csms_url, clock=self.now,
                   clock_at=self.clock_at, **kw)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self.server is None:
            self.server = await csms.acquire(host, port)
        if self.cp is None:
            self.cp = self.make_charge_point(self.server.url)
        else:
            self.cp.csms_url = self.server.url
        # the driver admits our id right after this returns: connect then, not before (no refused first try)
        self._starting = asyncio.create_task(self._connect_when_admitted(self.server, self.cp))
        return f"{self.scheme}://{host}:{self.server.port}/{quote(self.device_id, safe='')}"

    async def _connect_when_admitted(self, server: csms.CsmsServer, cp: VirtualChargePoint) -> None:
        await server.wait_expected(self.device_id, 10.0)
        await cp.start()

    async def start_client(self, csms_url: str, **kw: Any) -> None:
        """Connect to an external CSMS instead of ours (``s4g device serve wallbox --csms``)."""
        self.cp = self.make_charge_point(csms_url, **kw)
        await self.cp.start()

    async def stop(self) -> None:
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        if self.cp is not None:
            await self.cp.stop()
        server, self.server = self.server, None
        if server is not None:
            await csms.release(server)

    async def advance(self, t_s: float, dt_s: float, env: Mapping[str, float]) -> None:
        # the same defaults DeviceSim gives a sim:// bank (0.0 for an input that is not connected)
        full = dict.fromkeys(ENV_INPUTS, 0.0)
        full.update({k: (0.0 if v is None else float(v)) for k, v in env.items()})
        if self.env_override is not None:
            full.update(self.env_override)
        assert self.cp is not None, "start() first"
        await self.cp.advance(t_s, dt_s, full)
        self.t_s = t_s + dt_s

    def open_connections(self) -> int:
        return self.cp.open_connections() if self.cp is not None else 0


class VirtualWallbox16(VirtualWallbox):
    scheme = "ocpp16"
    version = "1.6"


class VirtualWallbox201(VirtualWallbox):
    scheme = "ocpp201"
    version = "2.0.1"
