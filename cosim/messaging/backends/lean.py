"""The ``lean`` backend: a small MQTT 3.1.1 client (QoS 0 and 1, plain TCP) for the plain embedded broker.

paho's network thread costs the simulation more than the broker round trip itself: it reads every packet with
three or four ``recv`` calls, wakes through a socket pair on every ``publish`` and hands the interpreter lock
back and forth with the simulation thread at each step. This client:

* queues the PUBLISH packets of a step and writes them with one ``sendall`` when the bus is about to wait
  for them (``flush``) -- the messages, their topics, payloads, QoS and retain flag are what paho sends. For a
  publisher that never waits (and observers outside the bus) a background thread looks every ``LINGER_S`` and
  writes what is queued if nothing was written since its last look: a publication goes out within 2 x
  ``LINGER_S`` (signalling that thread at every step's first publication cost more than the looks do);
* reads with one blocking ``recv`` of up to 64 KiB in its own thread, parses every complete packet of the
  chunk, answers the chunk's QoS 1 publications with one write of PUBACKs and hands the chunk's messages to
  the bus in one call (one lock, one wakeup of the waiting simulation);
* uses keep-alive 0 (no PINGREQ timer): the broker is ours, on loopback, for the life of the run.

It neither reconnects nor retransmits: the embedded broker lives exactly as long as the run, so a lost
connection is a failed run. It is logged at ERROR, the next ``send`` raises ``BrokerUnavailable``, and what
was in flight ends as ``DeliveryTimeout``. Real brokers (reconnects, TLS, MQTT 5 refusals) keep paho (``mqtt``).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading

from ..config import BrokerAddress
from ..errors import BrokerUnavailable
from ..mqtt_wire import parse_packets, remaining_length
from ..mqtt_wire import str16 as _str16
from .base import Backend, OnBatch, OnMessage, OnRefused

log = logging.getLogger(__name__)

_CONNECT, _CONNACK, _PUBLISH, _PUBACK, _SUBSCRIBE, _SUBACK, _PINGRESP, _DISCONNECT = 1, 2, 3, 4, 8, 9, 13, 14
_READ_SIZE = 1 << 16
LINGER_S = 0.05  # how often the flusher looks at the queue (a step's burst is flushed well before)


def publish_packet(topic: str, payload: bytes, qos: int, mid: int) -> bytes:
    """A PUBLISH packet (retain and dup flags clear); ``mid`` is used for QoS 1 only."""
    head = _str16(topic) + (struct.pack("!H", mid) if qos else b"")
    return bytes((0x30 | qos << 1,)) + remaining_length(len(head) + len(payload)) + head + payload


class LeanMqttBackend(Backend):
    def __init__(self, address: BrokerAddress, *, subscribe: str, client_id: str, subscribe_qos: int = 1,
                 timeout: float = 10.0) -> None:
        if address.tls or address.protocol != 3 or address.username is not None:
            raise ValueError("the lean MQTT backend speaks plain MQTT 3.1.1 without credentials only")
        if subscribe_qos not in (0, 1):
            raise ValueError("the lean MQTT backend subscribes with QoS 0 or 1 only")
        self.address = address
        self.label = address.label
        self.subscribe_filter = subscribe
        self.client_id = client_id
        self.subscribe_qos = subscribe_qos
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._out = bytearray()  # PUBLISH packets not written yet
        self._write_lock = threading.Lock()
        self._mid = 0
        self._ready = threading.Event()  # SUBACK (or a failure) seen
        self._failure: str | None = None
        self._closing = False
        self._on_batch: OnBatch | None = None
        self._writes = 0  # writes so far (the flusher's clock)
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self, on_message: OnMessage, on_refused: OnRefused) -> None:
        def on_batch(items: list[tuple[str, bytes, bool]]) -> None:
            for item in items:
                on_message(*item)

        self.open_batched(on_batch, on_refused)

    def open_batched(self, on_batch: OnBatch, on_refused: OnRefused) -> None:
        # MQTT 3.1.1 cannot refuse a publication: on_refused is never called
        a = self.address
        try:
            sock = socket.create_connection((a.host, a.port), timeout=self.timeout)
        except OSError as exc:
            raise BrokerUnavailable(f"cannot connect to {a.label}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a step's burst must not wait for an ACK
        sock.settimeout(None)
        self._sock = sock
        self._on_batch = on_batch
        body = _str16("MQTT") + bytes((4, 0x02)) + struct.pack("!H", 0) + _str16(self.client_id)
        connect = bytes((_CONNECT << 4,)) + remaining_length(len(body)) + body
        body = struct.pack("!H", 1) + _str16(self.subscribe_filter) + bytes((self.subscribe_qos,))
        subscribe = bytes((_SUBSCRIBE << 4 | 0x02,)) + remaining_length(len(body)) + body
        self._reader = threading.Thread(target=self._read_loop, name=f"lean-mqtt-{self.client_id}", daemon=True)
        try:
            sock.sendall(connect + subscribe)  # the broker answers CONNACK, then SUBACK
        except OSError as exc:
            self.close()
            raise BrokerUnavailable(f"cannot connect to {a.label}: {exc}") from exc
        self._reader.start()
        self._flusher = threading.Thread(target=self._linger, name=f"lean-mqtt-flush-{self.client_id}",
                                         daemon=True)
        self._flusher.start()
        self._await_subscription(self._ready, self.timeout, lambda: self._failure)
        log.debug("%s: %s subscribed to %s", a.label, self.client_id, self.subscribe_filter)

    def send(self, wire_topic: str, payload: bytes, qos: int) -> int | None:
        if qos not in (0, 1):
            raise ValueError("the lean MQTT backend publishes with QoS 0 or 1 only")
        if self._sock is None or self._failure is not None:
            raise BrokerUnavailable(f"{self.label}: not connected ({self._failure or 'closed'})")
        with self._write_lock:
            mid = self._mid % 0xFFFF + 1  # packet ids 1..65535 (MQTT 3.1.1 acknowledgements carry no verdict)
            self._mid = mid
            self._out += publish_packet(wire_topic, payload, qos, mid)
        return None

    def flush(self) -> None:
        """Write the queued publications (one ``sendall``)."""
        if self._out:
            self._write(b"")

    def _write(self, extra: bytes) -> None:
        sock = self._sock
        with self._write_lock:
            data = bytes(self._out) + extra
            self._out.clear()
            if sock is None or not data:
                return
            self._writes += 1
            try:
                sock.sendall(data)
            except OSError as exc:
                self._lost(f"write failed: {exc}")
                raise BrokerUnavailable(f"{self.label}: write failed: {exc}") from exc

    def _linger(self) -> None:
        seen = -1
        while not self._stop.wait(LINGER_S):
            if self._out and self._writes == seen:  # queued, and nobody wrote since the last look
                try:
                    self.flush()
                except BrokerUnavailable:  # logged by _lost; the next send raises
                    return
            seen = self._writes

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._closing = True
        self._stop.set()  # ends the flusher
        try:
            with self._write_lock:
                self._out.clear()
                sock.sendall(bytes((_DISCONNECT << 4, 0)))
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)  # ends the reader's recv
        except OSError:
            pass
        for thread in (self._reader, self._flusher):
            if thread is not None and thread is not threading.current_thread():
                thread.join(self.timeout)
        sock.close()

    # -- reader thread ---------------------------------------------------------------------------------------
    def _lost(self, reason: str) -> None:
        if self._failure is None:
            self._failure = reason
        if not self._closing:
            log.error("%s (%s): connection lost: %s", self.label, self.client_id, reason)
        self._ready.set()

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None and self._on_batch is not None
        buf = bytearray()
        while True:
            try:
                chunk = sock.recv(_READ_SIZE)
            except OSError as exc:
                self._lost(f"read failed: {exc}")
                return
            if not chunk:
                self._lost("closed by the broker")
                return
            buf += chunk
            try:
                packets, used = parse_packets(buf)
                del buf[:used]
                messages, acks = self._handle(packets)
            except ValueError as exc:  # the broker broke the protocol: nothing after this can be trusted
                self._lost(f"protocol error: {exc}")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            if acks:
                try:
                    self._write(acks)
                except BrokerUnavailable:
                    return
            if messages:
                self._on_batch(messages)

    def _handle(self, packets: list[tuple[int, int, bytes]]) -> tuple[list[tuple[str, bytes, bool]], bytes]:
        messages: list[tuple[str, bytes, bool]] = []
        acks = bytearray()
        for kind, flags, body in packets:
            if kind == _PUBLISH:
                qos = (flags >> 1) & 3
                if qos > 1 or len(body) < 2:
                    raise ValueError(f"PUBLISH with QoS {qos} or without a topic")
                n = struct.unpack_from("!H", body)[0]
                topic = body[2:2 + n].decode()
                pos = 2 + n
                if qos:
                    acks += bytes((_PUBACK << 4, 2)) + body[pos:pos + 2]
                    pos += 2
                messages.append((topic, body[pos:], bool(flags & 1)))
            elif kind == _CONNACK:
                if len(body) < 2 or body[1] != 0:
                    self._failure = f"connection refused: return code {body[1] if len(body) > 1 else '?'}"
                    self._ready.set()
            elif kind == _SUBACK:
                if len(body) < 3 or body[2] == 0x80:
                    self._failure = f"subscription to {self.subscribe_filter!r} refused"
                self._ready.set()
            elif kind not in (_PUBACK, _PINGRESP):
                raise ValueError(f"unexpected packet type {kind}")
        return messages, bytes(acks)
