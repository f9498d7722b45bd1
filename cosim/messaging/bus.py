"""The deterministic message bus of the co-simulation.

Components (mosaik controller simulators, devices, recorders -- all in one process) publish SenML records on
the four S4G broker roles and collect what arrived up to a simulated time:

    bus = MessageBus({"data": "embedded", "control": "direct"}, seed=7, start=scenario_start)
    bus.register("gesscon", "controller")
    bus.publish("data", data_topic("fur", "h1", "p_w"), [Record("p_w", value=-1200.0, unit="W")],
                t_s=900, sender="h1")
    sub = bus.subscribe("data", "s4g/+/data/#", subscriber="gesscon")
    for msg in sub.deliver(t_s=900): ...

Each role key (``smx``, ``aggregator``, ``data``, ``control``, ``smx:<site>``) is carried by a backend chosen in
the scenario: ``direct`` (in memory), ``embedded`` (a broker the bus starts, the default) or a real
broker (``mosquitto://host:port``). Whatever the backend, the bus gives the same results for the same seed:

* the payload on the wire is plain SenML JSON, encoded the same way in every mode (``direct`` included), and
  records come back from the same decoder;
* the bus remembers, per wire topic, every message it put on the wire (sender, sequence number, send and due
  time) and matches returning payloads to them byte for byte -- so the envelope never needs to travel;
* ``deliver(t)`` first WAITS (on a condition variable, never a sleep) until every message of the role due
  by ``t`` is back from the broker (or was refused), with a wall-clock timeout -> ``DeliveryTimeout``;
* messages are handed out sorted by (due time, send time, sender, sequence number), never by arrival order;
* ``subscribe`` waits until everything published so far has arrived, so a subscription sees the same messages
  in every mode; retained messages are kept by the bus (the wire retain flag is never set, so a real broker
  holds no state from one run to the next);
* faults (delay, loss, corruption) are drawn from seeded per-role, per-topic streams before the wire.

Malformed payloads (from a foreign publisher on a real broker, or corrupted by fault injection) never reach a
component and never vanish: they are logged with the reason, counted per role (``stats()``) and kept in
``dead_letters()``. Messages from publishers outside this process are delivered too (sender
``"<external>"``, send time = the bus's current time) -- that is the hardware-in-the-loop case, which is
deterministic only as far as the hardware is.

Record times: components give and get ``Record.time`` in simulated seconds from the scenario start
(``None`` on publish = the send time); on the wire they are absolute SenML times (start + t).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time as _time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, UTC
from fnmatch import fnmatchcase
from typing import Any

from . import senml, topics
from .backends import Backend, create_backend
from .config import BrokerAddress, MessagingSpec, parse_broker_url
from .embedded_broker import BrokerSecurity, EmbeddedBroker
from .errors import BrokerUnavailable, DeliveryTimeout, PublishNotAllowed, SenMLError, TopicError
from .faults import FaultInjector
from .senml import Record

log = logging.getLogger(__name__)

DEFAULT_START = datetime(2020, 1, 1, tzinfo=UTC)
EXTERNAL_SENDER = "<external>"
SENDER_KINDS = ("device", "controller", "agent", "monitor")
# A flood of bad messages must not grow memory or the log without bound: the counters stay exact, but only the
# first MAX_DEAD_LETTERS dead letters are kept (payloads cut to DEAD_PAYLOAD_BYTES) and only the first
# LOGGED_DEAD_LETTERS per role key are logged at WARNING (the rest at DEBUG, and a summary at close).
MAX_DEAD_LETTERS = 10_000
DEAD_PAYLOAD_BYTES = 512
LOGGED_DEAD_LETTERS = 100
MAX_ROUTE_CACHE = 4096  # topics whose matching subscriptions are cached (foreign topics are unbounded)


# ------------------------------------------------------------------------------------------- public types
@dataclass(frozen=True, slots=True)
class Message:
    """One delivered message. ``records`` are resolved, with ``time`` in simulated seconds."""

    role: str
    topic: str
    records: tuple[Record, ...]
    t_s: float
    t_due: float
    sender: str
    seq: int
    payload: bytes = field(repr=False)
    role_key: str = ""
    retained: bool = False

    @property
    def sort_key(self) -> tuple[float, float, str, int]:
        return (self.t_due, self.t_s, self.sender, self.seq)

    @property
    def base_name(self) -> str:
        """The SenML base name of this topic (``fur/h1/`` for ``s4g/fur/data/h1/p_w``)."""
        try:
            return topics.parse_topic(self.topic).base_name
        except TopicError:
            return ""

    def by_name(self) -> dict[str, Record]:
        """Records by name relative to the topic's base name (``p_w`` rather than ``fur/h1/p_w``)."""
        base = self.base_name
        return {(r.name[len(base):] if base and r.name.startswith(base) else r.name): r for r in self.records}

    def value(self, name: str, default: Any = None) -> Any:
        """The value (``Record.result``) of the last record named ``name`` (relative to the base name)."""
        rec = self.by_name().get(name)
        return default if rec is None else rec.result


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be delivered, with the reason."""

    role_key: str
    topic: str
    payload: bytes
    reason: str
    t_s: float
    sender: str
    seq: int
    size: int = -1  # length of the payload on the wire (``payload`` keeps at most DEAD_PAYLOAD_BYTES of it)


@dataclass(frozen=True, slots=True)
class Published:
    """Receipt of ``publish``: the message's sequence number, when it is due, and what the faults did."""

    sender: str
    seq: int
    t_due: float
    lost: bool = False
    corrupted: bool = False


@dataclass
class RoleStats:
    published: int = 0        # publish() calls accepted (after the publish ACL)
    refused: int = 0          # publish() calls refused by the bus's publish ACL
    lost: int = 0             # dropped by injected loss (never on the wire)
    corrupted: int = 0        # truncated by injected corruption
    delayed: int = 0          # given a delay > 0
    sent: int = 0             # put on the wire
    received: int = 0         # came back from the wire (ours and foreign)
    foreign: int = 0          # received from publishers outside this bus
    broker_refused: int = 0   # refused by the broker (MQTT 5 PUBACK reason code)
    decode_errors: int = 0    # payloads that are not valid SenML (or records outside the topic's base name)
    rejected: int = 0         # delivered, then refused by a consumer (bus.reject: e.g. a foreign publisher on a
                              # co-simulation route, a record that does not fit the attribute), per consumer
    dead_letters: int = 0     # everything that could not be delivered or was rejected (decode errors,
                              # refusals, bad topics, rejections)
    routed: int = 0           # decoded messages queued for at least one subscription
    unrouted: int = 0         # decoded messages no subscription wanted (MQTT drops those too)
    delivered: int = 0        # messages handed to components (one per subscription)
    stale_retained: int = 0   # retained copies a real broker held from before this run (ignored)
    decode_mismatch: int = 0  # decode_own only: decoded records differ from those encoded (never expected)


# --------------------------------------------------------------------------------------------- internals
@dataclass(slots=True)
class _Pending:
    topic: str
    payload: bytes
    sender: str
    seq: int
    t_s: float
    t_due: float
    retain: bool
    records: tuple[Record, ...] | None = None  # what this bus encoded (times in simulated seconds)
    mid: int | None = None
    done: bool = False


@dataclass
class _Role:
    key: str
    base: str
    address: BrokerAddress
    backend: Backend | None = None
    stats: RoleStats = field(default_factory=RoleStats)
    pending: dict[str, list[_Pending]] = field(default_factory=dict)
    n_pending: int = 0
    mids: dict[int, _Pending] = field(default_factory=dict)
    refused_mids: dict[int, str] = field(default_factory=dict)


@dataclass
class _SubState:
    base: str
    topic_filter: str
    subscriber: str
    heap: list[tuple[tuple[float, float, str, int], Message]] = field(default_factory=list)
    closed: bool = False


class Subscription:
    """A component's subscription: ``deliver(t_s)`` returns what is due, in deterministic order."""

    def __init__(self, bus: MessageBus, state: _SubState) -> None:
        self._bus = bus
        self._state = state

    @property
    def role(self) -> str:
        return self._state.base

    @property
    def topic_filter(self) -> str:
        return self._state.topic_filter

    @property
    def subscriber(self) -> str:
        return self._state.subscriber

    def deliver(self, t_s: float) -> list[Message]:
        """Every message due by ``t_s`` not delivered yet, sorted by (t_due, t_s, sender, seq)."""
        return self._bus._collect(self._state, t_s)

    def next_due(self) -> float | None:
        """When the next message for this subscription falls due (queued here, or still on the wire with an
        injected delay), or None if none is on its way: a subscriber that steps only on demand wakes then."""
        return self._bus._next_due(self._state)

    def pending(self) -> int:
        """Messages queued for this subscription (due or not)."""
        with self._bus._cond:
            return len(self._state.heap)

    def close(self) -> None:
        self._bus._unsubscribe(self._state)

    def __repr__(self) -> str:
        return f"Subscription({self.role!r}, {self.topic_filter!r}, subscriber={self.subscriber!r})"


def _epoch(start: datetime | float | int) -> float:
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start must be a timezone-aware datetime")
        epoch = start.timestamp()
    else:
        epoch = float(start)
    if not math.isfinite(epoch) or epoch < senml.ABSOLUTE_TIME_THRESHOLD:
        raise ValueError("start must be after 1978-07-04 (SenML times below 2**28 s are relative)")
    if epoch > senml.MAX_TIME_S:
        raise ValueError("start must be before 2106-02-07 (the end of SenML's sane time window)")
    return epoch


# --------------------------------------------------------------------------------------------------- bus
class MessageBus:
    """Publish/subscribe over the S4G broker roles with deterministic delivery (see the module docstring).

    ``spec``: a ``MessagingSpec``, a dict of its fields, or a plain ``{role: broker}`` mapping.
    ``seed``: the scenario seed (fault draws). ``start``: the scenario start (aware datetime or epoch seconds).
    ``strict_units``: reject units outside the registries. ``decode_own``: decode this bus's own payloads
    when they come back too (by default the records it encoded are reused: the codec round trip is exact).
    """

    def __init__(self, spec: MessagingSpec | Mapping[str, Any] | None = None, *, seed: int = 0,
                 start: datetime | float = DEFAULT_START, strict_units: bool = True, decode_own: bool = False,
                 security: BrokerSecurity | None = None, client_identity: str = "cosim") -> None:
        #: secure embedded brokers (TLS, client certificates, topic policy) and the certificate our clients show
        self.security = security
        self.client_identity = client_identity
        if spec is None:
            spec = MessagingSpec()
        elif not isinstance(spec, MessagingSpec):
            spec = dict(spec)
            known = set(MessagingSpec.model_fields)
            spec = MessagingSpec(**spec) if spec and set(spec) <= known else MessagingSpec(roles=spec)
        self.spec: MessagingSpec = spec
        self.seed = int(seed)
        self.epoch0 = _epoch(start)
        self.strict_units = strict_units
        self.decode_own = decode_own
        self._cond = threading.Condition(threading.RLock())
        self._faults = FaultInjector({}, self.seed)
        self._roles: dict[str, _Role] = {}
        keys = list(topics.ROLES) + sorted(k for k in spec.roles if ":" in k)
        for key in keys:
            base, _ = topics.parse_role_key(key)
            self._roles[key] = _Role(key=key, base=base, address=parse_broker_url(spec.broker_for(key)))
        self._site_keys = {k.split(":", 1)[1] for k in self._roles if ":" in k}
        self._kinds: dict[str, str] = {}
        self._topic_acl: list[tuple[str, tuple[str, ...]]] = []  # (topic filter, kinds or sender patterns)
        self._seq: dict[str, int] = {}
        self._foreign_seq = itertools.count(1)
        self._subs: dict[tuple[str, str, str], _SubState] = {}
        self._routes: dict[str, tuple[_SubState, ...]] = {}  # topic -> matching subscriptions (cache)
        self._retained: dict[tuple[str, str], Message] = {}
        self._dead: list[DeadLetter] = []
        self._now: float = 0.0
        self._waiting: list[tuple[str, float]] = []  # (role, due time) of the threads waiting for deliveries
        self._watchers = 0  # threads in wait_for (woken by every arrival)
        self._embedded: EmbeddedBroker | None = None
        self._opened = False
        self._closed = False
        self._timed_out = False
        self._open_failed: BrokerUnavailable | None = None
        self._prefix = f"{spec.namespace}/" if spec.namespace else ""
        self._instance = uuid.uuid4().hex[:8]

    @classmethod
    def from_spec(cls, spec: MessagingSpec, *, seed: int, start: datetime | float) -> MessageBus:
        return cls(spec, seed=seed, start=start)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def open(self) -> MessageBus:
        """Start the embedded broker if a role needs it and connect every role (idempotent)."""
        if self._opened:
            return self
        if self._closed:
            raise BrokerUnavailable("the message bus was closed")
        if self._open_failed is not None:  # every user of a shared bus opens it: the first failure answers all
            raise BrokerUnavailable(str(self._open_failed))
        try:
            embedded = self.prepare()._embedded
            if embedded is not None:
                embedded.start(self.spec.timeout_s)
            for role in self._roles.values():
                address = role.address
                sub_qos = self.spec.qos if self.spec.subscribe_qos is None else self.spec.subscribe_qos
                # the plain embedded broker (ours, on loopback, for this run only) gets the lean client
                lean = (address.kind == "embedded" and self.security is None
                        and self.spec.qos <= 1 and sub_qos <= 1)
                if address.kind == "embedded":
                    assert self._embedded is not None
                    address = self._embedded_address(self._embedded)
                backend = create_backend(
                    address, subscribe=self._prefix + topics.role_filter(role.key),
                    client_id=f"s4g-bus-{self._instance}-{role.key.replace(':', '-')}",
                    subscribe_qos=sub_qos, timeout=self.spec.timeout_s, lean=lean)
                key = role.key
                # mypy cannot type a lambda with a default argument
                backend.open_batched(lambda items, key=key: self._on_wire_batch(key, items),  # type: ignore[misc]
                                     lambda mid, reason, key=key: self._on_refused(key, mid, reason))  # type: ignore[misc]
                role.backend = backend
        except BrokerUnavailable as exc:
            self._open_failed = exc
            self._teardown()
            raise
        except BaseException:
            self._teardown()
            raise
        self._opened = True
        log.debug("message bus open: %s", self.describe())
        return self

    def prepare(self) -> MessageBus:
        """Launch the embedded broker if a role needs one, without waiting for it (``open()`` waits): a broker in a
        child process then starts while the caller goes on building. ``close()`` stops it, opened or not."""
        if self._embedded is None and not self._closed and any(
                r.address.kind == "embedded" for r in self._roles.values()):
            self._embedded = EmbeddedBroker(name=f"bus-{self._instance}", security=self.security).launch()
        return self

    def _embedded_address(self, broker: EmbeddedBroker) -> BrokerAddress:
        if self.security is None:
            return BrokerAddress(kind="mqtt", host=broker.host, port=broker.port)
        from devices.tls import TlsFiles

        files = TlsFiles.from_pki(self.security.pki, self.client_identity)
        return BrokerAddress(kind="mqtt", host=broker.host, port=broker.port, tls=True, ca=str(files.ca),
                             certfile=str(files.cert), keyfile=str(files.key),
                             crl=str(files.crl) if files.crl else None)

    def close(self) -> None:
        """Let in-flight messages come back (so ``stats()`` is the same in every mode; skipped once a delivery
        timed out), then disconnect every role and stop the embedded broker. Idempotent; no thread is left
        behind."""
        if self._opened and not self._timed_out:
            try:
                self.flush()
            except DeliveryTimeout as exc:
                log.warning("closing the message bus with messages in flight: %s", exc)
        was_open = self._opened
        self._closed = True
        self._teardown()
        if was_open:
            with self._cond:
                counts = {k: r.stats.dead_letters for k, r in self._roles.items() if r.stats.dead_letters}
            if counts:
                log.warning("message bus closed with dead letters: %s", counts)

    def _teardown(self) -> None:
        for role in self._roles.values():
            backend, role.backend = role.backend, None
            if backend is not None:
                try:
                    backend.close()
                except Exception as exc:  # close everything else regardless
                    log.warning("closing %s: %s", role.key, exc)
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        self._opened = False

    def __enter__(self) -> MessageBus:
        return self.open()

    def __exit__(self, *_: object) -> None:
        self.close()

    def describe(self) -> dict[str, str]:
        """Role key -> broker label (``direct``, ``embedded``, ``mqtt://host:port``); no credentials."""
        out = {}
        for key, role in self._roles.items():
            if role.address.kind == "embedded" and self._embedded is not None:
                out[key] = f"embedded ({self._embedded.url})"
            else:
                out[key] = role.address.label
        return out

    # -- senders -------------------------------------------------------------------------------------------
    def register(self, sender: str, kind: str) -> None:
        """Declare what a sender is (device, controller, agent, monitor); the publish ACL checks kinds."""
        if kind not in SENDER_KINDS:
            raise ValueError(f"unknown sender kind {kind!r}; expected one of {', '.join(SENDER_KINDS)}")
        self._kinds[sender] = kind

    def restrict_publish(self, topic_filter: str, allowed: Sequence[str]) -> None:
        """Only senders of these kinds (or matching these name patterns) may publish on topics matching the
        filter, on top of the role's ``publish_acl``: a device's command topics on its SMX broker, where the
        device's own telemetry lives too."""
        self._topic_acl.append((topics.validate_filter(topic_filter), tuple(allowed)))

    def _check_acl(self, role: _Role, sender: str, topic: str = "") -> None:
        kind = self._kinds.get(sender)
        ok: Callable[[Sequence[str]], bool] = lambda allowed: (  # noqa: E731
            (kind is not None and kind in allowed) or any(fnmatchcase(sender, pat) for pat in allowed))
        allowed: Sequence[str] | None
        allowed, where = self.spec.publish_acl.get(role.base), f"the {role.base} broker"
        for topic_filter, kinds in self._topic_acl:
            if topics.matches(topic_filter, topic) and not ok(kinds):
                allowed, where = kinds, topic
                break
        else:
            if allowed is None or ok(allowed):
                return
        assert allowed is not None  # refused: by the role's list or by a topic's
        with self._cond:
            role.stats.refused += 1
        raise PublishNotAllowed(
            f"sender {sender!r} ({kind or 'unregistered'}) may not publish on {where}; "
            f"allowed: {', '.join(allowed)} (register control components with bus.register(name, 'controller'))")

    # -- routing helpers -----------------------------------------------------------------------------------
    def _role_for(self, role: str, topic: str) -> tuple[_Role, topics.TopicInfo]:
        base, site = topics.parse_role_key(role)
        info = topics.parse_topic(topic)
        if info.role != base:
            raise TopicError(f"topic {topic!r} belongs to the {info.role} role, not to {role!r}")
        if site is not None and site != info.site:
            raise TopicError(f"topic {topic!r} is not on the SMX broker of site {site!r}")
        return self._roles[self._key_of(info)], info

    def _key_of(self, info: topics.TopicInfo) -> str:
        if info.role == "smx" and info.site in self._site_keys:
            return f"smx:{info.site}"
        return info.role

    def _next_seq(self, sender: str) -> int:
        seq = self._seq.get(sender, 0) + 1
        self._seq[sender] = seq
        return seq

    # -- publish -------------------------------------------------------------------------------------------
    def publish(self, role: str, topic: str, records: Record | Sequence[Record], t_s: float, sender: str, *,
                retain: bool = False, base_name: str | None = None) -> Published:
        """Publish records (names relative to the topic's base name ``{site}/{device}/``) at simulated ``t_s``.

        Raises ``PublishNotAllowed`` (publish ACL), ``TopicError`` (topic not in the layout or not of this role)
        or ``SenMLError`` (invalid records). ``Record.time`` is in simulated seconds; None = ``t_s``.
        """
        role_, info = self._role_for(role, topic)
        self._check_acl(role_, sender, topic)
        if isinstance(records, Record):
            records = [records]
        base = info.base_name if base_name is None else base_name
        epoch0 = self.epoch0
        full = []
        for i, rec in enumerate(records):
            if not isinstance(rec, Record):
                raise SenMLError(f"expected a Record, got {type(rec).__name__}", i)
            t = t_s if rec.time is None else rec.time
            full.append(Record(base + rec.name, rec.value, rec.unit, epoch0 + t, rec.string, rec.boolean,
                               rec.data, rec.sum, rec.update_time))
        payload = senml.encode(full, base_name=base, strict_units=self.strict_units)
        # What a decoder makes of ``payload``: the codec's round trip is exact (tests/test_senml.py), so the bus
        # need not parse its own payloads again when they come back unchanged (``decode_own`` does anyway).
        mine = tuple(Record(f.name, f.value, f.unit, f.time - epoch0, f.string, f.boolean, f.data,  # type: ignore[operator]
                            f.sum, f.update_time) for f in full)
        return self._send(role_, topic, payload, t_s, sender, retain, mine)

    def publish_raw(self, role: str, topic: str, payload: bytes, t_s: float, sender: str, *,
                    retain: bool = False) -> Published:
        """Publish payload bytes as they are (not validated; a bad payload ends as a dead letter)."""
        role_, _ = self._role_for(role, topic)
        self._check_acl(role_, sender, topic)
        return self._send(role_, topic, bytes(payload), t_s, sender, retain)

    def _send(self, role: _Role, topic: str, payload: bytes, t_s: float, sender: str, retain: bool,
              records: tuple[Record, ...] | None = None) -> Published:
        self.open()
        spec = self.spec.faults_for(role.key)
        with self._cond:
            self._now = max(self._now, t_s)
            seq = self._next_seq(sender)
            draw = self._faults.draw(role.base, topic, len(payload), spec)
            st = role.stats
            st.published += 1
            t_due = t_s + draw.delay_s
            if draw.delay_s > 0:
                st.delayed += 1
            if draw.lost:
                st.lost += 1
                log.debug("lost by fault injection: %s %s #%d", topic, sender, seq)
                return Published(sender, seq, t_due, lost=True)
            if draw.corrupted:
                st.corrupted += 1
                payload = payload[: draw.cut]
            wire_topic = self._prefix + topic
            pending = _Pending(topic, payload, sender, seq, t_s, t_due, retain,
                               None if draw.corrupted else records)
            role.pending.setdefault(wire_topic, []).append(pending)
            role.n_pending += 1
            st.sent += 1
        backend = role.backend
        assert backend is not None
        try:
            mid = backend.send(wire_topic, payload, self.spec.qos)
        except BaseException:
            with self._cond:
                self._drop_pending(role, wire_topic, pending)
                st.sent -= 1
            raise
        if mid is not None:
            with self._cond:
                if not pending.done:
                    pending.mid = mid
                    role.mids[mid] = pending
                    reason = role.refused_mids.pop(mid, None)
                    if reason is not None:
                        self._refuse(role, pending, reason)
        return Published(sender, seq, t_due, corrupted=draw.corrupted)

    def _drop_pending(self, role: _Role, wire_topic: str, pending: _Pending) -> None:
        lst = role.pending.get(wire_topic)
        if lst is not None and pending in lst:
            lst.remove(pending)
            if not lst:
                del role.pending[wire_topic]
            role.n_pending -= 1
        pending.done = True
        if pending.mid is not None:
            role.mids.pop(pending.mid, None)

    # -- from the wire (backend threads) -------------------------------------------------------------------
    def _on_refused(self, key: str, mid: int, reason: str) -> None:
        with self._cond:
            role = self._roles[key]
            pending = role.mids.get(mid)
            if pending is None:
                role.refused_mids[mid] = reason  # send() has not recorded the mid yet
                return
            self._refuse(role, pending, reason)
            self._cond.notify_all()

    def _refuse(self, role: _Role, pending: _Pending, reason: str) -> None:
        self._drop_pending(role, self._prefix + pending.topic, pending)
        role.stats.broker_refused += 1
        self._dead_letter(role, pending.topic, pending.payload, f"broker {role.address.label} refused: {reason}",
                          pending.t_s, pending.sender, pending.seq)

    def _on_wire_batch(self, key: str, items: list[tuple[str, bytes, bool]]) -> None:
        """Messages a backend received at once: one lock and one wakeup of the waiting thread for them all."""
        with self._cond:
            try:
                for wire_topic, payload, retain in items:
                    try:
                        self._arrive(self._roles[key], wire_topic, bytes(payload), retain)
                    except Exception as exc:  # never kill a client's network thread
                        log.exception("message bus: internal error on %s %s", key, wire_topic)
                        self._dead_letter(self._roles[key], wire_topic[len(self._prefix):], bytes(payload),
                                          f"internal error: {exc!r}", self._now, EXTERNAL_SENDER, 0)
            finally:
                if self._wakes_a_waiter():
                    self._cond.notify_all()

    def _wakes_a_waiter(self) -> bool:
        """Whether an arrival can end a wait: ``wait_for`` looks at every arrival, a delivery only at the last
        message it waits for (a wakeup per message costs the waiting thread a lock handover each)."""
        if self._watchers:
            return True
        return any(not self._missing(base, t_s) for base, t_s in self._waiting)

    def _missing(self, base: str, t_s: float) -> list[tuple[_Role, _Pending]]:
        return [(r, p) for r in self._roles.values() if r.base == base and r.n_pending
                for lst in r.pending.values() for p in lst if p.t_due <= t_s]

    def _arrive(self, role: _Role, wire_topic: str, payload: bytes, retain_flag: bool) -> None:
        if not wire_topic.startswith(self._prefix):
            return
        topic = wire_topic[len(self._prefix):]
        try:
            info = topics.parse_topic(topic)
        except TopicError as exc:
            role.stats.received += 1
            role.stats.foreign += 1
            self._dead_letter(role, topic, payload, str(exc), self._now, EXTERNAL_SENDER, next(self._foreign_seq))
            return
        if info.role != role.base or self._key_of(info) != role.key:
            return  # another role key's topic seen on a shared broker; that key's client takes it
        if retain_flag:
            role.stats.stale_retained += 1  # a retained copy from before this run: not part of it
            return
        pending = None
        lst = role.pending.get(wire_topic)
        if lst:
            for i, p in enumerate(lst):
                if p.payload == payload:
                    pending = lst.pop(i)
                    break
            if not lst:
                del role.pending[wire_topic]
        role.stats.received += 1
        records: tuple[Record, ...] | None = None
        if pending is None:
            role.stats.foreign += 1
            sender, seq, t_s, t_due, retain = EXTERNAL_SENDER, next(self._foreign_seq), self._now, self._now, False
        else:
            role.n_pending -= 1
            pending.done = True
            if pending.mid is not None:
                role.mids.pop(pending.mid, None)
            sender, seq, t_s, t_due, retain = pending.sender, pending.seq, pending.t_s, pending.t_due, pending.retain
            records = pending.records
        if records is None or self.decode_own:
            try:
                recs = senml.decode(payload, now=self.epoch0 + t_s, strict_units=self.strict_units)
            except SenMLError as exc:
                role.stats.decode_errors += 1
                self._dead_letter(role, topic, payload, f"invalid SenML: {exc}", t_s, sender, seq)
                return
            base = info.base_name
            stray = next((r.name for r in recs if not r.name.startswith(base) or r.name == base), None)
            if stray is not None:  # the profile: records of a topic are named {site}/{device}/... (its base name)
                role.stats.decode_errors += 1
                self._dead_letter(role, topic, payload, f"invalid SenML: record name {stray!r} is not below the "
                                  f"topic's base name {base!r}", t_s, sender, seq)
                return
            epoch0 = self.epoch0
            decoded = tuple(Record(r.name, r.value, r.unit, r.time - epoch0, r.string, r.boolean,  # type: ignore[operator]
                                   r.data, r.sum, r.update_time) for r in recs)
            if records is not None and decoded != records:  # pragma: no cover - the codec round trip is exact
                role.stats.decode_mismatch += 1
                log.error("SenML round trip changed the records on %s: %r -> %r", topic, records, decoded)
            records = decoded
        msg = Message(role.base, topic, records, t_s, t_due, sender, seq, payload, role.key)
        if retain:
            self._retained[(role.base, topic)] = msg
        targets = self._routes.get(topic)
        if targets is None:
            if len(self._routes) >= MAX_ROUTE_CACHE:
                self._routes.clear()
            targets = self._routes[topic] = tuple(
                sub for sub in self._subs.values()
                if sub.base == role.base and topics.matches(sub.topic_filter, topic))
        if targets:
            entry = (msg.sort_key, msg)
            for sub in targets:
                heapq.heappush(sub.heap, entry)
            role.stats.routed += 1
        else:
            role.stats.unrouted += 1

    def _dead_letter(self, role: _Role, topic: str, payload: bytes, reason: str, t_s: float, sender: str,
                     seq: int) -> None:
        role.stats.dead_letters += 1
        if len(self._dead) < MAX_DEAD_LETTERS:
            self._dead.append(DeadLetter(role.key, topic[:256], payload[:DEAD_PAYLOAD_BYTES], reason[:512], t_s,
                                         sender, seq, len(payload)))
        n = role.stats.dead_letters
        level = logging.WARNING if n <= LOGGED_DEAD_LETTERS else logging.DEBUG
        log.log(level, "dead letter on %s %.200r from %s #%d at t=%s: %s", role.key, topic, sender, seq, t_s,
                reason[:300])
        if n == LOGGED_DEAD_LETTERS:
            log.warning("%d dead letters on %s: further ones are counted, logged at DEBUG only", n, role.key)

    def reject(self, message: Message, reason: str, consumer: str = "") -> None:
        """A consumer refuses a delivered message (it does not fit what the consumer expects): counted as
        ``rejected`` and kept as a dead letter, so a bad message is never dropped silently."""
        with self._cond:
            role = self._roles[message.role_key]
            role.stats.rejected += 1
            who = f"rejected by {consumer}" if consumer else "rejected"
            self._dead_letter(role, message.topic, message.payload, f"{who}: {reason}", message.t_s,
                              message.sender, message.seq)

    # -- subscribe / deliver -------------------------------------------------------------------------------
    def subscribe(self, role: str, topic_filter: str, subscriber: str = "") -> Subscription:
        """Subscribe (MQTT wildcards) to a role's topics. Returns the existing subscription for the same
        (role, filter, subscriber). Only messages published after this call are delivered (plus the retained
        message of each matching topic) -- subscribe while setting up, before the first step."""
        base, _ = topics.parse_role_key(role)
        topics.validate_filter(topic_filter)
        levels = topic_filter.split("/")
        if (levels[0] not in (topics.ROOT, "+", "#")
                or (len(levels) > 2 and levels[2] not in ("+", "#", topics.SEGMENT[base]))):
            raise TopicError(f"filter {topic_filter!r} can never match a topic of the {base} role "
                             f"({topics.role_filter(base)})")
        self.open()
        key = (base, topic_filter, subscriber)
        with self._cond:
            state = self._subs.get(key)
            if state is not None:
                return Subscription(self, state)
        self._wait(base, math.inf)  # same state in every mode: everything published so far has arrived
        with self._cond:
            state = self._subs.get(key)
            if state is None:
                state = self._subs[key] = _SubState(base, topic_filter, subscriber)
                self._routes.clear()
                for (r_base, topic), msg in sorted(self._retained.items()):
                    if r_base == base and topics.matches(topic_filter, topic):
                        copy = replace(msg, retained=True)
                        heapq.heappush(state.heap, (copy.sort_key, copy))
        return Subscription(self, state)

    def deliver(self, role: str, topic_filter: str, t_s: float, subscriber: str = "") -> list[Message]:
        """``subscribe(role, topic_filter, subscriber).deliver(t_s)`` (the subscription is kept)."""
        return self.subscribe(role, topic_filter, subscriber).deliver(t_s)

    def _collect(self, state: _SubState, t_s: float) -> list[Message]:
        if state.closed:
            raise TopicError("subscription is closed")
        self._wait(state.base, t_s)
        out: list[Message] = []
        with self._cond:
            self._now = max(self._now, t_s)
            heap = state.heap
            while heap and heap[0][0][0] <= t_s:
                out.append(heapq.heappop(heap)[1])
            if out:
                counts: dict[str, int] = {}
                for m in out:
                    counts[m.role_key] = counts.get(m.role_key, 0) + 1
                for k, n in counts.items():
                    self._roles[k].stats.delivered += n
        return out

    def _next_due(self, state: _SubState) -> float | None:
        with self._cond:
            due = state.heap[0][0][0] if state.heap else math.inf
            for role in self._roles.values():
                if role.base != state.base or not role.n_pending:
                    continue
                for lst in role.pending.values():
                    for p in lst:
                        if p.t_due < due and topics.matches(state.topic_filter, p.topic):
                            due = p.t_due
        return None if due == math.inf else due

    def _unsubscribe(self, state: _SubState) -> None:
        with self._cond:
            state.closed = True
            self._subs.pop((state.base, state.topic_filter, state.subscriber), None)
            self._routes.clear()

    def _wait(self, base: str, t_s: float) -> None:
        """Block until every message of role ``base`` due by ``t_s`` has come back from its broker."""
        for role in self._roles.values():  # backends that queue a step's publications write them now
            if role.base == base and role.backend is not None:
                role.backend.flush()
        deadline = None
        entry = (base, t_s)
        with self._cond:
            while True:
                missing = self._missing(base, t_s)
                if not missing:
                    return
                now = _time.monotonic()
                if deadline is None:
                    deadline = now + self.spec.timeout_s
                if now >= deadline:
                    self._timed_out = True
                    raise self._timeout(base, t_s, missing)
                self._waiting.append(entry)
                try:
                    self._cond.wait(deadline - now)
                finally:
                    self._waiting.remove(entry)

    def _timeout(self, base: str, t_s: float, missing: list[tuple[_Role, _Pending]]) -> DeliveryTimeout:
        by_topic: dict[str, int] = {}
        for _r, p in missing:
            by_topic[p.topic] = by_topic.get(p.topic, 0) + 1
        brokers = sorted({r.address.label for r, _ in missing})
        listing = ", ".join(f"{t} ({n})" for t, n in sorted(by_topic.items())[:5])
        return DeliveryTimeout(
            f"{len(missing)} message(s) of the {base} role due by t={t_s} did not come back from "
            f"{', '.join(brokers)} within {self.spec.timeout_s} s: {listing} "
            "(broker down, or an ACL dropping them silently? MQTT 5 (?v=5) reports refusals)")

    def flush(self) -> None:
        """Wait until every message on the wire has come back (all roles)."""
        for base in topics.ROLES:
            self._wait(base, math.inf)

    # -- introspection -------------------------------------------------------------------------------------
    def stats(self) -> dict[str, dict[str, int]]:
        """Counters per role key (see ``RoleStats``)."""
        with self._cond:
            return {key: asdict(role.stats) for key, role in self._roles.items()}

    def dead_letters(self) -> list[DeadLetter]:
        with self._cond:
            return list(self._dead)

    def wait_for(self, predicate: Any, timeout_s: float | None = None) -> dict[str, dict[str, int]]:
        """Block until ``predicate(stats())`` is true (woken by every arrival, never polling); return the stats.
        For tests and benchmarks that inject traffic from outside. ``DeliveryTimeout`` after ``timeout_s``
        (default: the spec's ``timeout_s``)."""
        limit = self.spec.timeout_s if timeout_s is None else timeout_s
        deadline = _time.monotonic() + limit
        for role in self._roles.values():
            if role.backend is not None:
                role.backend.flush()
        with self._cond:
            while True:
                stats = {key: asdict(role.stats) for key, role in self._roles.items()}
                if predicate(stats):
                    return stats
                left = deadline - _time.monotonic()
                if left <= 0:
                    raise DeliveryTimeout(f"condition on the bus counters not met within {limit} s")
                self._watchers += 1
                try:
                    self._cond.wait(left)
                finally:
                    self._watchers -= 1

    def endpoint(self, role_key: str) -> tuple[str, int] | None:
        """(host, port) of the broker carrying ``role_key`` (the embedded broker's free port once open); None
        for ``direct``."""
        role = self._roles[role_key]
        if role.address.kind == "embedded":
            return None if self._embedded is None else (self._embedded.host, self._embedded.port)
        if role.address.kind == "direct":
            return None
        return role.address.host, role.address.port

    @property
    def namespace_prefix(self) -> str:
        """The topic prefix on the wire (``namespace/``, or empty)."""
        return self._prefix

    def in_flight(self) -> int:
        with self._cond:
            return sum(r.n_pending for r in self._roles.values())

    @property
    def now(self) -> float:
        """The latest simulated time seen in publish or deliver."""
        return self._now


def messages_signature(messages: Iterable[Message]) -> list[tuple[Any, ...]]:
    """A comparable summary of delivered messages (for determinism checks across modes)."""
    return [(m.role, m.topic, m.records, m.t_s, m.t_due, m.sender, m.seq, m.retained) for m in messages]
