"""The OGC wrapper's store-and-forward, end to end with real brokers: devices publish on the site's SMX broker
(a mosquitto of the test's own), the wrapper (its own process) forwards to the Data Broker (a second mosquitto),
the warehouse ingester writes PostgreSQL. In the middle of the run the Data Broker is stopped for a while and the
wrapper process is killed and restarted once; the warehouse ends with exactly the observations the devices
produced: none lost, none twice, each datastream in time order."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cosim.dwh.ingest import DwhIngester
from cosim.dwh.postgres import Warehouse
from cosim.messaging import Record, senml, topics
from cosim.sta.wrapper import DurableQueue, pack_time
from tests.sta_runs import Mosquitto, pg_database, wait_for_line

REPO = Path(__file__).resolve().parents[1]
SITE = "site1"
DEVICES = ["inv1", "inv2", "bat1"]
T0 = datetime(2021, 6, 1, tzinfo=UTC).timestamp()


def _pack(device: str, i: int) -> bytes:
    t = T0 + 60 * i
    base = f"{SITE}/{device}/"
    return senml.encode([Record(base + "p_w", value=float(100 * i + len(device)), unit="W", time=t),
                         Record(base + "soc", value=(i % 100) / 100, unit="/", time=t)], base_name=base)


def _produced(i0: int, i1: int) -> set[tuple[str, float, float]]:
    out = set()
    for dev in DEVICES:
        for i in range(i0, i1):
            for rec in senml.decode(_pack(dev, i)):
                out.add((f"{SITE}/{dev}/{rec.name.rsplit('/', 1)[1]}", rec.time, rec.value))
    return out


class Devices:
    """The site's devices: one QoS-1 MQTT client on the SMX broker."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="devices")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, i0: int, i1: int) -> None:
        for i in range(i0, i1):
            for dev in DEVICES:
                info = self.client.publish(topics.smx_meas_topic(SITE, dev, "state"), _pack(dev, i), qos=1)
                info.wait_for_publish(10)
                assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait(predicate, timeout: float, what: str) -> None:
    """Wait for a state another process reaches (a queue file, a database): checked a few times a second."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _queued(path: Path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        try:
            return db.execute("SELECT count(*) FROM queue").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


class WrapperProcess:
    def __init__(self, smx: Mosquitto, data: Mosquitto, queue: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cosim.sta.wrapper", "--site", SITE, "--smx", smx.url, "--data", data.url,
             "--queue", str(queue)], cwd=REPO, stdout=subprocess.PIPE,
            stderr=(queue.parent.parent / "wrapper.log").open("a"))  # kept for a failure's post-mortem
        wait_for_line(self.proc.stdout, "ready", 30, what="the wrapper")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def test_queue_is_durable_and_idempotent(tmp_path):
    q = DurableQueue(tmp_path / "q.sqlite")
    assert q.put("s4g/a/data/d/state", 1.0, b"x") and not q.put("s4g/a/data/d/state", 1.0, b"x")
    assert q.put("s4g/a/data/d/state", 2.0, b"y")
    q.close()
    q = DurableQueue(tmp_path / "q.sqlite")
    rows = q.after(0, 10)
    assert [r[2] for r in rows] == [b"x", b"y"]
    q.remove([rows[0][0]])
    assert len(q) == 1 and q.after(rows[0][0], 10)[0][2] == b"y"
    q.close()
    with pytest.raises(senml.SenMLError):
        pack_time(b'[{"n": "a/d/p_w", "v": 1.0, "t": 1e300}]')


def test_outage_and_restart_lose_nothing_and_duplicate_nothing(tmp_path):
    with pg_database() as db:
        smx = Mosquitto(tmp_path / "smx")
        data = Mosquitto(tmp_path / "data")
        queue = tmp_path / "wrapper" / "queue.sqlite"
        wh = Warehouse(db)
        ingester = DwhIngester(data.url, wh, stream="site1-live")
        devices = wrapper = None
        try:
            ingester.start()
            wrapper = WrapperProcess(smx, data, queue)
            devices = Devices(smx.port)
            n_rec = 2 * len(DEVICES)

            def stored() -> int:
                with ingester.lock:
                    return ingester.stats["inserted"]

            devices.publish(0, 40)  # link up
            _wait(lambda: stored() == 40 * n_rec, 60, "the first 40 steps in the warehouse")

            data.stop()  # the Data Broker goes away
            devices.publish(40, 80)
            _wait(lambda: _queued(queue) == 40 * len(DEVICES), 60, "the wrapper queueing the outage")
            wrapper.kill()  # and the wrapper dies while it holds them
            devices.publish(80, 120)  # kept by the SMX broker for the wrapper's persistent session
            wrapper = WrapperProcess(smx, data, queue)
            _wait(lambda: _queued(queue) == 80 * len(DEVICES), 60, "the restarted wrapper queueing the backlog")
            assert stored() == 40 * n_rec  # nothing got through while the Data Broker was down

            data.start()  # the link returns: the queue drains, in order
            devices.publish(120, 130)
            _wait(lambda: stored() == 130 * n_rec and _queued(queue) == 0, 120, "the queue to drain")

            rows = wh.con.execute("""
                SELECT d.key, extract(epoch FROM o.phenomenon_time), o.result, o.id
                FROM observations o JOIN datastreams d ON d.id = o.datastream_id ORDER BY o.id""").fetchall()
            wh.con.commit()
            got = [(k, float(t), v) for k, t, v, _ in rows]
            assert len(got) == len(set(got)) == 130 * n_rec  # none twice
            assert set(got) == _produced(0, 130)  # none lost, nothing else
            for key in {k for k, _, _ in got}:  # each datastream arrived in time order
                times = [t for k, t, _ in got if k == key]
                assert times == sorted(times), key
            assert ingester.stats["observations"] >= 130 * n_rec
        finally:
            if devices is not None:
                devices.close()
            if wrapper is not None:
                wrapper.stop()
            ingester.close()
            wh.close()
            data.stop()
            smx.stop()
