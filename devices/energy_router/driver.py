"""IEC 61850 MMS driver for an Energy Router: ``iec61850://host[:port]/LDNAME[?signs=generator|load]``.

Port defaults to 102, the path is the logical device (MMS domain) holding the ER's logical nodes (``ERLD0``
for the virtual ER: IED name + LD inst). The MMS client is the ``iec61850`` package (an independent
implementation, MIT OR Apache-2.0). Each read is one MMS Read of every measurement FCDA in
:mod:`devices.energy_router.data_map`; each setpoint is a SetDataValues on its FCDA (``mode``: the direct
Operate of ``DRCC1.DERStr``) followed by a read-back that must return what was written.

Sign conventions at this boundary (device -> ours): the ER reports in the generator reference of
IEC 61850-7-420 (``MMXN1.Watt`` + = exported, ``MMDC1.Watt`` + = PV produced, ``MMDC3.Watt`` + = exported over
the DC link) and the battery + = charging; ours is the load arrow, so the first three change sign and the
battery does not. ``ZBAT1.VolChgRte`` is in % (``soc`` = /100). An ER that already reports in the load
arrow is read with ``?signs=load``.

Errors: no answer within the timeout or a lost connection is DeviceUnavailable; a refused write
(``object-value-invalid``, ``object-access-denied``, a failed Operate) is SetpointRejected; a reply that cannot
be decoded, a value of the wrong type, a missing FCDA or a read-back that differs is ProtocolError. After a
failure the association is dropped and re-opened on a later call, no earlier than an exponentially growing
back-off (0.2 s ... 5 s). Readings are stamped with ``self.clock()`` (the time base of devices.base).
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, ClassVar
from collections.abc import Mapping
from urllib.parse import parse_qs
from types import ModuleType

from devices.backoff import Backoff
from devices.base import Address, Capabilities, DeviceUnavailable, Driver, Measurement, ProtocolError, Setpoint, \
    SetpointRejected
from devices.energy_router import data_map
from devices.energy_router.data_map import Fcda

if TYPE_CHECKING:
    from devices.energy_router.report_reader import ReportReader

DEFAULT_PORT = 102
#: words in a client error that mean the association is gone (not that a reply was malformed)
LINK_LOST = ("timeout", "timed out", "connection", "ended unexpectedly", "closed", "reset", "broken pipe", "eof",
             "not connected")
REFUSALS = ("ObjectValueInvalid", "ObjectAccessDenied", "TypeInconsistent", "TemporarilyUnavailable")


def _iec() -> ModuleType:
    import iec61850  # imported on first use: sim:// runs never load the MMS client

    return iec61850


def measurement_values(fcdas: tuple[Fcda, ...], raw: list[Any], *, load_arrow: bool = False) -> dict[str, float]:
    """Device values (in ``fcdas`` order) -> our names and sign convention; ProtocolError on a wrong type."""
    if len(raw) != len(fcdas):
        raise ProtocolError(f"{len(raw)} values for {len(fcdas)} FCDAs")
    out = {}
    for f, value in zip(fcdas, raw):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{f.ref}[{f.fc}]: a number expected, got {type(value).__name__} {value!r}")
        out[f.name] = float(value) * f.scale if load_arrow else f.to_ours(value)
    out["e_unserved_wh"] = out.get("e_unserved_wh", math.nan)
    return out


class Iec61850Driver(Driver):
    schemes = ("iec61850",)
    #: the address query keys this driver accepts
    query_keys: ClassVar[tuple[str, ...]] = ("signs",)

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        if not address.host:
            raise ValueError(f"{address.raw}: an IEC 61850 address needs a host (iec61850://host:102/LDNAME)")
        if not address.path or "/" in address.path:
            raise ValueError(f"{address.raw}: the path is the logical device name, e.g. iec61850://host:102/ERLD0")
        query = {k: v[-1] for k, v in parse_qs(address.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - set(self.query_keys))
        if unknown:
            raise ValueError(f"{address.raw}: unknown query key(s) {unknown}; accepted: {list(self.query_keys)}")
        signs = query.get("signs", "generator")
        if signs not in ("generator", "load"):
            raise ValueError(f"{address.raw}: signs must be 'generator' or 'load'")
        self.load_arrow = signs == "load"
        self.port = address.port or DEFAULT_PORT
        self.ld = address.path
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self._wanted = False
        self.backoff = Backoff()
        self.dials = 0
        self._targets: list[tuple[str, Any]] = []

    def _sign(self, f: Fcda) -> Fcda:
        return Fcda(f.name, f.ref, f.fc, 1.0, f.scale, f.integer) if self.load_arrow else f

    # -- Driver ------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        async with self._lock:
            self._wanted = True
            if self._conn is None:
                await self._open()

    async def read(self) -> Measurement:
        async with self._lock:
            await self._ensure_open()
            raw = await self._call(self._conn.read_multiple(self._targets))
            try:
                values = measurement_values(data_map.MEASURED, list(raw), load_arrow=self.load_arrow)
            except ProtocolError:
                await self._failed()
                raise
            return Measurement(self.clock(), values)

    async def _write(self, setpoint: Setpoint) -> None:
        async with self._lock:
            await self._ensure_open()
            for name, value in setpoint.values.items():
                f = data_map.SETPOINTS.get(name)
                if f is None:
                    raise SetpointRejected(f"{self.address.raw}: no FCDA for setpoint {name!r}")
                await self._write_one(self._sign(f), float(value))

    async def close(self) -> None:
        async with self._lock:
            self._wanted = False
            await self._drop()

    async def identity(self) -> Mapping[str, Any]:
        info: dict[str, Any] = {"address": self.address.raw, "protocol": "iec61850", "logical_device": self.ld}
        async with self._lock:
            await self._ensure_open()
            fc = _iec().FC.DC
            names = [f"{self.ld}/LPHD1.PhyNam.{a}" for a in ("vendor", "model", "serNum")]
            vendor, model, serial = await self._call(self._conn.read_multiple([(n, fc) for n in names]))
        info.update(manufacturer=vendor, model=model, serial=serial)
        return info

    def reports(self, **options: Any) -> ReportReader:
        """A subscription to the ER's measurement reports at this driver's address, sign convention and clock
        (its own association; see :mod:`devices.energy_router.report_reader`). Use ``async with``."""
        from devices.energy_router.report_reader import ReportReader

        options.setdefault("timeout_s", self.timeout_s)
        return ReportReader(self.address, load_arrow=self.load_arrow, clock=self.clock, **options)

    # -- setpoints ---------------------------------------------------------------------------------------
    async def _write_one(self, f: Fcda, ours: float) -> None:
        iec = _iec()
        device = f.to_device(ours)
        if f.integer and not float(device).is_integer():
            raise SetpointRejected(f"{self.address.raw}: {f.name}={ours:g} is not an integer")
        ref = f"{self.ld}/{f.ref}"
        if f.name == "mode":
            control = self._conn.create_control_object(f"{self.ld}/DRCC1.DERStr", iec.ControlModel.DIRECT_NORMAL)
            outcome = await self._call(control.operate(int(device)))
            if not outcome.success:
                raise SetpointRejected(
                    f"{self.address.raw}: DERStr Operate({int(device)}) refused: {outcome.add_cause}")
            back = await self._call(self._conn.read_int32(ref, iec.FC.ST))
        elif f.integer:
            await self._call(self._conn.write_int32(ref, getattr(iec.FC, f.fc), int(device)))
            back = await self._call(self._conn.read_int32(ref, getattr(iec.FC, f.fc)))
        else:
            await self._call(self._conn.write_float(ref, getattr(iec.FC, f.fc), device))
            back = await self._call(self._conn.read_float(ref, getattr(iec.FC, f.fc)))
        if not math.isclose(float(back), device, rel_tol=1e-6, abs_tol=1e-6):  # FLOAT32 keeps ~7 digits
            raise ProtocolError(f"{self.address.raw}: {f.ref} read back {back!r} after writing {device!r}")

    # -- connection ----------------------------------------------------------------------------------------
    async def _call(self, awaitable: Any) -> Any:
        """Await one client call, mapping the client's errors onto ours (and dropping a broken association)."""
        iec = _iec()
        try:
            return await asyncio.wait_for(awaitable, self.timeout_s + 0.5)
        except (TimeoutError, iec.IedTimeoutError, iec.IedConnectionError, OSError) as exc:
            await self._failed()
            raise DeviceUnavailable(f"{self.address.raw}: {exc or type(exc).__name__}") from exc
        except iec.IedDataAccessError as exc:
            if any(code in str(exc) for code in REFUSALS):
                raise SetpointRejected(f"{self.address.raw}: {exc}") from exc
            raise ProtocolError(f"{self.address.raw}: {exc}") from exc
        except iec.IedControlError as exc:
            raise SetpointRejected(f"{self.address.raw}: {exc}") from exc
        except iec.IedError as exc:  # a reply the client could not decode, a service error, a receive timeout
            await self._failed()
            if any(word in str(exc).lower() for word in LINK_LOST):
                raise DeviceUnavailable(f"{self.address.raw}: {exc}") from exc
            raise ProtocolError(f"{self.address.raw}: {exc}") from exc

    async def _ensure_open(self) -> None:
        if self._conn is not None:
            return
        if not self._wanted:
            raise DeviceUnavailable(f"{self.address.raw}: not connected (call connect())")
        self.backoff.check(self.address.raw)
        await self._open()

    async def _open(self) -> None:
        iec = _iec()
        self.dials += 1
        timeout_ms = max(1, int(self.timeout_s * 1000))
        try:
            conn = await asyncio.wait_for(iec.IedConnection.connect(
                f"{self.address.host}:{self.port}", timeout_ms=timeout_ms, request_timeout_ms=timeout_ms),
                self.timeout_s + 0.5)
        except (TimeoutError, iec.IedError, OSError) as exc:
            self.backoff.failed()
            raise DeviceUnavailable(f"{self.address.raw}: cannot connect: {exc or type(exc).__name__}") from exc
        self._conn = conn
        lds = await self._call(conn.get_server_directory())
        if self.ld not in lds:
            await self._failed()
            raise ProtocolError(f"{self.address.raw}: no logical device {self.ld!r} (the server has {lds})")
        self._targets = [(f"{self.ld}/{f.ref}", getattr(iec.FC, f.fc)) for f in data_map.MEASURED]
        self.backoff.succeeded()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.disconnect(), 1.0)
            except Exception:  # the peer may be gone already: nothing left to release but the socket
                try:
                    await asyncio.wait_for(conn.abort(), 1.0)
                except Exception:
                    pass

    async def _failed(self) -> None:
        await self._drop()
        self.backoff.failed()
