"""The small embedded broker (child process of ``EmbeddedBroker``) against paho clients and raw sockets:
wildcards, QoS, retained messages, unsubscribe, refused protocol levels and malformed packets."""

from __future__ import annotations

import socket
import threading

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from cosim.messaging import EmbeddedBroker
from cosim.messaging.mini_broker import topic_matches


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [
    ("s4g/#", "s4g/fur/data/h1/state", True),
    ("s4g/#", "s4g", True),
    ("s4g/+/data/#", "s4g/fur/data/h1", True),
    ("s4g/+/data/#", "s4g/fur/control/h1", False),
    ("s4g/+", "s4g/fur/data", False),
    ("s4g/fur", "s4g/fur", True),
    ("s4g/fur", "s4g/fur/x", False),
    ("#", "$SYS/broker", False),
    ("+/broker", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
])
def test_topic_matching(topic_filter, topic, expected):
    assert topic_matches(topic_filter, topic) is expected


class _Probe:
    def __init__(self, port: int, name: str) -> None:
        self.got: list[tuple[str, bytes, int, bool]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name)
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *_: self._note()
        self.c.on_unsubscribe = lambda *_: self._note()
        self.acks = 0
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _note(self) -> None:
        with self.cond:
            self.acks += 1
            self.cond.notify_all()

    def _on_message(self, _c, _u, msg) -> None:
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self.cond.notify_all()

    def wait(self, predicate) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, 5)

    def subscribe(self, topic_filter: str, qos: int) -> None:
        n = self.acks
        self.c.subscribe(topic_filter, qos)
        assert self.wait(lambda: self.acks > n)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_qos_wildcards_retained_and_unsubscribe():
    with EmbeddedBroker() as broker:
        sub, pub = _Probe(broker.port, "sub"), _Probe(broker.port, "pub")
        try:
            pub.c.publish("s4g/fur/control/gesscon/schedule", b"old", qos=1, retain=True).wait_for_publish(5)
            pub.c.publish("s4g/fur/control/gesscon/schedule", b"plan", qos=1, retain=True).wait_for_publish(5)
            pub.c.publish("s4g/fur/control/x/gone", b"r", qos=1, retain=True).wait_for_publish(5)
            pub.c.publish("s4g/fur/control/x/gone", b"", qos=1, retain=True).wait_for_publish(5)  # cleared
            sub.subscribe("s4g/+/control/#", 1)
            assert sub.wait(lambda: len(sub.got) == 1)
            assert sub.got == [("s4g/fur/control/gesscon/schedule", b"plan", 1, True)]  # the last retained only
            sub.subscribe("s4g/fur/data/#", 0)
            for qos in (0, 1, 2):
                pub.c.publish("s4g/fur/data/h1/state", f"q{qos}".encode(), qos=qos).wait_for_publish(5)
            pub.c.publish("s4g/skive/smx/h1/meas/p", b"other", qos=1).wait_for_publish(5)
            pub.c.publish("s4g/fur/control/gesscon/schedule", b"live", qos=2, retain=True).wait_for_publish(5)
            assert sub.wait(lambda: len(sub.got) == 5)
            # the data subscription was granted QoS 0; forwarded messages never carry the retain flag
            assert sub.got[1:] == [("s4g/fur/data/h1/state", b"q0", 0, False),
                                   ("s4g/fur/data/h1/state", b"q1", 0, False),
                                   ("s4g/fur/data/h1/state", b"q2", 0, False),
                                   ("s4g/fur/control/gesscon/schedule", b"live", 1, False)]
            n = sub.acks
            sub.c.unsubscribe("s4g/fur/data/#")
            assert sub.wait(lambda: sub.acks > n)
            pub.c.publish("s4g/fur/data/h1/state", b"after", qos=1).wait_for_publish(5)
            pub.c.publish("s4g/fur/control/a/b", b"marker", qos=1).wait_for_publish(5)
            assert sub.wait(lambda: len(sub.got) == 6)
            assert sub.got[5][1] == b"marker"  # nothing from the data topics after unsubscribing
        finally:
            sub.close()
            pub.close()


def _raw(port: int, data: bytes) -> bytes:
    """Send bytes on a fresh connection; everything the broker answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


CONNECT = bytes((0x10, 13)) + b"\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"


def test_refused_protocol_level_and_malformed_packets_close_the_connection():
    with EmbeddedBroker() as broker:
        mqtt5 = bytearray(CONNECT)
        mqtt5[8] = 5
        assert _raw(broker.port, bytes(mqtt5)) == bytes((0x20, 2, 0, 1))  # unacceptable protocol level
        assert _raw(broker.port, bytes((0x30, 2, 0, 1))) == b""  # PUBLISH before CONNECT
        assert _raw(broker.port, CONNECT + b"\x30\xff\xff\xff\xff\x01") == bytes((0x20, 2, 0, 0))
        assert _raw(broker.port, CONNECT + bytes((0x32, 3, 0, 1, ord("#")))) == bytes((0x20, 2, 0, 0))
        assert _raw(broker.port, CONNECT + bytes((0x80, 2, 0, 1))) == bytes((0x20, 2, 0, 0))  # SUBSCRIBE flags
        # the broker still serves others
        probe = _Probe(broker.port, "after")
        try:
            probe.subscribe("s4g/#", 1)
            probe.c.publish("s4g/x/data/d/q", b"1", qos=1).wait_for_publish(5)
            assert probe.wait(lambda: len(probe.got) == 1)
        finally:
            probe.close()


@pytest.fixture(scope="module")
def fuzzed_broker():
    with EmbeddedBroker() as broker:
        yield broker


def _send_and_drop(port: int, data: bytes) -> None:
    """Send bytes on a fresh connection and read what comes back for a moment; the broker may keep the connection
    (a valid prefix waits for more), close it (malformed), or answer (a valid packet)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        s.settimeout(0.05)
        try:
            while s.recv(4096):
                pass
        except (TimeoutError, ConnectionResetError):
            pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=120), st.booleans())
def test_any_bytes_from_a_client_leave_the_broker_serving_others(fuzzed_broker, junk, after_connect):
    _send_and_drop(fuzzed_broker.port, (CONNECT if after_connect else b"") + junk)
    probe = _Probe(fuzzed_broker.port, "fuzz-probe")
    try:
        probe.subscribe("s4g/fuzz/#", 1)
        probe.c.publish("s4g/fuzz/x", b"alive", qos=1).wait_for_publish(5)
        assert probe.wait(lambda: any(m[1] == b"alive" for m in probe.got))
    finally:
        probe.close()
