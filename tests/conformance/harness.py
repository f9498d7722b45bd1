"""What a device family provides so that its driver joins the conformance suite.

A family adds ``tests/conformance/harness_<family>.py`` with one or more :class:`DeviceHarness`
subclasses; the suite finds them by itself (see conftest.py). Every method runs inside the test's
asyncio event loop; the virtual device serves on a free loopback port.
"""

from __future__ import annotations

import abc

from devices.base import Driver, Setpoint


class DeviceHarness(abc.ABC):
    #: short name shown in test ids, e.g. "fronius-sunspec"
    name: str = ""
    #: a setpoint inside the device's capabilities, and one outside them
    valid_setpoint: Setpoint
    invalid_setpoint: Setpoint
    #: measurement names every read must contain
    required_measurements: tuple[str, ...] = ("p_w",)
    #: a read-only device (a meter): every write, ``valid_setpoint`` included, is refused with SetpointRejected
    read_only: bool = False

    @abc.abstractmethod
    async def start_device(self) -> None:
        """Start the virtual device (on a free port chosen at the first start, reused by restarts)."""

    @abc.abstractmethod
    async def stop_device(self) -> None:
        """Stop it and release its sockets (a later start_device serves again on the same port)."""

    @abc.abstractmethod
    def make_driver(self, timeout_s: float = 1.0) -> Driver:
        """A driver pointed at the virtual device (not yet connected)."""

    @abc.abstractmethod
    async def advance(self, dt_s: int = 1) -> None:
        """Step the virtual device's clock so that it applies setpoints and refreshes what it serves."""

    @abc.abstractmethod
    async def set_silent(self, silent: bool) -> None:
        """Silent: the device keeps connections open but stops answering (a hung device)."""

    @abc.abstractmethod
    async def corrupt_next_reply(self) -> None:
        """The device's next reply to the driver is malformed (wrong length, garbage, wrong id...)."""

    @abc.abstractmethod
    async def raw_invalid_write(self) -> str:
        """Send ``invalid_setpoint`` on the wire, bypassing the driver's checks; return the protocol's own
        error as a short name (e.g. "ILLEGAL_DATA_VALUE" for Modbus, "Rejected" for OCPP)."""

    @abc.abstractmethod
    def open_connections(self) -> int:
        """How many client connections the virtual device currently holds."""

    #: the protocol error name ``raw_invalid_write`` must return
    expected_wire_error: str = ""

    async def applied(self, driver: Driver) -> dict[str, float]:
        """The measurement that shows the valid setpoint took effect (default: read after advancing)."""
        await self.advance()
        return dict((await driver.read()).values)
