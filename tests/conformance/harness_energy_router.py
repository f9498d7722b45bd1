"""The Energy Router in the conformance suite: IEC 61850 MMS (our server, the iec61850 package's client)."""

from __future__ import annotations

import asyncio

from devices import registry
from devices.base import Address, Driver, Setpoint
from devices.energy_router.driver import Iec61850Driver
from devices.energy_router.mms import DATA_ACCESS_ERRORS
from devices.energy_router.virtual import VirtualEnergyRouter
from tests.conformance.harness import DeviceHarness


class EnergyRouterHarness(DeviceHarness):
    name = "energy-router-iec61850"
    valid_setpoint = Setpoint({"batt_p_w": 1000.0})
    invalid_setpoint = Setpoint({"batt_p_w": 99_999.0})  # above the 2.5 kW DC/DC rating
    required_measurements = registry.family("energy_router").measurements
    expected_wire_error = "object-value-invalid"

    def __init__(self) -> None:
        self.family = registry.family("energy_router")
        self.config = self.family.parse_config({})
        self.device = VirtualEnergyRouter(self.family, self.config, device_id="er-conformance")
        self.port = 0
        self.t_s = 0

    async def start_device(self) -> None:
        await self.device.start("127.0.0.1", self.port)
        self.port = self.device.port

    async def stop_device(self) -> None:
        await self.device.stop()

    def make_driver(self, timeout_s: float = 1.0) -> Driver:
        return Iec61850Driver(Address.parse(self.device.address), self.family.capabilities(self.config),
                              timeout_s=timeout_s)

    async def advance(self, dt_s: int = 1) -> None:
        await self.device.advance(self.t_s, dt_s, {"pv_w_per_kwp": 0.0})
        self.t_s += dt_s

    async def set_silent(self, silent: bool) -> None:
        self.device.set_silent(silent)

    async def corrupt_next_reply(self) -> None:
        self.device.corrupt_next_reply()

    async def raw_invalid_write(self) -> str:
        """SetDataValues of the invalid battery power with the iec61850 package's client (no driver checks)."""
        import iec61850

        conn = await iec61850.IedConnection.connect(f"127.0.0.1:{self.port}", timeout_ms=2000)
        try:
            await conn.write_float(f"{self.config.ld_name}/ZBTC1.BatChaPwr.setMag.f", iec61850.FC.SP,
                                   self.invalid_setpoint.values["batt_p_w"])
        except iec61850.IedDataAccessError as exc:
            code = next((c for c, n in DATA_ACCESS_ERRORS.items()
                         if n.replace("-", "").lower() in str(exc).lower()), None)
            return DATA_ACCESS_ERRORS.get(code, str(exc)) if code is not None else str(exc)
        finally:
            await asyncio.wait_for(conn.disconnect(), 2)
        return "accepted"

    def open_connections(self) -> int:
        return self.device.open_connections()
