"""Carry mosaik connections over the S4G brokers: routes publish their inputs as SenML and output what the
bus delivers.

A connection ``src.attr -> dst.attr`` that the scenario puts on a broker role becomes
``src.attr -> Route.attr -> dst.attr``; a publish-only route (telemetry for the data warehouse) has no
destination. Each source has a topic ``s4g/{site}/{role}/{source}/.../state``; in each step the link
simulator publishes one SenML pack per topic with the source's new values, named ``{site}/{source}/{attr}``
(vectors ``.../{attr}/{i}``) with the unit the attribute name carries; an attribute that already is a SenML
pack (GESSCon's 24 hourly set-points) travels as its own message on ``.../{source}/schedule/{attr}``; an attribute
the route names in ``native`` (a family's own topic names, ``Family.topics``) as its own message on
``s4g/{site}/smx/{source}/native/{name}``, one record named ``name``, value = factor x ours. Then it
asks the bus for everything due by now; a route outputs the last value delivered for its source (None before
the first), as a subscriber holds the last message. The bus makes
delivery deterministic, so a run gives the same results with a role on ``direct``, on the embedded broker or
on Mosquitto; injected delay and loss show up downstream as held (stale) values.

A route carries its publisher's values only. A message on a route's topic from anyone else (a foreign MQTT
client on a real broker), or one with a record that does not fit the attribute it names (an index that is
not an integer below the vector's declared length, a scalar given an index, a value of the wrong kind), is
rejected as a whole: counted and kept as a dead letter by ``MessageBus.reject``, never applied, so it cannot
change the run nor make the link allocate what a peer asks for.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any, cast

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta

from cosim.messaging import senml, units
from cosim.messaging.bus import MessageBus
from cosim.messaging.errors import MessagingError
from cosim.messaging.senml import Record

log = logging.getLogger(__name__)

_UNIT_SUFFIXES = (("_eur_per_kwh", "EUR/kWh"), ("_wh", "Wh"), ("_var", "var"), ("_pu", "pu"), ("_w", "W"),
                  ("_a", "A"), ("_v", "V"), ("_s", "s"))


def unit_of(attr: str) -> str | None:
    """The SenML unit an attribute name carries (units are in our names), or None if it carries none."""
    if attr == "soc":
        return "/"
    for suffix, unit in _UNIT_SUFFIXES:
        if attr.endswith(suffix) and units.is_known(unit):
            return unit
    return None


def source_name(full_id: str) -> str:
    """A SenML-name-safe source name from a mosaik entity id ("Devices-0.fronius_1" -> "fronius_1")."""
    eid = full_id.split(".", 1)[-1]
    token = re.sub(r"[^A-Za-z0-9_.:\-]", "_", eid)
    return token if token[:1].isalnum() else f"x{token}"


@dataclass
class _Route:
    eid: str
    role: str
    topic: str
    sender: str
    source: str
    #: publish at most every period_s seconds (telemetry rates); 0 = on every change
    period_s: int = 0
    #: attr -> (topic name, factor): published under the source's own topic names (smx role only)
    native: dict[str, tuple[str, float]] | None = None
    #: [t0, t1) windows of a communication loss (cosim/events.py): nothing is published, receivers hold
    down: tuple[tuple[int, int], ...] = ()
    #: which publisher group of the link (cosim.messaging.link_groups): each publishes its own packs
    pack: int = 0

    def is_down(self, t_s: int) -> bool:
        return any(t0 <= t_s < t1 for t0, t1 in self.down)


def meta(attrs: list[str], triggered: bool = False) -> Meta:
    """A link steps on its own grid (``time-based``) or, ``triggered``, only when a source steps or a delivery,
    a window's end or a throttled publication falls due (``hybrid``: every input triggers, every output persists,
    so a destination reads the held value between steps as from a time-based link)."""
    model: dict[str, Any] = {"public": True,
                             "params": ["role", "topic", "sender", "sender_kind", "source", "period_s", "native",
                                        "down", "pack"],
                             "attrs": sorted(set(attrs))}
    if triggered:
        model |= {"trigger": model["attrs"], "persistent": model["attrs"]}
    return cast(Meta, {"api_version": "3.0", "type": "hybrid" if triggered else "time-based",
                       "models": {"Route": model}, "extra_methods": ["stats"]})


class BusLinkSim(mosaik_api_v3.Simulator):
    """Routes between two simulators over an in-process MessageBus (opened at setup; the world closes it).

mosaik sees cycles per simulator, so the world groups routes per (role, source simulator, destination
simulator) and merges groups into one link only where no same-time cycle closes (cosim.messaging.link_groups):
a local loop device -> agent -> device then passes two link simulators, and its one time-shifted edge keeps it
acyclic as without the broker. Each merged group keeps its own packs (``Route.pack``).
"""

    def __init__(self) -> None:
        super().__init__(meta([]))  # type: ignore[no-untyped-call]  # mosaik_api_v3: Simulator.__init__ is unannotated
        self.bus: MessageBus | None = None
        self.routes: dict[str, _Route] = {}
        self.step_size = 60
        self._subs: dict[tuple[str, str], Any] = {}
        self._sent: dict[tuple[int, str, str], Any] = {}  # (group, topic, attr) -> last value published
        self._last_pub: dict[tuple[int, str, str], int] = {}  # (group, topic, source) -> time of the last publication
        self._in_pack: dict[int, int] = {}  # group -> its routes so far
        self._held: dict[tuple[str, str], Any] = {}  # (route topic, attr) -> delivered value
        self._shape: dict[tuple[str, str], int | None] = {}  # (topic, attr) -> vector length, None for a scalar
        self._senders: dict[str, set[str]] = {}  # route topic -> the senders whose values it carries
        self._sensorthings: Any = None
        self._sensorthings_dir: str | None = None
        self.triggered = False
        self._wake = math.inf  # a triggered link's own next step for a publication held back by its period

    # mosaik passes a simulator's own parameters by keyword: narrower than the base's **sim_params
    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             step_size: int = 60, bus: MessageBus | None = None,
             attrs: list[str] | None = None, sensorthings_dir: str | None = None, triggered: bool = False) -> Meta:
        if bus is None:
            raise ValueError("BusLinkSim needs the in-process MessageBus (init param 'bus')")
        self.bus = bus
        self.sid = sid
        self.step_size = int(step_size)
        self.triggered = bool(triggered)
        self._sensorthings_dir = sensorthings_dir
        self.meta = meta(list(attrs or []), self.triggered)
        return self.meta

    def create(self, num: int, model: str, role: str, topic: str, sender: str,  # type: ignore[override]  # as init
               source: str, sender_kind: str = "controller", period_s: int = 0, native: dict[str, Any] | None = None,
               down: Any = (), pack: int = 0) -> list[CreateResult]:
        assert self.bus is not None
        out: list[CreateResult] = []
        names = {a: (str(n), float(f)) for a, (n, f) in native.items()} if native else None
        for _ in range(num):
            # numbered per group, so a group's routes keep the order they have in a link of their own
            k = self._in_pack.get(pack, 0)
            self._in_pack[pack] = k + 1
            eid = f"r{k}" if pack == 0 else f"r{k}-{pack}"
            windows = tuple((int(t0), int(t1)) for t0, t1 in down or ())
            self.routes[eid] = _Route(eid, role, topic, sender, source, int(period_s), names, windows, int(pack))
            self._senders.setdefault(topic, set()).add(sender)
            self.bus.register(sender, sender_kind)
            out.append({"eid": eid, "type": model})
        return out

    def setup_done(self) -> None:
        assert self.bus is not None
        self.bus.open()
        for route in self.routes.values():
            # the route's own topic and, below the device, any schedule packs it carries
            key = (route.role, f"{route.topic.rsplit('/', 1)[0]}/#")
            if key not in self._subs:
                self._subs[key] = self.bus.subscribe(route.role, key[1], subscriber=self.sid)
        if self._sensorthings_dir is not None:  # the DWH side of the Data Broker
            from cosim.messaging.sensorthings import SensorThingsRecorder

            self._sensorthings = SensorThingsRecorder(self.bus, self._sensorthings_dir)

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int | None:
        assert self.bus is not None
        packs: dict[tuple[int, str, str, str], dict[str, Record]] = {}
        for eid, attrs in sorted(inputs.items()):
            route = self.routes[eid]
            if route.down and route.is_down(time):
                continue  # the link is lost: nothing reaches the broker; published again once it is back
            due_key = (route.pack, route.topic, route.source)
            last = self._last_pub.get(due_key)
            if route.period_s and last is not None and last != time and time - last < route.period_s:
                self._wake = min(self._wake, last + route.period_s)  # a change held back is published then
                continue
            for attr, sources in sorted(attrs.items()):  # mosaik's order follows a set: not the same per process
                if len(sources) != 1:
                    raise ValueError(f"route {eid}.{attr} has {len(sources)} sources; a route carries one")
                value = next(iter(sources.values()))
                if route.native and attr in route.native:
                    self._publish_native(route, attr, value, time)
                    continue
                if value is None or _same(value, self._sent.get((route.pack, route.topic, attr))):
                    continue
                self._sent[(route.pack, route.topic, attr)] = value
                self._last_pub[due_key] = time
                if _is_senml_pack(value):  # already a SenML pack (a schedule): it travels as its own message
                    topic = self._pack_topic(route, attr)
                    records = self._pack_records(value)  # names repeat (one per hour): keep them all, in order
                    packs[(route.pack, route.role, topic, route.sender)] = {str(i): r for i, r in enumerate(records)}
                    continue
                pack = packs.setdefault((route.pack, route.role, route.topic, route.sender), {})
                records = _records(attr, value)
                scalar = len(records) == 1 and records[0].name == attr
                self._shape[(route.topic, attr)] = None if scalar else len(records)
                for rec in records:
                    pack[rec.name] = rec
        for (_group, role, topic, sender), by_name in sorted(packs.items()):
            if by_name:
                self.bus.publish(role, topic, list(by_name.values()), time, sender)
        for sub in self._subs.values():
            for message in sub.deliver(time):
                self._hold(message)
        if self._sensorthings is not None:
            self._sensorthings.step(time)
        if not self.triggered:
            return time + self.step_size
        return self._next_wake(time)

    def _next_wake(self, time: int) -> int | None:
        """A triggered link's next step of its own: the grid step (``step_size``) at or after the earliest of the
        next delivery due, the end of a communication-loss window (what changed meanwhile is published then) and
        a publication the period held back. Stepping on the same grid as a time-based link, it publishes and
        delivers at the same times; only its steps with nothing to do are left out."""
        due: list[float] = [t for t in (sub.next_due() for sub in self._subs.values()) if t is not None]
        due += [t1 for route in self.routes.values() for _t0, t1 in route.down if t1 > time]
        if time < self._wake < math.inf:
            due.append(self._wake)
        self._wake = math.inf
        if not due:
            return None
        step = self.step_size
        return max(time + step, -(-math.ceil(min(due)) // step) * step)  # the first grid step at or after it

    def _publish_native(self, route: _Route, attr: str, value: Any, time: int) -> None:
        """One value under the source's own topic name (a family's ``topics``), in the device's convention."""
        from cosim.messaging import topics

        assert self.bus is not None and route.native is not None
        name, factor = route.native[attr]
        topic = topics.smx_native_topic(topics.parse_topic(route.topic).site, route.source, name)
        if value is None or _same(value, self._sent.get((route.pack, topic, attr))):
            return
        self._sent[(route.pack, topic, attr)] = value
        self._last_pub[(route.pack, route.topic, route.source)] = time
        unit = unit_of(attr) if abs(factor) == 1.0 else None  # a scaled value (SoC in %) is in the device's unit
        self.bus.publish(route.role, topic, [_number(name, factor * float(value), unit)], time, route.sender)

    @staticmethod
    def _pack_topic(route: _Route, attr: str) -> str:
        from cosim.messaging import topics

        info = topics.parse_topic(route.topic)
        if info.role != "control":
            raise ValueError(f"a SenML pack ({attr}) travels on the control role only, not {info.role!r}")
        return topics.schedule_topic(info.site, route.source, attr)

    def _pack_records(self, pack: list[dict[str, Any]]) -> list[Record]:
        """A pack as records with times in simulated seconds (what the bus publishes)."""
        assert self.bus is not None
        epoch0 = self.bus.epoch0
        return [Record(r.name, r.value, r.unit, None if r.time is None else r.time - epoch0, r.string, r.boolean,
                       r.data, r.sum, r.update_time)
                for r in senml.decode(json.dumps(pack).encode())]

    def _hold(self, message: Any) -> None:
        """Apply one message: scalars replace; a vector is rebuilt from this message alone. A message that is not
        the route publisher's or does not fit its attributes is rejected whole (counted by the bus)."""
        assert self.bus is not None
        topic = message.topic
        schedule = "/schedule/" in topic
        state_topic = topic.split("/schedule/", 1)[0] + "/state" if schedule else topic
        senders = self._senders.get(state_topic)
        if senders is None:
            return  # another link's flow in the same topic space
        if message.sender not in senders:
            self.bus.reject(message, f"{message.sender} is not the publisher of this route", self.sid)
            return
        try:
            held = self._schedule(message) if schedule else self._state(message, state_topic)
        except _Misfit as exc:
            self.bus.reject(message, str(exc), self.sid)
            return
        for attr, value in held.items():
            self._held[(state_topic, attr)] = value

    def _schedule(self, message: Any) -> dict[str, Any]:
        """A SenML pack rebuilt as the publisher handed it over (absolute times)."""
        assert self.bus is not None
        base = message.base_name
        epoch0 = self.bus.epoch0
        attr = message.topic.rsplit("/", 1)[1]
        records = [Record(r.name[len(base):], r.value, r.unit, None if r.time is None else r.time + epoch0,
                          r.string, r.boolean, r.data, r.sum, r.update_time) for r in message.records]
        try:
            return {attr: json.loads(senml.encode(records))}
        except senml.SenMLError as exc:
            raise _Misfit(f"schedule pack: {exc}") from None

    def _state(self, message: Any, state_topic: str) -> dict[str, Any]:
        """Records ``{attr}`` and ``{attr}/{i}`` -> values; every record must fit the attribute's declared shape
        (what this link published: a scalar, or a vector of a given length)."""
        base = message.base_name
        scalars: dict[str, Any] = {}
        vectors: dict[str, list[Any]] = {}
        for rec in message.records:
            rel = rec.name[len(base):]
            attr, _, index = rel.partition("/")
            key = (state_topic, attr)
            if key not in self._shape:
                continue  # an attribute another link carries on the same topic (one source, two destinations)
            length = self._shape[key]
            value = _value(rec)
            if length is None:
                if index:
                    raise _Misfit(f"record {rel!r}: {attr} is a scalar, not a vector")
                scalars[attr] = value
                continue
            if not (index.isascii() and index.isdigit()) or int(index) >= length:
                raise _Misfit(f"record {rel!r}: the index must be an integer in 0..{length - 1}")
            vectors.setdefault(attr, [math.nan] * length)[int(index)] = value
        return scalars | vectors

    def get_data(self, outputs: dict[str, Any]) -> dict[str, Any]:
        data = {}
        for eid, attrs in outputs.items():
            route = self.routes[eid]
            data[eid] = {a: self._held.get((route.topic, a)) for a in attrs}
        return data

    def finalize(self) -> None:
        # what arrived after the last step is still judged, so every foreign message is accounted for
        try:
            for sub in self._subs.values():
                for message in sub.deliver(math.inf):
                    self._hold(message)
        except MessagingError as exc:  # a broker gone at the end: the run's results are complete regardless
            log.warning("%s: messages after the last step not judged: %s", self.sid, exc)
        # the bus is shared by every link simulator of the world: its owner (the world builder) closes it
        if self._sensorthings is not None:
            self._sensorthings.step(math.inf)
            self._sensorthings.close()
            self._sensorthings = None

    def stats(self) -> dict[str, dict[str, int]]:
        return self.bus.stats() if self.bus is not None else {}


def _is_senml_pack(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def _records(attr: str, value: Any) -> list[Record]:
    """Records of one attribute, named relative to the topic's base name (``{site}/{source}/``)."""
    name = attr
    unit = unit_of(attr)
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        values = value.tolist() if hasattr(value, "tolist") else list(value)
        # a vector travels whole, one record per element
        return [_number(f"{name}/{i}", math.nan if v is None else float(v), unit) for i, v in enumerate(values)]
    if isinstance(value, bool):
        return [Record(name, boolean=value)]
    return [_number(name, float(value), unit)]


def _number(name: str, value: float, unit: str | None) -> Record:
    # JSON has no NaN: "no reading" travels as the string value "NaN" so the receiver sees NaN, as it would
    # over a direct connection, instead of a stale value
    if math.isfinite(value):
        return Record(name, value=value, unit=unit)
    return Record(name, string=repr(value))


class _Misfit(ValueError):
    """A delivered record that does not fit the attribute it names (the message is rejected)."""


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}  # how _number writes them


def _value(rec: Record) -> Any:
    if rec.value is not None:
        return rec.value
    if rec.string is not None:
        if rec.string not in _NON_FINITE:
            raise _Misfit(f"record {rec.name!r}: string value {rec.string[:40]!r} (only nan, inf, -inf travel as text)")
        return _NON_FINITE[rec.string]
    if rec.boolean is not None:
        return rec.boolean
    raise _Misfit(f"record {rec.name!r} carries no value the route can hold")


def _same(a: Any, b: Any) -> bool:
    if b is None:
        return False
    if hasattr(a, "tolist"):
        a = a.tolist()
    if hasattr(b, "tolist"):
        b = b.tolist()
    return cast(bool, a == b)
