"""The Fronius hybrid in the conformance suite: SunSpec Modbus TCP (read, model-124 writes, faults).

The Solar API (``fronius+http``) is read-only, so the suite's setpoint tests do not apply to it; its driver is
held to the same connection, timeout, malformed-reply and concurrency properties in tests/test_fronius_solar_api.py.
"""

from __future__ import annotations

import asyncio
import struct

from devices import registry
from devices.base import Address, Driver, Setpoint
from devices.fronius.driver import SunSpecDriver
from devices.fronius.modbus_client import EXCEPTION_NAMES
from devices.fronius.sunspec_map import STORAGE
from devices.fronius.virtual import FroniusSunSpecDevice
from tests.conformance.harness import DeviceHarness


class FroniusSunSpecHarness(DeviceHarness):
    name = "fronius-sunspec"
    valid_setpoint = Setpoint({"batt_p_w": 1000.0})
    invalid_setpoint = Setpoint({"batt_p_w": 99_999.0})
    required_measurements = ("p_w", "q_var", "pv_p_w", "batt_p_w", "soc", "e_wh", "pv_curtail_w",
                             "p_charge_avail_w", "p_discharge_avail_w", "v_v", "f_hz")
    expected_wire_error = "ILLEGAL_DATA_VALUE"

    def __init__(self) -> None:
        self.family = registry.family("fronius")
        self.config = self.family.parse_config({})
        self.device = FroniusSunSpecDevice(self.family, self.config, device_id="conformance")
        self.port = 0
        self.t_s = 0

    async def start_device(self) -> None:
        await self.device.start("127.0.0.1", self.port)
        self.port = self.device.port

    async def stop_device(self) -> None:
        await self.device.stop()

    def make_driver(self, timeout_s: float = 1.0) -> Driver:
        return SunSpecDriver(Address.parse(self.device.address), self.family.capabilities(self.config),
                             timeout_s=timeout_s)

    async def advance(self, dt_s: int = 1) -> None:
        await self.device.advance(self.t_s, dt_s, {"pv_w_per_kwp": 0.0, "site_load_w": 0.0})
        self.t_s += dt_s

    async def set_silent(self, silent: bool) -> None:
        self.device.set_silent(silent)

    async def corrupt_next_reply(self) -> None:
        self.device.corrupt_next_reply()

    async def raw_invalid_write(self) -> str:
        """InWRte = 999.99 % (raw 99999 does not fit; 30000 = 300 %) written straight onto the wire."""
        address = self.device.map.addr[124] + STORAGE.offsets()["InWRte"]
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(struct.pack(">HHHBBHH", 1, 0, 6, self.config.unit_id, 0x06, address, 30_000))
            await writer.drain()
            header = await asyncio.wait_for(reader.readexactly(7), 5)
            pdu = await reader.readexactly(struct.unpack(">H", header[4:6])[0] - 1)
        finally:
            writer.close()
            await writer.wait_closed()
        if pdu[0] & 0x80:
            return EXCEPTION_NAMES.get(pdu[1], f"EXCEPTION_{pdu[1]}")
        return "ACCEPTED"

    def open_connections(self) -> int:
        return self.device.open_connections()
