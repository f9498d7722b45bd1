"""The lean MQTT client of the plain embedded broker: packet codec, batched writes, what goes on the wire,
and a lost broker."""

from __future__ import annotations

import threading
from datetime import datetime, UTC

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cosim.messaging import BrokerUnavailable, MessageBus, Record, topics
from cosim.messaging.backends.lean import LeanMqttBackend, publish_packet
from cosim.messaging.mqtt_wire import parse_packets, remaining_length
from cosim.messaging.config import BrokerAddress

START = datetime(2021, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, (1 << 28) - 1])
def test_remaining_length_round_trips_through_the_parser(n):
    head = bytes((0x30,)) + remaining_length(n)
    packets, used = parse_packets(head + bytes(n))
    assert packets == [(3, 0, bytes(n))] and used == len(head) + n
    assert len(remaining_length(n)) == 1 + (n >= 128) + (n >= 16_384) + (n >= 2_097_152)


def test_remaining_length_refuses_what_mqtt_cannot_express():
    with pytest.raises(ValueError, match="too large"):
        remaining_length(1 << 28)
    with pytest.raises(ValueError, match="remaining length"):
        parse_packets(b"\x30\xff\xff\xff\xff\x01")
    # good packets before a malformed one come out first; the next call, at the malformed one, raises
    good = publish_packet("s4g/a", b"1", 0, 0)
    packets, used = parse_packets(good + b"\x30\xff\xff\xff\xff\x01")
    assert len(packets) == 1 and used == len(good)
    big = bytes((0x30, 0x81, 0x01))  # announces 129 bytes: refused at its header, above max_len, never buffered
    assert len(parse_packets(good + big, max_len=128)[0]) == 1
    with pytest.raises(ValueError, match="a packet of 129 bytes"):
        parse_packets(big, max_len=128)


def test_parser_keeps_incomplete_packets_for_the_next_read():
    a = publish_packet("s4g/fur/data/h1/state", b'[{"n":"x"}]', 1, 7)
    b = publish_packet("s4g/fur/data/h2/state", b"[]", 0, 0)
    stream = a + b
    for cut in range(len(stream) + 1):  # every split of two packets over two reads
        first, used = parse_packets(stream[:cut])
        rest, used2 = parse_packets(stream[used:])
        assert [p[2] for p in first + rest] == [a[2:], b[2:]]
        assert used + used2 == len(stream)
    (kind, flags, body), = parse_packets(a)[0]
    assert kind == 3 and flags == 0b0010  # QoS 1, neither retained nor a duplicate
    assert body[:2] == b"\x00\x15" and body[2:23] == b"s4g/fur/data/h1/state" and body[23:25] == b"\x00\x07"


def test_lean_client_refuses_what_it_does_not_speak():
    with pytest.raises(ValueError, match=r"plain MQTT 3\.1\.1"):
        LeanMqttBackend(BrokerAddress("mqtt", "127.0.0.1", 1, tls=True), subscribe="#", client_id="x")
    with pytest.raises(ValueError, match="QoS 0 or 1"):
        LeanMqttBackend(BrokerAddress("mqtt", "127.0.0.1", 1), subscribe="#", client_id="x", subscribe_qos=2)


def test_a_step_goes_on_the_wire_when_the_bus_waits_for_it_unchanged():
    """The plain embedded broker gets the lean client; publications are written when the bus waits for them,
    as QoS 1, not retained, with the bus's topic and payload byte for byte."""
    with MessageBus({"default": "direct", "roles": {"data": "embedded"}}, seed=1, start=START) as bus:
        assert isinstance(bus._roles["data"].backend, LeanMqttBackend)
        assert not isinstance(bus._roles["control"].backend, LeanMqttBackend)
        host, port = bus.endpoint("data")
        seen: list[tuple[str, bytes, int, bool]] = []
        cond, subscribed = threading.Condition(), threading.Event()

        def on_message(_c, _u, msg):
            with cond:
                seen.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
                cond.notify_all()

        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
        watcher.on_message = on_message
        watcher.on_subscribe = lambda *_: subscribed.set()
        watcher.connect(host, port)
        watcher.loop_start()
        try:
            watcher.subscribe("s4g/#", 1)
            assert subscribed.wait(5)
            sub = bus.subscribe("data", "#", "dwh")
            for h in ("h1", "h2"):
                bus.publish("data", topics.data_topic("fur", h, "p_w"), [Record("p_w", value=2.5, unit="W")], 60, h)
            got = sub.deliver(60)
            assert [m.sender for m in got] == ["h1", "h2"] and not bus._roles["data"].backend._out
            with cond:
                assert cond.wait_for(lambda: len(seen) == 2, 5)
                assert sorted(seen) == sorted((m.topic, m.payload, 1, False) for m in got)
            # a publication nobody waits for goes out on its own (within 2 x LINGER_S)
            bus.publish("data", topics.data_topic("fur", "h3", "p_w"), [Record("p_w", value=1.0, unit="W")], 120, "h3")
            with cond:
                assert cond.wait_for(lambda: len(seen) == 3, 5)
                assert seen[2][0] == "s4g/fur/data/h3/p_w"
        finally:
            watcher.disconnect()
            watcher.loop_stop()


def test_a_lost_embedded_broker_fails_the_next_publication():
    bus = MessageBus({"default": "direct", "roles": {"data": "embedded"}, "timeout_s": 5}, seed=1,
                     start=START).open()
    try:
        backend = bus._roles["data"].backend
        assert isinstance(backend, LeanMqttBackend)
        bus._embedded.stop()  # the broker process ends: the reader sees the connection close
        backend._reader.join(5)
        assert not backend._reader.is_alive()
        with pytest.raises(BrokerUnavailable, match="closed by the broker"):
            bus.publish("data", topics.data_topic("fur", "h1", "p_w"), [Record("p_w", value=1.0)], 0, "h1")
        assert bus.in_flight() == 0  # the refused publication is not waited for
    finally:
        bus._timed_out = True  # nothing to wait for at close
        bus.close()
