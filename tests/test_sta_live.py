"""The live run: a scenario with a ``sensorthings:`` section serves the SensorThings API while it runs, publishes
every new Observation on the MQTT extension's topics (a mosquitto of the test's own) and copies it into the
PostgreSQL warehouse; what subscribers and the warehouse got equals the run directory's observations."""

from __future__ import annotations

import json
import threading
import urllib.request

import duckdb
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cosim.run import run
from cosim.scenario import ScenarioError, load
from hil_bench.testing import pilot_data, write_scenario
from tests.sta_runs import HOUSES, Mosquitto, free_port, pg_database


def _data(**section):
    data = pilot_data(start="2019-06-15T10:00:00+02:00", duration="2h", fronius_address="sim://")
    data["devices"] = [d for d in data["devices"] if d["id"] in HOUSES]
    data["controllers"] = [{"id": "sc", "kind": "self_consumption", "devices": HOUSES}]
    data["telemetry"] = {"period": "15min"}
    data.pop("variants", None)
    data["sensorthings"] = section
    return data


def test_the_section_is_checked(tmp_path):
    with pytest.raises(ScenarioError, match="sensorthings"):
        load(write_scenario(_data(mqtt="embedded"), tmp_path / "bad.yaml"))
    with pytest.raises(ScenarioError, match="sensorthings"):
        load(write_scenario(_data(serve={"port": 70000}), tmp_path / "bad2.yaml"))


def test_live_run_serves_publishes_and_fills_the_warehouse(tmp_path):
    broker = Mosquitto(tmp_path / "mqtt")
    port = free_port()
    got: list[dict] = []
    seen_live: list[int] = []
    lock = threading.Condition()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sta-test")
    subscribed = threading.Event()

    def on_message(_c, _u, msg):
        body = json.loads(msg.payload)
        with lock:
            if msg.topic != "v1.1/Observations":
                got.append({"topic": msg.topic, **body})
                lock.notify_all()
            if not seen_live:  # the API answers while the run goes on
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1.1/Observations?$count=true&$top=1",
                                            timeout=10) as r:
                    seen_live.append(json.loads(r.read())["@iot.count"])

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.connect("127.0.0.1", broker.port)
    client.subscribe("v1.1/#", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        with pg_database() as db:
            data = _data(serve={"port": port}, mqtt=broker.url, dwh=db)
            result = run(load(write_scenario(data, tmp_path / "live.yaml")), tmp_path / "run", progress=False,
                         kpis=False, report=False)
            assert result.status == "complete", result.error
            parquet = f"'{tmp_path}/run/sensorthings/observations.parquet'"
            (n,), = duckdb.sql(f"SELECT count(*) FROM {parquet}").fetchall()
            import psycopg

            with psycopg.connect(db) as con:
                assert con.execute("SELECT count(*) FROM observations").fetchone()[0] == n
            with lock:  # the last publications may still be on their way through the broker
                assert lock.wait_for(lambda: len(got) >= n, timeout=30)
    finally:
        client.loop_stop()
        client.disconnect()
        broker.stop()
    assert seen_live and seen_live[0] > 0
    assert len(got) == n
    expect = sorted(r[0] for r in duckdb.sql(f"SELECT result FROM {parquet} WHERE result IS NOT NULL").fetchall())
    assert sorted(o["result"] for o in got if isinstance(o["result"], float)) == pytest.approx(expect)
    first = got[0]
    assert first["topic"].startswith("v1.1/Datastreams(") and first["topic"].endswith(")/Observations")
    assert {"@iot.id", "@iot.selfLink", "phenomenonTime", "resultTime", "result"} <= set(first)
    assert first["@iot.selfLink"].startswith(f"http://127.0.0.1:{port}/v1.1/Observations(")
