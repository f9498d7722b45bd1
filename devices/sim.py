"""The ``sim://`` driver: the device's physics in-process, no protocol (the fastest path).

A SimDriver is a view on one member of a family's :class:`~devices.family.ModelBank`. The device host
steps whole banks as arrays; the driver is what gives single devices the same interface as protocol
drivers (for controllers, bench checks and tests).
"""

from __future__ import annotations

from devices.base import Address, Capabilities, DeviceUnavailable, Driver, Measurement, Setpoint
from devices.family import ModelBank
from typing import Any


class SimDriver(Driver):
    schemes = ("sim",)

    def __init__(self, address: Address, capabilities: Capabilities, *, bank: ModelBank, index: int,
                 timeout_s: float = 2.0, connected: bool = False) -> None:
        """``connected``: the caller owns the bank and hands out a view that needs no ``connect``.
        Without a host setting ``clock``, readings count wall time like any driver's (see devices.base)."""
        super().__init__(address, capabilities, timeout_s=timeout_s)
        self.bank = bank
        self.index = index
        self._open = connected

    async def connect(self) -> None:
        self._open = True

    def _require_open(self) -> None:
        if not self._open:
            raise DeviceUnavailable(f"{self.address.raw}: not connected")

    async def read(self) -> Measurement:
        self._require_open()
        values = {name: float(arr[self.index]) for name, arr in self.bank.measure().items()}
        return Measurement(self.clock(), values)

    async def _write(self, setpoint: Setpoint) -> None:
        self._require_open()
        for name, value in setpoint.values.items():
            self.bank.setpoints[name][self.index] = value

    async def close(self) -> None:
        self._open = False

    async def identity(self) -> dict[str, Any]:
        return {"address": self.address.raw, "protocol": "sim", "model": type(self.bank).__name__}
