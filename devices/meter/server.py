"""The meter's DLMS/COSEM server on sockets: the TCP wrapper (IEC 62056-47) and HDLC (IEC 62056-46) carried on
a TCP connection (as a serial-to-Ethernet converter or a test does; a serial line uses the same
:class:`~devices.meter.hdlc.ServerLink`, see :func:`serve_serial`).

One :class:`CosemServer` holds the objects and the fault switches; each connection (or HDLC link) gets its own
:class:`~devices.meter.association.Association`. A wrapper frame with another version or an impossible length
ends the connection (the stream cannot be resynchronised); one for another logical device is ignored, as a
meter on a shared port does.
"""

from __future__ import annotations

import asyncio
import logging

from devices.meter import hdlc, wrapper
from devices.meter.association import Association
from devices.meter.axdr import DecodeError
from devices.meter.model import MeterConfig
from devices.meter.objects import MeterObjects
from devices.tcp_server import Handler, ServedConnection

log = logging.getLogger(__name__)


class CosemServer:
    """The application layer shared by every transport of one meter, with fault injection for tests."""

    def __init__(self, objects: MeterObjects, config: MeterConfig) -> None:
        self.objects, self.cfg = objects, config
        self.silent = False  # connections stay open, nothing is answered (a hung meter)
        self.corrupt_next = False  # the next response's APDU tag is replaced by 0xFF
        self.requests = 0

    def association(self, client_sap: int) -> Association:
        return Association(self.objects, self.cfg, client_sap)

    def respond(self, association: Association, apdu: bytes) -> bytes | None:
        self.requests += 1
        response = association.handle(apdu)
        if self.silent:
            return None
        if self.corrupt_next:
            self.corrupt_next = False
            response = b"\xff" + response[1:]
        return response


def wrapper_handler(server: CosemServer) -> Handler:
    """The IEC 62056-47 wrapper on a connection of the shared TCP server (cap, idle timeout, counters)."""
    async def handle(conn: ServedConnection) -> None:
        association: Association | None = None
        while True:
            try:
                head = wrapper.parse_header(await conn.readexactly(wrapper.HEADER.size))
            except DecodeError as exc:
                log.info("wrapper: %s; closing the connection", exc)
                conn.count("bad_wrapper")
                return
            apdu = await conn.readexactly(head.length)
            if head.destination != server.cfg.logical_device:
                continue
            if association is None or association.client_sap != head.source:
                association = server.association(head.source)
            response = server.respond(association, apdu)
            if response is not None:
                await conn.send(wrapper.wrap(head.destination, head.source, response))
    return handle


def hdlc_link(server: CosemServer) -> hdlc.ServerLink:
    """One HDLC link whose associations live as long as the link (SNRM starts, DISC ends them)."""
    associations: dict[int, Association] = {}

    def on_apdu(client_sap: int, apdu: bytes) -> bytes | None:
        association = associations.get(client_sap)
        if association is None:
            association = associations[client_sap] = server.association(client_sap)
        return server.respond(association, apdu)

    return hdlc.ServerLink(server.cfg.logical_device, server.cfg.hdlc_physical_address, on_apdu,
                           lambda sap: associations.pop(sap, None), max_info=min(server.cfg.max_pdu_size, 1024))


def hdlc_handler(server: CosemServer) -> Handler:
    """HDLC on a connection of the shared TCP server."""
    async def handle(conn: ServedConnection) -> None:
        link = hdlc_link(server)
        while True:
            data = await conn.read(4096)
            if not data:
                return
            frames = link.feed(data)
            if frames:
                await conn.send(b"".join(frames))
    return handle


async def serve_serial(server: CosemServer, port: str, baud: int, stop: asyncio.Event) -> None:
    """Serve HDLC on a serial line (pyserial; its blocking calls run in worker threads, the link and the model
    stay on this loop) until ``stop`` is set. ``port`` may be a device or a pyserial URL."""
    import serial  # pyserial: only needed for a real line

    line = await asyncio.to_thread(serial.serial_for_url, port, baudrate=baud, bytesize=8, parity="N",
                                   stopbits=1, timeout=0.05)
    try:
        link = hdlc_link(server)
        while not stop.is_set():
            data = await asyncio.to_thread(line.read, 512)
            for frame in link.feed(data):
                await asyncio.to_thread(line.write, frame)
    finally:
        await asyncio.to_thread(line.close)
