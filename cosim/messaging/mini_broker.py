"""A small MQTT 3.1.1 broker on asyncio: the plain embedded broker's child process (``embedded_broker.serve``).

amqtt spends ~200 us of CPU per relayed QoS 1 message (a task, a timeout and a socket write per packet), and a
co-simulation step waits for its burst of messages to come back. This broker parses every packet a read
brought, and writes what each client gets from that read -- acknowledgements and forwarded publications -- in
one write per client, so a burst costs a handful of system calls.

What it serves: clean sessions (a session ends with its connection), QoS 0 and 1 both ways and QoS 2 from
publishers (acknowledged, forwarded with QoS 1 at most: the granted QoS of a subscription is at most 1, as
MQTT allows), ``+``/``#`` wildcards (not matching ``$`` topics at the first level), retained messages (an empty
retained payload clears one; the retain flag is set only on what a new subscription gets), unsubscribe, ping.
Anyone may connect (no credentials are checked: it listens on loopback for one run); a will message is parsed
and ignored; a client with another protocol level gets return code 1; a malformed packet closes that client's
connection. It neither stores sessions nor retransmits: its clients live on loopback as long as it does.
The secure embedded broker (TLS, client certificates, topic policy) stays amqtt with our plugins.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from .mqtt_wire import packet as _packet
from .mqtt_wire import parse_packets, remaining_length, str16

log = logging.getLogger(__name__)

_MAX_PACKET = 1 << 26  # 64 MiB: a larger packet is refused (the connection closed), not buffered


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 matching (section 4.7): ``+`` one level, ``#`` the rest; wildcards skip ``$`` topics."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f, t = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


class _ProtocolError(ValueError):
    pass


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body, self.pos = body, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise _ProtocolError("packet shorter than its fields")
        out = self.body[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int(struct.unpack("!H", self.take(2))[0])

    def str16(self) -> str:
        try:
            return self.take(self.u16()).decode()
        except UnicodeDecodeError:
            raise _ProtocolError("a string is not UTF-8") from None

    def done(self) -> bool:
        return self.pos >= len(self.body)


class MiniBroker:
    """The broker's state: connected clients, their subscriptions, retained messages."""

    def __init__(self) -> None:
        self.clients: set[_Client] = set()
        self.retained: dict[str, tuple[bytes, int]] = {}
        self.server: asyncio.Server | None = None
        self._dirty: set[_Client] = set()  # clients with output to write at the end of the current read

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Client(self), host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for client in list(self.clients):
            client.close()
        if self.server is not None:
            await self.server.wait_closed()

    def route(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if retain:
            if payload:
                self.retained[topic] = (payload, qos)
            else:
                self.retained.pop(topic, None)
        for client in self.clients:
            granted = client.granted(topic)
            if granted is not None:
                client.forward(topic, payload, min(qos, granted), False)

    def mark(self, client: _Client) -> None:
        self._dirty.add(client)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for client in dirty:
            client.flush()


class _Client(asyncio.Protocol):
    def __init__(self, broker: MiniBroker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.out = bytearray()
        self.connected = False
        self.subs: dict[str, int] = {}
        self.mid = 0
        self.qos2: set[int] = set()  # QoS 2 packet ids received, PUBREL not yet

    # -- asyncio --------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.broker.clients.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            self._parse()
        except _ProtocolError as exc:
            log.warning("mini broker: closing a client: %s", exc)
            self.broker.flush()
            self.close()
            return
        self.broker.flush()

    # -- output ---------------------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.out += data
            self.broker.mark(self)

    def flush(self) -> None:
        if self.out and self.transport is not None:
            self.transport.write(bytes(self.out))
        self.out.clear()

    def close(self) -> None:
        self.broker.clients.discard(self)
        if self.transport is not None:
            self.flush()
            self.transport.close()
            self.transport = None

    def granted(self, topic: str) -> int | None:
        best = None
        for topic_filter, qos in self.subs.items():
            if topic_matches(topic_filter, topic) and (best is None or qos > best):
                best = qos
        return best

    def forward(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        head = str16(topic)
        if qos:
            self.mid = self.mid % 0xFFFF + 1
            head += struct.pack("!H", self.mid)
        self.write(_packet(0x30 | qos << 1 | int(retain), head + payload))

    # -- input ----------------------------------------------------------------------------------------------
    def _parse(self) -> None:
        while self.transport is not None:  # again after good packets that came before a malformed one
            try:
                packets, used = parse_packets(self.buf, _MAX_PACKET)
            except ValueError as exc:
                raise _ProtocolError(str(exc)) from None
            if not packets:
                return
            for kind, flags, body in packets:
                if self.transport is None:  # an earlier packet of this read closed the connection
                    return
                self._handle(kind, flags, body)
            del self.buf[:used]

    def _handle(self, kind: int, flags: int, body: bytes) -> None:
        if not self.connected and kind != 1:
            raise _ProtocolError("the first packet must be CONNECT")
        r = _Reader(body)
        if kind == 1:
            self._connect(r)
        elif kind == 3:
            qos, retain = (flags >> 1) & 3, bool(flags & 1)
            if qos == 3:
                raise _ProtocolError("PUBLISH with QoS 3")
            topic = r.str16()
            if not topic or "+" in topic or "#" in topic:
                raise _ProtocolError(f"PUBLISH to an invalid topic {topic[:80]!r}")
            mid = r.u16() if qos else 0
            payload = body[r.pos:]
            if qos == 1:
                self.write(bytes((0x40, 2)) + struct.pack("!H", mid))
            elif qos == 2:
                self.write(bytes((0x50, 2)) + struct.pack("!H", mid))  # PUBREC
                if mid in self.qos2:
                    return  # a duplicate of a publication already routed
                self.qos2.add(mid)
            self.broker.route(topic, payload, qos, retain)
        elif kind == 6:  # PUBREL
            mid = r.u16()
            self.qos2.discard(mid)
            self.write(bytes((0x70, 2)) + struct.pack("!H", mid))  # PUBCOMP
        elif kind == 8:
            self._subscribe(r, flags)
        elif kind == 10:  # UNSUBSCRIBE
            mid = r.u16()
            while not r.done():
                self.subs.pop(r.str16(), None)
            self.write(bytes((0xB0, 2)) + struct.pack("!H", mid))
        elif kind == 12:  # PINGREQ
            self.write(bytes((0xD0, 0)))
        elif kind == 14:  # DISCONNECT
            self.close()
        elif kind in (4, 5, 7):  # PUBACK, PUBREC, PUBCOMP of what we forwarded (QoS <= 1): nothing to do
            pass
        else:
            raise _ProtocolError(f"unexpected packet type {kind}")

    def _connect(self, r: _Reader) -> None:
        if self.connected:
            raise _ProtocolError("a second CONNECT")
        name, level, flags = r.str16(), r.take(1)[0], r.take(1)[0]
        r.u16()  # keep-alive: clients on loopback for one run; their end is the end of the connection
        if name != "MQTT" or level != 4:
            self.write(bytes((0x20, 2, 0, 1)))  # unacceptable protocol level
            self.broker.flush()
            self.close()
            return
        r.str16()  # client id (any, also empty: clean sessions only)
        if flags & 0x04:  # a will: topic and message, ignored
            r.str16()
            r.take(r.u16())
        if flags & 0x80:
            r.take(r.u16())
        if flags & 0x40:
            r.take(r.u16())
        self.connected = True
        self.broker.clients.add(self)
        self.write(bytes((0x20, 2, 0, 0)))

    def _subscribe(self, r: _Reader, flags: int) -> None:
        if flags != 0x02:
            raise _ProtocolError("SUBSCRIBE with reserved flags")
        mid = r.u16()
        codes = bytearray()
        new: list[str] = []
        while not r.done():
            topic_filter, qos = r.str16(), r.take(1)[0]
            if not _valid_filter(topic_filter) or qos > 2:
                codes.append(0x80)
                continue
            granted = min(qos, 1)
            self.subs[topic_filter] = granted
            codes.append(granted)
            new.append(topic_filter)
        if not codes:
            raise _ProtocolError("SUBSCRIBE without a topic filter")
        self.write(bytes((0x90,)) + remaining_length(2 + len(codes)) + struct.pack("!H", mid) + bytes(codes))
        for topic, (payload, qos) in sorted(self.broker.retained.items()):
            grants = [self.subs[f] for f in new if topic_matches(f, topic)]
            if grants:
                self.forward(topic, payload, min(qos, max(grants)), True)


def _valid_filter(topic_filter: str) -> bool:
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


async def serve_until(host: str, port: int, stop: asyncio.Future[Any], on_port: Any) -> None:
    """Serve until ``stop`` is done; ``on_port(port)`` once listening."""
    broker = MiniBroker()
    on_port(await broker.start(host, port))
    try:
        await stop
    finally:
        await broker.stop()
