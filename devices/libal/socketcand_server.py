"""A CAN bus shared over TCP, speaking the socketcand protocol (the subset python-can's client uses).

These machines have no SocketCAN/vcan, so the virtual rig's CAN bus is this server: every TCP client in RAW mode
and every in-process node (the virtual BMS) sees the frames the others send, as on a real bus (a sender does not
get its own frames back, as with a SocketCAN raw socket). A real rig runs the socketcand daemon instead; the
driver cannot tell the difference.

Implemented (ASCII elements ``< ... >``, as in linux-can/socketcand doc/protocol.md and src/state_*.c):

- NO_BUS: the server greets with ``< hi >``; ``< open CHANNEL >`` -> ``< ok >`` (BCM mode) or
  ``< error could not open bus >`` and the connection is closed; anything else -> ``< error unknown command >``.
- BCM: ``< rawmode >`` -> ``< ok >`` (RAW mode); ``< send ID DLC B0 B1 ... >`` transmits; ``< echo >`` echoes;
  ``< bcmmode >`` -> ``< ok >``; other BCM commands (add/update/delete/filter/subscribe) are not implemented and
  get ``< error unknown command >``.
- RAW: frames on the bus arrive as ``< frame ID SECS.USECS DATA >`` with DATA as contiguous upper-case hex,
  exactly like the daemon prints them (python-can's parser depends on it); ``< send ... >`` transmits (a syntax
  error is ignored, as the daemon does); ``< echo >``; ``< bcmmode >`` -> ``< ok >``.

A standard identifier is written with 3 hex digits, an extended one with 8 (that is how both sides tell them apart).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from collections import Counter

from devices.base import ProtocolError
from devices.tcp_server import ServedConnection, TcpServer

log = logging.getLogger(__name__)

MAX_ELEMENT = 256  # longer than any command of this subset; a longer element is garbage
_HEX = re.compile(r"[0-9A-Fa-f]+")


class SocketcandParseError(ProtocolError):
    """A socketcand element that does not parse."""


@dataclass(frozen=True)
class CanFrame:
    arbitration_id: int
    data: bytes = b""
    is_extended: bool = False
    timestamp: float = 0.0


@dataclass(frozen=True)
class Command:
    """One parsed element: ``name`` (open, rawmode, send, frame, ok, hi, error, ...) and its argument."""

    name: str
    bus: str = ""
    frame: CanFrame | None = None
    text: str = ""


def split_elements(buffer: str) -> tuple[list[str], str]:
    """Complete ``< ... >`` elements in ``buffer`` and the unparsed rest.

    Text between elements is skipped (the daemon skips until '<' too); an element longer than MAX_ELEMENT or a
    '<' inside an element raises SocketcandParseError.
    """
    elements: list[str] = []
    pos = 0
    while True:
        start = buffer.find("<", pos)
        if start < 0:
            return elements, ""
        end = buffer.find(">", start)
        nested = buffer.find("<", start + 1)
        if end < 0:
            if nested >= 0:
                raise SocketcandParseError(f"'<' inside an unterminated element: {buffer[start:start + 40]!r}")
            if len(buffer) - start > MAX_ELEMENT:
                raise SocketcandParseError(f"element longer than {MAX_ELEMENT} characters")
            return elements, buffer[start:]
        if 0 <= nested < end:
            raise SocketcandParseError(f"'<' inside an element: {buffer[start:end + 1]!r}")
        if end - start + 1 > MAX_ELEMENT:
            raise SocketcandParseError(f"element longer than {MAX_ELEMENT} characters")
        elements.append(buffer[start:end + 1])
        pos = end + 1


def _can_id(token: str) -> tuple[int, bool]:
    if not _HEX.fullmatch(token) or len(token) > 8:
        raise SocketcandParseError(f"bad CAN identifier {token!r}")
    value = int(token, 16)
    extended = len(token) == 8
    if (not extended and value > 0x7FF) or value > 0x1FFFFFFF:
        raise SocketcandParseError(f"CAN identifier {token!r} out of range")
    return value, extended


def _byte(token: str) -> int:
    if not _HEX.fullmatch(token) or len(token) > 2:
        raise SocketcandParseError(f"bad data byte {token!r}")
    return int(token, 16)


def parse_command(element: str) -> Command:
    """Parse one element (with its angle brackets); SocketcandParseError if it is not valid."""
    if not (element.startswith("<") and element.endswith(">")) or len(element) > MAX_ELEMENT:
        raise SocketcandParseError(f"not an element: {element[:40]!r}")
    tokens = element[1:-1].split()
    if not tokens:
        raise SocketcandParseError("empty element")
    name, args = tokens[0], tokens[1:]
    if name in ("hi", "ok", "echo", "rawmode", "bcmmode", "controlmode"):
        if args:
            raise SocketcandParseError(f"{name!r} takes no arguments: {element!r}")
        return Command(name)
    if name == "open":
        if len(args) != 1 or len(args[0]) > 16:
            raise SocketcandParseError(f"open needs one bus name of at most 16 characters: {element!r}")
        return Command(name, bus=args[0])
    if name == "error":
        return Command(name, text=" ".join(args))
    if name == "send":
        if len(args) < 2:
            raise SocketcandParseError(f"send needs an identifier and a length: {element!r}")
        can_id, extended = _can_id(args[0])
        if not args[1].isdigit() or int(args[1]) > 8:
            raise SocketcandParseError(f"bad length {args[1]!r} (0..8)")
        dlc = int(args[1])
        if len(args) - 2 != dlc:
            raise SocketcandParseError(f"send announces {dlc} bytes but carries {len(args) - 2}")
        return Command(name, frame=CanFrame(can_id, bytes(_byte(t) for t in args[2:]), extended))
    if name == "frame":
        if len(args) < 2:
            raise SocketcandParseError(f"frame needs an identifier and a time stamp: {element!r}")
        can_id, extended = _can_id(args[0])
        secs, dot, usecs = args[1].partition(".")
        if not (secs.isdigit() and dot and usecs.isdigit() and len(usecs) <= 6):
            raise SocketcandParseError(f"bad time stamp {args[1]!r}")
        hexdata = "".join(args[2:])  # the daemon prints contiguous hex; the protocol doc shows spaced bytes
        if hexdata and (not _HEX.fullmatch(hexdata) or len(hexdata) % 2):
            raise SocketcandParseError(f"bad frame data {hexdata!r}")
        if len(hexdata) > 16:
            raise SocketcandParseError(f"frame data longer than 8 bytes: {hexdata!r}")
        return Command(name, frame=CanFrame(can_id, bytes.fromhex(hexdata), extended,
                                            int(secs) + int(usecs.ljust(6, "0")) / 1e6))
    raise SocketcandParseError(f"unknown command {name!r}")


def format_id(frame: CanFrame) -> str:
    return f"{frame.arbitration_id & 0x1FFFFFFF:08X}" if frame.is_extended else f"{frame.arbitration_id & 0x7FF:03X}"


def format_frame(frame: CanFrame, timestamp: float | None = None) -> str:
    """``< frame ID SECS.USECS DATA >`` as the daemon sends it in RAW mode."""
    t = time.time() if timestamp is None else timestamp
    secs = int(t)
    usecs = min(int(round((t - secs) * 1e6)), 999999)
    return f"< frame {format_id(frame)} {secs}.{usecs:06d} {frame.data.hex().upper()} >"


def format_send(frame: CanFrame) -> str:
    data = "".join(f" {b:02X}" for b in frame.data)
    return f"< send {format_id(frame)} {len(frame.data)}{data} >"


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    conn: ServedConnection | None = None
    state: str = "NO_BUS"
    ready_at: float = 0.0
    pending: list[str] = field(default_factory=list)
    flush: asyncio.TimerHandle | None = None


class SocketcandServer:
    """The bus: TCP clients (socketcand protocol) plus in-process listeners.

    ``hold_off_s``: after answering ``< rawmode >`` the server holds frames for that client briefly, because
    python-can's client reads the ``< ok >`` with one ``recv`` and fails if a frame arrives in the same segment.
    """

    MAX_BUFFERED = 1 << 20  # a client that stops reading is dropped once this much is queued for it

    def __init__(self, channel: str = "can0", *, hold_off_s: float = 0.05, max_connections: int = 16,
                 idle_timeout_s: float | None = 30.0) -> None:
        self.channel = channel
        self.hold_off_s = hold_off_s
        self.tcp = TcpServer(self._serve, name="socketcand", max_connections=max_connections,
                             idle_timeout_s=idle_timeout_s)
        self._clients: set[_Client] = set()
        self._listeners: list[Callable[[CanFrame], None]] = []

    # -- lifecycle ------------------------------------------------------------------------------------------
    @property
    def port(self) -> int | None:
        return self.tcp.port or None

    @property
    def counters(self) -> Counter[str]:
        return self.tcp.counters

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self.tcp.start(host, port)

    async def stop(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        await self.tcp.stop()

    def open_connections(self) -> int:
        return len(self._clients)

    def add_listener(self, listener: Callable[[CanFrame], None]) -> None:
        """``listener(frame)`` is called (on the loop) for every frame a TCP client sends."""
        self._listeners.append(listener)

    # -- the bus ----------------------------------------------------------------------------------------
    def publish(self, frame: CanFrame, *, origin: _Client | None = None) -> None:
        """Put a frame on the bus: every RAW client except its sender receives it."""
        line = format_frame(frame)
        now = time.monotonic()
        for client in list(self._clients):
            if client is origin or client.state != "RAW":
                continue
            if now < client.ready_at:
                client.pending.append(line)
                if client.flush is None:
                    client.flush = asyncio.get_running_loop().call_later(client.ready_at - now, self._flush, client)
            else:
                self._write(client, line)

    def _flush(self, client: _Client) -> None:
        client.flush = None
        lines, client.pending = client.pending, []
        self._write(client, "".join(lines))

    def _write(self, client: _Client, text: str) -> None:
        if client.writer.is_closing():
            return
        client.writer.write(text.encode("ascii"))
        if client.writer.transport.get_write_buffer_size() > self.MAX_BUFFERED:
            log.warning("socketcand client does not read; dropping it")
            self.tcp.count("not_reading")
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.discard(client)
        if client.flush is not None:
            client.flush.cancel()
            client.flush = None
        client.writer.close()

    # -- one connection -----------------------------------------------------------------------------------
    async def _serve(self, conn: ServedConnection) -> None:
        """Until the bus is open and RAW mode on, a silent peer times out (it holds a slot for nothing); a RAW
        client may listen without ever sending, as candump does."""
        client = _Client(conn.writer, conn)
        self._clients.add(client)
        try:
            self._write(client, "< hi >")
            buffer = ""
            while client in self._clients:
                conn.idle_timeout_s = None if client.state == "RAW" else self.tcp.idle_timeout_s
                data = await conn.read(4096)
                if not data:
                    break
                try:
                    buffer += data.decode("ascii")
                    elements, buffer = split_elements(buffer)
                except (UnicodeDecodeError, SocketcandParseError) as exc:
                    log.info("socketcand client sent garbage (%s); closing", exc)
                    conn.count("garbage")
                    self._write(client, "< error invalid input >")
                    break
                for element in elements:
                    if not self._handle(client, element):
                        self._drop(client)
                        break
        finally:
            self._drop(client)

    def _handle(self, client: _Client, element: str) -> bool:
        """Act on one element; False closes the connection."""
        try:
            cmd = parse_command(element)
        except SocketcandParseError as exc:
            if client.state == "RAW" and element.startswith("< send "):
                log.info("ignoring bad send: %s", exc)  # the daemon only logs a syntax error in RAW mode
                self._count(client, "bad_send")
                return True
            self._count(client, "unknown_command")
            self._write(client, "< error unknown command >")
            return True
        if client.state == "NO_BUS":
            if cmd.name != "open":
                self._count(client, "unknown_command")
                self._write(client, "< error unknown command >")
                return True
            if cmd.bus != self.channel:
                self._count(client, "no_such_bus")
                self._write(client, "< error could not open bus >")
                return False
            client.state = "BCM"
            self._write(client, "< ok >")
            return True
        if cmd.name == "echo":
            self._write(client, "< echo >")
        elif cmd.name == "rawmode":
            client.state = "RAW"
            client.ready_at = time.monotonic() + self.hold_off_s
            self._write(client, "< ok >")
        elif cmd.name == "bcmmode":
            client.state = "BCM"
            self._write(client, "< ok >")
        elif cmd.name == "send" and cmd.frame is not None:
            self.publish(cmd.frame, origin=client)
            for listener in self._listeners:
                try:
                    listener(cmd.frame)
                except Exception:  # a faulty node must not take the bus down
                    log.exception("CAN listener failed on %s", format_send(cmd.frame))
        else:
            self._count(client, "unknown_command")
            self._write(client, "< error unknown command >")
        return True

    def _count(self, client: _Client, name: str) -> None:
        self.tcp.count(name)
