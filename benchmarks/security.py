"""The cost of security: the pilot run secure vs plain (wall time), and on the brokers the TLS handshake
(connect to CONNACK) and the per-message overhead of TLS with client certificates and the topic policy.

`python -m benchmarks --only security [--quick]`. Baselines are the same thing without security, measured in
the same run: the embedded amqtt broker plain vs secure, and a Mosquitto the benchmark starts itself plain vs
with the framework's configuration (TLS listener, require_certificate, CRL, ACL), when mosquitto is installed.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.common import median_spread, row
from cosim.messaging import MessageBus, Record, topics
from cosim.messaging.embedded_broker import BrokerSecurity, EmbeddedBroker
from devices import pki
from cosim.security.broker_policy import BrokerPolicy, mosquitto_acl, mosquitto_conf
from devices import tls

REPO = Path(__file__).resolve().parents[1]


def _pki(d: Path) -> Path:
    pki.init(d)
    pki.issue(d, "broker", "broker")
    pki.issue(d, "cosim", "cosim")
    return d


def _connect_ms(port: int, files: tls.TlsFiles | None, n: int) -> list[float]:
    """Wall time from connect() to CONNACK, ``n`` fresh clients."""
    out = []
    for _ in range(n):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"b-{uuid.uuid4().hex[:8]}")
        if files is not None:
            c.tls_set_context(tls.client_context(files))
        done = threading.Event()
        c.on_connect = lambda *a: done.set()
        t = time.perf_counter()
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert done.wait(10)
        out.append((time.perf_counter() - t) * 1e3)
        c.disconnect()
        c.loop_stop()
    return out


def _bus_us(url_or_mode: str, steps: int, per_step: int, **kw) -> float:
    spec = {"default": "direct", "roles": {"data": url_or_mode}}
    with MessageBus(spec, seed=1, **kw) as bus:
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
    return elapsed / n * 1e6


class _Mosquitto:
    def __init__(self, d: Path, conf: str) -> None:
        (d / "m.conf").write_text(conf)
        self.proc = subprocess.Popen(["mosquitto", "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def wait(self, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)  # a benchmark waiting for a process it started; no event to wait on
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pilot_s(tmp: Path, secure: bool, duration: str) -> float:
    import yaml

    from cosim.run import run
    from cosim.scenario import load

    data = yaml.safe_load((REPO / "scenarios" / "fur_skive.yaml").read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    data.update(data.pop("variants")["full"])
    data.update({"duration": duration, "messaging": {"default": "embedded"}, "telemetry": {"period": "15min"}})
    if secure:
        data["security"] = {"pki": str(tmp / "pki")}
    name = "secure" if secure else "plain"
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    t = time.perf_counter()
    result = run(load(path), tmp / f"run-{name}-{uuid.uuid4().hex[:6]}", progress=False, report=False)
    assert result.status == "complete", result.error
    return time.perf_counter() - t


def run(quick: bool = False) -> list[dict]:
    reps = 3 if quick else 5
    n_conn = 10 if quick else 50
    steps, per_step = (20, 10) if quick else (100, 20)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        d = _pki(tmp / "pki")
        client = tls.TlsFiles.from_pki(d, "cosim")
        policy = BrokerPolicy.from_pki(d)
        with EmbeddedBroker() as plain, EmbeddedBroker(security=BrokerSecurity(d, policy)) as secure:
            rows.append(row("embedded broker: connect to CONNACK, TLS + client certificate vs plain",
                            median_spread(_connect_ms(secure.port, client, n_conn)),
                            median_spread(_connect_ms(plain.port, None, n_conn)), "ms", lower_is_better=True))
        rows.append(row(f"bus on the embedded broker, secure vs plain ({per_step} devices/step)",
                        median_spread([_bus_us("embedded", steps, per_step, **_secure_kw(d, policy))
                                       for _ in range(reps)]),
                        median_spread([_bus_us("embedded", steps, per_step) for _ in range(reps)]), "µs/msg",
                        lower_is_better=True))
        if shutil.which("mosquitto"):
            sp, pp = _free_port(), _free_port()
            acl = tmp / "acl"
            acl.write_text(mosquitto_acl(policy))
            extra = {"user": getpass.getuser()} if os.geteuid() == 0 else {}
            m_secure = _Mosquitto(_mk(tmp / "ms"), mosquitto_conf(d, port=sp, acl_file=acl, extra=extra))
            m_plain = _Mosquitto(_mk(tmp / "mp"), "".join(f"{k} {v}\n" for k, v in extra.items())
                                 + f"persistence false\nallow_anonymous true\nlistener {pp} 127.0.0.1\n")
            try:
                m_secure.wait(sp)
                m_plain.wait(pp)
                rows.append(row("Mosquitto: connect to CONNACK, TLS + client certificate + CRL vs plain",
                                median_spread(_connect_ms(sp, client, n_conn)),
                                median_spread(_connect_ms(pp, None, n_conn)), "ms", lower_is_better=True))
                url = f"mqtts://127.0.0.1:{sp}?pki={d}&identity=cosim"
                rows.append(row(f"bus on Mosquitto, TLS + ACL vs plain ({per_step} devices/step)",
                                median_spread([_bus_us(url, steps, per_step) for _ in range(reps)]),
                                median_spread([_bus_us(f"mqtt://127.0.0.1:{pp}", steps, per_step)
                                               for _ in range(reps)]), "µs/msg", lower_is_better=True))
            finally:
                m_secure.stop()
                m_plain.stop()
        duration = "2h" if quick else "1d"
        _pilot_s(tmp, False, "10min")  # warm-up (imports, numba, grid caches) so that neither side pays it
        secure_s, plain_s = [], []
        for _ in range(1 if quick else 2):  # alternating, so a slow spell of the machine hits both sides
            plain_s.append(_pilot_s(tmp, False, duration))
            secure_s.append(_pilot_s(tmp, True, duration))
        rows.append(row(f"pilot fur_skive (full variant, {duration}, brokers embedded): secure vs plain wall time",
                        median_spread(secure_s), median_spread(plain_s), "s", lower_is_better=True))
    return rows


def _mk(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def _secure_kw(d: Path, policy: BrokerPolicy) -> dict:
    return {"security": BrokerSecurity(d, policy), "client_identity": "cosim"}
