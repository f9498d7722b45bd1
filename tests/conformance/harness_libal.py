"""The LiBal rig (PCS on Modbus RTU over TCP, BMS on CAN via socketcand) in the conformance suite."""

from __future__ import annotations

from devices import registry
from devices.base import Address, Driver, Setpoint
from devices.libal import rtu
from devices.libal.driver import LibalDriver
from devices.libal.virtual import LibalVirtualDevice
from tests.conformance.harness import DeviceHarness

CONFIG = {
    "battery": {"capacity_wh": 100_000, "p_charge_max_w": 50_000, "p_discharge_max_w": 50_000,
                "eta_charge": 0.96, "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 0.95, "soc_init": 0.5},
    "s_max_va": 60_000,
    "i_charge_max_a": 100,
    "i_discharge_max_a": 120,
}


class LibalHarness(DeviceHarness):
    name = "libal-rtu-can"
    valid_setpoint = Setpoint({"p_w": 20_000.0})
    invalid_setpoint = Setpoint({"p_w": 60_000.0})  # above the 50 kW PCS rating
    required_measurements = registry.family("libal").measurements
    expected_wire_error = "ILLEGAL_DATA_VALUE"

    def __init__(self) -> None:
        self.family = registry.family("libal")
        self.config = self.family.parse_config(CONFIG)
        self.device = LibalVirtualDevice(self.family, self.config, device_id="libal-conformance")
        self.address = ""
        self.ports = (0, 0)
        self.t_s = 0

    async def start_device(self) -> None:
        self.address = await self.device.start("127.0.0.1", self.ports[0], can_port=self.ports[1])
        self.ports = (self.device.rtu_server.port or 0, self.device.can_server.port or 0)

    async def stop_device(self) -> None:
        await self.device.stop()

    def make_driver(self, timeout_s: float = 1.0) -> Driver:
        return LibalDriver(Address.parse(self.address), self.family.capabilities(self.config), timeout_s=timeout_s)

    async def advance(self, dt_s: int = 1) -> None:
        await self.device.advance(self.t_s, dt_s, {})
        self.t_s += dt_s

    async def set_silent(self, silent: bool) -> None:
        self.device.set_silent(silent)

    async def corrupt_next_reply(self) -> None:
        self.device.corrupt_next_rtu_reply()

    async def raw_invalid_write(self) -> str:
        """Write the invalid P setpoint with pymodbus's own RTU framer (an independent client)."""
        from pymodbus import FramerType
        from pymodbus.client import AsyncModbusTcpClient

        p_pcs = -int(self.invalid_setpoint.values["p_w"])  # PCS convention: + = discharge
        client = AsyncModbusTcpClient("127.0.0.1", port=self.ports[0], framer=FramerType.RTU, timeout=2, retries=0)
        try:
            await client.connect()
            reply = await client.write_registers(2, rtu.REGS["P_SET_W"].encode(p_pcs), device_id=self.device.unit)
        finally:
            client.close()
        if not reply.isError():
            return "accepted"
        return rtu.EXCEPTION_NAMES.get(reply.exception_code, f"EXCEPTION_{reply.exception_code}")

    def open_connections(self) -> int:
        return self.device.open_connections()
