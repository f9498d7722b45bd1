"""The warehouse side of the Data Broker: every SenML pack on ``s4g/+/data/#`` becomes Observations in PostgreSQL.

The ingester's MQTT session is persistent (``clean_session=False``, QoS 1) and a pack is committed to the
warehouse before paho sends its PUBACK, so a broker restart or an ingester restart loses nothing; the warehouse's
unique (datastream, phenomenon time) makes every re-delivery harmless. Entities are created on first sight with
the same mapping as the run directory's SensorThings folder (:class:`cosim.messaging.sensorthings.SensorThingsCatalog`).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cosim.messaging import senml
from cosim.messaging.backends.mqtt import MqttBackend
from cosim.messaging.config import parse_broker_url
from cosim.messaging.errors import MessagingError
from cosim.messaging.sensorthings import SensorThingsCatalog

from .postgres import Warehouse

log = logging.getLogger(__name__)


@dataclass
class _Msg:  # what SensorThingsCatalog.observations reads from a bus Message
    topic: str
    records: list[senml.Record]
    t_s: float
    t_due: float
    sender: str
    seq: int


class DwhIngester:
    """Subscribes to the Data Broker and writes what arrives into ``warehouse`` under the run name ``stream``."""

    def __init__(self, data_url: str, warehouse: Warehouse, stream: str = "live", *,
                 client_id: str = "s4g-dwh-ingest", topic_filter: str = "s4g/+/data/#") -> None:
        self.wh = warehouse
        self.run_id = warehouse.run_id(stream)
        warehouse.con.commit()
        self.catalog = SensorThingsCatalog(0.0)
        self._ds: dict[str, tuple[int, int]] = {}  # datastream key -> (datastream id, feature id)
        self.lock = threading.Lock()
        self.stats = {"messages": 0, "observations": 0, "inserted": 0, "invalid": 0}
        self.changed = threading.Condition()
        self.client = MqttBackend(parse_broker_url(data_url), subscribe=topic_filter, client_id=client_id,
                                  clean_session=False, reconnect_max_s=2)

    def start(self) -> None:
        self.client.open(self._on_message, lambda mid, why: None)

    def close(self) -> None:
        self.client.close()

    def _on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            self.ingest(topic, payload)
        except (MessagingError, ValueError) as exc:
            self.stats["invalid"] += 1
            log.warning("dwh ingest: dropped %s: %s", topic, exc)

    def ingest(self, topic: str, payload: bytes) -> int:
        """One pack -> its Observations (committed); returns the rows inserted (0 for a re-delivery)."""
        records = senml.decode(payload)
        msg = _Msg(topic, records, 0.0, 0.0, "<data broker>", 0)
        with self.lock:
            obs = self.catalog.observations(msg)  # type: ignore[arg-type]
            if not obs:
                raise MessagingError(f"{topic}: not a data topic")
            if any(o.Datastream.iot_id not in self._ds for o in obs):
                with self.wh.con.transaction():
                    self._ds.update(self.wh.add_entities(self.run_id, self.catalog.entities()))
            now = datetime.now(UTC)
            rows: list[tuple[Any, ...]] = []
            for o in obs:
                t = datetime.fromisoformat(o.phenomenonTime.replace("Z", "+00:00"))
                result = o.result
                numeric = isinstance(result, (int, float)) and not isinstance(result, bool)
                did, fid = self._ds[o.Datastream.iot_id]
                rows.append((did, t, now, float(result) if numeric else None,  # type: ignore[arg-type]
                             None if numeric else json.dumps(result), json.dumps({"topic": topic}), fid))
            inserted = self.wh.copy_observations(rows)
            self.stats["messages"] += 1
            self.stats["observations"] += len(rows)
            self.stats["inserted"] += inserted
        with self.changed:
            self.changed.notify_all()
        return inserted
