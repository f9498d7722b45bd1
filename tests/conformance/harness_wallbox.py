"""The wallbox family in the conformance suite: a virtual charge point (OCPP 1.6J and 2.0.1) and our driver.

OCPP reverses the roles: the device is the websocket client, our CSMS (owned by the driver, shared per
address) is the server. "The driver reconnects" therefore means: the driver recovers when the charge point
comes back and boots again.
"""

from __future__ import annotations

import abc

from devices import registry
from devices.base import Address, Driver, Setpoint
from devices.wallbox.driver import Ocpp16Driver, Ocpp201Driver, OcppDriver
from devices.wallbox.profiles import TX_DEFAULT, constant_limit, to_v16, to_v201
from devices.wallbox.virtual import VirtualWallbox, VirtualWallbox16, VirtualWallbox201
from tests.conformance.harness import DeviceHarness

EV = {"ev_plugged": 1.0, "ev_id": 1.0, "ev_soc_arrival": 0.2, "ev_capacity_wh": 60_000.0, "ev_p_max_w": 22_000.0,
      "ev_phases": 3.0}


class _WallboxHarness(DeviceHarness):
    """Shared by both versions; abstract (``classes``) so the suite collects only the two below."""

    @abc.abstractmethod
    def classes(self) -> tuple[type[VirtualWallbox], type[OcppDriver]]: ...
    valid_setpoint = Setpoint({"p_max_w": 7400.0})
    invalid_setpoint = Setpoint({"p_max_w": 30_000.0})  # above 32 A x 3 x 230 V = 22 080 W
    required_measurements = ("p_w", "e_wh", "e_session_wh", "status", "connected", "session_active", "p_max_w")
    expected_wire_error = "Rejected"

    def __init__(self) -> None:
        self.family = registry.family("wallbox")
        self.config = self.family.parse_config({})
        virtual_cls, self.driver_cls = self.classes()
        self.virtual = virtual_cls(self.family, self.config, device_id=f"CP-{self.name}")
        self.port = 0
        self.address = ""
        self.t = 0

    async def start_device(self) -> None:
        self.address = await self.virtual.start("127.0.0.1", self.port)
        self.port = Address.parse(self.address).port or 0

    async def stop_device(self) -> None:
        await self.virtual.stop()

    def make_driver(self, timeout_s: float = 1.0) -> Driver:
        return self.driver_cls(Address.parse(self.address), self.family.capabilities(self.config), timeout_s=timeout_s)

    async def advance(self, dt_s: int = 1) -> None:
        await self.virtual.advance(self.t, dt_s, EV)
        self.t += dt_s

    async def set_silent(self, silent: bool) -> None:
        assert self.virtual.cp is not None
        self.virtual.cp.silent = silent

    async def corrupt_next_reply(self) -> None:
        assert self.virtual.cp is not None
        self.virtual.cp.corrupt_next = True

    async def raw_invalid_write(self) -> str:
        """SetChargingProfile above the hardware maximum straight from the CSMS session (no driver checks)."""
        server = self.virtual.server
        assert server is not None
        session = server.sessions[self.virtual.device_id]
        limit = self.invalid_setpoint.values["p_max_w"]
        profile = constant_limit(42, 1, limit, "W", purpose=TX_DEFAULT, connector=1,
                                 start=session.state.cp_time)
        if self.virtual.version == "1.6":
            payload = {"connectorId": 1, "csChargingProfiles": to_v16(profile)}
        else:
            payload = {"evseId": 1, "chargingProfile": to_v201(profile)}
        reply = await session.request("SetChargingProfile", payload, 2.0)
        return reply["status"]

    def open_connections(self) -> int:
        return self.virtual.open_connections()


class Ocpp16Harness(_WallboxHarness):
    name = "wallbox-ocpp16"

    def classes(self) -> tuple[type[VirtualWallbox], type[OcppDriver]]:
        return VirtualWallbox16, Ocpp16Driver


class Ocpp201Harness(_WallboxHarness):
    name = "wallbox-ocpp201"

    def classes(self) -> tuple[type[VirtualWallbox], type[OcppDriver]]:
        return VirtualWallbox201, Ocpp201Driver
