"""Message bus and SenML codec costs: per message, through direct, embedded (our small broker) and Mosquitto backends.

Baselines measured in the same run: plain ``json.dumps``/``json.loads`` of the same pack (no validation, no
resolution) for the codec, and a bare paho-mqtt round trip through the same broker for the bus (no SenML,
no ordering, no bookkeeping).

Run: python -m benchmarks.messaging [--quick]
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid

from benchmarks.common import median_spread, print_rows, row
from cosim.messaging import EmbeddedBroker, MessageBus, Record, senml, topics

T0 = 1_622_505_600.0
SCHEDULE = [Record("fur/ess1/p_w", value=float(h * 125 - 1500), unit="W", time=T0 + 3600 * h) for h in range(24)]


def _codec(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        senml.decode(senml.encode(SCHEDULE), now=T0)
    return (time.perf_counter() - t) / n * 1e6


def _codec_baseline(n: int) -> float:
    pack = [{"n": r.name, "u": r.unit, "v": r.value, "t": r.time} for r in SCHEDULE]
    t = time.perf_counter()
    for _ in range(n):
        json.loads(json.dumps(pack))
    return (time.perf_counter() - t) / n * 1e6


def _bus(mode: str, steps: int, per_step: int) -> float:
    """µs per message: ``per_step`` devices publish one record each, then one subscriber collects them."""
    spec = {"default": "direct", "roles": {"data": mode}, "namespace": f"bench-{uuid.uuid4().hex[:8]}"}
    with MessageBus(spec, seed=1) as bus:
        sub = bus.subscribe("data", "s4g/+/data/#", "bench")
        tops = [topics.data_topic("fur", f"h{i}", "p_w") for i in range(per_step)]
        rec = [Record("p_w", value=-1234.5, unit="W")]
        t = time.perf_counter()
        n = 0
        for step in range(steps):
            for i, tp in enumerate(tops):
                bus.publish("data", tp, rec, step * 60, f"h{i}")
            n += len(sub.deliver(step * 60))
        elapsed = time.perf_counter() - t
        assert n == steps * per_step
    return elapsed / n * 1e6


def _paho_baseline(port: int, steps: int, per_step: int) -> float:
    """The same traffic through one bare paho client (publish, then wait until all came back)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got = 0
    cond = threading.Condition()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:8]}")

    def on_message(*_):
        nonlocal got
        with cond:
            got += 1
            cond.notify()
    subscribed = threading.Event()
    c.on_message = on_message
    c.on_subscribe = lambda *_: subscribed.set()
    c.connect("127.0.0.1", port)
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[union-attr]  # paho: a protocol
    c.loop_start()
    ns = f"bench-{uuid.uuid4().hex[:8]}"
    c.subscribe(f"{ns}/#", 1)
    subscribed.wait(5)
    payload = b'[{"n":"fur/h1/p_w","u":"W","v":-1234.5,"t":1622505600.0}]'
    t = time.perf_counter()
    for step in range(steps):
        for i in range(per_step):
            c.publish(f"{ns}/s4g/fur/data/h{i}/p_w", payload, 1)
        with cond:
            cond.wait_for(lambda: got >= (step + 1) * per_step, 10)
    elapsed = time.perf_counter() - t
    c.disconnect()
    c.loop_stop()
    return elapsed / (steps * per_step) * 1e6


def _mosquitto_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=0.5):
            return True
    except OSError:
        return False


def run(quick: bool = False) -> list[dict]:
    reps = 3 if quick else 7
    n = 300 if quick else 2000
    steps, per_step = (20, 10) if quick else (100, 20)
    rows = [row("SenML: encode+decode a 24-record schedule pack", median_spread([_codec(n) for _ in range(reps)]),
                median_spread([_codec_baseline(n) for _ in range(reps)]), "µs", lower_is_better=True)]
    rows.append(row(f"bus direct: publish+deliver ({per_step} devices/step)",
                    median_spread([_bus("direct", steps, per_step) for _ in range(reps)]), None, "µs/msg",
                    goal_max=100.0))
    with EmbeddedBroker() as broker:
        base = median_spread([_paho_baseline(broker.port, steps, per_step) for _ in range(reps)])
    rows.append(row(f"bus embedded (small broker, lean client): publish+deliver ({per_step} devices/step)",
                    median_spread([_bus("embedded", steps, per_step) for _ in range(reps)]), base, "µs/msg"))
    if _mosquitto_up():
        base = median_spread([_paho_baseline(1883, steps, per_step) for _ in range(reps)])
        rows.append(row(f"bus Mosquitto: publish+deliver ({per_step} devices/step)",
                        median_spread([_bus("mosquitto://127.0.0.1:1883", steps, per_step) for _ in range(reps)]),
                        base, "µs/msg"))
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv), title="messaging")
