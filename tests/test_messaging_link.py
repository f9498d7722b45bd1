"""The link simulator (cosim.messaging.link) under bad input: a message that does not fit a route is rejected
whole, counted and kept as a dead letter; the route keeps its last good value and the run goes on.

Regressions of issue 12 ("one message aborts a run"): a record named ``p_set_w/abc`` ended a run with a
ValueError in the link's hold, ``p_set_w/30000000`` allocated a 30-million-element vector (200 MB)."""

import tracemalloc
from datetime import datetime, UTC

import pytest

from cosim.messaging import MessageBus, topics
from cosim.messaging.link import BusLinkSim

START = datetime(2019, 6, 15, tzinfo=UTC)
SENDER = "Agent-0.lessag_h1"
TOPIC = topics.smx_meas_topic("fur", "lessag_h1", "state")
BASE = "fur/lessag_h1/"


@pytest.fixture
def link():
    bus = MessageBus({"default": "direct"}, seed=1, start=START)
    sim = BusLinkSim()
    sim.init("BusLink0", step_size=60, bus=bus, attrs=["p_set_w", "v_pu"])
    (route,) = sim.create(1, "Route", role="smx", topic=TOPIC, sender=SENDER, source="lessag_h1",
                          sender_kind="agent")
    sim.setup_done()
    sim.eid = route["eid"]
    yield sim
    sim.finalize()
    bus.close()


def _step(sim, t, p_set_w=(1000.0, -500.0), v_pu=1.01):
    sim.step(t, {sim.eid: {"p_set_w": {SENDER: list(p_set_w)}, "v_pu": {SENDER: v_pu}}}, t + 60)
    return sim.get_data({sim.eid: ["p_set_w", "v_pu"]})[sim.eid]


def _raw(sim, t, records: str, sender=SENDER):
    records = records.replace("{", f'{{"bn":"{BASE}",', 1)  # the base name on the first record
    sim.bus.publish_raw("smx", TOPIC, f"[{records}]".encode(), t, sender)


BAD_RECORDS = [
    '{"n":"p_set_w/abc","u":"W","v":1}',          # once a ValueError in the hold: the run ended
    '{"n":"p_set_w/30000000","u":"W","v":1}',     # once a 30-million-element vector (200 MB)
    '{"n":"p_set_w/99999999999999999999","v":1}',
    '{"n":"p_set_w/-1","v":1}',
    '{"n":"p_set_w/2","v":1}',                    # the vector has two elements
    '{"n":"v_pu/0","v":1}',                       # a scalar given an index
    '{"n":"v_pu","vs":"high"}',                   # text is only nan, inf, -inf
    '{"n":"v_pu","s":3}',                         # a sum: no value the route can hold
    '{"n":"v_pu","vd":"AAAA"}',
]


@pytest.mark.parametrize("record", BAD_RECORDS)
def test_a_record_that_does_not_fit_is_rejected_and_counted(link, record):
    assert _step(link, 0) == {"p_set_w": [1000.0, -500.0], "v_pu": 1.01}
    _raw(link, 30, record)
    out = _step(link, 60, p_set_w=(7.0, 8.0), v_pu=0.99)  # the good message of this step still applies
    assert out == {"p_set_w": [7.0, 8.0], "v_pu": 0.99}
    st = link.bus.stats()["smx"]
    assert st["rejected"] == 1 and st["dead_letters"] == 1
    (dead,) = link.bus.dead_letters()
    assert dead.topic == TOPIC and "rejected by BusLink0" in dead.reason


def test_a_bad_message_changes_no_held_value(link):
    _step(link, 0)
    _raw(link, 60, '{"n":"v_pu","v":0.5},{"n":"p_set_w/abc","v":1}')  # one bad record: the whole message goes
    link.step(60, {}, 120)
    assert link.get_data({link.eid: ["p_set_w", "v_pu"]})[link.eid] == {"p_set_w": [1000.0, -500.0], "v_pu": 1.01}


def test_a_huge_index_allocates_nothing(link):
    _step(link, 0)
    tracemalloc.start()
    try:
        _raw(link, 60, '{"n":"p_set_w/30000000","u":"W","v":1}')
        link.step(60, {}, 120)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # was 240 MB
    assert link.bus.stats()["smx"]["rejected"] == 1


def test_another_publisher_on_a_route_topic_is_rejected(link):
    """Only the route's publisher feeds it: a message from anyone else (here a second in-process sender; on a
    real broker a foreign client) is rejected whole, however valid its SenML."""
    _step(link, 0)
    _raw(link, 60, '{"n":"v_pu","v":0.5}', sender="intruder")
    assert _step(link, 60, v_pu=1.02)["v_pu"] == 1.02
    link.step(120, {}, 180)
    assert link.get_data({link.eid: ["v_pu"]})[link.eid] == {"v_pu": 1.02}
    (dead,) = link.bus.dead_letters()
    assert dead.sender == "intruder" and "not the publisher of this route" in dead.reason


def test_non_finite_values_still_travel_as_text(link):
    out = _step(link, 0, p_set_w=(float("nan"), float("inf")), v_pu=float("-inf"))
    assert out["v_pu"] == float("-inf") and out["p_set_w"][1] == float("inf") and out["p_set_w"][0] != out["p_set_w"][0]
    assert link.bus.stats()["smx"]["rejected"] == 0


def test_pack_records_come_in_attribute_order_whatever_mosaik_hands_over():
    """Issue 19: mosaik's inputs follow a set's order (the string hash seed); the pack must not."""
    packs = []
    for order in (["v_pu", "p_set_w"], ["p_set_w", "v_pu"]):
        bus = MessageBus({"default": "direct"}, seed=1, start=START)
        sim = BusLinkSim()
        sim.init("BusLink0", step_size=60, bus=bus, attrs=order)
        (route,) = sim.create(1, "Route", role="smx", topic=TOPIC, sender=SENDER, source="lessag_h1")
        sim.setup_done()
        values = {"p_set_w": {SENDER: [1.0, 2.0]}, "v_pu": {SENDER: 1.0}}
        sim.step(0, {route["eid"]: {a: values[a] for a in order}}, 60)
        sub = bus.subscribe("smx", "#", "probe")
        sim.step(60, {route["eid"]: {a: {SENDER: [3.0, 4.0] if a == "p_set_w" else 0.9} for a in order}}, 120)
        packs.append([m.payload for m in sub.deliver(60)])
        sim.finalize()
        bus.close()
    assert packs[0] == packs[1] and len(packs[0]) == 1
