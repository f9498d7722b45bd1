"""A hostile MQTT peer: malformed and adversarial SenML published on a running bus's brokers by a foreign client.

The robustness suite (tests/hostile/test_mqtt_senml.py) and benchmark (benchmarks/robustness.py) use it to check
what docs/reliability.md promises: a bad message is counted and dropped, never applied, and never ends a run.

* ``probes(base, attrs)`` -- the catalogue of known-bad (and deceptively valid) payloads for one topic: every
  reproduction of issue 12 (``"t": 1e300``, ``p_set_w/abc``, ``p_set_w/30000000``) and the classic attacks on
  a JSON decoder (deep nesting, long numbers, NaN, duplicate keys, not UTF-8, 1 MiB and more).
* ``HostilePeer(bus)`` -- one paho client per broker of the bus; ``inject(items)`` publishes them under the
  bus's namespace and returns once the bus has seen every one (counted ``foreign`` or ``stale_retained``), so a
  test knows the messages hit the run at a known simulated time. ``capture()`` records the run's own payloads
  for replay attacks. ``close()`` clears any retained message it left on a real broker.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from . import topics
from .senml import MAX_PAYLOAD_BYTES


@dataclass(frozen=True)
class Injection:
    """One message to publish: ``topic`` without the bus's namespace."""

    topic: str
    payload: bytes
    retain: bool = False
    label: str = ""


@dataclass(frozen=True)
class Probe:
    label: str
    payload: bytes
    senml_valid: bool  # valid SenML (a consumer must still refuse it where it does not fit)


def probes(base: str, attrs: dict[str, int | None]) -> list[Probe]:
    """Bad payloads for a topic whose records are named ``base`` + attribute (``attrs``: name -> vector length,
    None for a scalar). ``senml_valid`` says whether the codec accepts it (the link or no one must refuse it)."""
    scalar = next((a for a, n in attrs.items() if n is None), "p_w")
    vector = next((a for a, n in attrs.items() if n is not None), "p_set_w")
    length = attrs.get(vector) or 1

    def pack(*records: dict[str, Any], nan: bool = False) -> bytes:
        return json.dumps([{"bn": base, **records[0]}, *records[1:]], allow_nan=nan).encode()

    out = [
        Probe("not JSON", b"not json", False),
        Probe("empty payload", b"", False),
        Probe("binary", bytes(range(256)), False),
        Probe("not UTF-8", b'[{"n":"\xff\xfe","v":1}]', False),
        Probe("object, not an array", json.dumps({"bn": base, "n": scalar, "v": 1}).encode(), False),
        Probe("empty pack", b"[]", False),
        Probe("deep nesting", b"[" * 100_000 + b"]" * 100_000, False),
        Probe("long number", b'[{"bn":"%s","n":"%s","v":1%s}]' % (base.encode(), scalar.encode(), b"0" * 5000),
              False),
        Probe("NaN", pack({"n": scalar, "v": float("nan")}, nan=True), False),
        Probe("duplicate keys", b'[{"bn":"%s","n":"%s","v":1,"v":2}]' % (base.encode(), scalar.encode()), False),
        Probe("time 1e300", pack({"n": scalar, "u": "W", "v": 1.0, "t": 1e300}), False),
        Probe("time -1e300", pack({"n": scalar, "v": 1.0, "t": -1e300}), False),
        Probe("relative time before 1978", pack({"n": scalar, "v": 1.0, "t": -1.6e9}), False),
        Probe("base time after 2106", pack({"n": scalar, "v": 1.0, "bt": 5e9}), False),
        Probe("update time 1e300", pack({"n": scalar, "v": 1.0, "ut": 1e300}), False),
        Probe("unknown unit", pack({"n": scalar, "u": "furlong", "v": 1.0}), False),
        Probe("must-understand field", pack({"n": scalar, "v": 1.0, "evil_": 1}), False),
        Probe("two values", pack({"n": scalar, "v": 1.0, "vs": "x"}), False),
        Probe("no value", pack({"n": scalar}), False),
        Probe("bad name", pack({"n": " " + scalar, "v": 1.0}), False),
        Probe("name outside the base name", json.dumps([{"bn": "elsewhere/", "n": scalar, "v": 1.0}]).encode(),
              False),
        Probe("bver 11", pack({"n": scalar, "v": 1.0, "bver": 11}), False),
        Probe("number as string", pack({"n": scalar, "v": "1"}), False),
        Probe("oversize", b"[" + b"0," * (MAX_PAYLOAD_BYTES // 2) + b"0]", False),
        # valid SenML that must not fit a route: the link rejects it, nothing allocates what it names
        Probe("index not a number", pack({"n": f"{vector}/abc", "u": "W", "v": 1.0}), True),
        Probe("huge index", pack({"n": f"{vector}/30000000", "u": "W", "v": 1.0}), True),
        Probe("index beyond the length", pack({"n": f"{vector}/{length}", "v": 1.0}), True),
        Probe("negative index", pack({"n": f"{vector}/-1", "v": 1.0}), True),
        Probe("scalar with an index", pack({"n": f"{scalar}/0", "v": 1.0}), True),
        Probe("text value", pack({"n": scalar, "vs": "high"}), True),
        Probe("sum only", pack({"n": scalar, "s": 3.0}), True),
        # valid and plausible: a spoofed value from a foreign publisher
        Probe("spoofed value", pack({"n": scalar, "u": "W", "v": 1e6}), True),
    ]
    return out


def role_key_of(topic: str, role_keys: Sequence[str]) -> str | None:
    """The role key whose broker client sees ``topic`` (its filter ``s4g/+/<segment>/#``), or None."""
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != topics.ROOT:
        return None
    role = topics.ROLE_OF_SEGMENT.get(levels[2])
    if role is None:
        return None
    site_key = f"{role}:{levels[1]}"
    return site_key if site_key in role_keys else role


class HostilePeer:
    """A foreign MQTT client on every broker of ``bus`` (embedded or real; ``direct`` roles cannot be reached)."""

    def __init__(self, bus: Any, *, timeout_s: float = 60.0) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self._clients: dict[tuple[str, int], mqtt.Client] = {}
        self._retained: set[tuple[tuple[str, int], str]] = set()
        self._captured: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.injected = 0

    def _client(self, endpoint: tuple[str, int]) -> mqtt.Client:
        client = self._clients.get(endpoint)
        if client is None:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"hostile-{uuid.uuid4().hex[:8]}")
            client.connect(*endpoint, keepalive=60)
            client.loop_start()
            self._clients[endpoint] = client
        return client

    def capture(self) -> None:
        """Record every payload the run publishes (for replay attacks): subscribe to the namespace's s4g tree."""
        prefix = self.bus.namespace_prefix

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                if len(self._captured) < 10_000:
                    self._captured.append((msg.topic[len(prefix):], bytes(msg.payload)))

        for key in self.bus.stats():
            endpoint = self.bus.endpoint(key)
            if endpoint is None:
                continue
            client = self._client(endpoint)
            client.on_message = on_message
            done = threading.Event()
            client.on_subscribe = lambda *_a, done=done: done.set()
            client.subscribe(f"{prefix}{topics.ROOT}/#", qos=1)
            done.wait(self.timeout_s)

    def captured(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self._captured)

    def reachable(self, topic: str) -> bool:
        key = role_key_of(topic, list(self.bus.stats()))
        return key is not None and self.bus.endpoint(key) is not None

    def inject(self, items: Sequence[Injection]) -> dict[str, dict[str, int]]:
        """Publish ``items`` (QoS 1) and wait until the bus has seen each one; unreachable topics are skipped.
        Returns the bus counters afterwards."""
        keys = list(self.bus.stats())
        seen: Callable[[dict[str, dict[str, int]]], int] = (  # noqa: E731
            lambda st: sum(s["foreign"] + s["stale_retained"] for s in st.values()))
        before = seen(self.bus.stats())
        prefix = self.bus.namespace_prefix
        infos = []
        n = 0
        for item in items:
            key = role_key_of(item.topic, keys)
            endpoint = None if key is None else self.bus.endpoint(key)
            if endpoint is None:
                continue
            wire = prefix + item.topic
            infos.append(self._client(endpoint).publish(wire, item.payload, qos=1, retain=item.retain))
            if item.retain:
                self._retained.add((endpoint, wire))
            n += 1
        for info in infos:
            info.wait_for_publish(self.timeout_s)
        self.injected += n
        return cast("dict[str, dict[str, int]]", self.bus.wait_for(lambda st: seen(st) >= before + n, self.timeout_s))

    def close(self) -> None:
        for endpoint, wire in sorted(self._retained):  # a real broker keeps retained messages: leave none behind
            try:
                self._clients[endpoint].publish(wire, b"", qos=1, retain=True).wait_for_publish(self.timeout_s)
            except (RuntimeError, ValueError):  # that broker is gone (an embedded one): nothing is retained
                pass
        self._retained.clear()
        for client in self._clients.values():
            client.disconnect()
            client.loop_stop()
        self._clients.clear()

    def __enter__(self) -> HostilePeer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
