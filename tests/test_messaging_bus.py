"""Message bus semantics in direct mode: ordering, delay, loss, corruption, publish ACL, dead letters, retained
messages, per-site SMX brokers, statistics, and the scenario spec."""

from __future__ import annotations

import logging
from datetime import datetime, UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cosim.messaging import (EXTERNAL_SENDER, MessageBus, MessagingSpec, PublishNotAllowed, Record, SenMLError,
                             TopicError, messages_signature, topics)
from cosim.messaging.config import parse_broker_url, parse_seconds
from cosim.messaging.faults import FaultInjector, stream_seed

START = datetime(2021, 6, 1, tzinfo=UTC)
P = topics.data_topic("fur", "h1", "p_w")


def W(v, t=None, name="p_w"):
    return Record(name, value=float(v), unit="W", time=t)


@pytest.fixture
def bus():
    with MessageBus({"default": "direct"}, seed=1, start=START) as b:
        b.register("gesscon", "controller")
        yield b


def test_publish_deliver_round_trip_with_sim_times(bus):
    sub = bus.subscribe("data", "s4g/+/data/#", "agg")
    receipt = bus.publish("data", P, [W(-1500), W(0.4, t=30, name="soc")], t_s=60, sender="h1")
    assert receipt.seq == 1 and receipt.t_due == 60 and not receipt.lost
    (msg,) = sub.deliver(60)
    assert msg.topic == P and msg.sender == "h1" and msg.t_s == 60 and msg.role == "data"
    assert [r.name for r in msg.records] == ["fur/h1/p_w", "fur/h1/soc"]
    assert [r.time for r in msg.records] == [60.0, 30.0]  # simulated seconds, None -> send time
    assert msg.value("p_w") == -1500.0 and msg.by_name()["soc"].value == 0.4
    assert msg.payload.startswith(b'[{"bn":"fur/h1/"')
    assert sub.deliver(60) == []  # delivered once


def test_ordering_by_due_time_send_time_sender_seq_not_publish_order(bus):
    sub = bus.subscribe("data", "s4g/fur/data/#", "x")
    bus.publish("data", topics.data_topic("fur", "b", "p_w"), [W(1)], 10, "b")
    bus.publish("data", topics.data_topic("fur", "a", "p_w"), [W(2)], 10, "a")
    bus.publish("data", topics.data_topic("fur", "a", "p_w"), [W(3)], 5, "a")
    bus.publish("data", topics.data_topic("fur", "c", "p_w"), [W(4)], 10, "a")
    got = [(m.t_s, m.sender, m.seq) for m in sub.deliver(10)]
    assert got == [(5, "a", 2), (10, "a", 1), (10, "a", 3), (10, "b", 1)]


def test_deliver_only_returns_messages_due(bus):
    sub = bus.subscribe("data", "#", "x")
    bus.publish("data", P, [W(1)], 100, "h1")
    assert sub.deliver(99) == []
    assert len(sub.deliver(100)) == 1


def test_wildcard_filters_and_subscriber_isolation(bus):
    a = bus.subscribe("data", "s4g/+/data/+/p_w", "a")
    b = bus.subscribe("data", "s4g/fur/data/h2/#", "b")
    bus.publish("data", P, [W(1)], 0, "h1")
    bus.publish("data", topics.data_topic("fur", "h2", "p_w"), [W(2)], 0, "h2")
    bus.publish("data", topics.data_topic("fur", "h2", "soc"), [Record("soc", value=0.5)], 0, "h2")
    assert [m.topic for m in a.deliver(0)] == [P, "s4g/fur/data/h2/p_w"]
    assert [m.topic for m in b.deliver(0)] == ["s4g/fur/data/h2/p_w", "s4g/fur/data/h2/soc"]
    assert bus.stats()["data"]["delivered"] == 4


def test_subscription_sees_only_later_messages_and_deliver_shortcut(bus):
    bus.publish("data", P, [W(1)], 0, "h1")
    assert bus.deliver("data", "#", 0, subscriber="late") == []
    bus.publish("data", P, [W(2)], 1, "h1")
    assert [m.value("p_w") for m in bus.deliver("data", "#", 1, subscriber="late")] == [2.0]
    assert bus.stats()["data"]["unrouted"] == 1


def test_retained_message_reaches_late_subscriber(bus):
    sched = [Record("p_w", value=float(h), unit="W", time=3600 * h) for h in range(24)]
    topic = topics.schedule_topic("fur", "ess1")
    bus.publish("control", topic, sched, 0, "gesscon", retain=True)
    bus.publish("control", topic, sched[:2], 10, "gesscon", retain=True)
    late = bus.subscribe("control", "s4g/fur/control/+/schedule/#", "lessag")
    (msg,) = late.deliver(10)
    assert msg.retained and len(msg.records) == 2 and msg.t_s == 10


def test_gesscon_schedule_pack(bus):
    sub = bus.subscribe("control", "s4g/fur/control/ess1/#", "lessag")
    sched = [Record("p_w", value=1000.0 * (h % 3 - 1), unit="W", time=86400 + 3600 * h) for h in range(24)]
    bus.publish("control", topics.schedule_topic("fur", "ess1"), sched, 80000, "gesscon")
    (msg,) = sub.deliver(80000)
    assert [r.time for r in msg.records] == [86400 + 3600 * h for h in range(24)]
    assert [r.value for r in msg.records] == [r.value for r in sched]
    assert msg.payload.count(b'"bt"') == 1 and msg.payload.count(b'"u"') == 0  # one compact pack


# -------------------------------------------------------------------------------------------------- ACL
def test_only_control_components_publish_on_control(bus):
    topic = topics.control_topic("fur", "ess1", "p_w")
    with pytest.raises(PublishNotAllowed, match="may not publish on the control broker"):
        bus.publish("control", topic, [W(1)], 0, "h1")
    bus.register("h1", "device")
    with pytest.raises(PublishNotAllowed, match=r"\(device\)"):
        bus.publish("control", topic, [W(1)], 0, "h1")
    bus.publish("control", topic, [W(1)], 0, "gesscon")
    bus.publish("data", P, [W(1)], 0, "h1")  # data is open to everyone
    st = bus.stats()["control"]
    assert st["refused"] == 2 and st["published"] == 1
    with pytest.raises(ValueError, match="unknown sender kind"):
        bus.register("x", "robot")


def test_acl_patterns_from_spec():
    spec = MessagingSpec(default="direct", publish_acl={"control": ["profess-*"], "smx": ["agent", "device"]})
    with MessageBus(spec) as b:
        b.publish("control", topics.control_topic("s", "e", "p_w"), [W(1)], 0, "profess-h1")
        with pytest.raises(PublishNotAllowed):
            b.publish("smx", topics.smx_set_topic("s", "e", "p_w"), [W(1)], 0, "gesscon")


def test_topic_must_belong_to_role(bus):
    with pytest.raises(TopicError, match="belongs to the data role"):
        bus.publish("control", P, [W(1)], 0, "gesscon")
    with pytest.raises(TopicError, match="not in the S4G layout"):
        bus.publish("data", "other/x/y/z", [W(1)], 0, "h1")
    with pytest.raises(TopicError, match="wildcard"):
        bus.publish("data", "s4g/+/data/h1/p_w", [W(1)], 0, "h1")
    with pytest.raises(TopicError, match="can never match"):
        bus.subscribe("data", "s4g/+/control/#")
    with pytest.raises(TopicError):
        bus.subscribe("data", "s4g/#/x")


def test_invalid_records_raise_at_publish(bus):
    with pytest.raises(SenMLError, match="unknown unit"):
        bus.publish("data", P, [Record("p_w", value=1.0, unit="watts")], 0, "h1")
    with pytest.raises(SenMLError, match="expected a Record"):
        bus.publish("data", P, [{"n": "p_w"}], 0, "h1")  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------ dead letters
def test_bad_payloads_become_dead_letters_never_exceptions(bus, caplog):
    sub = bus.subscribe("data", "#", "x")
    caplog.set_level(logging.WARNING, logger="cosim.messaging.bus")
    bus.publish_raw("data", P, b'[{"n":"p_w","v":"high"}]', 5, "h1")
    bus.publish_raw("data", P, b"\xff\xfegarbage", 6, "h1")
    bus.publish("data", P, [W(7)], 7, "h1")
    assert [m.value("p_w") for m in sub.deliver(10)] == [7.0]
    dead = bus.dead_letters()
    assert [(d.sender, d.seq, d.t_s) for d in dead] == [("h1", 1, 5), ("h1", 2, 6)]
    assert "must be a number" in dead[0].reason and "not UTF-8" in dead[1].reason
    st = bus.stats()["data"]
    assert st["decode_errors"] == 2 and st["dead_letters"] == 2 and st["delivered"] == 1
    assert sum("dead letter" in r.message for r in caplog.records) == 2


# ------------------------------------------------------------------------------------------------ faults
def test_fixed_delay():
    with MessageBus({"default": "direct", "faults": {"data": {"delay": "90s"}}}) as b:
        sub = b.subscribe("data", "#")
        r = b.publish("data", P, [W(1)], 10, "h1")
        assert r.t_due == 100
        assert sub.deliver(99) == []
        (m,) = sub.deliver(100)
        assert (m.t_s, m.t_due) == (10, 100)
        assert b.stats()["data"]["delayed"] == 1


def test_delay_reorders_by_arrival_time():
    spec = {"default": "direct", "faults": {"data": {"delay": {"dist": "uniform", "low": 0, "high": 100}}}}
    with MessageBus(spec, seed=5) as b:
        sub = b.subscribe("data", "#")
        dues = [b.publish("data", P, [W(i)], i, "h1").t_due for i in range(50)]
        got = sub.deliver(10_000)
        assert [m.t_due for m in got] == sorted(dues)
        assert len(set(dues)) == 50 and dues != sorted(dues)


def test_loss_is_seeded_counted_and_reproducible():
    def run(seed):
        spec = {"default": "direct", "faults": {"data": {"loss": 0.3}}}
        with MessageBus(spec, seed=seed) as b:
            sub = b.subscribe("data", "#")
            lost = [b.publish("data", P, [W(i)], i, "h1").lost for i in range(400)]
            got = sub.deliver(1000)
            st = b.stats()["data"]
            assert st["lost"] == sum(lost) and len(got) == 400 - sum(lost) == st["delivered"]
            return lost
    a, b_, c = run(1), run(1), run(2)
    assert a == b_ and a != c
    assert 0.2 < sum(a) / len(a) < 0.4


def test_adding_a_topic_does_not_shift_other_draws():
    spec = {"default": "direct", "faults": {"data": {"loss": 0.5, "delay": {"dist": "exponential", "mean": 30}}}}
    other = topics.data_topic("fur", "h9", "p_w")

    def draws(with_other):
        with MessageBus(spec, seed=3) as b:
            out = []
            for i in range(100):
                if with_other:
                    b.publish("data", other, [W(i)], i, "h9")
                r = b.publish("data", P, [W(i)], i, "h1")
                out.append((r.lost, r.t_due))
            return out
    assert draws(False) == draws(True)


def test_changing_loss_does_not_shift_delays():
    def delays(loss):
        spec = {"default": "direct", "faults": {"data": {"loss": loss, "delay": {"dist": "normal", "mean": 5, "std": 2}}}}
        with MessageBus(spec, seed=3) as b:
            return [b.publish("data", P, [W(i)], i, "h1").t_due for i in range(100)]
    assert delays(0.0) == delays(0.5)


def test_fault_topic_filter_and_corruption():
    spec = {"default": "direct",
            "faults": {"control": {"corrupt": 1.0, "topic": "s4g/+/control/+/schedule/#"}}}
    with MessageBus(spec, seed=1) as b:
        b.register("g", "controller")
        sub = b.subscribe("control", "#")
        r1 = b.publish("control", topics.schedule_topic("fur", "ess1"), [W(1, t=0)], 0, "g")
        r2 = b.publish("control", topics.control_topic("fur", "ess1", "p_w"), [W(2)], 0, "g")
        assert r1.corrupted and not r2.corrupted
        assert [m.topic for m in sub.deliver(0)] == ["s4g/fur/control/ess1/p_w"]
        (dead,) = b.dead_letters()
        assert dead.sender == "g" and "invalid SenML" in dead.reason
        st = b.stats()["control"]
        assert st["corrupted"] == 1 and st["decode_errors"] == 1


def test_fault_injector_streams_are_stable():
    assert stream_seed(1, "data", "t") == stream_seed(1, "data", "t") != stream_seed(2, "data", "t")
    spec = MessagingSpec(faults={"data": {"loss": 0.5}}).faults["data"]
    inj1, inj2 = FaultInjector({"data": spec}, 9), FaultInjector({"data": spec}, 9)
    assert [inj1.draw("data", "a", 10).lost for _ in range(50)] == [inj2.draw("data", "a", 10).lost for _ in range(50)]


# ------------------------------------------------------------------------------------------- SMX per site
def test_smx_per_site_role_keys_and_base_role_subscriptions():
    spec = {"default": "direct", "roles": {"smx:h2": "direct"}, "faults": {"smx:h2": {"delay": 5}}}
    with MessageBus(spec) as b:
        assert set(b.describe()) == {"smx", "aggregator", "data", "control", "smx:h2"}
        sub = b.subscribe("smx", "s4g/+/smx/+/meas/#", "lessag")
        b.publish("smx", topics.smx_meas_topic("h1", "inv", "p_w"), [W(1)], 0, "inv1")
        b.publish("smx", topics.smx_meas_topic("h2", "inv", "p_w"), [W(2)], 0, "inv2")
        b.publish("smx:h2", topics.smx_meas_topic("h2", "bat", "p_w"), [W(3)], 0, "bat2")
        got = sub.deliver(10)
        assert [(m.role_key, m.t_due) for m in got] == [("smx", 0), ("smx:h2", 5), ("smx:h2", 5)]
        assert b.stats()["smx:h2"]["published"] == 2 and b.stats()["smx"]["published"] == 1
        with pytest.raises(TopicError, match="site 'h2'"):
            b.publish("smx:h2", topics.smx_meas_topic("h1", "inv", "p_w"), [W(1)], 0, "x")


# ----------------------------------------------------------------------------------------- determinism
def test_same_seed_same_deliveries_and_stats():
    spec = {"default": "direct",
            "faults": {"data": {"loss": 0.2, "delay": {"dist": "uniform", "low": 0, "high": 120}}}}

    def run():
        with MessageBus(spec, seed=42, start=START) as b:
            sub = b.subscribe("data", "#")
            out = []
            for t in range(0, 3600, 60):
                for h in range(4):
                    b.publish("data", topics.data_topic("fur", f"h{h}", "p_w"), [W(t + h)], t, f"h{h}")
                out += sub.deliver(t)
            return messages_signature(out), b.stats()
    assert run() == run()


def test_foreign_message_in_direct_mode_is_impossible_but_external_sender_constant_exists():
    assert EXTERNAL_SENDER == "<external>"


# ------------------------------------------------------------------------------------------------- spec
def test_messaging_spec_validation():
    spec = MessagingSpec.model_validate({
        "roles": {"smx": "embedded", "smx:skive": "mosquitto://127.0.0.1:1883", "data": "mqtts://u:p@h?ca=/x.pem",
                  "control": "direct"},
        "faults": {"data": {"delay": "2min", "loss": 0.1}, "control": {"delay": {"dist": "uniform", "low": 0, "high": 60}}},
    })
    assert spec.broker_for("smx:skive").startswith("mosquitto://") and spec.broker_for("smx:fur") == "embedded"
    assert spec.broker_for("aggregator") == "embedded"
    assert spec.faults["data"].delay.s == 120 and spec.faults_for("smx:x") is None
    for bad in ({"roles": {"dso": "direct"}}, {"roles": {"data:x": "direct"}}, {"roles": {"data": "amqp://x"}},
                {"faults": {"data": {"loss": 1.5}}}, {"faults": {"data": {"delay": "-1s"}}},
                {"faults": {"data": {"topic": "a/#/b"}}}, {"unknown": 1}, {"publish_acl": {"smx:x": ["device"]}},
                {"faults": {"data": {"delay": {"dist": "exponential", "mean": 0}}}}):
        with pytest.raises(ValidationError):
            MessagingSpec.model_validate(bad)


def test_broker_url_parsing():
    a = parse_broker_url("mosquitto://127.0.0.1:1883")
    assert (a.kind, a.host, a.port, a.tls, a.protocol) == ("mqtt", "127.0.0.1", 1883, False, 3)
    a = parse_broker_url("mqtts://dev%40x:s3cr%3At@broker.local?ca=/ca.pem&v=5&insecure=1")
    assert (a.port, a.tls, a.username, a.password, a.ca, a.protocol, a.insecure) == (
        8883, True, "dev@x", "s3cr:t", "/ca.pem", 5, True)
    assert "s3cr" not in a.label
    assert parse_broker_url("embedded").kind == "embedded"
    for bad in ("mqtt://", "mqtt://h:99999", "mqtt://h?foo=1", "mqtt://h/path", "mqtt://h?v=4x", "tcp://h"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)
    assert parse_seconds("250ms") == 0.25 and parse_seconds(3) == 3.0


def test_bus_rejects_naive_or_early_start():
    with pytest.raises(ValueError, match="timezone-aware"):
        MessageBus({"default": "direct"}, start=datetime(2021, 1, 1))
    with pytest.raises(ValueError, match="1978"):
        MessageBus({"default": "direct"}, start=0)


def test_topics_layout_helpers():
    info = topics.parse_topic(topics.schedule_topic("fur", "ess1"))
    assert (info.site, info.role, info.device, info.kind, info.quantity) == ("fur", "control", "ess1", "schedule", "p_w")
    assert topics.parse_topic(topics.agg_up_topic("fur", "p_w")).base_name == "fur/"
    assert topics.role_filter("smx:h1") == "s4g/h1/smx/#" and topics.role_filter("data") == "s4g/+/data/#"
    assert topics.matches("s4g/#", "s4g") and topics.matches("s4g/+/data/#", P)
    assert not topics.matches("+/x", "$SYS/x") and not topics.matches("s4g/+", "s4g/a/b")
    for bad in ("s4g/fur/data/h1", "s4g/fur/xyz/h1/p", "s4g/fur/smx/h1/get/p", "s4g/fur/agg/sideways/p",
                "s4g/-fur/data/h1/p"):
        with pytest.raises(TopicError):
            topics.parse_topic(bad)
    with pytest.raises(TopicError):
        topics.data_topic("fur", "h 1", "p_w")


# ------------------------------------------------------------------------------------------- properties
_events = st.lists(st.tuples(st.integers(0, 300), st.sampled_from(["a", "b", "c"]), st.sampled_from(["h1", "h2"])),
                   min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(_events, st.lists(st.integers(0, 400), min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_every_message_delivered_once_in_order(events, polls, seed):
    spec = {"default": "direct", "faults": {"data": {"delay": {"dist": "exponential", "mean": 20}, "loss": 0.1}}}
    with MessageBus(spec, seed=seed) as b:
        sub = b.subscribe("data", "#")
        sent = []
        for t, sender, dev in sorted(events):
            r = b.publish("data", topics.data_topic("s", dev, "p_w"), [W(t)], t, sender)
            if not r.lost:
                sent.append((r.t_due, t, sender, r.seq))
        got = []
        for t in sorted(polls) + [10**9]:
            batch = sub.deliver(t)
            assert all(m.t_due <= t for m in batch)
            assert [m.sort_key for m in batch] == sorted(m.sort_key for m in batch)
            got += batch
        assert [m.sort_key for m in got] == sorted(sent)  # everything not lost, once, in (due, sent, sender, seq) order
