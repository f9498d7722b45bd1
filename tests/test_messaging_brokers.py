"""The bus with brokers in the loop: the embedded amqtt broker's lifecycle, identical results in direct,
embedded and Mosquitto mode, foreign publishers, stale retained messages and unreachable brokers."""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import datetime, UTC

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cosim.messaging import (EXTERNAL_SENDER, BrokerUnavailable, DeliveryTimeout, EmbeddedBroker, MessageBus,
                             Record, messages_signature, topics)

START = datetime(2021, 6, 1, tzinfo=UTC)
MOSQUITTO = ("127.0.0.1", 1883)


def _reachable(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=0.5):
            return True
    except OSError:
        return False


needs_mosquitto = pytest.mark.skipif(not _reachable(MOSQUITTO),
                                     reason="no Mosquitto on 127.0.0.1:1883 (start one to run this test)")


def _client(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _wait(bus: MessageBus, predicate, timeout: float = 5.0) -> bool:
    """Wait (``bus.wait_for``: woken by every arrival) until ``predicate()`` holds."""
    try:
        bus.wait_for(lambda _stats: predicate(), timeout)
    except DeliveryTimeout:
        return False
    return True


# ------------------------------------------------------------------------------------------ embedded broker
def test_embedded_broker_start_stop_free_port_no_leaked_threads():
    before = set(threading.enumerate())
    with EmbeddedBroker() as a, EmbeddedBroker() as b:
        assert a.port > 0 and b.port > 0 and a.port != b.port and a.running
        assert a.url == f"mqtt://127.0.0.1:{a.port}"
        got = threading.Event()
        c = _client(a.port, "probe")
        c.on_message = lambda *_: got.set()
        sub = threading.Event()
        c.on_subscribe = lambda *_: sub.set()
        c.subscribe("s4g/#", 1)
        assert sub.wait(5)
        c.publish("s4g/x/data/d/q", b"1", 1)
        assert got.wait(5)
        c.disconnect()
        c.loop_stop()
        port = a.port
    assert not a.running
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert set(threading.enumerate()) == before
    a.stop()  # idempotent


def test_bus_with_embedded_broker_closes_cleanly():
    before = set(threading.enumerate())
    bus = MessageBus(seed=1, start=START).open()  # 'embedded' is the default for every role
    assert all(v.startswith("embedded (mqtt://127.0.0.1:") for v in bus.describe().values())
    sub = bus.subscribe("data", "#")
    bus.publish("data", topics.data_topic("fur", "h1", "p_w"), [Record("p_w", value=1.0, unit="W")], 0, "h1")
    assert [m.value("p_w") for m in sub.deliver(0)] == [1.0]
    bus.close()
    bus.close()
    assert set(threading.enumerate()) == before
    with pytest.raises(BrokerUnavailable, match="closed"):
        bus.publish("data", topics.data_topic("fur", "h1", "p_w"), [Record("p_w", value=1.0)], 1, "h1")


def test_unreachable_broker_raises_broker_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        bus = MessageBus({"default": "direct", "roles": {"data": f"mqtt://127.0.0.1:{port}"}, "timeout_s": 2})
        with pytest.raises(BrokerUnavailable, match="cannot connect"):
            bus.open()
    assert bus.in_flight() == 0


# ----------------------------------------------------------------------------------- determinism by mode
def _script(bus: MessageBus) -> tuple[list, list, dict]:
    """A small co-simulation's traffic: device data every minute on 3 houses, a GESSCon schedule, set-points,
    two bad payloads, a retained schedule for a late subscriber; delays, loss and corruption injected."""
    bus.register("gesscon", "controller")
    data = bus.subscribe("data", "s4g/+/data/#", "gesscon")
    ctrl = bus.subscribe("control", "s4g/fur/control/#", "lessag")
    smx = bus.subscribe("smx", "s4g/fur/smx/+/meas/#", "lessag")
    out = []
    for t in range(0, 1800, 60):
        for h in range(3):
            bus.publish("data", topics.data_topic("fur", f"h{h}", "p_w"),
                        [Record("p_w", value=float((t * 7 + h) % 900 - 450), unit="W"),
                         Record("soc", value=0.5 + h / 10, unit="/")], t, f"h{h}")
            bus.publish("smx", topics.smx_meas_topic("fur", f"inv{h}", "p_w"),
                        [Record("p_w", value=float(t + h), unit="W")], t, f"inv{h}")
        if t % 600 == 0:
            sched = [Record("p_w", value=float(100 * ((h + t) % 7) - 300), unit="W", time=t + 3600 * h)
                     for h in range(24)]
            bus.publish("control", topics.schedule_topic("fur", "ess1"), sched, t, "gesscon", retain=True)
            bus.publish("control", topics.control_topic("fur", "ess1", "p_w"), [Record("p_w", value=-1.5e3)],
                        t, "gesscon")
        if t == 300:
            bus.publish_raw("data", topics.data_topic("fur", "h0", "p_w"), b'[{"n":"p_w","v":NaN}]', t, "h0")
            bus.publish_raw("data", topics.data_topic("fur", "h1", "p_w"), b"not json", t, "h1")
        out += data.deliver(t) + ctrl.deliver(t) + smx.deliver(t)
    late = bus.subscribe("control", "s4g/+/control/+/schedule/#", "late")
    out += late.deliver(10_000) + data.deliver(10_000) + ctrl.deliver(10_000) + smx.deliver(10_000)
    dead = [(d.role_key, d.topic, d.reason, d.t_s, d.sender, d.seq) for d in bus.dead_letters()]
    bus.flush()
    return messages_signature(out), dead, bus.stats()


FAULTS = {
    "data": {"delay": {"dist": "uniform", "low": 0, "high": 150}, "loss": 0.1, "corrupt": 0.05},
    "control": {"delay": {"dist": "exponential", "mean": 30}, "loss": 0.2},
    "smx": {"delay": 1},
}


def _run(mode: str, namespace: str = "") -> tuple[list, list, dict]:
    spec = {"default": mode, "faults": FAULTS, "namespace": namespace, "timeout_s": 10}
    with MessageBus(spec, seed=2024, start=START) as bus:
        return _script(bus)


@pytest.fixture(scope="module")
def direct_run():
    return _run("direct")


def test_decoding_own_payloads_changes_nothing(direct_run):
    spec = {"default": "direct", "faults": FAULTS}
    with MessageBus(spec, seed=2024, start=START, decode_own=True) as bus:
        messages, dead, stats = _script(bus)
    assert all(s.pop("decode_mismatch") == 0 for s in stats.values())
    assert (messages, dead) == direct_run[:2]
    assert stats == {k: {kk: vv for kk, vv in v.items() if kk != "decode_mismatch"} for k, v in direct_run[2].items()}


def test_embedded_gives_the_same_results_as_direct(direct_run):
    messages, dead, stats = direct_run
    assert len(messages) > 100 and len(dead) >= 2  # the script exercises what it should
    assert stats["data"]["lost"] > 0 and stats["data"]["corrupted"] > 0 and stats["control"]["lost"] > 0
    assert _run("embedded") == direct_run


@needs_mosquitto
def test_mosquitto_gives_the_same_results_as_direct(direct_run):
    assert _run(f"mosquitto://{MOSQUITTO[0]}:{MOSQUITTO[1]}", namespace=f"test-{uuid.uuid4().hex}") == direct_run


@needs_mosquitto
def test_mixed_roles_match_direct(direct_run):
    spec = {"roles": {"smx": "embedded", "data": f"mosquitto://{MOSQUITTO[0]}:{MOSQUITTO[1]}", "control": "direct"},
            "faults": FAULTS, "namespace": f"test-{uuid.uuid4().hex}"}
    with MessageBus(spec, seed=2024, start=START) as bus:
        assert _script(bus) == direct_run


# ------------------------------------------------------------------------------- real-broker specifics
def test_foreign_publishers_are_delivered_or_dead_lettered():
    with EmbeddedBroker() as broker:
        spec = {"default": "direct", "roles": {"data": f"mqtt://127.0.0.1:{broker.port}"}}
        with MessageBus(spec, start=START) as bus:
            sub = bus.subscribe("data", "#", "x")
            bus.publish("data", topics.data_topic("fur", "h1", "p_w"), [Record("p_w", value=1.0)], 120, "h1")
            assert len(sub.deliver(120)) == 1
            meter = _client(broker.port, "real-meter")
            meter.publish("s4g/fur/data/m1/p_w", b'[{"n":"fur/m1/p_w","u":"W","v":230.5,"t":-2}]', 1).wait_for_publish(5)
            meter.publish("s4g/fur/data/m1/p_w", b'{"power": 5}', 1).wait_for_publish(5)
            meter.publish("s4g/fur/data/m1", b"[]", 1).wait_for_publish(5)  # outside the layout
            assert _wait(bus, lambda: bus.stats()["data"]["foreign"] >= 3)
            meter.disconnect()
            meter.loop_stop()
            (msg,) = sub.deliver(180)
            assert msg.sender == EXTERNAL_SENDER and msg.t_s == 120 and msg.records[0].time == 118.0
            reasons = [d.reason for d in bus.dead_letters()]
            assert len(reasons) == 2 and "JSON array" in reasons[0] and "layout" in reasons[1]


def test_stale_retained_messages_on_a_real_broker_are_ignored():
    with EmbeddedBroker() as broker:
        old = _client(broker.port, "previous-run")
        old.publish("s4g/fur/control/ess1/p_w", b'[{"n":"fur/ess1/p_w","v":1}]', 1, retain=True).wait_for_publish(5)
        old.disconnect()
        old.loop_stop()
        spec = {"default": "direct", "roles": {"control": f"mqtt://127.0.0.1:{broker.port}"}}
        with MessageBus(spec, start=START) as bus:
            sub = bus.subscribe("control", "#", "x")
            assert _wait(bus, lambda: bus.stats()["control"]["stale_retained"] == 1)
            assert sub.deliver(10_000) == [] and bus.dead_letters() == []
