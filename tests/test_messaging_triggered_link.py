"""A link that steps only when its source steps or something falls due (``BusLinkSim(triggered=True)``, mosaik's
hybrid type) hands its destination exactly what the same link stepping every minute hands it: the same values
at the same times, with injected delays and losses, communication-loss windows and publication periods, and the
same bus counters. Only its idle steps are gone (GESSCon's hourly plan crossed the control link 1440 times a day)."""

from datetime import UTC, datetime
from typing import ClassVar

import mosaik
import mosaik_api_v3
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cosim.messaging import MessageBus, topics
from cosim.messaging.link import BusLinkSim

START = datetime(2019, 6, 15, tzinfo=UTC)
UNTIL = 3600
SENDER = "Source-0.plan"
TOPIC = topics.control_topic("fur", "plan", "state")


class Source(mosaik_api_v3.Simulator):
    """Steps at the given times only; at its k-th step it outputs ``values[k]``."""

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"Plan": {"public": True, "params": [], "attrs": ["p_set_w"]}}})

    def init(self, sid, time_resolution=1.0, times=(), values=()):
        self.times, self.values, self.k = list(times), list(values), -1
        return self.meta

    def create(self, num, model):
        return [{"eid": "plan", "type": model}]

    def step(self, time, inputs, max_advance):
        self.k = self.times.index(time)
        later = [t for t in self.times if t > time]
        return later[0] if later else 10 * UNTIL

    def get_data(self, outputs):
        return {"plan": {"p_set_w": self.values[self.k]}}


class Sink(mosaik_api_v3.Simulator):
    """Reads the route every minute, as LESSAg reads the control link."""

    seen: ClassVar[dict[int, float | None]] = {}

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"Agent": {"public": True, "params": [], "attrs": ["p_set_w"]}}})

    def init(self, sid, time_resolution=1.0):
        Sink.seen = {}
        return self.meta

    def create(self, num, model):
        return [{"eid": "agent", "type": model}]

    def step(self, time, inputs, max_advance):
        (value,) = inputs["agent"]["p_set_w"].values()
        Sink.seen[time] = value
        return time + 60


class CountingLink(BusLinkSim):
    steps: ClassVar[list[int]] = []

    def step(self, time, inputs, max_advance):
        CountingLink.steps.append(time)
        return super().step(time, inputs, max_advance)


def run(triggered: bool, times, values, *, down=(), period_s=0, delay_s=0.0, loss=0.0):
    faults = {"control": {"delay": {"dist": "uniform", "low": 0, "high": delay_s} if delay_s else "0s",
                          "loss": loss}}
    bus = MessageBus({"default": "direct", "faults": faults}, seed=3, start=START)
    CountingLink.steps = []
    world = mosaik.World({"Source": {"python": f"{__name__}:Source"}, "Sink": {"python": f"{__name__}:Sink"},
                          "Link": {"python": f"{__name__}:CountingLink"}})
    try:
        src = world.start("Source", times=times, values=values).Plan()
        link = world.start("Link", step_size=60, bus=bus, attrs=["p_set_w"], triggered=triggered)
        route = link.Route(role="control", topic=TOPIC, sender=SENDER, source="plan", sender_kind="controller",
                           period_s=period_s, down=[list(w) for w in down])
        sink = world.start("Sink").Agent()
        world.connect(src, route, "p_set_w")
        world.connect(route, sink, "p_set_w")
        world.run(until=UNTIL, print_progress=False)
    finally:
        bus.close()
    return dict(Sink.seen), bus.stats()["control"], list(CountingLink.steps)


minutes = st.lists(st.integers(1, UNTIL // 60 - 1), max_size=8, unique=True).map(lambda m: [0, *sorted(60 * x for x in m)])
windows = st.lists(st.tuples(st.integers(0, UNTIL), st.integers(1, 900)).map(lambda w: (w[0], w[0] + w[1])),
                   max_size=2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(times=minutes, data=st.data(), down=windows, period_s=st.sampled_from([0, 0, 120, 300]),
       delay_s=st.sampled_from([0.0, 0.0, 45.0, 400.0]), loss=st.sampled_from([0.0, 0.3]))
@example(times=[0, 1800], data=None, down=[(100, 1000)], period_s=0, delay_s=400.0, loss=0.0)
def test_a_triggered_link_delivers_what_a_link_stepping_every_minute_delivers(times, data, down, period_s, delay_s,
                                                                              loss):
    values = ([1000.0 * (k % 3) for k in range(len(times))] if data is None  # a value may repeat: not republished
              else data.draw(st.lists(st.sampled_from([0.0, 1000.0, -500.0]), min_size=len(times),
                                      max_size=len(times))))
    kw = dict(down=down, period_s=period_s, delay_s=delay_s, loss=loss)
    every_minute = run(False, times, values, **kw)
    triggered = run(True, times, values, **kw)
    assert triggered[0] == every_minute[0]  # what the agent saw, minute by minute
    assert triggered[1] == every_minute[1]  # published, delayed, lost, delivered ...
    assert set(triggered[2]) <= set(every_minute[2]) == set(range(0, UNTIL, 60))
    assert set(times) <= set(triggered[2])


def test_a_triggered_link_steps_only_when_its_source_steps_or_a_delivery_falls_due():
    seen, stats, steps = run(True, [0, 1800], [5.0, 7.0])
    assert steps == [0, 1800]
    assert seen[1740] == 5.0 and seen[1800] == 7.0  # the same step's value, as with a link stepping every minute
    seen, stats, steps = run(True, [0, 1800], [5.0, 7.0], delay_s=400.0)
    assert stats["delayed"] == 2 and len(steps) == 4  # each message is delivered at the first minute it is due
    assert seen == run(False, [0, 1800], [5.0, 7.0], delay_s=400.0)[0]
    # a communication loss from 10 to 40 min: the plan of 30 min is published when the link is back
    seen, stats, steps = run(True, [0, 1800], [5.0, 7.0], down=[(600, 2400)])
    assert steps == [0, 1800, 2400] and seen[2340] == 5.0 and seen[2400] == 7.0
