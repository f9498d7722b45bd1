"""SensorThings: Observations query latency over a 28-day run, ingest rates (embedded store, PostgreSQL), and the
OGC wrapper's queue drain rate after an outage.

* Query: ``Observations?$filter=phenomenonTime ge T and phenomenonTime lt T+1d&$top=1000`` for random days of a
  28-day run (200 Datastreams at 15 min: 537,600 Observations), p50/p99 through the engine and over HTTP; the
  baseline is the same time filter as plain DuckDB SQL on the run's Parquet file.
* Ingest: loading the run into the embedded store (DuckDB) and into PostgreSQL (COPY), observations/s; baseline
  reading the Parquet file with pyarrow.
* Drain: N packs queued while the Data Broker was down, then the link returns: packs/s until the queue is empty
  (PUBACK-driven), against a bare paho QoS-1 publish of the same packs to the same mosquitto.

Run: python -m benchmarks.sensorthings [--quick]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.common import percentile, print_rows, row

START = datetime(2019, 6, 1, tzinfo=UTC)


def make_run(root: Path, days: int, things: int, period_s: int = 900) -> tuple[Path, int]:
    """A run directory whose sensorthings/ folder has ``things`` devices × 4 quantities at ``period_s``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cosim.messaging.sensorthings import _schema

    run = root / f"bench-{days}d"
    st = run / "sensorthings"
    st.mkdir(parents=True, exist_ok=True)
    quantities = [("p_w", "W", "ActivePower"), ("pv_p_w", "W", "pv_p_w"), ("batt_p_w", "W", "batt_p_w"),
                  ("soc", "/", "StateOfCharge")]
    ents: dict[str, list[dict[str, Any]]] = {"Things": [], "Locations": [], "Sensors": [], "ObservedProperties": [],
                                             "Datastreams": []}
    for _, _, prop in quantities:
        ents["ObservedProperties"].append({"@iot.id": prop, "name": prop, "definition": f"urn:s4g:quantity:{prop}"})
    names = []
    for k in range(things):
        thing = f"bench/dev{k}"
        ents["Things"].append({"@iot.id": thing, "name": thing, "properties": {}})
        ents["Sensors"].append({"@iot.id": thing, "name": thing})
        for q, unit, prop in quantities:
            ds = f"{thing}/{q}"
            names.append(ds)
            ents["Datastreams"].append({"@iot.id": ds, "name": ds, "unitOfMeasurement": {"symbol": unit},
                                        "observationType": "OM_Measurement", "Thing": {"@iot.id": thing},
                                        "Sensor": {"@iot.id": thing}, "ObservedProperty": {"@iot.id": prop}})
    (st / "entities.json").write_text(json.dumps(ents))
    steps = days * 86400 // period_s
    t_s = np.repeat(np.arange(steps) * period_s, len(names)).astype(float)
    ds_col = np.tile(np.array(names, dtype=object), steps)
    times = [(START + timedelta(seconds=int(t))).strftime("%Y-%m-%dT%H:%M:%SZ") for t in range(0, steps * period_s,
                                                                                                  period_s)]
    ptime = np.repeat(np.array(times, dtype=object), len(names))
    rng = np.random.default_rng(1)
    n = len(t_s)
    table = pa.table({"t_s": t_s, "phenomenon_time": ptime, "result_time": ptime, "datastream": ds_col,
                      "result": rng.normal(0, 1000, n), "result_text": pa.nulls(n, pa.string()),
                      "unit": np.full(n, "W", dtype=object), "sender": np.full(n, "bench", dtype=object),
                      "seq": np.arange(n)}, schema=_schema())
    pq.write_table(table, st / "observations.parquet", row_group_size=20_000)
    (run / "meta.json").write_text(json.dumps({"scenario": "bench", "start": START.isoformat(), "step_s": period_s,
                                               "duration_s": days * 86400, "sites": [], "devices": []}))
    return run, n


def _queries(store: Any, run: Path, days: int, n: int) -> list[dict]:
    import duckdb

    from cosim.sta.engine import Engine
    from cosim.sta.server import HttpServer, create_app

    engine = Engine(store)
    rng = random.Random(1)
    windows = []
    for _ in range(n):
        d0 = START + timedelta(days=rng.randrange(max(1, days - 1)), hours=rng.randrange(24))
        windows.append((d0, d0 + timedelta(days=1)))

    def q(w: tuple[datetime, datetime]) -> str:
        a, b = (x.strftime("%Y-%m-%dT%H:%M:%SZ") for x in w)
        return f"$filter=phenomenonTime%20ge%20{a}%20and%20phenomenonTime%20lt%20{b}&$top=1000"

    eng = []
    for w in windows:
        t0 = time.perf_counter()
        status, body, _ = engine.get("Observations", q(w), "http://bench/v1.1")
        eng.append(time.perf_counter() - t0)
        assert status == 200 and len(body["value"]) == 1000
    http = []
    import urllib.request

    with HttpServer(create_app(store, engine)) as server:
        for w in windows:
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{server.url}/v1.1/Observations?{q(w)}", timeout=30) as r:
                r.read()
            http.append(time.perf_counter() - t0)
    con = duckdb.connect()
    raw = []
    path = str(run / "sensorthings" / "observations.parquet")
    for a, b in windows:
        t0 = time.perf_counter()
        con.execute("SELECT * FROM read_parquet($p) WHERE phenomenon_time >= $a AND phenomenon_time < $b "
                    "ORDER BY phenomenon_time LIMIT 1000",
                    {"p": path, "a": a.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "b": b.strftime("%Y-%m-%dT%H:%M:%SZ")}).fetchall()
        raw.append(time.perf_counter() - t0)
    ms = 1e3
    return [
        row(f"Observations $filter on a day, $top=1000, {days}-day run: p50 (engine)", percentile(eng, 50) * ms,
            percentile(raw, 50) * ms, "ms"),
        row("the same: p99 (engine)", percentile(eng, 99) * ms, percentile(raw, 99) * ms, "ms"),
        row("the same over HTTP (uvicorn, JSON): p50", percentile(http, 50) * ms, percentile(raw, 50) * ms, "ms"),
        row("the same over HTTP (uvicorn, JSON): p99", percentile(http, 99) * ms, percentile(raw, 99) * ms, "ms"),
    ]


def _ingest(run: Path, n: int) -> tuple[list[dict], Any]:
    import pyarrow.parquet as pq

    from cosim.sta.store import Store

    t0 = time.perf_counter()
    pq.read_table(run / "sensorthings" / "observations.parquet")
    read = time.perf_counter() - t0
    t0 = time.perf_counter()
    store = Store()
    store.add_run(run)
    emb = time.perf_counter() - t0
    rows = [row("ingest into the embedded store (DuckDB)", n / emb, n / read, "obs/s", lower_is_better=False)]
    url = os.environ.get("S4G_DWH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        import psycopg

        from cosim.dwh.postgres import Warehouse, server_answers

        if server_answers(url) is None:
            name = f"s4g_bench_{os.getpid()}"
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            try:
                with Warehouse(url.rsplit("/", 1)[0] + f"/{name}") as wh:
                    t0 = time.perf_counter()
                    _, inserted = wh.load_run(run)
                    pg = time.perf_counter() - t0
                assert inserted == n
                rows.append(row("ingest into PostgreSQL (COPY, idempotent)", n / pg, n / read, "obs/s",
                                lower_is_better=False))
            finally:
                with psycopg.connect(url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except ImportError:
        pass
    return rows, store


class _Mosquitto:
    def __init__(self, d: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = ["allow_anonymous true", "persistence false", "max_queued_messages 0", f"listener {self.port} 127.0.0.1"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            import getpass

            conf.insert(0, f"user {getpass.getuser()}")
        (d / "m.conf").write_text("\n".join(conf) + "\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(d / "m.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the port accepts: the broker is up
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _drain(n: int) -> list[dict]:
    if shutil.which("mosquitto") is None:
        return []
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from cosim.messaging import Record, senml
    from cosim.sta.wrapper import DurableQueue, OgcWrapper

    with tempfile.TemporaryDirectory() as tmp:
        broker = _Mosquitto(Path(tmp))
        try:
            url = f"mqtt://127.0.0.1:{broker.port}"
            packs = []
            for i in range(n):
                t = START.timestamp() + 60 * i
                base = "site1/inv1/"
                packs.append(senml.encode([Record(base + "p_w", value=float(i), unit="W", time=t),
                                           Record(base + "soc", value=0.5, unit="/", time=t)], base_name=base))
            q = DurableQueue(Path(tmp) / "q.sqlite")  # what the outage left behind
            for i, p in enumerate(packs):
                q.put("s4g/site1/data/inv1/state", float(i), p)
            q.close()
            wrapper = OgcWrapper("site1", url, url, Path(tmp) / "q.sqlite")
            t0 = time.perf_counter()
            wrapper.start()
            with wrapper._wake:
                wrapper._wake.wait_for(lambda: wrapper.stats["acked"] >= n and not wrapper._inflight, timeout=120)
            ours = time.perf_counter() - t0
            wrapper.close()
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
            client.max_inflight_messages_set(64)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            done = threading.Event()
            acked = [0]

            def on_publish(*_: Any) -> None:
                acked[0] += 1
                if acked[0] >= n:
                    done.set()

            client.on_publish = on_publish
            t0 = time.perf_counter()
            for p in packs:
                client.publish("s4g/site1/data/inv1/state", p, qos=1)
            done.wait(120)
            bare = time.perf_counter() - t0
            client.disconnect()
            client.loop_stop()
        finally:
            broker.stop()
    return [row(f"wrapper queue drain after an outage ({n} packs, QoS 1, durable dequeue)", n / ours, n / bare,
                "packs/s", lower_is_better=False)]


def run(quick: bool = False) -> list[dict]:
    days, things = (2, 5) if quick else (28, 50)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, n = make_run(Path(tmp), days, things)
        rows, store = _ingest(run_dir, n)
        rows = _queries(store, run_dir, days, 20 if quick else 200) + rows
    rows += _drain(200 if quick else 5000)
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv), "sensorthings")
