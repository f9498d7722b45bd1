"""Robustness per link: hostile inputs tried, crashes, silent stops, lost messages, time to recover.

Every link of the framework gets a *probe*: a function that runs the link with a misbehaving peer and returns a
``ProbeResult``. The rows per probe are

* inputs tried per run (hostile messages/requests the peer sent),
* crashes (goal 0): the link's process, loop or run ended with an error,
* silent stops (goal 0): the link stopped serving or delivering without any error,
* lost transaction messages (goal 0): for MQTT/SenML, records of *valid* messages that never reached their
  consumer; for OCPP, transaction messages never confirmed (rows only where the link has such messages),
* time to recover after a peer misbehaves: wall time from the end of a burst of bad input to the next good
  exchange completed (baseline: the same exchange without a burst, measured in the same run).

To add a link, write ``def probe_x(quick: bool) -> ProbeResult`` and append ``LinkProbe("name", probe_x)`` to
``PROBES``; ``run`` makes the rows. Probes here: MQTT/SenML on the embedded broker and on Mosquitto
(127.0.0.1:1883, a unique namespace), and the bench monitor's HTTP API; the device protocol servers
(benchmarks/robustness_servers.py) and OCPP on both sides (benchmarks/robustness_ocpp.py). The hostile inputs are
``cosim.messaging.hostile.probes`` (SenML) and ``benchmarks.hostile_inputs`` (the device protocols), the same
catalogues tests/hostile/ draws from; the tests assert the goals, this module measures them.

Run: python -m benchmarks.robustness [--quick] [--json] [NAME ...]  (NAME: part of a link's name, e.g. ocpp)
"""

from __future__ import annotations

import json
import math
import random
import socket
import sys
import time
import uuid
from datetime import datetime, UTC
from typing import Any

from benchmarks import robustness_ocpp, robustness_servers
from benchmarks.common import median_spread, print_rows, row
from benchmarks.robustness_result import LinkProbe, ProbeResult

START = datetime(2019, 6, 15, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- MQTT/SenML
def _mosquitto_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=1):
            return True
    except OSError:
        return False


def _senml_probe(broker: str, quick: bool) -> ProbeResult:
    """A route on every role of one broker, carried by the link simulator; each step the route's publisher sends
    a scalar and a vector, and a foreign client sends a burst of the catalogue's probes and random bytes on the
    route topics (spoofs included). Lost = records of the publisher's messages not held by the route."""
    from cosim.messaging import MessageBus, topics
    from cosim.messaging.hostile import HostilePeer, Injection, probes
    from cosim.messaging.link import BusLinkSim

    steps, burst = (10, 40) if quick else (60, 200)
    rng = random.Random(12)
    spec = {"default": broker} if broker == "embedded" else {
        "default": broker, "namespace": f"s4g-robustness-{uuid.uuid4().hex[:12]}"}
    bus = MessageBus(spec, seed=1, start=START)
    result = ProbeResult()
    sims, senders = [], []
    role_topics = {"smx": topics.smx_meas_topic("rb", "dev", "state"), "data": topics.data_topic("rb", "dev", "state"),
                   "control": topics.control_topic("rb", "dev", "state"),
                   "aggregator": topics.agg_up_topic("rb", "dev")}
    try:
        for i, (role, topic) in enumerate(role_topics.items()):
            sim: Any = BusLinkSim()  # carries its route's id as an extra attribute
            sim.init(f"BusLink{i}", step_size=60, bus=bus, attrs=["p_w", "p_set_w"])
            (route,) = sim.create(1, "Route", role=role, topic=topic, sender=f"Src-{role}.dev", source="dev")
            sim.route = route["eid"]
            sims.append(sim)
            senders.append(f"Src-{role}.dev")
        for sim in sims:
            sim.setup_done()
        peer = HostilePeer(bus)
        catalogue = {topic: probes(topics.parse_topic(topic).base_name, {"p_w": None, "p_set_w": 3})
                     for topic in role_topics.values()}
        published = held = 0
        for k in range(steps):
            t = 60 * k
            values: dict[str, Any] = {"p_w": float(k), "p_set_w": [float(k), -float(k), 0.5]}
            try:
                if k % 2:  # a burst, then the time to the next good exchange
                    items = []
                    for _ in range(burst):
                        topic = rng.choice(list(role_topics.values()))
                        if rng.random() < 0.7:
                            items.append(Injection(topic, rng.choice(catalogue[topic]).payload))
                        else:
                            items.append(Injection(topic, rng.randbytes(rng.randint(0, 200))))
                    peer.inject(items)
                    result.inputs += len(items)
                t0 = time.perf_counter()
                for sim, sender in zip(sims, senders):
                    sim.step(t, {sim.route: {a: {sender: v} for a, v in values.items()}}, t + 60)
                elapsed = time.perf_counter() - t0
                (result.recover_s if k % 2 else result.baseline_s).append(elapsed / len(sims))
                for sim in sims:
                    got = sim.get_data({sim.route: ["p_w", "p_set_w"]})[sim.route]
                    published += 4
                    held += (got["p_w"] == values["p_w"]) + sum(
                        a == b for a, b in zip(got["p_set_w"] or [], values["p_set_w"]))
                    if got["p_w"] is None:
                        result.silent_stops += 1
            except Exception:  # a crash is what this counts
                result.crashes += 1
        result.lost = published - held
        peer.close()
    finally:
        for sim in sims:
            try:
                sim.finalize()
            except Exception:
                result.crashes += 1
        bus.close()
    return result


def probe_senml_embedded(quick: bool) -> ProbeResult:
    return _senml_probe("embedded", quick)


def probe_senml_mosquitto(quick: bool) -> ProbeResult | None:
    return _senml_probe("mosquitto://127.0.0.1:1883", quick) if _mosquitto_up() else None


# -------------------------------------------------------------------------------------------- bench monitor
def _http(port: int, data: bytes, timeout: float = 30.0) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
    except OSError:
        return None
    return int(out[9:12]) if out.startswith(b"HTTP/1.1 ") else None


def probe_monitor(quick: bool) -> ProbeResult:
    """Malformed requests, a flood of idle connections past the cap, then the time to the next 200."""
    from hil_bench.monitor import MonitorServer

    state = {"scenario": "s", "status": "running", "devices": [], "timing": {}}
    server = MonitorServer(lambda: dict(state), lambda why: {}, port=0, max_connections=16, request_timeout_s=2.0)
    server.start()
    result = ProbeResult()
    bad = [b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9\r\n\r\n", b"GET /\xff HTTP/1.1\r\n\r\n",
           b"POST /api/stop HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"DELETE / HTTP/1.1\r\n\r\n",
           b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n"]
    rounds = 5 if quick else 30
    good = b"GET /api/state HTTP/1.1\r\n\r\n"
    try:
        for _ in range(rounds):
            for data in bad:
                status = _http(server.port, data)
                result.inputs += 1
                if status is None:
                    result.silent_stops += 1
            t0 = time.perf_counter()
            result.silent_stops += _http(server.port, good) != 200
            result.baseline_s.append(time.perf_counter() - t0)
            idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(24)]
            result.inputs += len(idle)
            for s in idle:
                s.close()  # a flood that hangs up: the next good request must not wait for the timeout
            t0 = time.perf_counter()
            while _http(server.port, good) != 200:  # 503 while the flood's slots are still held
                pass
            result.recover_s.append(time.perf_counter() - t0)
    except Exception:
        result.crashes += 1
    finally:
        server.close()
    return result


PROBES: list[LinkProbe] = [
    LinkProbe("MQTT/SenML, embedded broker", probe_senml_embedded),
    LinkProbe("MQTT/SenML, Mosquitto", probe_senml_mosquitto),
    LinkProbe("bench monitor HTTP", probe_monitor),
    LinkProbe("SunSpec Modbus TCP server", robustness_servers.probe_sunspec),
    LinkProbe("Modbus RTU server (TCP transport)", robustness_servers.probe_rtu),
    LinkProbe("Fronius Solar API server", robustness_servers.probe_solar_api),
    LinkProbe("socketcand CAN server", robustness_servers.probe_socketcand),
    LinkProbe("DLMS/COSEM server, TCP wrapper", robustness_servers.probe_dlms_tcp),
    LinkProbe("DLMS/COSEM server, HDLC", robustness_servers.probe_dlms_hdlc),
    LinkProbe("IEC 61850 MMS server", robustness_servers.probe_iec61850),
    LinkProbe("OCPP 1.6 CSMS side", robustness_ocpp.probe_csms_16),
    LinkProbe("OCPP 2.0.1 CSMS side", robustness_ocpp.probe_csms_201),
    LinkProbe("OCPP 1.6 charge point side", robustness_ocpp.probe_charge_point_16),
    LinkProbe("OCPP 2.0.1 charge point side", robustness_ocpp.probe_charge_point_201),
]


def rows_for(name: str, r: ProbeResult) -> list[dict]:
    out = [row(f"{name}: hostile inputs per run", float(r.inputs), None, "inputs"),
           row(f"{name}: crashes", float(r.crashes), None, "count", goal_max=0),
           row(f"{name}: silent stops", float(r.silent_stops), None, "count", goal_max=0)]
    if r.lost is not None:
        what = "transaction messages" if r.duplicated is not None else "records of valid messages"
        out.append(row(f"{name}: lost {what}", float(r.lost), None, "count", goal_max=0))
    if r.duplicated is not None:
        out.append(row(f"{name}: duplicated transaction messages", float(r.duplicated), None, "count", goal_max=0))
    if r.recover_s:
        base = median_spread([x * 1e3 for x in r.baseline_s]) if r.baseline_s else None
        out.append(row(f"{name}: time to recover after a burst", median_spread([x * 1e3 for x in r.recover_s]), base,
                       "ms"))
    return out


def run(quick: bool = False, only: list[str] | None = None) -> list[dict]:
    rows = []
    for p in PROBES:
        if only and not any(o.lower() in p.name.lower() for o in only):
            continue
        result = p.probe(quick)
        if result is not None:
            rows += rows_for(p.name, result)
    return [r for r in rows if r["ours"] is None or math.isfinite(r["ours"])]


if __name__ == "__main__":
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    rows = run(quick="--quick" in sys.argv, only=names)
    print_rows(rows, title="robustness")
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=1))
