"""The one driver interface every device sits behind.

A driver is chosen by the scheme of its address (``sim://``, ``sunspec+tcp://host:port/1``, ...) through the
registry in :mod:`devices.registry`. Controllers and the co-simulation only ever see this interface, so a real
device replaces a virtual one by changing its address.

Conventions (see docs/architecture.md): powers in W with the load arrow at the device terminal
(+ = drawn from the AC connection point: a battery charging is +, PV producing is -); SoC 0..1.

Time base: ``Measurement.t_s`` is always seconds since the scenario start on the device's clock, whatever the
driver: offline the simulated time (the host sets ``Driver.clock`` to the co-simulation's clock, and a reading
taken after the step ``[t, t + dt)`` carries ``t + dt``); on the bench or next to ``s4g device serve`` the wall
time since the run started (the default clock counts wall seconds from the driver's creation). Drivers stamp
their readings with ``self.clock()``, never with epoch time or the device's own calendar.
"""

from __future__ import annotations

import abc
import math
import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Self
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit


class DeviceError(Exception):
    """Base of every error a driver raises."""


class DeviceUnavailable(DeviceError):
    """The device did not answer in time, the connection was refused or lost."""


class ProtocolError(DeviceError):
    """The device answered with something malformed or unexpected."""


class SetpointRejected(DeviceError):
    """A setpoint is outside the device's capabilities or the device refused it."""


@dataclass(frozen=True)
class Limit:
    """Accepted range of one setpoint, inclusive, in the unit its name carries; ``integer``: whole values only
    (an enumeration such as connect 0/1: 0.5 is refused, not rounded)."""

    min: float
    max: float
    integer: bool = False

    def check(self, name: str, value: float) -> None:
        if not isinstance(value, (int, float)) or math.isnan(value):
            raise SetpointRejected(f"{name}={value!r} is not a number")
        if value < self.min or value > self.max:
            raise SetpointRejected(f"{name}={value:g} outside [{self.min:g}, {self.max:g}]")
        if self.integer and not float(value).is_integer():
            raise SetpointRejected(f"{name}={value:g} is not a whole number")


@dataclass(frozen=True)
class Capabilities:
    """What a device measures and which setpoints it accepts within which limits."""

    measurements: tuple[str, ...]
    setpoints: Mapping[str, Limit] = field(default_factory=dict)
    #: rules across setpoints written together (e.g. a curve's points must come as a whole and in order):
    #: raises SetpointRejected; applied after every value passed its Limit
    rules: Callable[[Mapping[str, float]], None] | None = None

    def check(self, setpoint: Setpoint) -> None:
        for name, value in setpoint.values.items():
            limit = self.setpoints.get(name)
            if limit is None:
                raise SetpointRejected(f"setpoint {name!r} not accepted; accepted: {sorted(self.setpoints)}")
            limit.check(name, value)
        if self.rules is not None:
            self.rules(setpoint.values)


@dataclass(frozen=True)
class Measurement:
    """One reading of a device: ``t_s`` in s since the scenario start (see "time base" above) and named values."""

    t_s: float
    values: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def __getitem__(self, name: str) -> float:
        return self.values[name]


@dataclass(frozen=True)
class Setpoint:
    """Named target values for a device, e.g. ``Setpoint({"p_w": -1500.0})``."""

    values: Mapping[str, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))


@dataclass(frozen=True)
class Address:
    """A parsed device address: ``scheme://host:port/path?query``."""

    raw: str
    scheme: str
    host: str | None
    port: int | None
    path: str
    query: str

    @classmethod
    def parse(cls, raw: str) -> Address:
        parts = urlsplit(raw)
        if not parts.scheme:
            raise ValueError(f"address {raw!r} has no scheme (expected e.g. 'sim://' or 'sunspec+tcp://host:502/1')")
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"address {raw!r}: {exc}") from None
        return cls(raw, parts.scheme.lower(), parts.hostname, port, parts.path.lstrip("/"), parts.query)

    @property
    def is_virtual_request(self) -> bool:
        """A protocol address with neither host nor path (``sunspec+tcp://``) asks for a virtual device;
        ``replay:///abs/run/dev`` has a path and no host, and is not one."""
        return self.scheme != "sim" and not self.host and not self.path


def wall_clock() -> Callable[[], float]:
    """A clock that reads wall seconds since it was made (the time base away from the co-simulation)."""
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0


class Driver(abc.ABC):
    """The one device interface: connect, read, write, close; ``capabilities`` says what is accepted.

    Subclasses declare the schemes they serve; the registry maps a scheme to the driver class.
    ``write`` checks the setpoint against ``capabilities`` before anything reaches the wire.
    ``clock`` gives ``Measurement.t_s`` (see "time base"); whoever hosts the driver may replace it before use.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    query_keys: ClassVar[tuple[str, ...]] = ()  # address query keys it reads; validation refuses any other

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        self.address = address
        self.capabilities = capabilities
        self.timeout_s = timeout_s
        self.clock: Callable[[], float] = wall_clock()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection; raise DeviceUnavailable if the device cannot be reached."""

    @abc.abstractmethod
    async def read(self) -> Measurement:
        """Return the current measurement; DeviceUnavailable or ProtocolError on failure."""

    async def write(self, setpoint: Setpoint) -> None:
        """Check limits, then send; SetpointRejected if outside capabilities or refused by the device."""
        self.capabilities.check(setpoint)
        await self._write(setpoint)

    @abc.abstractmethod
    async def _write(self, setpoint: Setpoint) -> None:
        """Send an already-checked setpoint."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every resource (sockets, tasks); safe to call twice."""

    async def identity(self) -> Mapping[str, Any]:
        """What the device says it is (manufacturer, model, serial, protocol version)."""
        return {"address": self.address.raw}

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
