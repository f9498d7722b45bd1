"""The IEC 61850 MMS server on a TCP socket (port 102 by default): one asyncio task per client association.

Framing errors below the session (a bad TPKT header, a TPDU this class-0 transport does not know) get a COTP
ER TPDU and the connection is closed, because the byte stream cannot be resynchronised; an association that
cannot be accepted is closed; a malformed MMS PDU inside a good association gets an MMS RejectPDU and the
association goes on. No client input ends the server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from devices.energy_router import iso_stack as iso
from devices.energy_router import reports
from devices.energy_router.ber import BerError
from devices.energy_router.mms import REJECT_INVALID_PDU, MmsServer, Reject, initiate_response, reject
from devices.tcp_server import ServedConnection, TcpServer

log = logging.getLogger(__name__)
MAX_CONNECTIONS = 16


class _Close(Exception):
    """End this association (after whatever was already sent)."""


def corrupt(pdu: bytes) -> bytes:
    """A response whose BER is broken (its outer length claims one octet more than there is)."""
    return pdu[:1] + bytes([min(pdu[1] + 1, 0x7F) if pdu[1] < 0x80 else pdu[1]]) + pdu[2:-1]


class MmsTcpServer:
    """Accepts associations on the shared TCP server (connection cap, counters, clean stop) and hands their MMS
    PDUs to one :class:`MmsServer`. No idle timeout: a client may listen to reports and say nothing for hours."""

    def __init__(self, mms: MmsServer, *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.mms = mms
        self.tcp = TcpServer(self._serve, name="mms", max_connections=max_connections, idle_timeout_s=None,
                             limit=iso.MAX_TPKT + 4)
        self.silent = False
        self.corrupt_next = False
        self.associations = 0  # accepted so far, for diagnostics

    @property
    def port(self) -> int | None:
        return self.tcp.port or None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self.tcp.start(host, port)

    async def stop(self) -> None:
        await self.tcp.stop()

    def open_connections(self) -> int:
        return self.tcp.open_connections()

    async def _serve(self, conn: ServedConnection) -> None:
        assoc = _Association(self, conn.reader, conn.writer)
        try:
            await assoc.run()
        except _Close:
            pass
        finally:
            self.mms.reports.client_closed(assoc)


class _Association:
    def __init__(self, owner: MmsTcpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.owner, self.reader, self.writer = owner, reader, writer
        self.tpdu_size = 128
        self.connected = False  # COTP
        self.assoc: iso.Association | None = None
        self.tsdu = bytearray()
        peer = writer.get_extra_info("peername")
        try:  # the report control block's Owner: the client's IP address
            self.peer = ipaddress.ip_address(peer[0]).packed if peer else b""
        except ValueError:
            self.peer = b""

    async def run(self) -> None:
        while True:
            header = await self.reader.readexactly(4)
            try:
                length = iso.tpkt_length(header)
                tpdu = iso.parse_tpdu(await self.reader.readexactly(length - 4))
            except iso.IsoError as exc:
                log.info("closing after a bad TPKT/COTP unit: %s", exc)
                await self._send_raw(iso.tpkt(iso.er()))
                raise _Close from None
            if tpdu.code == iso.CR:
                if self.connected:
                    raise _Close
                self.tpdu_size = iso.tpdu_size(tpdu.params)
                self.connected = True
                await self._send_raw(iso.tpkt(iso.cc(tpdu.src_ref, tpdu.params)))
            elif tpdu.code == iso.DR or not self.connected:
                raise _Close
            else:  # DT
                self.tsdu += tpdu.data
                if len(self.tsdu) > iso.MAX_TSDU:
                    await self._send_raw(iso.tpkt(iso.er()))
                    raise _Close
                if tpdu.eot:
                    tsdu, self.tsdu = bytes(self.tsdu), bytearray()
                    await self._tsdu(tsdu)

    async def _tsdu(self, tsdu: bytes) -> None:
        if self.assoc is None:
            try:
                _, ppdu = iso.session_user_data(tsdu, (iso.SPDU_CN,))
                assoc = iso.parse_connect(ppdu)
                response, _ = initiate_response(assoc.initiate)
            except (iso.IsoError, BerError, Reject) as exc:
                log.info("association refused: %s", exc)
                raise _Close from None
            self.assoc = assoc
            self.owner.associations += 1
            await self._send(iso.session_accept(iso.accept(assoc, response)))
            return
        try:
            si, ppdu = iso.session_data(tsdu)
        except iso.IsoError:
            raise _Close from None
        if si == iso.SPDU_AB:
            raise _Close
        if si == iso.SPDU_FN:
            await self._send(iso.session_disconnect(iso.release_response(self.assoc.acse_ctx)))
            raise _Close
        try:
            pdu = iso.parse_data(ppdu, self.assoc.mms_ctx)
        except (iso.IsoError, BerError):
            reply: bytes | None = reject(REJECT_INVALID_PDU)
        else:
            reply = self.owner.mms.handle_tlv(pdu, self)
        if reply is not None:
            if self.owner.corrupt_next:
                self.owner.corrupt_next = False
                reply = corrupt(reply)
            await self._send(iso.DATA_PREFIX + iso.user_data(self.assoc.mms_ctx, reply))

    def send_unconfirmed(self, pdu: bytes) -> bool:
        """Queue an unconfirmed MMS PDU (a report) on this association; False: dropped, because the association is
        not established, is closing, or the client leaves more than MAX_QUEUED_BYTES unread."""
        transport = self.writer.transport
        if (self.assoc is None or transport.is_closing()
                or transport.get_write_buffer_size() > reports.MAX_QUEUED_BYTES):
            return False
        if not self.owner.silent:
            tsdu = iso.DATA_PREFIX + iso.user_data(self.assoc.mms_ctx, pdu)
            self.writer.write(b"".join(iso.tpkt(t) for t in iso.dt(tsdu, self.tpdu_size)))
        return True

    async def _send(self, tsdu: bytes) -> None:
        await self._send_raw(b"".join(iso.tpkt(t) for t in iso.dt(tsdu, self.tpdu_size)))

    async def _send_raw(self, data: bytes) -> None:
        if self.owner.silent:
            return
        self.writer.write(data)
        await self.writer.drain()
