"""DLMS/COSEM drivers for a meter (read-only).

Addresses:

* ``dlms+tcp://host[:4059]/?client=16&server=1[&password_env=VAR]`` -- the TCP wrapper (IEC 62056-47).
* ``dlms+hdlc:///dev/ttyUSB0?client=16&server=1&physical=17[&baud=9600][&password_env=VAR]`` -- HDLC
  (IEC 62056-46) on a serial line (direct HDLC, 8N1).
* ``dlms+hdlc+tcp://host:port/?client=16&server=1&physical=17`` -- the same HDLC carried on a TCP socket (a
  serial-to-Ethernet converter, or the virtual meter in tests).

``client`` is the client SAP (16 = public client, lowest security), ``server`` the logical device (1 =
management), ``physical`` the HDLC lower address (omit it for one-octet addressing). With ``password_env`` the
driver associates with low-level security using the password in that environment variable (a password never
sits in an address). :data:`QUERY_KEYS` lists what each scheme accepts; anything else is refused.

On connect the driver associates, reads the identity (0.0.42.0.0.255, 0.0.96.1.0.255) and every register's
scaler_unit (attribute 3) once; a register the meter does not have (object-undefined) reads as NaN from then
on, and a unit other than the expected one is a ProtocolError (a kW register read as W would be off by 1000).
``read()`` fetches every value and the clock in one GET with list (or one GET each if the meter does not
offer it) and maps them at this boundary: ``p_w = +P - (-P)`` (1.7.0 - 2.7.0, load arrow at the meter:
+ = import from the grid), likewise ``q_var`` and the per-phase powers; values are ``integer * 10**scaler``.
``Measurement.t_s`` is the framework's time base (``self.clock()``); the meter's own clock (0.0.1.0.0.255) is the
measurement ``clock_unix_s`` (a meter's clock may be off). ``read_profile(start, end)`` reads
the load profile (1.0.99.1.0.255) with a range descriptor on the clock.

A meter takes no setpoint: ``write`` raises SetpointRejected before anything reaches the wire. After a failure
the association is dropped and re-established on a later call, no earlier than the back-off allows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar
from collections.abc import Awaitable, Mapping
from urllib.parse import parse_qs

import numpy as np

from devices.backoff import Backoff
from devices.base import Address, Capabilities, DeviceUnavailable, Driver, Measurement, ProtocolError, Setpoint, \
    SetpointRejected
from devices.meter import axdr, hdlc, wrapper
from devices.meter.apdu import AttributeRef, Selection
from devices.meter.axdr import Data, Tag
from devices.serial_line import SerialLine
from devices.meter.client import (DataAccessError, DlmsClient, HdlcTransport, SerialByteLink,
                                  TcpByteLink, Transport, WrapperTransport)
from devices.meter.model import REGISTERS, UNIT_NAMES, derive
from devices.meter.objects import (CLASS_CLOCK, CLASS_DATA, CLASS_PROFILE, CLASS_REGISTER, CLOCK_LN,
                                   DEVICE_NAME_LN, SELECTOR_RANGE, SERIAL_LN, capture_object)

OBJECT_UNDEFINED = 4
_KEY_BY_OBIS = {axdr.obis_bytes(r.obis): r for r in REGISTERS}
COMMON_KEYS = frozenset({"client", "server", "password_env"})


@dataclass(frozen=True)
class ProfileEntry:
    """One load-profile entry: the capture time and the captured registers (our names, physical units)."""

    t: dt.datetime
    values: Mapping[str, float]


def _query(address: Address, allowed: frozenset[str]) -> dict[str, str]:
    raw = parse_qs(address.query, keep_blank_values=True)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"{address.raw}: unknown address key(s) {', '.join(unknown)}; accepted: "
                         f"{', '.join(sorted(allowed))}")
    return {k: v[-1] for k, v in raw.items()}


def _int_key(address: Address, query: dict[str, str], key: str, default: int | None, lo: int, hi: int) -> int | None:
    if key not in query:
        return default
    try:
        value = int(query[key])
    except ValueError:
        raise ValueError(f"{address.raw}: {key}={query[key]!r} is not a number") from None
    if not lo <= value <= hi:
        raise ValueError(f"{address.raw}: {key} must be {lo}..{hi}")
    return value


class DlmsDriver(Driver):
    """What both transports share: association, register plan, reads, the profile, back-off."""

    QUERY_KEYS: ClassVar[frozenset[str]] = COMMON_KEYS

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        self.query = _query(address, self.QUERY_KEYS)
        self.client_sap = _int_key(address, self.query, "client", 16, 1, 0x7F)
        self.server_ld = _int_key(address, self.query, "server", 1, 1, 0x3FFF)
        self.password_env = self.query.get("password_env")
        self._client: DlmsClient | None = None
        self._lock = asyncio.Lock()
        self._wanted = False
        self.backoff = Backoff()
        self.dials = 0
        self.scalers: dict[str, tuple[int, int]] = {}  # register key -> (scaler, unit) of present registers
        self._refs: list[AttributeRef] = []
        self._keys: list[str] = []
        self._identity: dict[str, Any] = {}

    # -- transport (per scheme) ----------------------------------------------------------------------------
    def _transport(self) -> Transport:
        raise NotImplementedError

    def _password(self) -> bytes | None:
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise DeviceUnavailable(f"{self.address.raw}: environment variable {self.password_env} (the meter's "
                                    f"password) is not set")
        return value.encode()

    # -- Driver --------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        async with self._lock:
            self._wanted = True
            if self._client is None:
                await self._open()

    async def read(self) -> Measurement:
        async with self._lock:
            client = await self._ensure_open()
            results = await self._guard(client.get_many([*self._refs, AttributeRef(CLASS_CLOCK, CLOCK_LN, 2)]))
            regs = {r.key: np.array([math.nan]) for r in REGISTERS}
            for key, result in zip(self._keys, results[:-1]):
                regs[key] = np.array([self._scaled(key, result)])
            clock = results[-1]
            if not isinstance(clock, Data) or clock.tag != Tag.OCTET_STRING:
                await self._failed()
                raise ProtocolError(f"{self.address.raw}: clock: {clock!r}")
            t = self._datetime(clock.value)
            values = {name: float(arr[0]) for name, arr in derive(regs, np.array([t.timestamp()])).items()}
            return Measurement(self.clock(), values)

    async def read_profile(self, start: dt.datetime, end: dt.datetime, obis: str = "1.0.99.1.0.255"
                           ) -> list[ProfileEntry]:
        """Load-profile entries captured in [start, end] (aware datetimes), oldest first."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("read_profile needs timezone-aware datetimes")
        ln = axdr.obis_bytes(obis)
        async with self._lock:
            client = await self._ensure_open()
            captures = await self._guard(client.get(AttributeRef(CLASS_PROFILE, ln, 3)))
            columns = self._columns(captures)
            selection = Selection(SELECTOR_RANGE, axdr.structure(
                capture_object(CLASS_CLOCK, CLOCK_LN, 2),
                axdr.octets(axdr.datetime_octets(start)), axdr.octets(axdr.datetime_octets(end)),
                axdr.array([])))
            buffer = await self._guard(client.get(AttributeRef(CLASS_PROFILE, ln, 2), selection))
            try:
                return [self._entry(columns, row) for row in buffer]
            except (TypeError, ValueError) as exc:
                await self._failed()
                raise ProtocolError(f"{self.address.raw}: load profile malformed: {exc}") from exc

    async def _write(self, setpoint: Setpoint) -> None:
        raise SetpointRejected(f"{self.address.raw}: a meter is read-only (no setpoint accepted)")

    async def close(self) -> None:
        async with self._lock:
            self._wanted = False
            client, self._client = self._client, None
            if client is not None:
                await client.release()

    async def identity(self) -> Mapping[str, Any]:
        return {"address": self.address.raw, "protocol": self.address.scheme, **self._identity}

    # -- connection ----------------------------------------------------------------------------------------
    async def _ensure_open(self) -> DlmsClient:
        if self._client is not None and self._client.transport.is_open:
            return self._client
        if not self._wanted:
            raise DeviceUnavailable(f"{self.address.raw}: not connected (call connect())")
        self.backoff.check(self.address.raw)
        await self._open()
        assert self._client is not None
        return self._client

    async def _open(self) -> None:
        self.dials += 1
        client = DlmsClient(self._transport(), self.timeout_s, self._password())
        try:
            await client.associate()
            self._client = client
            await self._discover(client)
        except (DeviceUnavailable, ProtocolError):
            await self._failed()
            raise
        self.backoff.succeeded()

    async def _failed(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.transport.close()
        self.backoff.failed()

    async def _guard[T](self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except (DeviceUnavailable, ProtocolError):
            await self._failed()
            raise

    async def _discover(self, client: DlmsClient) -> None:
        refs = [AttributeRef(CLASS_REGISTER, axdr.obis_bytes(r.obis), 3) for r in REGISTERS]
        ident = [AttributeRef(CLASS_DATA, DEVICE_NAME_LN, 2), AttributeRef(CLASS_DATA, SERIAL_LN, 2)]
        results = await client.get_many(refs + ident)
        self.scalers, self._refs, self._keys = {}, [], []
        for reg, ref, result in zip(REGISTERS, refs, results):
            if result == OBJECT_UNDEFINED:
                continue
            if not isinstance(result, Data) or result.tag != Tag.STRUCTURE or len(result.value) != 2 \
                    or result.value[0].tag != Tag.INTEGER or result.value[1].tag != Tag.ENUM:
                raise ProtocolError(f"{self.address.raw}: scaler_unit of {reg.obis}: {result!r}")
            scaler, unit = result.value[0].value, result.value[1].value
            if unit != reg.unit:
                raise ProtocolError(f"{self.address.raw}: {reg.obis} has unit {unit}, expected "
                                    f"{reg.unit} ({UNIT_NAMES[reg.unit]})")
            self.scalers[reg.key] = (scaler, unit)
            self._refs.append(AttributeRef(CLASS_REGISTER, ref.ln, 2))
            self._keys.append(reg.key)
        if not self._keys:
            raise ProtocolError(f"{self.address.raw}: the meter has none of the expected registers")
        name, serial = (r.value if isinstance(r, Data) else None for r in results[len(refs):])
        self._identity = {"logical_device_name": _text(name), "serial": _text(serial),
                          "manufacturer": (_text(name) or "")[:3], "registers": len(self._keys),
                          "conformance": f"{client.conformance:06x}", "max_pdu_size": client.server_max_pdu}

    # -- decoding ------------------------------------------------------------------------------------------
    def _scaled(self, key: str, result: Any) -> float:
        if not isinstance(result, Data):
            raise ProtocolError(f"{self.address.raw}: {key}: {DataAccessError('value', int(result))}")
        if result.tag in (Tag.NULL, Tag.BOOLEAN, Tag.ARRAY, Tag.STRUCTURE) \
                or not isinstance(result.value, (int, float)):
            raise ProtocolError(f"{self.address.raw}: {key}: not a number ({result.tag.name})")
        return result.value * 10.0 ** self.scalers[key][0]

    def _datetime(self, raw: bytes) -> dt.datetime:
        try:
            return axdr.parse_datetime(raw)
        except axdr.DecodeError as exc:
            raise ProtocolError(f"{self.address.raw}: clock: {exc}") from exc

    def _columns(self, captures: Data) -> list[str]:
        if captures.tag != Tag.ARRAY:
            raise ProtocolError(f"{self.address.raw}: capture_objects is not an array")
        names = []
        for c in captures:
            if c.tag != Tag.STRUCTURE or len(c.value) != 4 or c.value[1].tag != Tag.OCTET_STRING:
                raise ProtocolError(f"{self.address.raw}: capture object malformed: {c!r}")
            ln = c.value[1].value
            reg = _KEY_BY_OBIS.get(ln)
            if ln == CLOCK_LN:
                names.append("t")
            elif reg is not None and reg.key in self.scalers:
                names.append(reg.key)
            else:
                names.append(axdr.obis_text(ln))  # a column we do not map (status, ...): raw value
        return names

    def _entry(self, columns: list[str], row: Data) -> ProfileEntry:
        if row.tag != Tag.STRUCTURE or len(row.value) != len(columns):
            raise ValueError(f"entry {row!r} does not match {len(columns)} capture objects")
        t, values = None, {}
        for name, cell in zip(columns, row.value):
            if name == "t":
                if cell.tag != Tag.OCTET_STRING:
                    raise TypeError("clock column is not a date-time")
                t = self._datetime(cell.value)
            elif name in self.scalers:
                values[name] = self._scaled(name, cell)
            elif isinstance(cell.value, (int, float)) and cell.tag != Tag.BOOLEAN:
                values[name] = float(cell.value)
        if t is None:
            raise ValueError("profile entry without a clock column")
        return ProfileEntry(t, values)


def _text(raw: bytes | str | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


class DlmsTcpDriver(DlmsDriver):
    schemes = ("dlms+tcp",)

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        if not address.host:
            raise ValueError(f"{address.raw}: a dlms+tcp address needs a host (dlms+tcp://host:4059/?client=16)")
        self.port = address.port or wrapper.DEFAULT_PORT

    def _transport(self) -> Transport:
        assert self.address.host is not None
        return WrapperTransport(self.address.host, self.port, self.client_sap or 16, self.server_ld or 1)


class DlmsHdlcDriver(DlmsDriver):
    """``dlms+hdlc`` (serial line: the path is the port) and ``dlms+hdlc+tcp`` (host:port)."""

    schemes = ("dlms+hdlc", "dlms+hdlc+tcp")
    QUERY_KEYS = COMMON_KEYS | {"physical", "baud"}

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        self.physical = _int_key(address, self.query, "physical", None, 16, 0x3FFD)
        self.baud = _int_key(address, self.query, "baud", 9600, 300, 921_600)
        if address.scheme == "dlms+hdlc+tcp":
            if not address.host or not address.port:
                raise ValueError(f"{address.raw}: dlms+hdlc+tcp needs host and port")
            if "baud" in self.query:
                raise ValueError(f"{address.raw}: baud applies to a serial line, not to dlms+hdlc+tcp")
        elif address.host or not address.path:
            raise ValueError(f"{address.raw}: a serial address is dlms+hdlc:///dev/ttyX (a path, no host)")

    def _link(self) -> SerialLine:
        if self.address.scheme == "dlms+hdlc+tcp":
            assert self.address.host is not None and self.address.port is not None
            return TcpByteLink(self.address.host, self.address.port)
        return SerialByteLink("/" + self.address.path, self.baud or 9600)

    def _transport(self) -> Transport:
        return HdlcTransport(self._link(), self.client_sap or 16, hdlc.server_address(self.server_ld or 1,
                                                                                      self.physical))
