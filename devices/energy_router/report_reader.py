"""Measurements of an Energy Router by IEC 61850 report instead of polling (the ``iec61850`` package's client).

A :class:`ReportReader` opens its own association, takes the first free unbuffered report control block of the
ER (``LLN0$RP$urcbMeas01``, then ``...02``: a block reserved by another client answers
``temporarily-unavailable``), configures it (data change, integrity every ``integrity_ms``, general
interrogation; sequence number, data set, reasons, references, ConfRev), enables it and asks for a general
interrogation, so the first :class:`~devices.base.Measurement` holds every value. Each later report (data
change: only what changed; integrity: everything) updates that picture and yields a new Measurement, in our
names and sign convention (:mod:`devices.energy_router.data_map`), stamped with the reader's clock.

The data set must hold the driver's measurement FCDAs (``MV.mag`` standing for ``instMag``); which member is
which is read from the data set's directory, so a real ER whose data set orders them differently works as is.
Errors: no association, or every block taken: DeviceUnavailable; no such block, or a data set without the
measurements: ProtocolError. ``close()`` disables the block and releases the association.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any
from collections.abc import Callable
from types import ModuleType

from devices.base import Address, DeviceUnavailable, Measurement, ProtocolError, wall_clock
from devices.energy_router import data_map
from devices.energy_router.data_map import Fcda

DEFAULT_BLOCKS = ("urcbMeas01", "urcbMeas02")
QUEUE = 256  # measurements not yet taken; the oldest is dropped beyond this (a report stream never blocks us)


def _iec() -> ModuleType:
    import iec61850

    return iec61850


def member_map(members: list[tuple[str, str]], ld: str) -> dict[int, Fcda]:
    """Data-set position -> the measurement it carries, from the directory's (object reference, FC) pairs."""
    by_ref = {(f"{ld}/{f.ref.replace('.instMag.', '.mag.')}", f.fc): f for f in data_map.MEASURED}
    return {k: by_ref[m] for k, m in enumerate(members) if m in by_ref}


class ReportReader:
    """One subscription to an ER's measurement reports; use ``async with`` or ``open()`` / ``close()``."""

    def __init__(self, address: Address | str, *, blocks: tuple[str, ...] = DEFAULT_BLOCKS,
                 integrity_ms: int = 1000, timeout_s: float = 2.0, load_arrow: bool = False,
                 clock: Callable[[], float] | None = None, poll_ms: int = 10) -> None:
        self.address = address if isinstance(address, Address) else Address.parse(address)
        if not self.address.host or not self.address.path:
            raise ValueError(f"{self.address.raw}: iec61850://host:port/LDNAME expected")
        self.ld = self.address.path
        self.blocks, self.integrity_ms, self.timeout_s = blocks, integrity_ms, timeout_s
        self.load_arrow = load_arrow
        self.clock = clock or wall_clock()
        self.poll_ms = poll_ms
        self.rcb_ref: str | None = None
        self.reports = 0  # received
        self.dropped = 0  # measurements dropped because nobody took them
        self.last_report: Any = None  # the last ClientReport (sequence number, reasons...)
        self._conn: Any = None
        self._dispatcher: Any = None
        self._members: dict[int, Fcda] = {}
        self._values: dict[str, float] = {}
        self._queue: asyncio.Queue[Measurement] = asyncio.Queue(QUEUE)

    async def __aenter__(self) -> ReportReader:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        iec = _iec()
        self._loop = asyncio.get_running_loop()
        timeout_ms = max(1, int(self.timeout_s * 1000))
        try:
            self._conn = await iec.IedConnection.connect(
                f"{self.address.host}:{self.address.port or 102}", timeout_ms=timeout_ms,
                request_timeout_ms=timeout_ms)
        except (iec.IedError, OSError) as exc:
            raise DeviceUnavailable(f"{self.address.raw}: cannot connect: {exc}") from exc
        try:
            await self._subscribe(iec)
        except BaseException:
            await self.close()
            raise

    async def _subscribe(self, iec: Any) -> None:
        busy = []
        for name in self.blocks:
            ref = f"{self.ld}/LLN0.RP.{name}"
            try:
                rcb = await self._conn.get_rcb_values(ref)
            except iec.IedError as exc:
                raise ProtocolError(f"{self.address.raw}: no report control block {ref}: {exc}") from exc
            if rcb.rpt_ena or rcb.resv:
                busy.append(name)
                continue
            directory = await self._conn.get_data_set_directory(str(rcb.dataset).replace("$", "."))
            self._members = member_map([(m.object_ref, m.fc.value) for m in directory.members], self.ld)
            missing = {f.name for f in data_map.MEASURED} - {f.name for f in self._members.values()}
            if missing:
                raise ProtocolError(f"{self.address.raw}: data set {rcb.dataset} lacks {sorted(missing)}")
            await self._conn.install_report_handler(ref, self._on_report, rpt_id=rcb.rpt_id)
            rcb.trigger_options = iec.TriggerOptions(data_change=True, integrity=self.integrity_ms > 0,
                                                     general_interrogation=True)
            rcb.opt_flds = iec.ReportOptFlds(sequence_number=True, report_timestamp=True,
                                             reason_for_inclusion=True, dataset_name=True, data_reference=True,
                                             conf_rev=True)
            rcb.integrity_period_ms = max(0, self.integrity_ms)
            rcb.rpt_ena = True
            try:
                await self._conn.set_rcb_values(rcb, iec.RcbWriteMask.fields(
                    "trigger_options", "opt_flds", "integrity_period", "rpt_ena"))
            except iec.IedDataAccessError as exc:  # taken between our read and our write
                await self._conn.uninstall_report_handler(ref)
                busy.append(f"{name} ({exc})")
                continue
            self.rcb_ref = ref
            self._dispatcher = self._conn.spawn_report_dispatcher(self.poll_ms)
            await self._conn.trigger_gi(ref)
            return
        raise DeviceUnavailable(f"{self.address.raw}: every report control block is taken: {busy}")

    def _on_report(self, report: Any) -> None:
        """The package's callback; it may run on the client's own thread, so the report is folded on our loop."""
        self._loop.call_soon_threadsafe(self._fold, report)

    def _fold(self, report: Any) -> None:
        """Fold a report into the picture and queue a Measurement once every value has been seen."""
        self.reports += 1
        self.last_report = report
        for k, entry in enumerate(report.entries):
            f = self._members.get(k)
            if f is None or entry.value is None or isinstance(entry.value, bool) \
                    or not isinstance(entry.value, (int, float)):
                continue
            self._values[f.name] = float(entry.value) * f.scale if self.load_arrow else f.to_ours(entry.value)
        if len(self._values) < len(data_map.MEASURED):
            return  # not every value seen yet (the general interrogation brings them)
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(Measurement(self.clock(), {**self._values,
                                                          "e_unserved_wh": self._values.get("e_unserved_wh",
                                                                                            math.nan)}))

    async def next(self, timeout_s: float | None = None) -> Measurement:
        """The next Measurement a report brings (DeviceUnavailable if none arrives within the timeout)."""
        if self._conn is None:
            raise DeviceUnavailable(f"{self.address.raw}: not subscribed (call open())")
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s or max(self.timeout_s,
                                                                             2 * self.integrity_ms / 1000))
        except TimeoutError:
            raise DeviceUnavailable(f"{self.address.raw}: no report within the timeout") from None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if self._dispatcher is not None:
            await self._dispatcher.aclose()
            self._dispatcher = None
        if conn is None:
            return
        try:
            if self.rcb_ref is not None:
                rcb = await asyncio.wait_for(conn.get_rcb_values(self.rcb_ref), self.timeout_s)
                rcb.rpt_ena = False
                await asyncio.wait_for(conn.set_rcb_values(rcb, _iec().RcbWriteMask.fields("rpt_ena")),
                                       self.timeout_s)
            await asyncio.wait_for(conn.disconnect(), self.timeout_s)
        except Exception:  # the peer may be gone: the association ends with the socket, the block with it
            try:
                await asyncio.wait_for(conn.abort(), 1.0)
            except Exception:
                pass
        self.rcb_ref = None
