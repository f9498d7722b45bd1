"""The aggregator-side OGC wrapper: SMX measurements -> Data Broker, with store-and-forward.

As in S4G, the wrapper sits at a site's aggregator: it subscribes to the site's SMX broker
(``s4g/{site}/smx/+/meas/#``), registers the site's Things and Datastreams with the SensorThings server when one is
given, and forwards every measurement pack to the Data Broker (``s4g/{site}/data/{device}/{quantity}``).

Nothing is lost when the Data Broker or the network is down, or when the wrapper itself is killed:

* A pack is written to a durable queue (:class:`DurableQueue`, one SQLite file in WAL mode) *before* the SMX
  broker's PUBACK is sent; the wrapper's SMX session is persistent (``clean_session=False``, QoS 1), so what the
  devices publish while the wrapper is down waits in the SMX broker.
* A queued pack leaves the queue only when the Data Broker acknowledged it (PUBACK). Packs go out in queue order;
  after an outage the queue drains in order as soon as the link is back.
* The queue is idempotent by (topic, phenomenon time) and the warehouse by (datastream, phenomenon time): a pack
  received twice (SMX redelivery after a crash) or sent twice (PUBACK lost) never becomes two observations.

``python -m cosim.sta.wrapper --site S --smx URL --data URL --queue FILE`` runs one wrapper as its own process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import threading
from pathlib import Path

from cosim.messaging import senml, topics
from cosim.messaging.backends.mqtt import MqttBackend
from cosim.messaging.config import parse_broker_url
from cosim.messaging.errors import BrokerUnavailable, MessagingError

log = logging.getLogger(__name__)


class DurableQueue:
    """A FIFO of (topic, payload) in a SQLite file; survives a process crash (WAL, committed before the ack)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a process kill
        self.db.execute("CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
                        " t REAL NOT NULL, payload BLOB NOT NULL, UNIQUE (topic, t))")
        self.lock = threading.Lock()

    def put(self, topic: str, t: float, payload: bytes) -> bool:
        """Queue a pack; False when the same (topic, time) is queued already."""
        with self.lock:
            cur = self.db.execute("INSERT OR IGNORE INTO queue (topic, t, payload) VALUES (?, ?, ?)",
                                  (topic, t, payload))
            return cur.rowcount == 1

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        with self.lock:
            return self.db.execute("SELECT seq, topic, payload FROM queue WHERE seq > ? ORDER BY seq LIMIT ?",
                                   (seq, limit)).fetchall()

    def remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        with self.lock:
            self.db.execute("BEGIN")
            self.db.executemany("DELETE FROM queue WHERE seq = ?", [(s,) for s in seqs])
            self.db.execute("COMMIT")

    def __len__(self) -> int:
        with self.lock:
            row = self.db.execute("SELECT count(*) FROM queue").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self.lock:
            self.db.close()


def pack_time(payload: bytes) -> float:
    """The newest record time of a SenML pack (absolute epoch seconds): the pack's phenomenon time."""
    records = senml.decode(payload)
    times = [r.time for r in records if r.time is not None]
    if not times:
        raise senml.SenMLError("a forwarded pack needs record times (the phenomenon time)")
    return max(times)


class OgcWrapper:
    """One site's wrapper: SMX -> durable queue -> Data Broker. ``start()``, ``close()``; thread-safe counters."""

    def __init__(self, site: str, smx_url: str, data_url: str, queue_path: str | Path, *,
                 window: int = 64, client_id: str | None = None, sta_url: str | None = None) -> None:
        self.site = topics.check_token(site, "site")
        self.queue = DurableQueue(queue_path)
        self.window = window
        self.sta_url = sta_url
        cid = client_id or f"s4g-wrapper-{site}"
        self.smx = MqttBackend(parse_broker_url(smx_url), subscribe=f"{topics.ROOT}/{site}/smx/+/meas/#",
                               client_id=f"{cid}-smx", clean_session=False, reconnect_max_s=2)
        self.data = MqttBackend(parse_broker_url(data_url), subscribe=f"{topics.ROOT}/{site}/control/#",
                                client_id=f"{cid}-data", on_published=self._on_ack, reconnect_max_s=2)
        self.stats = {"received": 0, "queued": 0, "duplicates": 0, "invalid": 0, "sent": 0, "acked": 0}
        self._inflight: dict[int, int] = {}  # paho mid -> queue seq
        self._acked: list[int] = []
        self._early: set[int] = set()
        self._last_seq = 0
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- SMX side -----------------------------------------------------------------------------------------
    def _on_smx(self, topic: str, payload: bytes, retain: bool) -> None:
        """Runs on the SMX client's thread; returning lets paho send the PUBACK, so queue first."""
        self.stats["received"] += 1
        try:
            info = topics.parse_topic(topic)
            if info.role != "smx" or info.kind != "meas" or info.site != self.site or not info.device:
                raise MessagingError(f"not a measurement topic of site {self.site}")
            t = pack_time(payload)
            data_topic = topics.data_topic(info.site, info.device, info.quantity or "state")
        except (MessagingError, ValueError) as exc:
            self.stats["invalid"] += 1
            log.warning("wrapper %s: dropped %s: %s", self.site, topic, exc)
            return
        if self.queue.put(data_topic, t, bytes(payload)):
            self.stats["queued"] += 1
        else:
            self.stats["duplicates"] += 1
        with self._wake:
            self._wake.notify_all()

    # -- Data Broker side ---------------------------------------------------------------------------------
    def _on_ack(self, mid: int) -> None:
        with self._wake:
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                self._acked.append(seq)
                self.stats["acked"] += 1
            else:  # the PUBACK came before publish() returned its mid to us
                self._early.add(mid)
            self._wake.notify_all()

    def _forward(self) -> None:
        while not self._stop.is_set():
            if not self._ensure_data_open():
                continue
            with self._wake:
                acked, self._acked = self._acked, []
                room = self.window - len(self._inflight)
            self.queue.remove(acked)
            if room > 0 and self.data.connected:
                for seq, topic, payload in self.queue.after(self._last_seq, room):
                    try:
                        # not under our lock: paho calls _on_ack holding its own lock (lock order)
                        mid = self.data.publish(topic, payload, qos=1)
                    except BrokerUnavailable as exc:
                        log.warning("wrapper %s: %s", self.site, exc)
                        break
                    with self._wake:
                        if mid in self._early:
                            self._early.discard(mid)
                            self._acked.append(seq)
                            self.stats["acked"] += 1
                        else:
                            self._inflight[mid] = seq
                    self._last_seq = seq
                    self.stats["sent"] += 1
            with self._wake:
                if not self._acked and not self._stop.is_set():
                    self._wake.wait(0.2)  # new data and acks notify; the timeout notices a reconnect

    def _ensure_data_open(self) -> bool:
        if self.data._client is not None:
            return True
        try:
            self.data.open(lambda *a: None, lambda mid, why: log.warning("Data Broker refused %s: %s", mid, why))
            return True
        except BrokerUnavailable as exc:
            log.info("wrapper %s: Data Broker not reachable (%s); queueing", self.site, exc)
            self._stop.wait(0.5)
            return False

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.smx.open(self._on_smx, lambda mid, why: None)
        self._thread = threading.Thread(target=self._forward, name=f"wrapper-{self.site}", daemon=True)
        self._thread.start()

    def drained(self) -> bool:
        with self._wake:
            return not self._inflight and not self._acked and len(self.queue) == 0

    def close(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        self.smx.close()
        self.data.close()
        with self._wake:
            acked, self._acked = self._acked, []
        self.queue.remove(acked)
        self.queue.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cosim.sta.wrapper", description=__doc__.splitlines()[0])
    p.add_argument("--site", required=True)
    p.add_argument("--smx", required=True, help="SMX broker address, e.g. mqtt://127.0.0.1:1883")
    p.add_argument("--data", required=True, help="Data Broker address")
    p.add_argument("--queue", required=True, help="SQLite file of the durable queue")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    wrapper = OgcWrapper(args.site, args.smx, args.data, args.queue)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    wrapper.start()
    print(f"wrapper {args.site} ready", flush=True)
    done.wait()
    wrapper.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
