"""Unbuffered reporting (IEC 61850-7-2 URCB, mapped as IEC 61850-8-1 does) for our MMS server.

Each URCB of the data model (``LLN0$RP$urcbMeas01``) is a structure of attributes a client sets with
SetDataValues: ``RptID``, ``DatSet``, ``OptFlds``, ``BufTm``, ``TrgOps``, ``IntgPd``, then ``RptEna`` = true.
Writing any attribute reserves the block for that association (``Resv``, ``Owner`` = its IP address); another
association's write is refused with ``temporarily-unavailable``, as is a change of the configuration while the
block is enabled; ``ConfRev``, ``SqNum`` and ``Owner`` are read-only (``object-access-denied``); a ``DatSet``
that names no data set is ``object-value-invalid``. The reservation ends when the association ends.

An enabled block sends MMS InformationReports (an unconfirmed PDU, variable list name ``RPT``) to its owner:
on a data change of a data-set member whose attribute is declared ``dchg`` (after ``BufTm`` ms, collecting
what changes meanwhile), every ``IntgPd`` ms with all members (integrity) and on ``GI`` = true (general
interrogation). Not implemented: quality-change and data-update triggers, segmentation, buffered blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from devices.energy_router import ber
from devices.energy_router.scl_model import OPT_FIELDS, TRG_OPS, DataModel, DataSet, Node

log = logging.getLogger(__name__)

# DataAccessError codes (ISO 9506-2) this module answers with
TEMPORARILY_UNAVAILABLE, OBJECT_ACCESS_DENIED, OBJECT_VALUE_INVALID = 2, 3, 11
#: the attributes that configure a block: refused while it is enabled
CONFIGURATION = frozenset({"RptID", "DatSet", "OptFlds", "BufTm", "TrgOps", "IntgPd"})
READ_ONLY = frozenset({"ConfRev", "SqNum", "Owner"})
#: OptFlds bits an unbuffered report never carries (buffer overflow, entry id, segmentation)
URCB_OPT_MASK = ~((1 << (10 - 1 - OPT_FIELDS["bufOvfl"])) | (1 << (10 - 1 - OPT_FIELDS["entryID"]))
                  | (1 << (10 - 1 - OPT_FIELDS["segmentation"]))) & 0x3FF
#: reason codes (ReasonCode bit numbers, as TrgOps)
DATA_CHANGE, INTEGRITY, GENERAL_INTERROGATION = TRG_OPS["dchg"], TRG_OPS["period"], TRG_OPS["gi"]
MAX_QUEUED_BYTES = 1 << 20  # a client that does not read its socket loses reports beyond this, it never grows us
EPOCH_1984_DAYS = 5113  # days from 1970-01-01 to 1984-01-01 (the origin of MMS TimeOfDay)


class ReportClient(Protocol):
    """What the engine needs of an association: its address (the ``Owner``) and a way to send it a PDU."""

    peer: bytes

    def send_unconfirmed(self, pdu: bytes) -> bool:
        """Queue an unconfirmed MMS PDU; False if it was dropped (the client does not read fast enough)."""


def _loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _bit(value: int, nbits: int, k: int) -> bool:
    return bool(value & (1 << (nbits - 1 - k)))


def time_of_day(t_s: float) -> bytes:
    """MMS TimeOfDay (6 octets): ms since midnight, days since 1984-01-01 (the report's TimeOfEntry)."""
    days, ms = divmod(int(t_s * 1000), 86_400_000)
    return ms.to_bytes(4, "big") + max(0, days - EPOCH_1984_DAYS).to_bytes(2, "big")


@dataclass
class Urcb:
    """The state of one unbuffered report control block besides its served attribute values."""

    domain: str
    item: str  # LLN0$RP$urcbMeas01
    node: Node
    owner: ReportClient | None = None
    last: list[bytes] = field(default_factory=list)  # encoded member values as last reported
    pending: dict[int, int] = field(default_factory=dict)  # member index -> reason bits, waiting for BufTm
    flush: asyncio.TimerHandle | None = None
    integrity: asyncio.Task[None] | None = None
    sent: int = 0

    def get(self, name: str) -> Any:
        return self.node.children[name].value

    def put(self, name: str, value: Any) -> None:
        self.node.children[name].value = value

    @property
    def reference(self) -> str:
        return f"{self.domain}/{self.item}"

    @property
    def enabled(self) -> bool:
        return bool(self.get("RptEna"))

    def trg(self, bit: int) -> bool:
        return _bit(int(self.get("TrgOps")), 6, bit)


class ReportEngine:
    """The URCBs of one data model; one per server, shared by its associations (all on the server's loop)."""

    def __init__(self, model: DataModel, clock: Any = time.time) -> None:
        self.model = model
        self.clock = clock
        self.blocks: dict[tuple[str, str], Urcb] = {}
        for domain, item in model.urcbs:
            node = model.find(domain, item)
            assert node is not None
            self.blocks[(domain, item)] = Urcb(domain, item, node)
        self.reports_sent = 0
        self.reports_dropped = 0

    def block_of(self, domain: str, item: str) -> tuple[Urcb, str] | None:
        """(block, attribute) of an item below a URCB (``LLN0$RP$urcbMeas01$RptEna``)."""
        head, _, attribute = item.rpartition("$")
        block = self.blocks.get((domain, head))
        return (block, attribute) if block is not None else None

    # -- SetDataValues on a block ----------------------------------------------------------------------------
    def write(self, client: ReportClient | None, domain: str, item: str, value: Any) -> int | None:
        """Apply a parsed write to one attribute of a URCB: None if accepted, else the DataAccessError code."""
        found = self.block_of(domain, item)
        if found is None or client is None:
            return OBJECT_ACCESS_DENIED  # the whole block, or a write from no association
        block, attribute = found
        if attribute in READ_ONLY:
            return OBJECT_ACCESS_DENIED
        if block.owner is not None and block.owner is not client:
            return TEMPORARILY_UNAVAILABLE
        if attribute in CONFIGURATION and block.enabled:
            return TEMPORARILY_UNAVAILABLE
        if attribute == "DatSet":
            ds = self.model.dataset(str(value)) if value else None
            if value and ds is None:
                return OBJECT_VALUE_INVALID
            value = ds.reference if ds is not None else ""
        if attribute == "RptEna":
            if value:
                return self._enable(block, client)
            self._disable(block)
            return None
        if attribute == "Resv":
            if value:
                self._reserve(block, client)
            elif not block.enabled:
                self._release(block)
            return None
        if attribute == "GI":
            if not value:
                return None
            if not block.enabled:
                return TEMPORARILY_UNAVAILABLE
            if block.trg(GENERAL_INTERROGATION):
                self._send_all(block, GENERAL_INTERROGATION)
            return None
        block.node.children[attribute].value = value
        self._reserve(block, client)
        return None

    def _reserve(self, block: Urcb, client: ReportClient) -> None:
        block.owner = client
        block.put("Resv", True)
        block.put("Owner", client.peer)

    def _release(self, block: Urcb) -> None:
        block.owner = None
        block.put("Resv", False)
        block.put("Owner", b"")

    def _enable(self, block: Urcb, client: ReportClient) -> int | None:
        if self._dataset(block) is None:
            return OBJECT_VALUE_INVALID  # nothing to report on
        self._reserve(block, client)
        block.put("RptEna", True)
        block.put("SqNum", 0)
        block.last = self._values(block)
        block.pending.clear()
        period_ms = int(block.get("IntgPd"))
        loop = _loop()
        if block.trg(INTEGRITY) and period_ms > 0 and loop is not None:  # no loop: a server used in-process
            block.integrity = loop.create_task(self._integrity(block, period_ms / 1000))
        return None

    def _disable(self, block: Urcb) -> None:
        block.put("RptEna", False)
        if block.integrity is not None:
            block.integrity.cancel()
            block.integrity = None
        if block.flush is not None:
            block.flush.cancel()
            block.flush = None
        block.pending.clear()
        return None

    def client_closed(self, client: ReportClient) -> None:
        """An association ended: its blocks are disabled and released."""
        for block in self.blocks.values():
            if block.owner is client:
                self._disable(block)
                self._release(block)

    # -- triggers ----------------------------------------------------------------------------------------------
    def scan(self) -> None:
        """Compare the data-set members of every enabled block with what it last reported (after each change
        of the model): changed members whose attribute is ``dchg`` are reported, now or after ``BufTm``."""
        for block in self.blocks.values():
            if not block.enabled or not block.trg(DATA_CHANGE):
                continue
            ds = self._dataset(block)
            if ds is None:
                continue
            values = self._values(block)
            for k, (now, before) in enumerate(zip(values, block.last)):
                if now != before and self._member(ds, k).dchg:
                    block.pending[k] = block.pending.get(k, 0) | (1 << (6 - 1 - DATA_CHANGE))
                    block.last[k] = now
            if block.pending and block.flush is None:
                buf_ms, loop = int(block.get("BufTm")), _loop()
                if buf_ms > 0 and loop is not None:
                    block.flush = loop.call_later(buf_ms / 1000, self._flush, block)
                else:
                    self._flush(block)

    def _flush(self, block: Urcb) -> None:
        block.flush = None
        if block.pending and block.enabled:
            pending, block.pending = block.pending, {}
            self._send(block, pending)

    async def _integrity(self, block: Urcb, period_s: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while block.enabled:
            due += period_s
            await asyncio.sleep(max(0.0, due - loop.time()))
            if block.enabled:
                self._send_all(block, INTEGRITY)

    def _send_all(self, block: Urcb, reason: int) -> None:
        ds = self._dataset(block)
        if ds is None:
            return
        self._flush(block)  # pending changes go first, in their own report
        block.last = self._values(block)
        self._send(block, dict.fromkeys(range(len(ds.members)), 1 << 6 - 1 - reason))

    # -- the InformationReport -------------------------------------------------------------------------------
    def _dataset(self, block: Urcb) -> DataSet | None:
        return self.model.dataset(str(block.get("DatSet"))) if block.get("DatSet") else None

    def _member(self, ds: DataSet, k: int) -> Node:
        node = self.model.find(*ds.members[k])
        assert node is not None  # members are checked when the SCL is read
        return node

    def _values(self, block: Urcb) -> list[bytes]:
        ds = self._dataset(block)
        return [self._member(ds, k).data() for k in range(len(ds.members))] if ds is not None else []

    def _send(self, block: Urcb, included: dict[int, int]) -> None:
        ds = self._dataset(block)
        if ds is None or block.owner is None:
            return
        pdu = information_report(block, ds, included, [self._member(ds, k).data() for k in sorted(included)],
                                 self.clock())
        block.put("SqNum", (int(block.get("SqNum")) + 1) & 0xFF)
        if block.owner.send_unconfirmed(pdu):
            block.sent += 1
            self.reports_sent += 1
        else:
            self.reports_dropped += 1


def information_report(block: Urcb, ds: DataSet, included: dict[int, int], values: list[bytes],
                       now_s: float) -> bytes:
    """The unconfirmed MMS PDU of one report (IEC 61850-8-1: variable list ``RPT``, then the access results
    in the order RptID, OptFlds, [SqNum], [TimeOfEntry], [DatSet], [ConfRev], inclusion bit string,
    [data references], values, [reason codes])."""
    opt = int(block.get("OptFlds")) & URCB_OPT_MASK
    rpt_id = str(block.get("RptID")) or block.reference
    parts = [ber.visible(0x8A, rpt_id), ber.bit_string(0x84, opt, 10)]
    if _bit(opt, 10, OPT_FIELDS["seqNum"]):
        parts.append(ber.integer(0x86, int(block.get("SqNum")), signed=False))
    if _bit(opt, 10, OPT_FIELDS["timeStamp"]):
        parts.append(ber.tlv(0x8C, time_of_day(now_s)))
    if _bit(opt, 10, OPT_FIELDS["dataSet"]):
        parts.append(ber.visible(0x8A, ds.reference))
    if _bit(opt, 10, OPT_FIELDS["configRef"]):
        parts.append(ber.integer(0x86, int(block.get("ConfRev")), signed=False))
    order = sorted(included)
    n = len(ds.members)
    parts.append(ber.bit_string(0x84, sum(1 << (n - 1 - k) for k in order), n))
    if _bit(opt, 10, OPT_FIELDS["dataRef"]):
        parts += [ber.visible(0x8A, "/".join(ds.members[k])) for k in order]
    parts += values
    if _bit(opt, 10, OPT_FIELDS["reasonCode"]):
        parts += [ber.bit_string(0x84, included[k], 6) for k in order]
    return ber.seq(0xA3, ber.seq(0xA0, ber.seq(0xA1, ber.visible(0x80, "RPT")), ber.seq(0xA0, *parts)))
